"""The CLI's stored logins: one token per control plane (by its URL), in a 0600 JSON file under SHIPYARD_HOME.

`shipyard login` writes here after the server has confirmed the token (whoami); the client reads the token
for the URL it talks to when none is given (`--token`, SHIPYARD_TOKEN). The file is written whole to a
private temporary file and renamed into place, so a reader never sees half of it and it is never readable
by others, not even for a moment. Nothing here prints a token.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def load(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def token_for(path: Path, url: str) -> str | None:
    return load(path).get(url.rstrip("/"))


def store(path: Path, url: str, token: str | None) -> None:
    """Remember `token` for `url` (None: forget it)."""
    entries = load(path)
    if token is None:
        entries.pop(url.rstrip("/"), None)
    else:
        entries[url.rstrip("/")] = token
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(entries, fh, indent=1, sort_keys=True)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
