"""Where an instance keeps its state. Everything lives under SHIPYARD_HOME (default ~/.shipyard), so tests and
users can run isolated instances side by side by pointing it elsewhere."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_PORT = 7433
DEFAULT_GATEWAY_PORT = 7480


@dataclass(frozen=True)
class Paths:
    home: Path

    @property
    def database(self) -> Path:
        return self.home / "shipyard.db"

    @property
    def admin_token(self) -> Path:
        """The admin API token in plain text, mode 0600; the CLI reads it, the server keeps only its hash."""
        return self.home / "admin-token"

    @property
    def daemon_info(self) -> Path:
        """JSON {pid, url, started} written by a running daemon once it listens."""
        return self.home / "daemon.json"

    @property
    def daemon_lock(self) -> Path:
        return self.home / "daemon.lock"

    @property
    def daemon_log(self) -> Path:
        return self.home / "daemon.log"

    @property
    def runtime(self) -> Path:
        return self.home / "runtime"

    @property
    def volumes(self) -> Path:
        return self.home / "volumes"

    @property
    def logs(self) -> Path:
        return self.home / "logs"


def shipyard_home() -> Path:
    return Path(os.environ.get("SHIPYARD_HOME") or Path.home() / ".shipyard").expanduser().resolve()


def paths(home: Path | None = None) -> Paths:
    return Paths(home or shipyard_home())


def ensure_home(p: Paths) -> None:
    p.home.mkdir(parents=True, exist_ok=True)
    os.chmod(p.home, 0o700)
