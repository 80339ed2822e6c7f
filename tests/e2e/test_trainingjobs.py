"""Acceptance of the platform core, end to end: daemon + CLI + local runtime + real torch DDP."""

import json
import os
import re
import signal
import textwrap
import threading
from pathlib import Path

import pytest
import yaml

from shipyard.client import Client
from tests.conftest import wait_for

from .conftest import ROOT, Shipyard, phase, wait_phase

pytestmark = pytest.mark.slow
EXAMPLE = ROOT / "examples" / "train-ddp.yaml"


def example_variant(tmp_path: Path, name: str, args: list[str], **spec) -> Path:
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["metadata"]["name"] = name
    doc["spec"]["args"] = args
    doc["spec"].update(spec)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    # The script is found where the manifest was applied from (the local stand-in for the image WORKDIR).
    (tmp_path / "train_ddp.py").write_text((ROOT / "examples" / "train_ddp.py").read_text())
    return path


def _record_phases(shipyard: Shipyard, name: str, phases: list[str]) -> None:
    with Client(home=shipyard.home) as client:
        for _, obj in client.watch("trainingjob", name=name, initial=True):
            phases.append(obj.status.phase)
            if obj.status.phase in ("Succeeded", "Failed"):
                return


def _collapse(phases: list[str]) -> list[str]:
    return [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]


def test_ddp_example_succeeds_through_apply_wait(shipyard):
    result = shipyard.run("apply", "-f", str(EXAMPLE), "--wait", timeout=600)
    assert "trainingjob/train-ddp created" in result.stdout
    job = shipyard.get("train-ddp")
    assert job["status"]["phase"] == "Succeeded" and job["status"]["restarts"] == 0
    progress = job["status"]["progress"]
    assert progress["step"] == progress["totalSteps"] == 300 and progress["loss"] < 3.0
    checkpoints = shipyard.home / "volumes" / "default" / "checkpoints" / "train-ddp"
    assert (checkpoints / "final.pt").exists()
    events = shipyard.run("describe", "trainingjob/train-ddp").stdout
    for reason in ("Created", "Running", "Succeeded"):
        assert reason in events


def test_killed_replica_restarts_the_gang_which_resumes_from_its_checkpoint(shipyard, tmp_path):
    manifest = example_variant(tmp_path, "heal", ["--steps", "120", "--checkpoint-dir", "/ckpt/heal",
                                                  "--checkpoint-every", "10", "--sleep-per-step", "0.05"],
                               backoffSeconds=1)
    shipyard.run("apply", "-f", str(manifest))
    wait_for(lambda: (shipyard.get("heal")["status"].get("progress") or {}).get("step", 0) >= 25, timeout=180,
             interval=0.2, message="step 25")
    phases: list[str] = []
    watcher = threading.Thread(target=_record_phases, args=(shipyard, "heal", phases), daemon=True)
    watcher.start()
    wait_for(lambda: phases, message="the watch to start")  # its first item is the job as listed
    # Kill replica 1's process (torchrun and its worker), as a crashed node would.
    victims = shipyard.processes(SHIPYARD_JOB_NAME="heal", SHIPYARD_REPLICA_INDEX="1")
    assert victims
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    job = wait_phase(shipyard, "heal", {"Succeeded", "Failed"})
    assert job["status"]["phase"] == "Succeeded", job["status"]
    assert job["status"]["restarts"] == 1
    # Every status write reached the watcher, so the transient phases are seen however busy the machine is.
    watcher.join(timeout=30)
    assert _collapse(phases) == ["Running", "Restarting", "Running", "Succeeded"], phases
    reasons = [line.split()[1] for line in shipyard.run("describe", "trainingjob/heal").stdout.splitlines()
               if line.strip().startswith(("Normal", "Warning"))]
    assert reasons.index("Restarting") < len(reasons) - 1 - reasons[::-1].index("Running")
    log = shipyard.run("logs", "trainingjob/heal").stdout
    resumed = re.search(r"resumed from checkpoint at step (\d+) \(restart 1\)", log)
    assert resumed and int(resumed.group(1)) >= 20, log[-2000:]
    first_step = int(re.search(r'SHIPYARD_PROGRESS \{"step": (\d+)', log).group(1))
    assert first_step == int(resumed.group(1)) + 1  # the step counter did not start over


