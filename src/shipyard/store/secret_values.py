"""Secret values at rest in the SQLite store: sealed with AES-256-GCM under a key file beside the database.

Why apart from the object's body: the body is what the API answers (lists splice it verbatim, see
`SQLiteStore.list_page`) and what watch events carry, so it is the redacted wire form (`Secret.to_wire`);
the values live only here, as ciphertext, in a table of their own keyed by the object's uid. The uid is also
the ciphertext's associated data, so a sealed row copied onto another object does not open.

Why AES-GCM with a key file: authenticated encryption from `cryptography` (already a dependency), and a key
that never enters the database, so a copied `shipyard.db` (a backup, a bug report) holds no credential. The
key file (`secret.key`, 32 random bytes, mode 0600, created atomically by `secretfile.load_or_create`) is what must
be protected, as the admin token is; losing it makes stored Secrets unreadable (apply them again).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Column, LargeBinary, MetaData, String, Table

from shipyard.secretfile import load_or_create

KEY_FILE = "secret.key"
_KEY_BYTES = 32  # AES-256
_NONCE_BYTES = 12
_VERSION = b"\x01"  # a format byte, so the scheme can change without guessing what an old row is

# Registered on the store's own MetaData by `define_table`, so `create_all` makes it with the others.
SELECT_SEALED = "SELECT sealed FROM secret_values WHERE uid = ?"
UPSERT_SEALED = "INSERT OR REPLACE INTO secret_values (uid, sealed) VALUES (?, ?)"
DELETE_SEALED = "DELETE FROM secret_values WHERE uid = ?"


def define_table(metadata: MetaData) -> Table:
    return Table("secret_values", metadata,
                 Column("uid", String, primary_key=True),
                 Column("sealed", LargeBinary, nullable=False))


def _read_key(path: Path) -> bytes:
    key = path.read_bytes()
    if len(key) != _KEY_BYTES:
        # Refuse rather than guess (AES-256 takes 32 bytes); the message names the file, never its bytes.
        raise ValueError(f"{path} holds {len(key)} bytes, expected {_KEY_BYTES}; replacing it makes every "
                         "stored Secret unreadable (apply them again)")
    return key


class SecretCipher:
    def __init__(self, key: bytes):
        self._aead = AESGCM(key)

    @classmethod
    def beside(cls, database: Path | str) -> "SecretCipher":
        """The cipher of the database at `database` (":memory:": a key of this process only)."""
        if str(database) == ":memory:":
            return cls(AESGCM.generate_key(bit_length=256))
        return cls(load_or_create(Path(database).with_name(KEY_FILE), lambda: os.urandom(_KEY_BYTES), _read_key))

    def seal(self, uid: str, values: dict[str, str]) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        plain = json.dumps(values, sort_keys=True, separators=(",", ":")).encode()
        return _VERSION + nonce + self._aead.encrypt(nonce, plain, uid.encode())

    def open(self, uid: str, sealed: bytes) -> dict[str, str]:
        if sealed[:1] != _VERSION:
            raise ValueError("sealed secret values have an unknown format")
        nonce, body = sealed[1:1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES:]
        try:
            plain = self._aead.decrypt(nonce, body, uid.encode())
        except InvalidTag:
            # The message names the file, never the data: whoever reads it must know which key is wrong.
            raise ValueError(f"the values of Secret uid {uid} do not decrypt with {KEY_FILE} "
                             "(a different key file, or a damaged row); apply the Secret again") from None
        values = json.loads(plain)
        return {str(k): str(v) for k, v in values.items()}
