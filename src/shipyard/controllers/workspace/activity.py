"""What the Workspace controller asks of an IDE: when was it last used (a protocol owned by the controller).

Requests through the gateway are one sign of use; a kernel busy with a long cell, or an editor connected
and typing, are others the gateway cannot see. The composition root answers over HTTP (shipyard.ide_activity);
controllers never make network calls themselves.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol


class IdeActivity(Protocol):
    def last_activity(self, ide: str, host: str, port: int, base_path: str, token: str) -> datetime | None:
        """When the IDE at host:port (served under base_path) was last active; now if it is busy; None when it
        cannot tell (not answering yet). Must return within a couple of seconds."""