def test_job_that_always_fails_ends_failed_after_max_restarts(shipyard, tmp_path):
    manifest = tmp_path / "fail.yaml"
    manifest.write_text(textwrap.dedent("""\
        apiVersion: shipyard.dev/v1alpha1
        kind: TrainingJob
        metadata: {name: always-fails}
        spec:
          replicas: 2
          command: [python, -c, "import sys; print('boom'); sys.exit(7)"]
          maxRestarts: 2
          backoffSeconds: 0.5
    """))
    result = shipyard.run("apply", "-f", str(manifest), "--wait", check=False, timeout=300)
    assert result.returncode == 1
    job = shipyard.get("always-fails")
    assert job["status"]["phase"] == "Failed" and job["status"]["restarts"] == 2
    failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "RestartLimitExceeded"
    assert "exited with code 7" in failed["message"] and "maxRestarts=2" in failed["message"]
    assert "exited with code 7" in result.stdout + result.stderr


def test_daemon_killed_with_sigkill_readopts_running_job(shipyard, tmp_path):
    manifest = example_variant(tmp_path, "survivor", ["--steps", "150", "--checkpoint-dir", "/ckpt/survivor",
                                                      "--sleep-per-step", "0.04"])
    shipyard.run("apply", "-f", str(manifest))
    wait_for(lambda: (shipyard.get("survivor")["status"].get("progress") or {}).get("step", 0) >= 10, timeout=180,
             interval=0.2, message="step 10")
    workloads = {i: shipyard.processes(SHIPYARD_JOB_NAME="survivor", SHIPYARD_REPLICA_INDEX=str(i))
                 for i in (0, 1)}
    os.kill(shipyard.daemon_pid(), signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{shipyard.daemon_pid()}/status"), message="daemon gone")
    assert all(os.path.exists(f"/proc/{pid}") for pids in workloads.values() for pid in pids)  # still training

    shipyard.up()
    job = wait_phase(shipyard, "survivor", {"Succeeded", "Failed"})
    assert job["status"]["phase"] == "Succeeded" and job["status"]["restarts"] == 0
    log = shipyard.run("logs", "trainingjob/survivor").stdout
    assert "resumed" not in log  # adopted, not restarted
    assert shipyard.processes(SHIPYARD_JOB_NAME="survivor") == []


def test_down_stops_workloads_and_next_up_resumes_them(shipyard, tmp_path):
    manifest = example_variant(tmp_path, "pausable", ["--steps", "200", "--checkpoint-dir", "/ckpt/pausable",
                                                      "--checkpoint-every", "10", "--sleep-per-step", "0.05"])
    shipyard.run("apply", "-f", str(manifest))
    wait_for(lambda: (shipyard.get("pausable")["status"].get("progress") or {}).get("step", 0) >= 15, timeout=180,
             interval=0.2, message="step 15")
    shipyard.run("down", timeout=180)
    assert shipyard.processes() == []
    shipyard.up()
    job = wait_phase(shipyard, "pausable", {"Succeeded", "Failed"})
    assert job["status"]["phase"] == "Succeeded" and job["status"]["restarts"] == 0  # a shutdown is no failure
    assert "resumed from checkpoint" in shipyard.run("logs", "trainingjob/pausable").stdout


def test_bad_manifest_is_refused_and_api_requires_token(shipyard, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text() + "---\n" + EXAMPLE.read_text().replace("train-ddp\n", "other\n", 1)
                   .replace("replicas: 2", "replicas: -2"))
    result = shipyard.run("apply", "-f", str(bad), check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert re.search(r"bad\.yaml: document 2: spec\.replicas: .*greater than or equal to 1", result.stderr)
    assert json.loads(shipyard.run("get", "trainingjobs", "-o", "json").stdout)["items"] == []

    import httpx
    url = json.loads((shipyard.home / "daemon.json").read_text())["url"]
    assert httpx.get(f"{url}/healthz").status_code == 200
    assert httpx.get(f"{url}/apis/shipyard.dev/v1alpha1/trainingjobs").status_code == 401
    assert httpx.get(f"{url}/apis/shipyard.dev/v1alpha1/trainingjobs",
                     headers={"Authorization": "Bearer wrong"}).status_code == 401
    token_file = shipyard.home / "admin-token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
