"""Secret → one native v1 Secret of the same name, which workloads reference by `secretKeyRef`.

The values are base64 `data` (as the API server stores them, and as both runtimes read them), not
`stringData`: `data` is what a server-side apply keeps and what a `get` returns, so re-applying the same
object changes nothing. This is the only compiled object that holds credentials: the local runtime keeps it
in a 0600 file, a cluster in etcd (as it keeps every Secret).
"""

from __future__ import annotations

import base64
from typing import Any

from shipyard.resources import Secret

from .common import object_meta


def native_secret(secret: Secret) -> dict[str, Any]:
    data = {key: base64.b64encode(value.encode()).decode() for key, value in sorted(secret.spec.string_data.items())}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": object_meta(secret, secret.metadata.name),
        "type": secret.spec.type,
        "data": data,
    }


def compile_secret(secret: Secret) -> list[dict[str, Any]]:
    return [native_secret(secret)]
