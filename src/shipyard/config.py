"""Where an instance keeps its state. Everything lives under SHIPYARD_HOME (default ~/.shipyard), so tests and
users can run isolated instances side by side by pointing it elsewhere."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

DEFAULT_PORT = 7433
DEFAULT_GATEWAY_PORT = 7480


class Paths(NamedTuple):  # not a dataclass: the CLI imports this, and dataclasses costs it ~20 ms (inspect)
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

    @property
    def cli_config(self) -> Path:
        """JSON settings of the CLI: the current project (`shipyard project use`)."""
        return self.home / "cli.json"

    @property
    def credentials(self) -> Path:
        """JSON {server URL: token} that `shipyard login` writes, mode 0600 (shipyard/credentials.py)."""
        return self.home / "credentials.json"


def shipyard_home() -> Path:
    return Path(os.environ.get("SHIPYARD_HOME") or Path.home() / ".shipyard").expanduser().resolve()


def paths(home: Path | None = None) -> Paths:
    return Paths(home or shipyard_home())


def ensure_home(p: Paths) -> None:
    p.home.mkdir(parents=True, exist_ok=True)
    os.chmod(p.home, 0o700)


DEFAULT_LOG_MAX_BYTES = 50 << 20
DEFAULT_LOG_MAX_FILES = 2
_SIZE_UNITS = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}


def log_limits(prefix: str) -> tuple[int, int]:
    """(bytes a file, files kept) of a size-rotated log, from PREFIX_MAX_BYTES (e.g. `52428800`, `50Mi`) and
    PREFIX_MAX_FILES (the current file included, at least 2), as the kubelet's containerLogMaxSize and
    containerLogMaxFiles. ValueError (one line) for a value that is not one."""
    raw_bytes = os.environ.get(f"{prefix}_MAX_BYTES", "").strip()
    raw_files = os.environ.get(f"{prefix}_MAX_FILES", "").strip()
    max_bytes, max_files = DEFAULT_LOG_MAX_BYTES, DEFAULT_LOG_MAX_FILES
    if raw_bytes:
        number, unit = raw_bytes.rstrip("KMGi"), raw_bytes[len(raw_bytes.rstrip("KMGi")):]
        if not number.isdigit() or unit not in _SIZE_UNITS or int(number) * _SIZE_UNITS[unit] < 1:
            raise ValueError(f"{prefix}_MAX_BYTES={raw_bytes!r} is not a size in bytes (e.g. 52428800 or 50Mi)")
        max_bytes = int(number) * _SIZE_UNITS[unit]
    if raw_files:
        if not raw_files.isdigit() or int(raw_files) < 2:
            raise ValueError(f"{prefix}_MAX_FILES={raw_files!r} must be a whole number of at least 2")
        max_files = int(raw_files)
    return max_bytes, max_files
