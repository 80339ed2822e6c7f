"""The README's access tour on a real daemon, through the real CLI: a second user with role `view` logs in,
reads, is refused a change with the role it needs, and the audit log shows it; the admin token still works
after `logout`. Slow: it starts `shipyard up`."""

from __future__ import annotations

import json
import os
import stat

import pytest

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
