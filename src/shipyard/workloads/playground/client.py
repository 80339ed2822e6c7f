"""The playground's only road to a model server: the official `openai` client, configured from env or flags.

Both UIs (Gradio and Streamlit) share this module, so they agree on configuration, on how a chat history becomes
an OpenAI `messages` list, and on how a failure is worded. Every failure leaves here as a `PlaygroundError` with
a one-line message meant for a human: the UIs show it in the chat instead of crashing or printing a traceback.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import openai

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
# Servers without auth (vLLM, our serve) ignore the key, but the openai client refuses to start without one and
# an empty key would send a malformed "Bearer " header; "EMPTY" is the convention vLLM documents.
DUMMY_API_KEY = "EMPTY"
# Marks an assistant turn that is an error shown in the chat, so it is never sent back to the model as context.
ERROR_PREFIX = "⚠️ "
# A server that is down refuses at once; one that is unreachable (wrong host, firewall) must not hang the UI.
CONNECT_TIMEOUT = 5.0


class PlaygroundError(Exception):
    """A failure already worded for the user (never includes the API key)."""


def normalize_base_url(url: str) -> str:
    """`http://host:8000` -> `http://host:8000/v1`: a bare server address is the common mistake.

    Only an empty path gets `/v1`, because behind the gateway the API lives under a prefix (/project/name/v1).
    """
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PlaygroundError(f"base URL {url!r} is not an http(s) URL, e.g. {DEFAULT_BASE_URL}")
    return url + "/v1" if not parts.path else url


@dataclass(frozen=True)
class Settings:
    base_url: str = DEFAULT_BASE_URL
    api_key: str = field(default="", repr=False)  # repr=False: settings may be logged, the key never is
    model: str | None = None  # preselected when the server lists it
    timeout: float = 300.0  # seconds the server may stay silent (a CPU server can be slow to a first token)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Env first (the Shipyard-specific name wins over the OpenAI one), then non-None overrides (flags)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {
            "base_url": env.get("SHIPYARD_PLAYGROUND_BASE_URL") or env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
            "api_key": env.get("SHIPYARD_PLAYGROUND_API_KEY") or env.get("OPENAI_API_KEY") or "",
            "model": env.get("SHIPYARD_PLAYGROUND_MODEL") or None,
        }
        if timeout := env.get("SHIPYARD_PLAYGROUND_TIMEOUT"):
            try:
                values["timeout"] = float(timeout)
            except ValueError:
                raise PlaygroundError(f"SHIPYARD_PLAYGROUND_TIMEOUT={timeout!r} is not a number") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["base_url"] = normalize_base_url(values["base_url"])
        return cls(**values)


@dataclass(frozen=True)
class Sampling:
    """The sampling parameters a user can set; None means "the server's default" and is not sent."""

    temperature: float | None = 0.7
    top_p: float | None = 1.0
    max_tokens: int | None = 512
    seed: int | None = None
    stop: tuple[str, ...] = ()

    @classmethod
    def from_ui(cls, temperature: Any = None, top_p: Any = None, max_tokens: Any = None, seed: Any = None,
                stop: Any = None) -> Sampling:
        """Coerce what widgets and API callers hand over (floats for ints, "" for unset, text for stop lists)."""
        def number(value: Any, kind: type) -> Any:
            if value is None or (isinstance(value, str) and not value.strip()):
                return None
            try:
                return kind(float(value)) if kind is int else kind(value)
            except (TypeError, ValueError):
                raise PlaygroundError(f"{value!r} is not a number") from None

        tokens = number(max_tokens, int)
        return cls(temperature=number(temperature, float), top_p=number(top_p, float),
                   max_tokens=tokens if tokens and tokens > 0 else None, seed=number(seed, int),
                   stop=parse_stop(stop))

    def request_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"temperature": self.temperature, "top_p": self.top_p,
                                  "max_tokens": self.max_tokens, "seed": self.seed}
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        if self.stop:
            kwargs["stop"] = list(self.stop)
        return kwargs


def parse_stop(stop: str | Iterable[str] | None) -> tuple[str, ...]:
    """Stop sequences: a list as is, or text with one per line where `\\n` and `\\t` spell a newline and a tab
    (a stop on a blank line, "\\n\\n", is the common case and cannot be typed into a one-line field)."""
    if not stop:
        return ()
    items = stop.splitlines() if isinstance(stop, str) else list(stop)
    if isinstance(stop, str):
        items = [s.replace("\\n", "\n").replace("\\t", "\t") for s in items]
    return tuple(s for s in items if s)


def _text_of(content: Any) -> str:
    """Text of a message's content in any shape we meet: a string (OpenAI), Gradio 6's list of parts
    ({"type": "text", "text": ...}; files and components carry no text), or OpenAI content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        return str(content["text"]) if content.get("type", "text") == "text" and "text" in content else ""
    if isinstance(content, Iterable):
        return "".join(_text_of(part) for part in content)
    return str(content)


