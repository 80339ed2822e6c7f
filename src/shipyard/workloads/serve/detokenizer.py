"""Token ids -> text deltas, one token at a time, with stop strings cut out.

Why not decode everything each step: that is O(n) per token and O(n²) per request. Like vLLM, we decode only a
small window — the tokens since the previous emitted boundary — and take the text the newest tokens add.
Decoding with a little left context matters: byte-level and sentencepiece tokenizers render a token
differently at the start of a string (leading spaces), and a multi-byte character can span tokens, in which
case the window ends in U+FFFD and we wait for the next token before emitting anything.

Stop strings: the text is never sent past a point that could still turn out to be the start of a stop string,
so a client never receives a fragment of "###" that is then retracted. When a stop string appears, the text
ends just before it (OpenAI does not return the stop text).
"""

from __future__ import annotations

from typing import Any


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, stop: tuple[str, ...] = (), skip_special_tokens: bool = True):
        # The Rust tokenizer's decode skips the Python wrapper's per-call overhead (the engine calls this for
        # every row of every step); slow tokenizers fall back to `tokenizer.decode`.
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self._decode = ((lambda ids: backend.decode(ids, skip_special_tokens=skip_special_tokens)) if backend
                        else (lambda ids: tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)))
        self.stop = tuple(s for s in stop if s)
        self._longest_stop = max((len(s) for s in self.stop), default=0)
        self.ids: list[int] = []
        self.text = ""  # all text decoded so far (stop text removed once found)
        self.sent = 0  # how much of `text` has been handed out
        self._prefix_offset = 0
        self._read_offset = 0
        self.stopped = False

    def add(self, token_id: int) -> str:
        """Append one token; return the text that is now safe to send (may be empty)."""
        self.ids.append(token_id)
        new_text = self._decode(self.ids[self._prefix_offset:])
        prefix_text = self._decode(self.ids[self._prefix_offset:self._read_offset])
        # Nothing new yet: a skipped special token, or an incomplete UTF-8 sequence awaiting its next bytes.
        if len(new_text) <= len(prefix_text) or new_text.endswith("\ufffd"):
            return ""
        delta = new_text[len(prefix_text):]
        self._prefix_offset, self._read_offset = self._read_offset, len(self.ids)
        before = len(self.text)
        self.text += delta
        return self._release(before)

    def _release(self, before: int) -> str:
        if self.stop:
            search_from = max(0, before - self._longest_stop + 1)
            hits = [i for i in (self.text.find(s, search_from) for s in self.stop) if i >= 0]
            if hits:
                self.text = self.text[:min(hits)]
                self.stopped = True
                return self.flush()
            safe = len(self.text) - self._held_back()
        else:
            safe = len(self.text)
        out = self.text[self.sent:safe]
        self.sent = max(self.sent, safe)
        return out

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of some stop string."""
        tail = self.text[-self._longest_stop:]
        for n in range(min(len(tail), self._longest_stop - 1), 0, -1):
            if any(s.startswith(tail[-n:]) for s in self.stop):
                return n
        return 0

    def flush(self) -> str:
        """Everything not yet sent; called when the sequence finishes for any reason."""
        if not self.stopped and self._read_offset < len(self.ids):
            # Bytes still waiting for the rest of a character: send what they decode to rather than lose them.
            tail = self._decode(self.ids[self._prefix_offset:])
            head = self._decode(self.ids[self._prefix_offset:self._read_offset])
            self.text += tail[len(head):]
            self._read_offset = len(self.ids)
        out = self.text[self.sent:]
        self.sent = len(self.text)
        return out
