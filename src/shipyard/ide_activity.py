"""The IdeActivity the composition roots give the Workspace controller: ask the IDE itself, over HTTP.

Jupyter: its kernels (`GET {base}api/kernels`, authenticated with the workspace token): a busy kernel is
activity now, otherwise the latest kernel activity. code-server: `GET /healthz`, whose `lastHeartbeat` moves
while an editor is connected and used. Any failure means "cannot tell", never "idle".
"""

from __future__ import annotations

from datetime import datetime, timezone

import httpx


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class HttpIdeActivity:
    def __init__(self, timeout: float = 2.0):
        self._timeout = timeout

    def last_activity(self, ide: str, host: str, port: int, base_path: str, token: str) -> datetime | None:
        try:
            if ide == "vscode":
                answer = httpx.get(f"http://{host}:{port}/healthz", timeout=self._timeout, trust_env=False)
                beat = answer.json().get("lastHeartbeat") if answer.status_code == 200 else None
                return datetime.fromtimestamp(beat / 1000, timezone.utc) if beat else None
            answer = httpx.get(f"http://{host}:{port}{base_path}api/kernels", timeout=self._timeout,
                               headers={"Authorization": f"token {token}"}, trust_env=False)
            if answer.status_code != 200:
                return None
            kernels = answer.json()
        except (httpx.HTTPError, ValueError, TypeError):
            return None
        if any(k.get("execution_state") == "busy" for k in kernels):
            return datetime.now(timezone.utc)
        times = [_parse(k["last_activity"]) for k in kernels if k.get("last_activity")]
        return max(times) if times else None
