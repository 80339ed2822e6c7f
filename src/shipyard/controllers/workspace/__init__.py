"""Workspaces: Jupyter Lab and VS Code next to the project's volumes, suspended when idle."""

from .activity import IdeActivity
from .controller import WorkspaceController

__all__ = ["IdeActivity", "WorkspaceController"]
