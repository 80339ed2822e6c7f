"""Label selectors as kubectl writes them (`-l`): `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a)`,
comma-separated, all terms must hold. Pure and pydantic-free: the CLI checks a selector before sending it, and
the API filters lists and watches with the same parser, so both refuse the same text with the same words.
"""

from __future__ import annotations

import re
from typing import Mapping, NamedTuple

# A label key: an optional DNS-subdomain prefix and a name of up to 63 characters (Kubernetes' rule). Patterns
# as text, compiled (and cached) by `re` on first use: importing this module is on every CLI call's path.
_KEY = r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
_SET = r"^\s*(?P<key>[^\s!=(),]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)\s*$"


# NamedTuples rather than dataclasses: this is on every CLI call, and dataclasses imports inspect (~20 ms).
class Requirement(NamedTuple):
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op in ("=", "in"):
            return self.key in labels and labels[self.key] in self.values
        return labels.get(self.key) not in self.values  # != and notin hold when the label is absent, as kubectl

    def text(self) -> str:
        if self.op in ("exists", "!exists"):
            return ("!" if self.op == "!exists" else "") + self.key
        if self.op in ("=", "!="):
            return f"{self.key}{self.op}{self.values[0]}"
        return f"{self.key} {self.op} ({','.join(self.values)})"


class Selector(NamedTuple):
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        return all(r.matches(labels or {}) for r in self.requirements)

    def __bool__(self) -> bool:
        return bool(self.requirements)

    def text(self) -> str:
        """The selector as kubectl writes it (what an API server's labelSelector parameter reads)."""
        return ",".join(r.text() for r in self.requirements)

    @classmethod
    def equal(cls, labels: Mapping[str, str]) -> Selector:
        """Every label equal to its value (an ownerless `matchLabels`)."""
        return cls(tuple(Requirement(k, "=", (v,)) for k, v in labels.items()))


def _split_terms(text: str) -> list[str]:
    """Split on commas outside the parentheses of `in (a,b)`."""
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _key(key: str, term: str) -> str:
    if not re.match(_KEY, key):
        raise ValueError(f"label selector {term.strip()!r}: {key!r} is not a valid label key")
    return key


def _value(value: str, term: str) -> str:
    if not re.match(_VALUE, value) or len(value) > 63:
        raise ValueError(f"label selector {term.strip()!r}: {value!r} is not a valid label value")
    return value


def parse_selector(text: str | None) -> Selector:
    """Parse a kubectl label selector; ValueError (one line naming the bad term) if it is malformed."""
    if text is None or not text.strip():
        return Selector()
    requirements: list[Requirement] = []
    for term in _split_terms(text):
        raw = term.strip()
        if not raw:
            raise ValueError(f"label selector {text!r}: empty term")
        if match := re.match(_SET, raw):
            values = tuple(_value(v.strip(), raw) for v in match["values"].split(","))
            requirements.append(Requirement(_key(match["key"], raw), match["op"], values))
            continue
        for op, name in (("!=", "!="), ("==", "="), ("=", "=")):
            if op in raw:
                key, _, value = raw.partition(op)
                requirements.append(Requirement(_key(key.strip(), raw), name, (_value(value.strip(), raw),)))
                break
        else:
            if raw.startswith("!"):
                requirements.append(Requirement(_key(raw[1:].strip(), raw), "!exists"))
            else:
                requirements.append(Requirement(_key(raw, raw), "exists"))
    return Selector(tuple(requirements))
