"""Issue 14, item 6: a Secret's value, written once, reaches the job that references it and nothing else.

Greps every file under SHIPYARD_HOME and every answer a user can get. The one place the value is legitimately
in clear outside the process is the local runtime's own files (the native Secret object, the pod's resolved
environment), as on a node the kubelet has it: those must be 0600 and under `runtime/`. The same value mounted
as files (a `secret` volume) lives on a tmpfs outside SHIPYARD_HOME while the job runs, and not after.
"""

import hashlib
import json
import stat

import pytest

from shipyard.runtime.local.secretvolumes import SecretVolumes
from tests.e2e.conftest import wait_phase

pytestmark = pytest.mark.slow

VALUE = "e2e-Secret-Value-7f3a9c1b2d"
DIGEST = hashlib.sha256(VALUE.encode()).hexdigest()
PRINT_HASH = ("import hashlib, os, stat, sys; v = os.environ.get('DB_PASSWORD', '');"
              "print('sha256=' + hashlib.sha256(v.encode()).hexdigest(), 'len=' + str(len(v)));"
              "f = open(sys.argv[1]).read();"
              "print('file-sha256=' + hashlib.sha256(f.encode()).hexdigest(),"
              " 'file-mode=' + oct(stat.S_IMODE(os.stat(sys.argv[1]).st_mode)),"
              " 'file-in-home=' + str(os.path.realpath(sys.argv[1]).startswith(os.environ['SHIPYARD_HOME'])))")


def test_secret_value_reaches_the_job_and_appears_nowhere_else(shipyard):
    docs = [
        {"apiVersion": "shipyard.dev/v1alpha1", "kind": "Secret", "metadata": {"name": "db"},
         "spec": {"stringData": {"password": VALUE}}},
        {"apiVersion": "shipyard.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "uses-secret"},
         "spec": {"command": ["python", "-c", PRINT_HASH, "/etc/db/password"], "maxRestarts": 0,
                  "env": [{"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
                  "volumes": [{"name": "db-files", "mountPath": "/etc/db", "secret": {"secretName": "db"}}]}},
    ]
    answers = [shipyard.run("apply", "-f", "-", input="\n---\n".join(json.dumps(d) for d in docs))]
    job = wait_phase(shipyard, "uses-secret", ("Succeeded", "Failed"))
    answers.append(shipyard.run("logs", "trainingjob/uses-secret"))
    assert job["status"]["phase"] == "Succeeded", answers[-1].stdout
    assert f"sha256={DIGEST}" in answers[-1].stdout  # the job got exactly the value
    # and as a file, private, outside SHIPYARD_HOME (a tmpfs: see runtime/local/secretvolumes.py)
    assert f"file-sha256={DIGEST} file-mode=0o400 file-in-home=False" in answers[-1].stdout
    # The job is over: its secret files are gone from the tmpfs too.
    files = SecretVolumes(shipyard.home / "runtime").root
    assert not files.exists() or not [p for p in files.rglob("*") if p.is_file()]
    secret = json.loads(shipyard.run("get", "secret", "db", "-o", "json").stdout)
    assert secret["status"]["keys"] == {"password": len(VALUE)} and "stringData" not in secret["spec"]
    answers += [shipyard.run("get", "secret", "db", "-o", "yaml"), shipyard.run("get", "secrets"),
                shipyard.run("describe", "secret", "db"), shipyard.run("get", "tj", "uses-secret", "-o", "yaml"),
                shipyard.run("describe", "tj", "uses-secret"), shipyard.run("audit", check=False)]
    described = answers[-4].stdout
    assert f"password:  {len(VALUE)} bytes" in described
    for answer in answers:
        assert VALUE not in answer.stdout and VALUE not in answer.stderr

    # Delete the Secret; its native Secret goes with it.
    shipyard.run("delete", "secret", "db")
    shipyard.run("down", timeout=180)  # flush the daemon's log and the database before reading every file

    home = shipyard.home
    assert stat.S_IMODE((home / "secret.key").stat().st_mode) == 0o600
    holding = []
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if VALUE.encode() in data:
            holding.append(path)
    for path in holding:
        rel = path.relative_to(home)
        assert rel.parts[0] == "runtime", f"{rel} holds the secret value"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{rel} holds the secret value and is not 0600"
    assert not any(p.name.startswith("shipyard.db") or p.name.startswith("daemon.log") for p in holding)
    shipyard.up()  # the fixture's own `down` checks nothing is left running
