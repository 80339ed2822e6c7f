"""A tiny servable model built offline, and a real `serve` process to test against.

The model is what the pretrain workload saves, only smaller and untrained: a byte-level BPE trained in well
under a second on a few stdlib sources, wrapped as a PreTrainedTokenizerFast with eos/pad and a chat template
(with the `{% generation %}` markers and `raise_exception` our pretrain tokenizer uses), and a random-init
GPT2LMHeadModel. Its weights are initialised wide (initializer_range 0.3) so that greedy decoding wanders
over the vocabulary instead of repeating one token, which would make "batched equals single" vacuous.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
from shipyard.workloads.tiny import CHAT_TEMPLATE, EOT, build_tiny_model  # noqa: F401 (re-exported)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """`python -m shipyard.workloads.serve` on 127.0.0.1, its output in a log file (a pipe could fill up)."""

    def __init__(self, model: Path, log: Path, *args: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
                    **(env or {})}
        full_env.pop("SHIPYARD_API_KEY", None)
        full_env.pop("VLLM_API_KEY", None)
        with open(log, "wb") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shipyard.workloads.serve", str(model), "--host", "127.0.0.1",
                 "--port", str(self.port), "--uvicorn-log-level", "warning", *args],
                cwd=ROOT, env=full_env, stdout=fh, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def health(self) -> int | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"serve exited with {self.proc.returncode}:\n{self.log()}")
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code
        except httpx.TransportError:
            return None

    def wait_status(self, status: int, timeout: float = 90) -> None:
        wait_for(lambda: self.health() == status, timeout=timeout, message=f"/health {status}\n{self.log()}")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
