"""Launching real training processes for workload tests, and guaranteeing they are all gone afterwards.

Every process a test starts carries a unique SHIPYARD_TEST_TOKEN in its environment. That finds torchrun's
workers too, which torchrun puts in sessions of their own (so killing torchrun's process group misses them).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
PROGRESS = "SHIPYARD_PROGRESS "


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def progress_lines(text: str) -> list[dict]:
    return [json.loads(line[len(PROGRESS):]) for line in text.splitlines() if line.startswith(PROGRESS)]


def train_losses(text: str) -> dict[int, float]:
    """step -> loss from the progress lines (the end-of-run eval line repeats the last step's loss)."""
    return {p["step"]: p["loss"] for p in progress_lines(text) if "loss" in p}


class Launcher:
    """Starts processes (each in its own session), logs each to a file, and kills whatever is left."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.token = uuid.uuid4().hex
        self.procs: list[subprocess.Popen] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "SHIPYARD_TEST_TOKEN": self.token,
               "TOKENIZERS_PARALLELISM": "false", **extra}
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            if key not in extra:
                env.pop(key, None)
        return env

    def start(self, name: str, argv: list[str], **env: str) -> tuple[subprocess.Popen, Path]:
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, cwd=ROOT, env=self.env(**env), stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs.append(proc)
        return proc, log

    def pretrain_gang(self, name: str, args: list[str], world_size: int = 2, **env: str):
        """One plain process per rank with MASTER_* on 127.0.0.1, as the platform starts one per replica."""
        port = str(free_port())
        ranks = []
        for rank in range(world_size):
            ranks.append(self.start(f"{name}-rank{rank}", [sys.executable, "-m", "shipyard.workloads.pretrain", *args],
                                    RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK="0",
                                    MASTER_ADDR="127.0.0.1", MASTER_PORT=port, **env))
        return ranks

    def torchrun(self, name: str, args: list[str], nproc: int = 2, **env: str):
        argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nproc),
                "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
                "-m", "shipyard.workloads.pretrain", *args]
        return self.start(name, argv, **env)

    def marked_pids(self) -> list[int]:
        wanted = f"SHIPYARD_TEST_TOKEN={self.token}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if wanted in fh.read().split(b"\0"):
                        found.append(int(entry))
            except OSError:
                continue
        return found

    def kill_all(self) -> list[int]:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        leftovers = self.marked_pids()
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            proc.wait()
        # Killed grandchildren are reaped by init; poll until /proc forgets them (zombies keep no environ).
        wait_for(lambda: not self.marked_pids(), timeout=30, message="test processes to disappear")
        return leftovers


def wait_exit(proc: subprocess.Popen, log: Path, timeout: float = 180) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{log.name} still running after {timeout}s:\n{log.read_text()[-4000:]}") from None


def wait_progress(log: Path, step: int, proc: subprocess.Popen | None = None, timeout: float = 180) -> None:
    def reached():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{log.name} exited {proc.returncode} before step {step}:\n{log.read_text()[-4000:]}")
        losses = train_losses(log.read_text(errors="replace"))
        return losses and max(losses) >= step
    wait_for(reached, timeout=timeout, interval=0.05, message=f"{log.name} to reach step {step}")


@pytest.fixture
def launcher(tmp_path):
    instance = Launcher(tmp_path)
    try:
        yield instance
    finally:
        instance.kill_all()


@pytest.fixture(scope="module")
def module_launcher(tmp_path_factory):
    instance = Launcher(tmp_path_factory.mktemp("procs"))
    try:
        yield instance
    finally:
        instance.kill_all()


@pytest.fixture(scope="session")
def tokenizer_cache(tmp_path_factory):
    """Shared by every run in the session, so the tiny tokenizer is trained once (the cache is the feature)."""
    return tmp_path_factory.mktemp("tokenizer-cache")
