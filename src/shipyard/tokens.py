"""Token formats and hashing shared by the API (admin token, key routes) and controllers (keys they create).

Tokens are 256-bit random strings with a recognisable prefix (secret scanners and people can tell what leaked);
only their sha256 is ever stored. A fast hash is right for random tokens: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "sy_"
API_KEY_PREFIX = "sy_key_"  # a project's gateway key, as opposed to the admin token
HINT_CHARS = 12  # the prefix and five random characters: enough to tell keys apart, useless to an attacker


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_admin_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)
