"""Continuous batching: one engine thread, one forward per step over every in-flight sequence.

Why a single thread: a model forward is the unit of work and batching is the whole point — N requests that
each ran their own forward on their own thread would fight for the same cores and finish no sooner than one
after another. Here every step does:

  1. admit waiting sequences (up to --max-batch-size rows and a prefill token budget), prefill them together,
     sample their first token and merge them into the running batch;
  2. one decode forward for the whole running batch, sample one token per row;
  3. detokenize, check stop conditions, hand the outputs of the whole step to `sink` in one call, and drop
     finished or aborted rows.

New requests therefore join between steps and finished ones leave between steps, without waiting for the
batch to drain. The engine knows nothing about HTTP or asyncio: `sink` receives `(sequence, output)` pairs
from this thread and is responsible for getting them to whoever waits (see handoff.py).
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .detokenizer import IncrementalDetokenizer
from .kvbatch import KVBatch
from .protocol import SamplingParams
from .sampling import RowState, sample

log = logging.getLogger("shipyard.serve.engine")


@dataclass
class StepOutput:
    """What one step produced for one sequence. `text` is the new, safe-to-send text (possibly empty)."""

    text: str
    completion_tokens: int
    prompt_tokens: int
    finish_reason: str | None = None  # "stop", "length", "abort" or "error"; None while running
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(eq=False)
class Sequence:
    prompt_ids: list[int]
    params: SamplingParams
    handle: Any = None  # opaque to the engine: where the sink delivers this sequence's outputs
    index: int = 0  # the choice index within its request
    id: int = 0
    row: RowState | None = None
    detok: IncrementalDetokenizer | None = None
    finish_reason: str | None = None
    aborted: bool = False
    final_sent: bool = False  # the finishing output reached the sink (so a failure must not send another)
    arrival: float = field(default_factory=time.monotonic)

    @property
    def output_ids(self) -> list[int]:
        return self.row.output_ids if self.row else []


Sink = Callable[[list[tuple[Sequence, StepOutput]]], None]


class Engine:
    def __init__(self, model: Any, tokenizer: Any, *, sink: Sink, max_batch_size: int = 32,
                 max_prefill_tokens: int = 4096, eos_token_ids: tuple[int, ...] = (), seed: int | None = None,
                 on_step: Callable[[int], None] | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.sink = sink
        self.max_batch_size = max_batch_size
        self.max_prefill_tokens = max_prefill_tokens
        self.eos_token_ids = tuple(eos_token_ids)
        self.on_step = on_step or (lambda batch_size: None)
        self.device = next(model.parameters()).device
        self._rng = random.Random(seed)
        self._ids = itertools.count(1)
        self._waiting: deque[Sequence] = deque()
        self._running: list[Sequence] = []  # row i of self._batch is self._running[i]
        self._batch = KVBatch(model, self.device)
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ---- API for other threads ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="serve-engine", daemon=True)
        self._thread.start()

    def submit(self, seqs: list[Sequence]) -> None:
        with self._cond:
            if self._stopping:
                raise RuntimeError("the engine is shutting down")
            for seq in seqs:
                seq.id = next(self._ids)
                self._waiting.append(seq)
            self._cond.notify()

    def abort(self, seq: Sequence) -> None:
        """Ask for a sequence to be dropped at the next step boundary (its handler went away)."""
        seq.aborted = True
        with self._cond:
            self._cond.notify()

    def stop(self, timeout: float | None = None) -> None:
        """Abort whatever is still in flight and end the engine thread."""
        with self._cond:
            self._stopping = True
            for seq in itertools.chain(self._waiting, self._running):
                seq.aborted = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def num_running(self) -> int:
        return len(self._running)

    # ---- the engine thread ----------------------------------------------------------------------------
    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._waiting and not self._running and not self._stopping:
                        self._cond.wait()
                    if self._stopping and not self._waiting and not self._running:
                        return
                    admitted = self._admit()
                try:
                    self._step(admitted)
                except Exception as exc:  # a failed forward must not kill the server: fail these requests
                    log.exception("engine step failed")
                    self._fail_all(admitted, f"{type(exc).__name__}: {exc}")

    def _admit(self) -> list[Sequence]:
        """Waiting sequences that fit: free rows, and a padded prefill under the token budget (at least one)."""
        admitted: list[Sequence] = []
        longest = 0
        while self._waiting and len(self._running) + len(admitted) < self.max_batch_size:
            seq = self._waiting[0]
            if seq.aborted:
                self._waiting.popleft()
                self._emit([(seq, self._finish(seq, "abort"))])
                continue
            padded = max(longest, len(seq.prompt_ids)) * (len(admitted) + 1)
            if admitted and padded > self.max_prefill_tokens:
                break
            longest = max(longest, len(seq.prompt_ids))
            admitted.append(self._waiting.popleft())
        return admitted

    def _step(self, admitted: list[Sequence]) -> None:
        outputs: list[tuple[Sequence, StepOutput]] = []
        self._drop_aborted(outputs)
        if admitted:
            for seq in admitted:
                seq.row = RowState.create(seq.params, self.eos_token_ids, self._rng)
                seq.detok = IncrementalDetokenizer(self.tokenizer, seq.params.stop, seq.params.skip_special_tokens)
            logits, part = self._batch.prefill([s.prompt_ids for s in admitted])
            tokens = sample(logits, [s.row for s in admitted])
            keep = [i for i, (s, t) in enumerate(zip(admitted, tokens)) if self._advance(s, t, outputs)]
            part.select(keep)
            if keep:
                part.set_pending([tokens[i] for i in keep])
            self._batch.merge(part)
            self._running.extend(admitted[i] for i in keep)
            self._emit(outputs)  # first tokens go out now, not after the decode step below: lower TTFT
            outputs = []
        if self._running:
            self.on_step(len(self._running))
            logits = self._batch.decode()
            tokens = sample(logits, [s.row for s in self._running])
            keep = [i for i, (s, t) in enumerate(zip(self._running, tokens)) if self._advance(s, t, outputs)]
            self._batch.select(keep)
            if keep:
                self._batch.set_pending([tokens[i] for i in keep])
            self._running = [self._running[i] for i in keep]
        self._emit(outputs)

    def _advance(self, seq: Sequence, token: int, outputs: list) -> bool:
        """Record one sampled token; queue its output; return whether the sequence keeps running."""
        params, row = seq.params, seq.row
        row.output_ids.append(token)
        reason = None
        if token in params.stop_token_ids or (token in self.eos_token_ids and not params.ignore_eos):
            reason = "stop"  # the EOS token counts as a completion token (as in vLLM) but adds no text
            text = seq.detok.flush()
        else:
            text = seq.detok.add(token)
            if seq.detok.stopped:
                reason = "stop"
        if reason is None and len(row.output_ids) >= params.max_tokens:
            reason = "length"
            text += seq.detok.flush()
        if seq.aborted and reason is None:
            reason = "abort"
        if reason is not None:
            seq.finish_reason = reason
        outputs.append((seq, StepOutput(text, len(row.output_ids), len(seq.prompt_ids), reason)))
        return reason is None

    def _drop_aborted(self, outputs: list) -> None:
        keep = [i for i, s in enumerate(self._running) if not s.aborted]
        if len(keep) == len(self._running):
            return
        for seq in self._running:
            if seq.aborted:
                outputs.append((seq, self._finish(seq, "abort")))
        self._batch.select(keep)
        self._running = [self._running[i] for i in keep]

    def _finish(self, seq: Sequence, reason: str, error: str | None = None) -> StepOutput:
        seq.finish_reason = reason
        return StepOutput("", len(seq.output_ids), len(seq.prompt_ids), reason, error)

    def _fail_all(self, admitted: list[Sequence], message: str) -> None:
        failed = {s.id: s for s in itertools.chain(admitted, self._running) if not s.final_sent}
        self._running = []
        self._batch = KVBatch(self.model, self.device)
        self._emit([(s, self._finish(s, "error", message)) for s in failed.values()])

    def _emit(self, outputs: list[tuple[Sequence, StepOutput]]) -> None:
        if outputs:
            for seq, out in outputs:
                seq.final_sent = seq.final_sent or out.finished
            try:
                self.sink(outputs)
            except Exception:  # a broken consumer must not stop every other request
                log.exception("delivering outputs failed")
