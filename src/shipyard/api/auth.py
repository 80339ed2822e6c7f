"""The bootstrap admin token: created once, kept as a 0600 file; who else may call is api/authz.py's business.

The server keeps only the token's sha256; the token itself lives in a 0600 file the CLI reads, so a leaked
daemon log or process listing never reveals it (authz.py compares in constant time). Nothing in this module may log,
echo or put the token into an error message.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from shipyard.tokens import hash_token, new_admin_token, new_api_key

__all__ = ["hash_token", "load_or_create_admin_token", "new_api_key"]


def _read_token(path: Path) -> str:
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        # An empty token would make the hash of "" a valid credential; refuse rather than guess.
        raise ValueError(f"{path} is empty; delete it to have a new admin token generated")
    return token


def load_or_create_admin_token(path: Path) -> str:
    """Return the admin token stored at `path`, creating it (mode 0600) on first use.

    The token is written to a private temporary file first and then hard-linked into place, so a concurrent
    reader sees either no file or a complete one, and two racing creators agree on a single token.
    """
    try:
        return _read_token(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    token = new_admin_token()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(token + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return _read_token(path)  # another process won the race: its token is the one
    finally:
        tmp.unlink(missing_ok=True)
    return token
