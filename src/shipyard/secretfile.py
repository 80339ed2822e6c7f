"""A secret kept in a file of its own, mode 0600, made on first use: the bootstrap admin token (api/auth.py), the
token HMAC key (store/identities.py) and, through that, the key that seals Secret values (store/secret_values.py).

Nothing here may log, echo or put the secret into an error message.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


def load_or_create(path: Path | str, new: Callable[[], bytes], read: Callable[[Path], T]) -> T:
    """`read(path)`, after writing `new()` there (mode 0600) if there was no file yet.

    The secret is written to a private temporary file, fsynced, then hard-linked into place, so a concurrent
    reader sees either no file or a complete one, and two racing creators agree on one secret: the loser
    reads the winner's. `read` checks what it reads (and raises FileNotFoundError when there is no file).
    """
    path = Path(path)
    try:
        return read(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(new())
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won the race: its secret is the one
    finally:
        tmp.unlink(missing_ok=True)
    return read(path)
