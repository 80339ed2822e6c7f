"""The OpenAI wire format: request models (validation) and response / stream-chunk builders.

Validation lives here so that a handler only ever sees a well-formed request; anything this module rejects
becomes a 400 naming the field (see errors.py). Unknown fields are ignored, as vLLM does, so that newer
clients that send parameters this server has no use for (`user`, `store`, `metadata`, …) keep working; a
parameter whose meaning we would silently drop (`logprobs`, `tools`, `echo`, `logit_bias`, …) is refused
instead. vLLM's extensions that cost nothing here are accepted: `top_k`, `min_tokens`, `ignore_eos`,
`stop_token_ids`, `skip_special_tokens`, `chat_template_kwargs`.

Pure data and pydantic only — no torch — so the HTTP layer imports it before the model exists.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


@dataclass(frozen=True)
class SamplingParams:
    """One sequence's decoding settings, as the engine and sampler use them."""

    max_tokens: int
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means no top-k filtering
    min_tokens: int = 0  # EOS and stop_token_ids are forbidden until this many tokens exist
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature < 1e-5  # as vLLM: dividing by a tiny temperature is greedy with overflow risk


class StreamOptions(BaseModel):
    include_usage: bool = False


class _GenerationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = 1
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: Any = None
    seed: int | None = Field(None, ge=-(2**63), le=2**64 - 1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    # vLLM extensions
    top_k: int | None = Field(None, ge=-1)
    min_tokens: int = Field(0, ge=0)
    ignore_eos: bool = False
    stop_token_ids: list[int] | None = None
    skip_special_tokens: bool = True

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int | None) -> int:
        if n not in (None, 1):
            raise ValueError("only n=1 is supported; send separate requests (or several prompts) instead")
        return 1

    @field_validator("stop")
    @classmethod
    def _stop(cls, stop: Any) -> list[str]:
        stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise ValueError("stop must be a string or a list of strings")
        if len(stops) > 16:
            raise ValueError("at most 16 stop sequences are allowed")
        return [s for s in stops if s]

    @field_validator("logit_bias")
    @classmethod
    def _no_logit_bias(cls, value: Any) -> Any:
        return _unsupported(value)

    def sampling(self, max_tokens: int) -> SamplingParams:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=max(self.top_k or 0, 0), min_tokens=min(self.min_tokens, max_tokens),
            presence_penalty=self.presence_penalty or 0.0, frequency_penalty=self.frequency_penalty or 0.0,
            stop=tuple(self.stop or ()), stop_token_ids=tuple(self.stop_token_ids or ()),
            ignore_eos=self.ignore_eos, skip_special_tokens=self.skip_special_tokens, seed=self.seed)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class CompletionRequest(_GenerationRequest):
    prompt: Any = Field(...)
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for legacy completions
    echo: bool | None = False
    logprobs: int | None = None
    best_of: int | None = None
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, prompt: Any) -> list[str | list[int]]:
        """A string, a list of strings, a list of token ids, or a list of such lists -> a list of prompts."""
        def is_ids(x: Any) -> bool:
            return isinstance(x, list) and bool(x) and all(isinstance(t, int) and not isinstance(t, bool) for t in x)

        if isinstance(prompt, str):
            prompts: list = [prompt]
        elif is_ids(prompt):
            prompts = [prompt]
        elif isinstance(prompt, list) and prompt and all(isinstance(p, str) or is_ids(p) for p in prompt):
            prompts = prompt
        else:
            raise ValueError("prompt must be a non-empty string, a list of strings, or a list of token ids")
        if any(p == "" for p in prompts):
            raise ValueError("prompt must not be empty")
        if len(prompts) > 64:
            raise ValueError("at most 64 prompts per request")
        return prompts

    @field_validator("echo", "logprobs", "suffix")
    @classmethod
    def _refuse_unsupported_completion(cls, value: Any) -> Any:
        return _unsupported(value)

    @field_validator("best_of")
    @classmethod
    def _one_candidate(cls, best_of: int | None) -> int | None:
        if (best_of or 1) > 1:
            raise ValueError("best_of > 1 is not supported by this server")
        return best_of


def _unsupported(value: Any) -> Any:
    """For parameters whose meaning this server would otherwise silently drop: only their off value passes."""
    if value not in (None, False, "", {}, []):
        raise ValueError("not supported by this server")
    return value


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Any = None
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _text(cls, content: Any) -> str:
        """A string, or OpenAI's list of content parts of which only {"type": "text"} ones are supported."""
        if content is None or isinstance(content, str):
            return content or ""
        if isinstance(content, list) and all(isinstance(p, dict) for p in content):
            if all(p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
                return "\n".join(p["text"] for p in content)
            kinds = sorted({str(p.get("type")) for p in content if p.get("type") != "text"})
            raise ValueError(f"only text content parts are supported, got {', '.join(kinds) or 'a part without text'}")
        raise ValueError("content must be a string or a list of content parts")

    def as_template_input(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name:
            message["name"] = self.name
        return message


class ChatCompletionRequest(_GenerationRequest):
    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = False
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None
    add_generation_prompt: bool = True
    chat_template_kwargs: dict[str, Any] | None = None

    @field_validator("logprobs", "tools")
    @classmethod
    def _refuse_unsupported_chat(cls, value: Any) -> Any:
        return _unsupported(value)

    @field_validator("response_format")
    @classmethod
    def _text_format(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value and value.get("type", "text") != "text":
            raise ValueError("only {'type': 'text'} is supported by this server")
        return value

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


# ---- responses ----------------------------------------------------------------------------------------
def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(rid: str, created: int, model: str, choices: list[tuple[str, str | None]],
               use: dict[str, int]) -> dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": finish}
                        for i, (text, finish) in enumerate(choices)],
            "usage": use, "system_fingerprint": None}


def completion_chunk(rid: str, created: int, model: str, index: int, text: str,
                     finish: str | None) -> dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish}]}


def chat_completion(rid: str, created: int, model: str, text: str, finish: str | None,
                    use: dict[str, int]) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": finish}],
            "usage": use, "system_fingerprint": None}


def chat_chunk(rid: str, created: int, model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def usage_chunk(rid: str, created: int, model: str, obj: str, use: dict[str, int]) -> dict[str, Any]:
    """The extra last chunk `stream_options.include_usage` asks for: no choices, only usage."""
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [], "usage": use}


def sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return f"data: {data}\n\n"
