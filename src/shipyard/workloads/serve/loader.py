"""What the server serves (Settings), where it is in its life (ServerState), and loading the model.

Why a background thread: importing torch + transformers takes 4–6 s on a small machine and loading weights
longer still. The socket is already listening when this starts, so `/health` answers 503 (and the v1 routes a
503 OpenAI error) meanwhile: an orchestrator sees a live but not-ready server instead of a refused connection
it may mistake for a crash. Only this thread imports torch; HTTP modules must not.

If loading fails the server cannot become useful, so it says why in one line and exits non-zero (the platform
then reports the failure or restarts it) rather than idling forever at 503.

Test hook: with SHIPYARD_SERVE_LOAD_GATE=PATH, loading waits until PATH exists — tests use it to observe the
loading phase by condition, not by a sleep.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger("shipyard.serve")

_DTYPES = {"float32": "float32", "float": "float32", "fp32": "float32", "float16": "float16", "half": "float16",
           "fp16": "float16", "bfloat16": "bfloat16", "bf16": "bfloat16"}
DTYPE_CHOICES = ("auto", *sorted(_DTYPES))


class LoadError(Exception):
    """A reason the model cannot be served, phrased for the operator (printed as one line, no traceback)."""


@dataclass
class Settings:
    model: str
    served_model_names: list[str]
    tokenizer: str | None = None
    max_model_len: int | None = None
    max_batch_size: int = 32
    max_prefill_tokens: int = 4096
    dtype: str = "auto"
    device: str = "auto"
    api_key: str | None = None
    trust_remote_code: bool = False
    chat_template: str | None = None
    seed: int | None = None
    threads: int | None = None


@dataclass
class Loaded:
    """Everything a request handler needs once the model is up."""

    engine: Any
    tokenizer: Any
    max_model_len: int
    vocab_size: int
    chat_template: str | None
    created: int = field(default_factory=lambda: int(time.time()))


class ServerState:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.phase = "loading"  # loading -> ready -> draining, or loading -> failed
        self.loaded: Loaded | None = None
        self.error: str | None = None

    def start_loading(self, *, sink: Callable, on_step: Callable[[int], None],
                      on_ready: Callable[[Any], None], on_fatal: Callable[[str], None]) -> threading.Thread:
        def run() -> None:
            try:
                started = time.monotonic()
                loaded = load(self.settings, sink=sink, on_step=on_step)
            except Exception as exc:
                message = str(exc) if isinstance(exc, LoadError) else f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, LoadError):
                    log.debug("model load failed", exc_info=True)
                self.phase, self.error = "failed", message
                on_fatal(f"error: could not load the model from {self.settings.model}: {message}")
                return
            if self.phase == "draining":  # a stop arrived while loading: do not start serving now
                loaded.engine.stop(timeout=5)
                return
            self.loaded = loaded
            on_ready(loaded.engine)
            self.phase = "ready"
            log.info("model %s loaded in %.1fs (max_model_len=%d, max_batch_size=%d); ready",
                     self.settings.served_model_names[0], time.monotonic() - started, loaded.max_model_len,
                     self.settings.max_batch_size)

        thread = threading.Thread(target=run, name="serve-loader", daemon=True)
        thread.start()
        return thread

    def drain(self) -> None:
        """Stop taking new requests (health goes 503); in-flight ones finish."""
        if self.phase in ("loading", "ready"):
            self.phase = "draining"

    def shutdown(self) -> None:
        if self.loaded is not None:
            self.loaded.engine.stop(timeout=10)


def _wait_for_gate() -> None:
    gate = os.environ.get("SHIPYARD_SERVE_LOAD_GATE")
    while gate and not os.path.exists(gate):
        time.sleep(0.05)


def _device(requested: str, torch: Any) -> Any:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise LoadError(f"--device {requested} was asked for but torch.cuda.is_available() is False")
    return torch.device(requested)


def _dtype(requested: str, device: Any, config: Any, torch: Any) -> Any:
    if requested != "auto":
        return getattr(torch, _DTYPES[requested])
    if device.type == "cpu":
        return torch.float32  # half precision matmuls are slower than float32 on most CPUs
    saved = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    saved = getattr(torch, saved) if isinstance(saved, str) else saved
    return saved if saved in (torch.float16, torch.bfloat16) else torch.float16


def context_limit(config: Any) -> int | None:
    """The longest sequence the model's position scheme supports, from whichever name its config uses."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def eos_ids(tokenizer: Any, model: Any) -> tuple[int, ...]:
    """The tokenizer's EOS and every EOS the model's generation config names (chat models often have several)."""
    found: set[int] = set()
    for value in (getattr(tokenizer, "eos_token_id", None),
                  getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, int):
                found.add(item)
    return tuple(sorted(found))


def load(settings: Settings, *, sink: Callable, on_step: Callable[[int], None]) -> Loaded:
    _wait_for_gate()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from .chat import load_template
    from .engine import Engine

    hf_logging.disable_progress_bar()  # a progress bar per shard is noise in a pod log
    remote = settings.trust_remote_code
    try:
        config = AutoConfig.from_pretrained(settings.model, trust_remote_code=remote)
    except (OSError, ValueError) as exc:
        raise LoadError(str(exc).splitlines()[0]) from exc
    device = _device(settings.device, torch)
    threads = settings.threads
    if threads is None and device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # Leave one core to the event loop (HTTP, JSON, tokenizing). Decode steps of small models are many
        # tiny ops and each parallel region waits for all its threads, so a thread that has to share a core
        # slows every step down (measured: 2 threads on 2 busy cores ran 5-10x slower than 1).
        threads = max(1, torch.get_num_threads() - 1)
    if threads:
        torch.set_num_threads(threads)
    dtype = _dtype(settings.dtype, device, config, torch)
    tokenizer = AutoTokenizer.from_pretrained(settings.tokenizer or settings.model, trust_remote_code=remote)
    model = AutoModelForCausalLM.from_pretrained(settings.model, dtype=dtype, trust_remote_code=remote)
    model.to(device).eval()

    limit = context_limit(model.config)
    if settings.max_model_len and limit and settings.max_model_len > limit:
        raise LoadError(f"--max-model-len {settings.max_model_len} exceeds the model's {limit} positions")
    max_model_len = settings.max_model_len or limit or 2048
    vocab_size = model.get_input_embeddings().num_embeddings
    engine = Engine(model, tokenizer, sink=sink, max_batch_size=settings.max_batch_size,
                    max_prefill_tokens=max(settings.max_prefill_tokens, max_model_len),
                    eos_token_ids=eos_ids(tokenizer, model), seed=settings.seed, on_step=on_step)
    with torch.inference_mode():  # warm-up: the first forward pays one-off kernel/allocator setup, not a user
        model(input_ids=torch.zeros(1, 2, dtype=torch.long, device=device))
    engine.start()
    return Loaded(engine=engine, tokenizer=tokenizer, max_model_len=max_model_len, vocab_size=vocab_size,
                  chat_template=load_template(settings.chat_template))
