"""A real daemon per test, driven through the real CLI, in its own SHIPYARD_HOME; everything it started is
stopped and checked gone afterwards."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
SHIPYARD = [sys.executable, "-m", "shipyard.cli.main"]


class Shipyard:
    def __init__(self, home: Path, tracking: bool = False):
        self.home = home
        self.env = {**os.environ, "SHIPYARD_HOME": str(home), "COLUMNS": "200"}
        # An MLflow server costs each daemon ~8 s of CPU at start: only the tests about tracking get one.
        self.env["SHIPYARD_TRACKING"] = "on" if tracking else "off"
        self.env.pop("SHIPYARD_API_URL", None)
        self.env.pop("SHIPYARD_TOKEN", None)

    def run(self, *args, check=True, timeout=300, input=None):
        result = subprocess.run([*SHIPYARD, *args], env=self.env, cwd=ROOT, capture_output=True, text=True,
                                timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"shipyard {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def up(self):
        return self.run("up", "--detach", "--port", "0", "--gateway-port", "0", timeout=90)

    def down_and_check(self):
        """`shipyard down`, then fail (after killing them) if any process it started is still running."""
        self.run("down", check=False, timeout=180)
        leftovers = self.processes()
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        assert not leftovers, f"processes left running after `shipyard down`: {leftovers}"

    def daemon_pid(self) -> int:
        return json.loads((self.home / "daemon.json").read_text())["pid"]

    def get(self, name, kind="trainingjob"):
        return json.loads(self.run("get", kind, name, "-o", "json").stdout)

    def processes(self, **env_match) -> list[int]:
        """Processes started for this instance (they inherit SHIPYARD_HOME), filtered by env values."""
        wanted = {f"SHIPYARD_HOME={self.home}".encode(), *(f"{k}={v}".encode() for k, v in env_match.items())}
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    environ = set(fh.read().split(b"\0"))
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmdline = fh.read()
            except OSError:
                continue
            if wanted <= environ and b"shipyard.cli.main" not in cmdline:
                found.append(int(entry))
        return found


@pytest.fixture
def shipyard(tmp_path):
    instance = Shipyard(tmp_path / "home")
    instance.up()
    yield instance
    instance.down_and_check()


def phase(instance, name):
    return instance.get(name)["status"].get("phase")


def wait_phase(instance, name, phases, timeout=240):
    return wait_for(lambda: phase(instance, name) in phases and instance.get(name), timeout=timeout,
                    interval=0.2, message=f"{name} in {phases}")