def build_messages(system_prompt: str | None, history: Iterable[Any] | None, message: str) -> list[dict[str, str]]:
    """OpenAI messages from a system prompt, a history and the new user message.

    History items are {"role", "content"} dicts (OpenAI, Gradio 6, Streamlit) or [user, assistant] pairs (the
    tuples format of older Gradio, still handy for scripts). Error turns and empty turns are dropped.
    """
    messages = [{"role": "system", "content": system_prompt}] if system_prompt and system_prompt.strip() else []
    for item in history or ():
        if isinstance(item, Mapping):
            turns = [(item.get("role"), item.get("content"))]
        else:
            user, assistant = item
            turns = [("user", user), ("assistant", assistant)]
        for role, content in turns:
            text = _text_of(content)
            if role not in ("system", "user", "assistant") or not text:
                continue
            if role == "assistant" and ERROR_PREFIX in text:
                text = text.split(ERROR_PREFIX, 1)[0].rstrip()  # keep what streamed before a failure
                if not text:
                    continue
            messages.append({"role": role, "content": text})
    messages.append({"role": "user", "content": message})
    return messages


@functools.lru_cache(maxsize=8)
def _openai(settings: Settings) -> openai.OpenAI:
    # One client per settings keeps its connection pool across requests. No retries: in a playground an
    # immediate, clear error beats a silent wait through back-offs, and the user can simply send again.
    return openai.OpenAI(base_url=settings.base_url, api_key=settings.api_key or DUMMY_API_KEY, max_retries=0,
                         timeout=openai.Timeout(settings.timeout, connect=CONNECT_TIMEOUT))


def describe_error(exc: BaseException, settings: Settings) -> str:
    """One line for the user. The openai client's own messages never contain the key, nor do ours."""
    if isinstance(exc, openai.APITimeoutError):
        return (f"the server at {settings.base_url} timed out (allowed: {CONNECT_TIMEOUT:g}s to connect, "
                f"{settings.timeout:g}s of silence)")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f" ({type(cause).__name__}: {cause})" if cause else ""
        return f"cannot reach the server at {settings.base_url}{detail}"
    if isinstance(exc, openai.AuthenticationError):
        return (f"the server at {settings.base_url} rejected the API key (HTTP 401); "
                "set OPENAI_API_KEY for the playground")
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, Mapping) else {}
        error = body.get("error", body)
        detail = (error.get("message") if isinstance(error, Mapping) else None) or body.get("detail") or exc.message
        return f"the server answered HTTP {exc.status_code}: {detail}"
    return f"{type(exc).__name__}: {exc}"


def list_models(settings: Settings) -> list[str]:
    """Model ids from GET {base_url}/models, in the server's order."""
    try:
        return [model.id for model in _openai(settings).models.list()]
    except openai.OpenAIError as exc:
        raise PlaygroundError(describe_error(exc, settings)) from None


def pick_model(settings: Settings, model: str | None) -> str:
    """The model to use: the one given, else the configured one, else the server's first."""
    if model and model.strip():
        return model.strip()
    if settings.model:
        return settings.model
    models = list_models(settings)
    if not models:
        raise PlaygroundError(f"the server at {settings.base_url} lists no models")
    return models[0]


def stream_chat(settings: Settings, model: str | None, messages: list[dict[str, str]],
                sampling: Sampling) -> Iterator[str]:
    """Yields the reply's text as it streams (`stream=True`); raises PlaygroundError on any failure."""
    try:
        stream = _openai(settings).chat.completions.create(
            model=pick_model(settings, model), messages=messages, stream=True, **sampling.request_kwargs())
        # `with` closes the HTTP response when the consumer stops early (the UI's stop button), which tells
        # the server to abort the generation instead of finishing it for nobody.
        with stream:
            for chunk in stream:
                for choice in chunk.choices:  # a usage-only final chunk has no choices
                    if choice.delta is not None and choice.delta.content:
                        yield choice.delta.content
    except openai.OpenAIError as exc:
        raise PlaygroundError(describe_error(exc, settings)) from None


def complete_chat(settings: Settings, model: str | None, messages: list[dict[str, str]], sampling: Sampling) -> str:
    """The whole reply (streamed underneath: a long reply then never trips the read timeout)."""
    return "".join(stream_chat(settings, model, messages, sampling))
