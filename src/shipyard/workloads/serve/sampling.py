"""Choosing the next token for every row of a batch in one pass.

Why one pass: the engine's step is one forward for the whole batch, and looping over rows in Python for the
filtering would cost more than the forward for small models. Only the random draw is per row, because each
request owns its generator: a request's `seed` then reproduces its output no matter which other requests
happen to share its batch (up to the last-bit float differences batching can cause).

The draw is inverse-CDF sampling (one uniform number from the request's generator, searched in the
cumulative distribution of the filtered, sorted probabilities) rather than `torch.multinomial`, whose
generator argument applies to a whole batch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from .protocol import SamplingParams


@dataclass
class RowState:
    """What sampling needs to know about one sequence: its settings, generator and the tokens so far."""

    params: SamplingParams
    output_ids: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None
    banned_until_min: tuple[int, ...] = ()  # EOS + stop ids, masked while len(output_ids) < min_tokens

    @classmethod
    def create(cls, params: SamplingParams, eos_ids: tuple[int, ...], rng: random.Random) -> "RowState":
        generator = None
        if not params.greedy:
            generator = torch.Generator(device="cpu")
            # Without a seed, draw one from the server's RNG so that `--seed` makes a whole run reproducible.
            generator.manual_seed(params.seed if params.seed is not None else rng.getrandbits(63))
        banned = tuple(params.stop_token_ids) + (() if params.ignore_eos else eos_ids)
        return cls(params=params, generator=generator, banned_until_min=banned)


def _apply_penalties(logits: torch.Tensor, rows: list[RowState]) -> None:
    """OpenAI's presence/frequency penalties and min_tokens, in place, only on the rows that ask for them."""
    vocab = logits.shape[-1]
    for i, row in enumerate(rows):
        p = row.params
        if (p.presence_penalty or p.frequency_penalty) and row.output_ids:
            ids = torch.tensor(row.output_ids, device=logits.device)
            counts = torch.bincount(ids, minlength=vocab)[:vocab].to(logits.dtype)
            logits[i] -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(logits.dtype)
        if len(row.output_ids) < p.min_tokens and row.banned_until_min:
            banned = [t for t in row.banned_until_min if 0 <= t < vocab]
            logits[i, banned] = float("-inf")


def sample(logits: torch.Tensor, rows: list[RowState]) -> list[int]:
    """Next token per row. `logits` is [batch, vocab] for the last position; it may be modified in place."""
    logits = logits.float()
    if any(r.params.presence_penalty or r.params.frequency_penalty or r.params.min_tokens for r in rows):
        _apply_penalties(logits, rows)
    chosen = torch.empty(len(rows), dtype=torch.long, device=logits.device)
    greedy = [i for i, r in enumerate(rows) if r.params.greedy]
    sampled = [i for i, r in enumerate(rows) if not r.params.greedy]
    if greedy:
        index = torch.tensor(greedy, device=logits.device)
        chosen[index] = logits.index_select(0, index).argmax(dim=-1)
    if sampled:
        index = torch.tensor(sampled, device=logits.device)
        chosen[index] = _sample_rows(logits.index_select(0, index), [rows[i] for i in sampled])
    return chosen.tolist()


def _sample_rows(logits: torch.Tensor, rows: list[RowState]) -> torch.Tensor:
    device, vocab = logits.device, logits.shape[-1]
    temperature = torch.tensor([r.params.temperature for r in rows], device=device).unsqueeze(1)
    sorted_logits, sorted_ids = torch.sort(logits / temperature, dim=-1, descending=True)
    ranks = torch.arange(vocab, device=device).unsqueeze(0)
    top_k = torch.tensor([r.params.top_k if r.params.top_k > 0 else vocab for r in rows], device=device)
    sorted_logits = sorted_logits.masked_fill(ranks >= top_k.unsqueeze(1), float("-inf"))
    probs = torch.softmax(sorted_logits, dim=-1)
    # top_p = 1 must keep every token even when float rounding pushes the running sum to 1 early.
    top_p = torch.tensor([r.params.top_p if r.params.top_p < 1 else 2.0 for r in rows], device=device).unsqueeze(1)
    cumulative = probs.cumsum(dim=-1)
    # Drop a token once the mass before it already reaches top_p; the most likely token always survives.
    probs = probs.masked_fill((cumulative - probs) >= top_p, 0.0)
    cumulative = probs.cumsum(dim=-1)
    uniform = torch.cat([torch.rand(1, generator=r.generator) for r in rows]).to(device)
    target = (uniform * cumulative[:, -1]).unsqueeze(1)
    position = torch.searchsorted(cumulative, target).clamp_(max=vocab - 1)
    return sorted_ids.gather(1, position).squeeze(1)
