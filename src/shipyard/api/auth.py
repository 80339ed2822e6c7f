"""The bootstrap admin token: created once, kept as a 0600 file; who else may call is api/authz.py's business.

The server keeps only the token's sha256; the token itself lives in a 0600 file the CLI reads, so a leaked
daemon log or process listing never reveals it (authz.py compares in constant time). Nothing in this module may log,
echo or put the token into an error message.
"""

from __future__ import annotations

from pathlib import Path

from shipyard.secretfile import load_or_create
from shipyard.tokens import hash_token, new_admin_token, new_api_key

__all__ = ["hash_token", "load_or_create_admin_token", "new_api_key"]


def _read_token(path: Path) -> str:
    token = path.read_text(encoding="utf-8").strip()
    if not token:
        # An empty token would make the hash of "" a valid credential; refuse rather than guess.
        raise ValueError(f"{path} is empty; delete it to have a new admin token generated")
    return token


def load_or_create_admin_token(path: Path) -> str:
    """Return the admin token stored at `path`, creating it (mode 0600) on first use; a concurrent reader sees
    either no file or a complete one, and two racing creators agree on a single token (secretfile.py)."""
    return load_or_create(path, lambda: (new_admin_token() + "\n").encode(), _read_token)
