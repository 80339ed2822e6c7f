"""The bridge between the engine thread and the asyncio handlers.

Why batched delivery: the engine produces one output per running sequence per step. Waking the event loop
once per output (32 `call_soon_threadsafe` calls, each a write to the loop's self-pipe) would make the loop,
which shares the GIL with the engine, busier than necessary; instead the engine hands over a whole step's
outputs in one call and the loop spreads them over per-request queues.

A `Generation` is one HTTP request's view: the sequences it submitted (one per prompt), an asyncio queue
they all report to, and `abort()` for when the client goes away or the handler is cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the engine imports torch; handlers must stay importable before the model loads
    from .engine import Engine, Sequence, StepOutput
    from .sampling import SamplingParams


def make_sink(loop: asyncio.AbstractEventLoop):
    """The engine's sink: called on the engine thread, delivers on the event loop."""

    def deliver(items: list[tuple["Sequence", "StepOutput"]]) -> None:
        for seq, out in items:
            seq.handle.put_nowait((seq.index, out))

    def sink(items: list[tuple["Sequence", "StepOutput"]]) -> None:
        try:
            loop.call_soon_threadsafe(deliver, items)
        except RuntimeError:
            pass  # the loop is closed: the server is gone and nobody is waiting any more

    return sink


class Generation:
    def __init__(self, engine: "Engine", prompts: list[list[int]], params: list["SamplingParams"]):
        from .engine import Sequence  # cheap: the engine module is already imported once the model loaded

        self.engine = engine
        self.queue: asyncio.Queue = asyncio.Queue()
        self.sequences = [Sequence(prompt_ids=ids, params=p, handle=self.queue, index=i)
                          for i, (ids, p) in enumerate(zip(prompts, params))]
        self._open = len(self.sequences)

    def start(self) -> None:
        self.engine.submit(self.sequences)

    async def outputs(self) -> AsyncIterator[tuple[int, "StepOutput"]]:
        """(choice index, output) until every sequence has finished; aborts the rest if the consumer stops."""
        try:
            while self._open:
                index, out = await self.queue.get()
                if out.finished:
                    self._open -= 1
                yield index, out
        finally:
            if self._open:
                self.abort()

    def abort(self) -> None:
        for seq in self.sequences:
            if seq.finish_reason is None:
                self.engine.abort(seq)
