"""The client SDK and the CLI against a real API (uvicorn on loopback) over a real SQLite store."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from shipyard.api import create_app, hash_token
from shipyard.cli.main import main_exit_code
from shipyard.client import ApiError, Client, NotRunning, ShipyardError
from shipyard.resources import Condition, TrainingJob
from shipyard.resources.trainingjob import Progress
from shipyard.store.sqlite import SQLiteStore
from tests.unit.test_api import TOKEN, FakeLogs, serve

ROOT = Path(__file__).resolve().parents[2]
JOB = """\
apiVersion: shipyard.dev/v1alpha1
kind: TrainingJob
metadata:
  name: {name}
spec:
  replicas: 2
  command: [python, train.py]
"""


@pytest.fixture(scope="module")
def server():
    app = create_app(None, FakeLogs(), hash_token(TOKEN), "9.9.9")  # type: ignore[arg-type]
    with serve(app) as url:
        yield app, url


@pytest.fixture
def store(tmp_path, server, monkeypatch):
    app, url = server
    s = SQLiteStore(tmp_path / "db")
    app.state.store = s
    app.state.api_keys = s.api_keys
    monkeypatch.setenv("SHIPYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHIPYARD_API_URL", url)
    monkeypatch.setenv("SHIPYARD_TOKEN", TOKEN)
    monkeypatch.delenv("SHIPYARD_PROJECT", raising=False)
    yield s
    s.close()


@pytest.fixture
def client(store):
    with Client() as c:
        yield c


@pytest.fixture
def cli(store, capsys, monkeypatch):
    def run(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        code = main_exit_code(list(args))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def write(tmp_path: Path, name: str, text: str | bytes) -> str:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(path)


def one_error_line(err: str, *words: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# --- client -------------------------------------------------------------------------------------------

def test_client_round_trip(client, store):
    assert client.health() and client.version()["version"] == "9.9.9"
    [result] = client.apply([("jobs.yaml", 1, yaml.safe_load(JOB.format(name="a")))])
    assert result["action"] == "created"
    job = client.get("tj", "a")
    assert isinstance(job, TrainingJob) and job.spec.replicas == 2
    assert [j.metadata.name for j in client.list("trainingjobs")] == ["a"]
    assert client.list("TrainingJob", namespace=None)[0].metadata.name == "a"
    store.record_event(store.get("TrainingJob", "default", "a"), "Warning", "Backoff", "restarting")
    assert client.events("trainingjob", "a")[0]["reason"] == "Backoff"
    assert list(client.logs("tj", "a", tail_lines=1)) == ["a line 4"]
    assert client.delete("tj", "a").metadata.name == "a"
    with pytest.raises(ApiError) as err:
        client.get("tj", "a")
    assert err.value.status == 404 and err.value.detail == "trainingjob/a not found in project default"
    with pytest.raises(ShipyardError, match="unknown resource type"):
        client.get("widgets", "a")


def test_client_wait_and_watch(client, store):
    client.apply([("jobs.yaml", 1, yaml.safe_load(JOB.format(name="a")))])

    def run_it() -> None:
        obj = store.get("TrainingJob", "default", "a")
        obj.status.phase = "Running"
        store.update_status(obj)

    # No ordering needed: wait() reads the object, then watches from its version, so the change is seen
    # whether it lands before or after the watch connects.
    worker = threading.Thread(target=run_it)
    worker.start()
    job = client.wait("tj", "a", until=lambda o: o.status.phase == "Running", timeout=30)
    worker.join()
    assert job.status.phase == "Running"
    events = client.watch("tj", initial=True)
    assert next(events)[0] == "ADDED"
    events.close()
    with pytest.raises(ShipyardError, match="timed out"):
        client.wait("tj", "a", until=lambda o: o.status.phase == "Succeeded", timeout=1)


def test_client_watch_relists_after_410(tmp_path, server, monkeypatch):
    first = SQLiteStore(tmp_path / "db")
    first.apply([TrainingJob.model_validate(yaml.safe_load(JOB.format(name="a")))])
    first.close()
    app, url = server
    app.state.store = reopened = SQLiteStore(tmp_path / "db")  # history starts after version 1
    with Client(url=url, token=TOKEN) as client:
        events = client.watch("tj", resource_version="0")
        type_, obj = next(events)
        events.close()
    assert (type_, obj.metadata.name) == ("ADDED", "a")
    reopened.close()


def test_client_errors(tmp_path, monkeypatch, server):
    for var in ("SHIPYARD_API_URL", "SHIPYARD_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(NotRunning, match="shipyard up"):
        Client(home=tmp_path)
    (tmp_path / "daemon.json").write_text(json.dumps({"pid": 1, "url": server[1]}))
    (tmp_path / "admin-token").write_text(TOKEN + "\n")
    with Client(home=tmp_path) as client:
        assert client.version()["version"] == "9.9.9"
    with pytest.raises(NotRunning, match="cannot reach"), Client(url="http://127.0.0.1:1") as client:
        client.version()
    with pytest.raises(ApiError) as err, Client(url=server[1], token="wrong") as client:
        client.version()
    assert err.value.status == 401 and "\n" not in str(err.value)


# --- CLI ----------------------------------------------------------------------------------------------

def test_apply_created_then_unchanged(cli, store, tmp_path):
    path = write(tmp_path, "job.yaml", JOB.format(name="a"))
    assert cli("apply", "-f", path) == (0, "trainingjob/a created\n", "")
    assert cli("apply", "-f", path) == (0, "trainingjob/a unchanged\n", "")
    stored = store.get("TrainingJob", "default", "a")
    assert stored.metadata.annotations["shipyard.dev/local-workdir"] == str(tmp_path)
    assert cli("-p", "team-a", "apply", "-f", "-", stdin=JOB.format(name="b").encode())[0] == 0
    assert store.get("TrainingJob", "team-a", "b").metadata.annotations["shipyard.dev/local-workdir"] == os.getcwd()


def test_apply_directory_is_all_or_nothing(cli, store, tmp_path):
    folder = tmp_path / "jobs"
    folder.mkdir()
    write(folder, "1.yaml", JOB.format(name="a"))
    write(folder, "2.yml", JOB.format(name="b") + "---\n" + JOB.format(name="c").replace("replicas", "replicaz"))
    write(folder, "notes.txt", "ignored")
    code, out, err = cli("apply", "-f", str(folder))
    assert code == 1 and out == ""
    one_error_line(err, "2.yml: document 2: spec.replicaz: unknown field")
    assert store.list() == []
    write(folder, "2.yml", JOB.format(name="b"))
    assert cli("apply", "-f", str(folder))[1] == "trainingjob/a created\ntrainingjob/b created\n"


def test_get_table_yaml_json(cli, store, tmp_path):
    cli("apply", "-f", write(tmp_path, "job.yaml", JOB.format(name="a")))
    obj = store.get("TrainingJob", "default", "a")
    obj.status.phase = "Running"
    obj.status.progress = Progress(step=10, total_steps=300, loss=2.5, tokens_per_second=1234.5)
    store.update_status(obj)
    code, out, _ = cli("get", "tj")
    header, row = out.splitlines()
    assert header.split() == ["NAME", "PHASE", "REPLICAS", "RESTARTS", "PROGRESS", "LOSS", "AGE"]
    assert row.split()[:6] == ["a", "Running", "0/2", "0", "10/300", "2.5"]
    assert cli("get", "tj", "-o", "wide")[1].splitlines()[0].split()[0] == "PROJECT"
    assert "TOKENS/S" in cli("get", "tj", "-A", "-o", "wide")[1]
    assert yaml.safe_load(cli("get", "tj/a", "-o", "yaml")[1])["spec"]["replicas"] == 2
    listed = json.loads(cli("get", "trainingjobs", "-o", "json")[1])
    assert listed["kind"] == "List" and listed["items"][0]["metadata"]["name"] == "a"
    code, out, err = cli("get", "tj", "nope")
    assert code == 1
    one_error_line(err, "trainingjob/nope not found")
    assert cli("-p", "empty", "get", "tj") == (0, "", "No trainingjobs found in project empty.\n")


def test_describe_shows_events(cli, store, tmp_path):
    cli("apply", "-f", write(tmp_path, "job.yaml", JOB.format(name="a")))
    obj = store.get("TrainingJob", "default", "a")
    store.record_event(obj, "Normal", "Created", "created 2 replicas")
    code, out, _ = cli("describe", "tj", "a")
    assert code == 0
    assert "Name:         a" in out and "Replicas:" not in out.split("Spec:")[0]
    header, row = out.split("Events:")[1].strip("\n").splitlines()
    assert header.split() == ["TYPE", "REASON", "AGE", "COUNT", "MESSAGE"]
    assert row.split()[:2] == ["Normal", "Created"] and "x1" in row and "created 2 replicas" in row


def test_logs_and_delete(cli, store, tmp_path):
    cli("apply", "-f", write(tmp_path, "job.yaml", JOB.format(name="a")))
    assert cli("logs", "tj/a", "--tail", "2") == (0, "a line 3\na line 4\n", "")
    code, _, err = cli("logs", "tj/a", "--replica", "7")
    assert code == 1
    one_error_line(err, "no replica 7")
    assert cli("delete", "tj/a") == (0, "trainingjob/a deleted\n", "")
    code, _, err = cli("delete", "tj", "a")
    assert code == 1
    one_error_line(err, "trainingjob/a not found")
    assert cli("delete", "tj", "a", "--ignore-not-found") == (0, "", "")


BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8))


@pytest.mark.parametrize("name, text, words", [
    ("syntax.yaml", JOB.format(name="a") + "---\nmetadata: [unclosed\n", ["syntax.yaml: document 2", "YAML syntax"]),
    ("field.yaml", JOB.format(name="a").replace("replicas", "replicaz"),
     ["field.yaml: document 1: spec.replicaz: unknown field"]),
    ("big.yaml", JOB.format(name="a") + "  args: [" + "x" * (10 * 1000 * 1000) + "]\n",
     ["big.yaml: document 1", "MB"]),
    ("bomb.yaml", BOMB, ["bomb.yaml: document 1", "alias bomb"]),
])
def test_bad_manifests_are_one_line_errors(cli, store, tmp_path, name, text, words):
    code, out, err = cli("apply", "-f", write(tmp_path, name, text))
    assert code == 1 and out == ""
    one_error_line(err, *words)
    assert store.list() == []


def test_missing_file_and_wrong_token(cli, store, tmp_path, monkeypatch):
    code, _, err = cli("apply", "-f", str(tmp_path / "absent.yaml"))
    assert code == 1
    one_error_line(err, "absent.yaml", "no such file")
    monkeypatch.setenv("SHIPYARD_TOKEN", "sy_wrong")
    code, _, err = cli("get", "tj")
    assert code == 1
    one_error_line(err, "missing or invalid API token", "401")


def test_apply_wait_follows_jobs_to_the_end(cli, store, tmp_path):
    def controller(event) -> None:  # a stand-in for the real controller: finishes jobs as they appear
        if event.type != "ADDED":
            return
        job = TrainingJob.model_validate(event.object)
        if job.metadata.name == "good":
            job.status.phase = "Succeeded"
        else:
            job.status.phase = "Failed"
            job.status.conditions = [Condition(type="Failed", status="True", reason="BackoffLimitExceeded",
                                               message="replica 1 exited with code 3")]
        store.update_status(job)

    store.subscribe(controller)
    assert cli("apply", "-f", write(tmp_path, "good.yaml", JOB.format(name="good")), "--wait") == (
        0, "trainingjob/good created\ntrainingjob/good Succeeded\n", "")
    code, out, err = cli("apply", "-f", write(tmp_path, "bad.yaml", JOB.format(name="bad")), "--wait")
    assert code == 1 and out.splitlines()[-1] == "trainingjob/bad Failed"
    one_error_line(err, "trainingjob/bad failed: replica 1 exited with code 3")


def test_render_needs_no_daemon(cli, monkeypatch):
    monkeypatch.setenv("SHIPYARD_API_URL", "http://127.0.0.1:1")
    code, out, _ = cli("render", "-f", str(ROOT / "examples" / "train-ddp.yaml"))
    assert code == 0
    kinds = [doc["kind"] for doc in yaml.safe_load_all(out)]
    assert "Job" in kinds and "Service" in kinds


def test_down_with_nothing_running(cli, monkeypatch, tmp_path):
    assert cli("down") == (0, "no Shipyard daemon is running\n", "")
    home = Path(os.environ["SHIPYARD_HOME"])
    home.mkdir()
    (home / "daemon.json").write_text(json.dumps({"pid": 2 ** 22 + 12345, "url": "http://127.0.0.1:1"}))
    assert cli("down") == (0, "no Shipyard daemon is running\n", "")
    assert not (home / "daemon.json").exists()


def test_usage_errors_are_one_line(cli):
    code, _, err = cli("get")
    assert code == 2
    one_error_line(err, "Missing argument")
    code, _, err = cli("get", "widgets")
    assert code == 1
    one_error_line(err, "unknown resource type 'widgets'")


def test_module_entry_point_prints_no_traceback(store, tmp_path):
    env = {**os.environ, "SHIPYARD_TOKEN": "sy_wrong"}
    bad = write(tmp_path, "bad.yaml", "kind: [")
    for args, words in ((["apply", "-f", bad], "bad.yaml: document 1"), (["get", "tj"], "401")):
        proc = subprocess.run([sys.executable, "-m", "shipyard.cli.main", *args], env=env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 1 and proc.stdout == ""
        one_error_line(proc.stderr, words)


def test_apikey_create_list_revoke(cli, store, tmp_path):
    code, out, err = cli("apikey", "create", "ci", "--project", "team-a")
    assert code == 0 and err == "", err
    token = out.splitlines()[-1]
    assert token.startswith("sy_key_") and len(token) > 40
    assert store.api_keys.api_key_project(hash_token(token)) == "team-a"
    code, out, _ = cli("apikey", "list", "-p", "team-a")
    assert code == 0 and "ci" in out and "active" in out and token not in out and token[:12] in out
    assert token.encode() not in (tmp_path / "db").read_bytes()  # only the hash is stored
    code, _, err = cli("apikey", "create", "ci", "-p", "team-a")
    assert code == 1
    one_error_line(err, "already exists")
    code, _, err = cli("apikey", "create", "Bad_Name")
    assert code == 1
    one_error_line(err, "DNS-1123")
    assert cli("apikey", "revoke", "ci", "-p", "team-a") == (0, "apikey/ci revoked in project team-a\n", "")
    assert store.api_keys.api_key_project(hash_token(token)) is None
    code, out, _ = cli("apikey", "list", "-p", "team-a")
    assert "revoked" in out
    code, _, err = cli("apikey", "revoke", "ci", "-p", "team-a")
    assert code == 1
    one_error_line(err, "no active API key")
    assert cli("apikey", "create", "ci", "-q", "-p", "team-a")[1].startswith("sy_key_")  # the name is free again


ENDPOINT = """\
apiVersion: shipyard.dev/v1alpha1
kind: Endpoint
metadata:
  name: chat
spec:
  model: /models/chat
  volumes: [{name: models, mountPath: /models}]
"""


@pytest.mark.parametrize("change, words", [
    (("model: /models/chat", "model: /models/chat\n  replicas: {min: 3, max: 1}"), ["spec", "replicas"]),
    (("model: /models/chat", "model: /elsewhere/chat"), ["spec", "model"]),
    (("model: /models/chat", "model: /models/chat\n  engine: custom"), ["command"]),
    (("model: /models/chat", "model: /models/chat\n  ingress: {host: chat.example.com}"), ["ingress", "public"]),
])
def test_bad_endpoint_specs_are_one_line_errors_and_store_nothing(cli, store, tmp_path, change, words):
    old, new = change
    text = ENDPOINT.replace(old, new, 1)
    code, out, err = cli("apply", "-f", write(tmp_path, "ep.yaml", text))
    assert code == 1 and out == ""
    one_error_line(err, "ep.yaml: document 1", *words)
    assert store.list() == []
