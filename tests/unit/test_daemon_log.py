"""daemon.log is size-rotated (stdout and stderr follow the current file) and the gateway's access log is
opt-in. Run in a child process: the handler points fds 1 and 2 at the log, which pytest's own capture owns."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import logging, sys
from pathlib import Path
from shipyard.server import configure_logging
configure_logging(Path(sys.argv[1]))
for i in range(200):
    logging.getLogger("shipyard.test").info("line %03d %s", i, "x" * 40)
    logging.getLogger("shipyard.gateway.access").info("GET /default/echo status=200")
print("printed after rotation", flush=True)
"""


def run(tmp_path, **env):
    log = tmp_path / "daemon.log"
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(log)], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "SHIPYARD_DAEMON_LOG_MAX_BYTES": "2000", **env})
    assert result.returncode == 0, result.stderr
    return log


def test_daemon_log_rotates_and_stdout_follows_it(tmp_path):
    log = run(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["daemon.log", "daemon.log.1"]
    assert all((tmp_path / f).stat().st_size <= 2000 for f in files)
    current = log.read_text()
    assert "line 199" in current and "printed after rotation" in current
    assert "GET /default/echo" not in current + (tmp_path / "daemon.log.1").read_text()


def test_the_gateway_access_log_is_opt_in(tmp_path):
    log = run(tmp_path, SHIPYARD_GATEWAY_ACCESS_LOG="1")
    assert "GET /default/echo" in log.read_text()


def test_a_bad_limit_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "shipyard.server", "--port", "0"], capture_output=True,
                            text=True, timeout=120,
                            env={**os.environ, "SHIPYARD_HOME": str(tmp_path), "SHIPYARD_POD_LOG_MAX_FILES": "1"})
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: SHIPYARD_POD_LOG_MAX_FILES='1' must be a whole number of at least 2"]
