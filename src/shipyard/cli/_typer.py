"""`typer`, imported on first use: the verbs' modules say `from . import _typer as typer`.

Why: importing typer costs ~90 ms of CPU, more than everything else a `shipyard get` does, and the common
verbs run without it (cli/fast.py). Their signatures still carry `typer.Option(...)` annotations, but under
`from __future__ import annotations` those are strings until typer itself evaluates them (inspect.signature
with eval_str, typing.get_type_hints), and by then typer is loaded anyway: the attribute lookup below hands
over the real object. Code that runs on the fast path must not touch any attribute of this module.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:  # PEP 562: only called for names not defined here, i.e. all of typer's
    import typer

    return getattr(typer, name)
