"""Chat messages -> the prompt text the model was trained to continue.

The tokenizer's own `chat_template` (saved by our pretrain/finetune workloads, and by most chat models) is the
source of truth; `--chat-template` overrides it. A model without one still gets a plain, readable fallback
rather than an error, so a base model can be poked at through the chat API — but its answers will only be as
good as that guess.

The prompt is tokenized without adding special tokens: templates write their own BOS where the model wants
one, and adding another would put the model off-distribution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from .errors import bad_request

FALLBACK_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def load_template(value: str | None) -> str | None:
    """`--chat-template` takes a file path or the template text itself (as vLLM's flag does)."""
    if not value:
        return None
    path = Path(value).expanduser()
    if "{" not in value and path.is_file():
        return path.read_text()
    return value


def render(tokenizer: Any, messages: list[dict[str, Any]], *, template: str | None = None,
           add_generation_prompt: bool = True, template_kwargs: dict[str, Any] | None = None) -> str:
    chosen = template or getattr(tokenizer, "chat_template", None) or FALLBACK_TEMPLATE
    try:
        text = tokenizer.apply_chat_template(messages, chat_template=chosen, tokenize=False,
                                             add_generation_prompt=add_generation_prompt,
                                             **(template_kwargs or {}))
    except (TemplateError, TypeError, ValueError) as exc:  # raise_exception() in a template, bad kwargs: the caller's
        raise bad_request(f"The chat template could not render these messages: {exc}", "messages") from exc
    if not isinstance(text, str):  # some tokenizers return a list for batched input
        text = text[0]
    return text
