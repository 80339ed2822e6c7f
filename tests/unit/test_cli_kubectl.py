"""kubectl habits of the CLI: `-l` selectors, `scale`, `get all`, `delete -f`, `--sort-by`, `describe` events of
every kind, `render` of whole trees, and port-forward stopping on SIGINT even when it was started ignoring it.
Against the real API on loopback over a real SQLite store (fixtures of test_client_cli)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import kubernetes_validate
import pytest
import yaml

from shipyard.client import Client
from shipyard.resources import load_resources, parse_yaml
from shipyard.resources.selector import parse_selector
from tests.unit.test_client_cli import ROOT, cli, one_error_line, server, store, write  # noqa: F401 - fixtures

KINDS_YAML = """\
apiVersion: shipyard.dev/v1alpha1
kind: TrainingJob
metadata: {{name: {name}, labels: {labels}}}
spec: {{replicas: 1, command: [python, train.py]}}
"""
ENDPOINT = """\
apiVersion: shipyard.dev/v1alpha1
kind: Endpoint
metadata: {{name: {name}, labels: {{team: a}}}}
spec:
  model: /models/chat
  volumes: [{{name: models, mountPath: /models}}]
  replicas: {{min: 1, max: {max}}}
"""
APP = """\
apiVersion: shipyard.dev/v1alpha1
kind: App
metadata: {name: ui}
spec: {command: [python, app.py], port: 7860}
"""
SWEEP = (ROOT / "examples" / "lifecycle" / "sweep.yaml").read_text()
WORKSPACE = (ROOT / "examples" / "workspace.yaml").read_text()


def jobs(tmp_path: Path) -> str:
    text = "---\n".join(KINDS_YAML.format(name=n, labels=labels) for n, labels in (
        ("a", "{team: a, tier: gpu}"), ("b", "{team: b}"), ("c", "{}")))
    return write(tmp_path, "jobs.yaml", text)


def names(out: str) -> list[str]:
    return [line.split()[0] for line in out.splitlines()[1:]]


# --- selectors ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, labels, matches", [
    ("team=a", {"team": "a"}, True),
    ("team==a", {"team": "b"}, False),
    ("team!=a", {}, True),  # as kubectl: != holds where the label is absent
    ("team", {"team": ""}, True),
    ("!team", {"team": "a"}, False),
    ("team in (a, b),tier", {"team": "b", "tier": "x"}, True),
    ("team notin (a)", {"team": "a"}, False),
    ("", {}, True),
])
def test_selector_parser(text, labels, matches):
    assert parse_selector(text).matches(labels) is matches


@pytest.mark.parametrize("text", ["team=a,", "=a", "team=a b", "te am", "team in (a"])
def test_bad_selectors_are_refused(text):
    with pytest.raises(ValueError, match="label selector"):
        parse_selector(text)


def test_get_and_delete_by_label(cli, store, tmp_path):
    assert cli("apply", "-f", jobs(tmp_path))[0] == 0
    assert names(cli("get", "tj", "-l", "team=a")[1]) == ["a"]
    assert names(cli("get", "tj", "-l", "team!=a")[1]) == ["b", "c"]
    assert names(cli("get", "tj", "-l", "team")[1]) == ["a", "b"]
    assert names(cli("get", "tj", "-l", "!team")[1]) == ["c"]
    assert names(cli("get", "tj", "-l", "team in (a,b),!tier")[1]) == ["b"]
    # The server filters: what crosses the wire is only what matches.
    sent = []
    original = Client.list_wire
    with pytest.MonkeyPatch.context() as mp:
        def spy(self, *args, **kwargs):
            found = original(self, *args, **kwargs)
            sent.append((kwargs.get("selector"), [w["metadata"]["name"] for w in found[0]]))
            return found
        mp.setattr(Client, "list_wire", spy)
        assert names(cli("get", "tj", "-l", "team=a")[1]) == ["a"]
    assert sent == [("team=a", ["a"])]
    listed = json.loads(cli("get", "tj", "-l", "tier=gpu", "-o", "json")[1])
    assert [i["metadata"]["name"] for i in listed["items"]] == ["a"]
    assert cli("get", "tj", "-l", "team=z") == (0, "", "No trainingjobs found in project default matching team=z.\n")
    code, _, err = cli("get", "tj", "-l", "team=a=b")
    assert code == 1
    one_error_line(err, "label selector")
    assert cli("delete", "tj", "-l", "team") == (0, "trainingjob/a deleted\ntrainingjob/b deleted\n", "")
    assert sorted(o.metadata.name for o in store.list("TrainingJob")) == ["c"]
    code, _, err = cli("delete", "tj", "c", "-l", "team")
    assert code == 1
    one_error_line(err, "NAME or -l")


def test_get_sort_by(cli, store, tmp_path):
    cli("apply", "-f", jobs(tmp_path))
    for name, phase in (("a", "Running"), ("b", "Failed"), ("c", "Pending")):
        obj = store.get("TrainingJob", "default", name)
        obj.status.phase = phase
        obj.status.restarts = {"a": 2, "b": 10, "c": 0}[name]
        store.update_status(obj)
    assert names(cli("get", "tj", "--sort-by", ".status.phase")[1]) == ["b", "c", "a"]
    assert names(cli("get", "tj", "--sort-by", "{.status.restarts}")[1]) == ["c", "a", "b"]  # numbers by value
    assert names(cli("get", "tj", "--sort-by", ".metadata.labels.team")[1]) == ["a", "b", "c"]  # absent last
    code, _, err = cli("get", "tj", "--sort-by", ".items[0]")
    assert code == 1
    one_error_line(err, "--sort-by")


# --- get all, delete -f, describe ---------------------------------------------------------------------

def test_get_all_groups_every_kind(cli, store, tmp_path):
    assert cli("get", "all") == (0, "", "No resources found in project default.\n")
    path = write(tmp_path, "all.yaml", "---\n".join([jobs(tmp_path) and Path(jobs(tmp_path)).read_text(),
                                                     ENDPOINT.format(name="chat", max=1), APP]))
    assert cli("apply", "-f", path)[0] == 0
    code, out, _ = cli("get", "all")
    assert code == 0
    tables = out.split("\n\n")
    assert [t.splitlines()[0].split()[0] for t in tables] == ["NAME"] * 3
    assert names(tables[0]) == ["trainingjob/a", "trainingjob/b", "trainingjob/c"]
    assert names(tables[1]) == ["endpoint/chat"] and names(tables[2]) == ["app/ui"]
    code, out, _ = cli("get", "all", "-l", "team=a")
    assert [names(t) for t in out.split("\n\n")] == [["trainingjob/a"], ["endpoint/chat"]]
    listed = yaml.safe_load(cli("get", "all", "-o", "yaml")[1])
    assert [i["kind"] for i in listed["items"]] == ["TrainingJob"] * 3 + ["Endpoint", "App"]


def test_delete_by_manifest(cli, store, tmp_path):
    path = jobs(tmp_path)
    cli("apply", "-f", path)
    assert cli("delete", "-f", path) == (
        0, "trainingjob/a deleted\ntrainingjob/b deleted\ntrainingjob/c deleted\n", "")
    assert store.list() == []
    code, _, err = cli("delete", "-f", path)
    assert code == 1
    one_error_line(err, "trainingjob/a not found", "and 2 more")
    assert cli("delete", "-f", path, "--ignore-not-found") == (0, "", "")


@pytest.mark.parametrize("kind, text", [
    ("TrainingJob", KINDS_YAML.format(name="x", labels="{}")),
    ("Endpoint", ENDPOINT.format(name="x", max=1)),
    ("App", APP.replace("name: ui", "name: x")),
    ("Sweep", SWEEP.replace("name: lifecycle-sweep", "name: x", 1)),
    ("Workspace", WORKSPACE.replace("name: notebook", "name: x", 1)),
])
def test_describe_shows_events_for_every_kind(cli, store, tmp_path, kind, text):
    assert cli("apply", "-f", write(tmp_path, "x.yaml", text))[0] == 0
    store.record_event(store.get(kind, "default", "x"), "Warning", "SomethingHappened", f"a {kind} event")
    code, out, _ = cli("describe", kind.lower(), "x")
    assert code == 0 and f"Kind:         {kind}" in out
    assert "SomethingHappened" in out.split("Events:")[1] and f"a {kind} event" in out


def test_workspace_refs_still_resolve(cli, store, tmp_path):
    cli("apply", "-f", write(tmp_path, "ws.yaml", WORKSPACE))
    assert cli("suspend", "workspace/notebook")[0] == 0
    assert store.get("Workspace", "default", "notebook").spec.suspend is True
    code, _, err = cli("suspend", "tj/notebook")
    assert code == 1
    one_error_line(err, "expected workspace/NAME")


# --- scale ----------------------------------------------------------------------------------------------

def test_scale_pins_serving_replicas(cli, store, tmp_path):
    cli("apply", "-f", write(tmp_path, "ep.yaml", ENDPOINT.format(name="chat", max=2)))
    assert cli("scale", "endpoint/chat", "--replicas", "3") == (0, "endpoint/chat scaled\n", "")
    spec = store.get("Endpoint", "default", "chat").spec
    assert (spec.replicas.min, spec.replicas.max) == (3, 3) and spec.model == "/models/chat"
    assert cli("scale", "ep", "chat", "--replicas", "3") == (0, "endpoint/chat unchanged\n", "")
    cli("apply", "-f", write(tmp_path, "app.yaml", APP))
    assert cli("scale", "app/ui", "--replicas", "2")[0] == 0
    assert store.get("App", "default", "ui").spec.replicas.max == 2
    for args, words in ((["tj/x", "--replicas", "2"], ["trainingjobs cannot be scaled"]),
                        (["endpoint/chat", "--replicas", "0"], ["scaleToZero"]),
                        (["endpoint/chat"], ["--replicas N"]),
                        (["endpoint/nope", "--replicas", "1"], ["endpoint/nope not found"])):
        code, _, err = cli("scale", *args)
        assert code == 1, args
        one_error_line(err, *words)
    auto = ENDPOINT.format(name="auto", max=4) + "  autoscaling: {metric: inFlight}\n"
    cli("apply", "-f", write(tmp_path, "auto.yaml", auto))
    code, _, err = cli("scale", "endpoint/auto", "--replicas", "2")
    assert code == 1
    one_error_line(err, "autoscales")
    assert store.get("Endpoint", "default", "auto").spec.replicas.max == 4


# --- render ---------------------------------------------------------------------------------------------

def test_render_whole_examples_tree_validates(cli, monkeypatch):
    monkeypatch.setenv("SHIPYARD_API_URL", "http://127.0.0.1:1")  # no control plane: registry refs stay visible
    code, out, err = cli("render", "-f", str(ROOT / "examples"))
    assert code == 0, err
    assert "warning: endpoint/lifecycle: models:/lifecycle@champion not resolved" in err
    objects = list(yaml.safe_load_all(out))
    # The Sweep renders as its 4 grid trials, each a Job of its own.
    jobs_ = {o["metadata"]["name"] for o in objects if o["kind"] == "Job"}
    assert {f"lifecycle-sweep-{i}" for i in range(4)} | {"pretrain", "train-ddp"} <= jobs_  # nested and top level
    for version in ("1.30", "1.37"):  # the oldest minor supported and the newest the validator ships
        for obj in objects:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} on {version}: {exc.message} at {list(exc.path)}")


class FakeRegistry:
    def list_models(self):
        return [SimpleNamespace(name="lifecycle", version=7, aliases=["champion"], project="default",
                                volume="lifecycle", path="/sweep/m", run_id="r1")]


def test_render_resolves_registry_models_through_the_control_plane(cli, store, server, monkeypatch):
    monkeypatch.setattr(server[0].state, "models", FakeRegistry())  # the API's GET /api/v1/models answers
    code, out, err = cli("render", "-f", str(ROOT / "examples" / "lifecycle" / "serve.yaml"))
    assert code == 0 and err == ""
    [deployment] = [o for o in yaml.safe_load_all(out) if o["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["SHIPYARD_MODEL_VERSION"] == "7" and "unresolved" not in out
    assert any(v.get("persistentVolumeClaim") for v in pod["volumes"])


def test_render_random_sweep_takes_first_trials(cli, tmp_path):
    text = SWEEP.replace("algorithm: {type: grid}", "algorithm: {type: random, seed: 3}\n  maxTrials: 9")
    path = write(tmp_path, "sweep.yaml", text)
    code, out, _ = cli("render", "-f", path)
    assert code == 0
    jobs_ = [o for o in yaml.safe_load_all(out) if o["kind"] == "Job"]
    assert len(jobs_) == 2  # its parallelism
    code, out, _ = cli("render", "-f", path, "--trials", "5")
    assert len([o for o in yaml.safe_load_all(out) if o["kind"] == "Job"]) == 5
    [sweep] = load_resources(parse_yaml(text, "s"))
    assert sweep.spec.max_trials == 9


# --- port-forward ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_port_forward_stops_cleanly_even_if_started_ignoring_sigint(cli, store, tmp_path, sig):
    cli("apply", "-f", write(tmp_path, "ep.yaml", ENDPOINT.format(name="chat", max=1)))
    proc = subprocess.Popen([sys.executable, "-m", "shipyard.cli.main", "port-forward", "endpoint/chat", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        line = proc.stdout.readline()  # blocks until it listens
        assert line.startswith("Forwarding from 127.0.0.1:"), line + proc.stderr.read()
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0  # its own handler: a clean exit, not death by the signal
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
