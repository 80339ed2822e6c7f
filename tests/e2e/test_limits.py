"""Enforced limits through the daemon: `shipyard up` says which cgroup version is in force, and a TrainingJob
past its memory limit fails OOMKilled (status, events, counted restarts) while the daemon keeps answering."""

import os
import textwrap
from pathlib import Path

import pytest

from shipyard.runtime.local import cgroups

from .conftest import Shipyard, wait_phase

_PROBE = cgroups.detect(Path("/nonexistent/probe-runtime"))
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(_PROBE.version == "none", reason=f"cgroups: {_PROBE.describe()}")]


def test_up_names_the_cgroup_version_and_an_oom_killed_job_fails_with_the_daemon_alive(tmp_path):
    instance = Shipyard(tmp_path / "home")
    started = instance.up()
    try:
        assert f"pod limits: cgroup {_PROBE.version}" in started.stdout, started.stdout
        manifest = tmp_path / "hog.yaml"
        manifest.write_text(textwrap.dedent("""\
            apiVersion: shipyard.dev/v1alpha1
            kind: TrainingJob
            metadata: {name: hog}
            spec:
              replicas: 1
              command: [python, -c, "chunks = [b'x' * (16 << 20) for _ in range(256)]"]
              resources: {cpu: "1", memory: 128Mi}
              maxRestarts: 1
              backoffSeconds: 0.5
        """))
        instance.run("apply", "-f", str(manifest))
        job = wait_phase(instance, "hog", {"Succeeded", "Failed"}, timeout=180)
        assert job["status"]["phase"] == "Failed" and job["status"]["restarts"] == 1, job["status"]
        failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
        assert "exited with code 137 (OOMKilled" in failed["message"], failed
        described = instance.run("describe", "trainingjob/hog").stdout
        assert "OOMKilled" in described and "Restarting" in described, described
        os.kill(instance.daemon_pid(), 0)  # the daemon is alive, and answers:
        assert instance.run("get", "trainingjob").returncode == 0
    finally:
        instance.down_and_check()
