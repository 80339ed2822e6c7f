"""The control plane's REST API: a FastAPI app over a Store (and optionally a LogSource).

The API validates, authenticates and translates; it never reconciles and never picks a store or runtime
(the composition root, `shipyard.server`, does). It imports the Store *protocol* only, so the same app serves
SQLite locally and custom resources on a cluster.
"""

from .app import create_app
from .auth import hash_token, load_or_create_admin_token
from .logs import LogOptions, LogSource

__all__ = ["LogOptions", "LogSource", "create_app", "hash_token", "load_or_create_admin_token"]
