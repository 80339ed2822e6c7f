"""The batched state a decode step runs on: one KV cache holding every in-flight sequence, left-padded.

Why left padding: all rows then grow by one column per step, in lockstep, at the right edge, so a decode step
is a single forward of shape [batch, 1] over one `DynamicCache` (see `_GrowingCache`). A row's real tokens are
always a suffix of the columns; the 2D attention mask hides the padding columns and `position_ids` carry each row's
own positions (a padded row must still see positions 0, 1, 2, … for its real tokens). The model's causal mask
works on column indices, which is right because padding only ever sits to the left of a row's real tokens.

Membership changes only between steps:
  - join: newcomers are prefilled together (left-padded to their longest prompt), then concatenated onto the
    running batch after padding whichever side is shorter on the left;
  - leave: finished rows are dropped with an index_select, then columns that are padding in every remaining
    row are trimmed, so the cache is never wider than the longest live sequence.

Appending is amortised O(1): `DynamicLayer` concatenates, copying the whole cache every step (at 32 rows
that copy was ~12% of a 5M-param model's step, and it grows with length); `_GrowingLayer` writes into spare
columns of a larger buffer and hands the model views of the filled part. Whenever select/merge replace a
layer's tensors, the next append notices (the view is no longer the one it made) and re-buffers once.

Padding columns are zeroed after prefill: a fully masked query row can produce NaN in some attention kernels,
and 0 × NaN in the attention-weighted sum would leak NaN into real rows.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from transformers import DynamicCache, DynamicLayer
from transformers.cache_utils import Cache


class _GrowingLayer(DynamicLayer):
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        filled = self.keys.shape[-2] if self.keys.dim() == 4 else 0
        end = filled + key_states.shape[-2]
        buffers = getattr(self, "_buffers", None)
        # Re-buffer when there is no buffer yet, it is full, or select/merge replaced `keys` since our last view.
        if buffers is None or buffers[2] is not self.keys or end > buffers[0].shape[-2]:
            capacity = end + max(64, end // 2)
            kbuf = key_states.new_empty((*key_states.shape[:2], capacity, key_states.shape[-1]))
            vbuf = value_states.new_empty((*value_states.shape[:2], capacity, value_states.shape[-1]))
            if filled:
                kbuf[:, :, :filled] = self.keys
                vbuf[:, :, :filled] = self.values
            buffers = (kbuf, vbuf, None)
        kbuf, vbuf, _ = buffers
        kbuf[:, :, filled:end] = key_states
        vbuf[:, :, filled:end] = value_states
        self.keys, self.values = kbuf[:, :, :end], vbuf[:, :, :end]
        self._buffers = (kbuf, vbuf, self.keys)
        return self.keys, self.values


class _GrowingCache(DynamicCache):
    """A DynamicCache (so model code treats it as one) whose layers are `_GrowingLayer`s, created lazily."""

    def __init__(self) -> None:
        Cache.__init__(self, layer_class_to_replicate=_GrowingLayer)


class KVBatch:
    """Rows of a left-padded batch: cache [B, heads, L, dim] per layer, mask [B, L], next positions [B]."""

    def __init__(self, model: Any, device: torch.device):
        self.model = model
        self.device = device
        # `logits_to_keep=1` skips the vocabulary projection of every prompt position but the last.
        params = inspect.signature(model.forward).parameters
        self._keep_last = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
        # transformers 5 calls it `cache`; remote-code models written for 4.x still take `past_key_values`.
        self._cache_kw = "past_key_values" if "past_key_values" in params and "cache" not in params else "cache"
        self.cache: Any = None
        self.mask: torch.Tensor | None = None  # bool [B, L]
        self.positions: torch.Tensor | None = None  # long [B]: position id of each row's next token
        self.pending: torch.Tensor | None = None  # long [B]: the token each row feeds to the next step

    def __len__(self) -> int:
        return 0 if self.mask is None else self.mask.shape[0]

    @property
    def width(self) -> int:
        return 0 if self.mask is None else self.mask.shape[1]

    def _forward(self, input_ids: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor, cache: Any):
        out = self.model(input_ids=input_ids, attention_mask=mask.long(), position_ids=position_ids,
                         use_cache=True, **{self._cache_kw: cache}, **self._keep_last)
        return out.logits[:, -1, :]

    def prefill(self, prompts: list[list[int]]) -> tuple[torch.Tensor, "KVBatch"]:
        """Run the prompts as a new batch; return last-position logits [n, vocab] and the new batch state."""
        longest = max(len(p) for p in prompts)
        ids = torch.zeros(len(prompts), longest, dtype=torch.long)
        mask = torch.zeros(len(prompts), longest, dtype=torch.bool)
        for row, prompt in enumerate(prompts):
            ids[row, longest - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[row, longest - len(prompt):] = True
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.long().cumsum(dim=1) - 1).clamp_(min=0)
        part = KVBatch(self.model, self.device)
        part.cache = _GrowingCache()
        logits = self._forward(ids, mask, positions, part.cache)
        if not bool(mask.all()):
            keep = mask[:, None, :, None]
            for layer in part.cache.layers:
                layer.keys = layer.keys.masked_fill(~keep, 0)
                layer.values = layer.values.masked_fill(~keep, 0)
        part.mask = mask
        part.positions = positions[:, -1] + 1
        part.pending = torch.zeros(len(prompts), dtype=torch.long, device=self.device)
        return logits, part

    def decode(self) -> torch.Tensor:
        """One step for every row: feed `pending`, return logits [B, vocab]; the cache grows by one column."""
        assert self.mask is not None and self.positions is not None and self.pending is not None
        self.mask = torch.cat([self.mask, torch.ones(len(self), 1, dtype=torch.bool, device=self.device)], dim=1)
        logits = self._forward(self.pending.unsqueeze(1), self.mask, self.positions.unsqueeze(1), self.cache)
        self.positions = self.positions + 1
        return logits

    def set_pending(self, tokens: list[int]) -> None:
        self.pending = torch.tensor(tokens, dtype=torch.long, device=self.device)

    def select(self, rows: list[int]) -> None:
        """Keep only these rows (in this order), then trim columns that are padding everywhere."""
        if len(rows) == len(self) and rows == list(range(len(self))):
            return
        if not rows:
            self.cache = self.mask = self.positions = self.pending = None
            return
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        self.mask = self.mask.index_select(0, index)
        self.positions = self.positions.index_select(0, index)
        self.pending = self.pending.index_select(0, index)
        live = self.mask.any(dim=0).nonzero()
        first = int(live[0]) if len(live) else self.width
        if first:
            self.mask = self.mask[:, first:]
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, first:]
            layer.values = layer.values.index_select(0, index)[:, :, first:]

    def merge(self, other: "KVBatch") -> None:
        """Append other's rows after ours, left-padding the narrower batch so the columns line up."""
        if other.mask is None:
            return
        if self.mask is None:
            self.cache, self.mask = other.cache, other.mask
            self.positions, self.pending = other.positions, other.pending
            return
        width = max(self.width, other.width)

        def pad(t: torch.Tensor, dim_from_end: int, value: Any = 0) -> torch.Tensor:
            missing = width - t.shape[-dim_from_end]
            if not missing:
                return t
            spec = [0, 0] * (dim_from_end - 1) + [missing, 0]
            return torch.nn.functional.pad(t, spec, value=value)

        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([pad(mine.keys, 2), pad(theirs.keys, 2)], dim=0)
            mine.values = torch.cat([pad(mine.values, 2), pad(theirs.values, 2)], dim=0)
        self.mask = torch.cat([pad(self.mask, 1, False), pad(other.mask, 1, False)], dim=0)
        self.positions = torch.cat([self.positions, other.positions])
        self.pending = torch.cat([self.pending, other.pending])
