"""The README's access tour on a real daemon, through the real CLI: a second user with role `view` logs in,
reads, is refused a change with the role it needs, and the audit log shows it; the admin token still works
after `logout`. Slow: it starts `shipyard up`."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.conftest import wait_for

pytestmark = pytest.mark.slow

JOB = """\
apiVersion: shipyard.dev/v1alpha1
kind: TrainingJob
metadata: {name: tour}
spec: {replicas: 1, command: [python, -c, "print('hello')"]}
"""


def test_a_second_user_with_role_view(shipyard, tmp_path):
    manifest = tmp_path / "job.yaml"
    manifest.write_text(JOB)
    shipyard.run("apply", "-f", str(manifest))
    shipyard.run("user", "create", "carol")
    shipyard.run("project", "add-member", "default", "carol", "--role", "view")
    token = shipyard.run("user", "token", "create", "carol", "laptop", "-q").stdout.strip()
    login = shipyard.run("login", input=token + "\n")
    assert "as carol" in login.stdout and token not in login.stdout + login.stderr
    assert stat.S_IMODE(os.stat(shipyard.home / "credentials.json").st_mode) == 0o600
    assert "tour" in shipyard.run("get", "tj").stdout
    refused = shipyard.run("delete", "tj/tour", check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip() == ("error: user carol cannot delete trainingjobs 'tour' in project default: "
                                      "needs role edit (HTTP 403)")
    can = shipyard.run("auth", "can-i", "delete", "tj", check=False)
    assert can.returncode == 1 and can.stdout.startswith("no (") and "needs role edit" in can.stdout
    shipyard.run("logout")
    trail = shipyard.run("audit", "--user", "carol", "-o", "json").stdout
    records = [json.loads(line) for line in trail.splitlines()]
    assert any(r["verb"] == "delete" and r["code"] == 403 and r["name"] == "tour" for r in records)
    assert token not in trail
    # Nothing under SHIPYARD_HOME holds the token in the clear once carol logged out.
    for path in shipyard.home.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert token.encode() not in path.read_bytes(), path
    shipyard.run("delete", "tj/tour")  # the admin again


def test_a_project_from_creation_to_forced_deletion(shipyard, tmp_path):
    """On the real daemon: `default` is there at start; a new project's controller reports what it holds and
    its members; deleting it is refused while it holds a running job, and `--force` deletes the job, the member
    bindings, then the project."""
    assert "default" in shipyard.run("project", "get").stdout
    shipyard.run("project", "create", "vision", "--display-name", "Vision")
    shipyard.run("user", "create", "dana")
    shipyard.run("project", "add-member", "vision", "dana", "--role", "edit")
    manifest = tmp_path / "job.yaml"
    manifest.write_text(JOB.replace("print('hello')", "import time; time.sleep(600)"))
    shipyard.run("apply", "-f", str(manifest), "-p", "vision")
    wait_for(lambda: "1 TrainingJob" in shipyard.run("project", "describe", "vision").stdout, timeout=60)
    described = shipyard.run("project", "describe", "vision").stdout
    assert "Vision" in described and "dana" in described and "Active" in described
    running = lambda: json.loads(shipyard.run("get", "tj", "tour", "-p", "vision", "-o", "json").stdout)  # noqa: E731
    wait_for(lambda: running()["status"].get("phase") == "Running", timeout=120,
             message="the job did not start")
    refused = shipyard.run("project", "delete", "vision", check=False)
    assert refused.returncode == 1 and "still holds 1 TrainingJob" in refused.stderr
    shipyard.run("project", "delete", "vision", "--force")
    wait_for(lambda: "vision" not in shipyard.run("project", "get").stdout, timeout=60)
    assert shipyard.run("get", "tj", "-p", "vision", check=False).stdout.strip() == ""
    assert "dana" not in shipyard.run("project", "members", "vision").stdout
