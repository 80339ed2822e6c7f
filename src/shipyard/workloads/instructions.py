"""Instruction data for the finetune workload, built offline from the names the standard library defines.

Each item is one public top-level function, class or ALL_CAPS constant of a public stdlib module, found by
parsing the module's source with `ast` (nothing is imported, so nothing runs), from the same files, in the same
deterministic order, as the pretraining corpus (`corpus.stdlib_documents`). An item becomes up to three
questions, each answerable from its own prompt:

    Is `email.mime.text.MIMEText` a class, a function or a constant?   ->  class   (PEP 8 naming conventions)
    Which module defines `email.mime.text.MIMEText`?                     ->  email.mime.text   (extraction)
    What is the name of `email.mime.text.MIMEText` without its module?   ->  MIMEText          (extraction)

The kind comes from the source (what the name really is); the naming conventions give it away in ~95% of
cases, which is the skill a model has to pick up. Extraction needs copying spans out of the prompt (induction
heads), which a 2-layer model pretrained for a few minutes on a CPU does not have and a short LoRA run does not
build: on such models only `kind` moves, bigger ones get headroom from the other two.

Exact match on held-out items therefore measures skill, not recall: the split hashes the *module*, so the
held-out side shares no item, and no module, with the training side, and like the corpus split it depends on
names only, so an item stays on the same side whatever else is selected.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
from dataclasses import dataclass
from typing import Callable

from shipyard.workloads import corpus


@dataclass(frozen=True)
class StdlibObject:
    module: str  # "email.mime.text"
    name: str  # "MIMEText"
    kind: str  # "function", "class" or "constant"

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True)
class Example:
    id: str  # unique within a task: "<question kind>:<qualified name>"
    item: str  # the qualified name the question is about: what "no shared items" is checked on
    group: str  # what the train/held-out split hashes: the module
    prompt: str
    answer: str

    @property
    def question(self) -> str:
        """The kind of question (a key of QUESTIONS)."""
        return self.id.split(":", 1)[0]

    def messages(self, with_answer: bool = True) -> list[dict[str, str]]:
        chat = [{"role": "user", "content": self.prompt}]
        return chat + [{"role": "assistant", "content": self.answer}] if with_answer else chat


def _module_name(relpath: str) -> str | None:
    """"email/mime/text.py" -> "email.mime.text"; None for private modules, packages' __main__, non-.py."""
    if not relpath.endswith(".py"):
        return None
    parts = relpath[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    if not parts or parts[-1] == "__main__" or any(p.startswith("_") or not p.isidentifier() for p in parts):
        return None
    return ".".join(parts)


_CONSTANT = re.compile(r"^[A-Z][A-Z0-9_]*[A-Z0-9]$")  # ALL_CAPS, at least two characters
_NOT_CONSTANTS = {"TypeVar", "ParamSpec", "TypeVarTuple", "NewType"}  # `T = TypeVar("T")` is not a constant


def _top_level_names(tree: ast.Module):
    """(name, kind) of the public functions, classes and ALL_CAPS constants a module defines at top level."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name, "class" if isinstance(node, ast.ClassDef) else "function"
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            call = node.value.func if isinstance(node.value, ast.Call) else None
            if isinstance(call, (ast.Name, ast.Attribute)) and getattr(call, "id", getattr(call, "attr", "")) \
                    in _NOT_CONSTANTS:
                continue
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target]):
                if isinstance(target, ast.Name) and _CONSTANT.match(target.id):
                    yield target.id, "constant"


def stdlib_objects(stdlib_root: str | None = None) -> list[StdlibObject]:
    """Public top-level functions, classes and constants of public stdlib modules, sorted, each name once."""
    return list(_stdlib_objects(stdlib_root))


@functools.lru_cache(maxsize=4)  # parsing the whole standard library takes a second or two
def _stdlib_objects(stdlib_root: str | None) -> tuple[StdlibObject, ...]:
    found: dict[str, StdlibObject] = {}
    for doc in corpus.stdlib_documents(stdlib_root):
        module = _module_name(doc.name.split(":", 1)[1])
        if module is None:
            continue
        try:
            tree = ast.parse(doc.text)
        except (SyntaxError, ValueError):
            continue
        for name, kind in _top_level_names(tree):
            if not name.startswith("_"):
                obj = StdlibObject(module, name, kind)
                found.setdefault(obj.qualname, obj)  # defined twice (if/else at top level): the first counts
    return tuple(found[k] for k in sorted(found))


def _kind_question(obj: StdlibObject) -> Example:
    return Example(f"kind:{obj.qualname}", obj.qualname, obj.module,
                   f"Is `{obj.qualname}` a class, a function or a constant?", obj.kind)


def _module_question(obj: StdlibObject) -> Example:
    return Example(f"module:{obj.qualname}", obj.qualname, obj.module,
                   f"Which module defines `{obj.qualname}`?", obj.module)


def _name_question(obj: StdlibObject) -> Example:
    return Example(f"name:{obj.qualname}", obj.qualname, obj.module,
                   f"What is the name of `{obj.qualname}` without its module?", obj.name)


QUESTIONS: dict[str, Callable[[StdlibObject], Example]] = {
    "kind": _kind_question, "module": _module_question, "name": _name_question}


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    questions: tuple[str, ...]  # keys of QUESTIONS asked about every item


TASKS = {t.name: t for t in (
    Task("stdlib-mixed", "all three questions about every item", ("kind", "module", "name")),
    Task("stdlib-kind", "class, function or constant, by the naming conventions of PEP 8", ("kind",)),
    Task("stdlib-module", "the module part of a qualified name", ("module",)),
    Task("stdlib-name", "the name part of a qualified name", ("name",)),
)}
DEFAULT_TASK = "stdlib-kind"  # the one a model pretrained here learns; copying from the prompt needs a bigger base
DEFAULT_HOLDOUT_FRACTION = 0.1


def build(task: str = DEFAULT_TASK, stdlib_root: str | None = None) -> list[Example]:
    """Every example of `task`, in a fixed order (by item, then question kind)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: choose one of {', '.join(TASKS)}")
    questions = [QUESTIONS[q] for q in TASKS[task].questions]
    examples = [make(obj) for obj in stdlib_objects(stdlib_root) for make in questions]
    if not examples:
        raise RuntimeError("no public functions or classes found in the standard library sources")
    return examples


def unit_hash(text: str) -> float:
    """A stable number in [0, 1) for a string (sha256; unlike hash(), the same in every process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def split(examples: list[Example], holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION
          ) -> tuple[list[Example], list[Example]]:
    """(train, held_out) by a hash of each example's module: no item and no module is on both sides.

    Within each side the order is by a hash of the example id — a fixed shuffle, so the first N examples of
    a side (`--train-examples`, `--eval-examples`) are a spread of modules and question kinds, not one package.
    """
    if not 0 < holdout_fraction < 1:
        raise ValueError("holdout_fraction must be in (0, 1)")
    held = [e for e in examples if unit_hash("module:" + e.group) < holdout_fraction]
    train = [e for e in examples if unit_hash("module:" + e.group) >= holdout_fraction]
    if not held or not train:
        raise RuntimeError(f"holdout fraction {holdout_fraction} leaves one side of the split empty")
    order = lambda e: unit_hash("order:" + e.id)  # noqa: E731
    return sorted(train, key=order), sorted(held, key=order)


def fingerprint(examples: list[Example]) -> str:
    """sha256 over every example: equal fingerprints mean the same data in the same order."""
    h = hashlib.sha256()
    for e in examples:
        for part in (e.id, e.prompt, e.answer):
            data = part.encode()
            h.update(len(data).to_bytes(8, "big"))
            h.update(data)
    return h.hexdigest()


def normalize(text: str) -> str:
    """What exact match compares: the first non-empty line, stripped of surrounding whitespace."""
    for line in text.strip().splitlines():
        return line.strip()
    return ""


def exact_match(prediction: str, answer: str) -> bool:
    return normalize(prediction) == normalize(answer)
