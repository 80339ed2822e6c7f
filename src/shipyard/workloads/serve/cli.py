"""Command line: flags, the listening socket, uvicorn, signals, and the `--engine vllm` hand-off.

Flag names follow vLLM's OpenAI server where the two overlap (positional model or --model, --host, --port,
--served-model-name, --max-model-len, --api-key, --dtype, --seed, --tokenizer, --chat-template,
--trust-remote-code, --max-num-seqs, --max-num-batched-tokens), so a spec written for one runs on the other and
`--engine vllm` can pass them straight through.

Start-up order matters for the serving contract (docs/contracts.md: listen on the port from env/flags,
`/health` ready only when able to serve): arguments and the model path are checked first (a typo fails in
milliseconds with one line, no traceback), then the socket is bound and listening, then uvicorn serves
`/health` = 503 while loader.py imports torch and loads the model in the background.

SIGTERM (the platform's stop): /health turns 503, no new connections are accepted, in-flight requests run to
completion for up to --shutdown-timeout seconds (then they are aborted), and the process exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from .loader import DTYPE_CHOICES, ServerState, Settings


def _env_port() -> int:
    value = os.environ.get("PORT", "8000")
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"error: PORT={value!r} is not a port number") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m shipyard.workloads.serve",
                                description="OpenAI-compatible server for a saved Hugging Face causal LM.")
    p.add_argument("model_tag", nargs="?", metavar="MODEL", help="model directory (save_pretrained output)")
    p.add_argument("--model", help="the same as the positional MODEL")
    p.add_argument("--tokenizer", help="tokenizer directory (default: the model directory)")
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--port", type=int, default=None, help="port (default: $PORT, else 8000)")
    p.add_argument("--served-model-name", nargs="+", metavar="NAME",
                   help="name(s) clients use in `model` (default: the model directory's basename)")
    p.add_argument("--max-model-len", type=int, help="context length: prompt + completion (default: the model's)")
    p.add_argument("--api-key", default=os.environ.get("SHIPYARD_API_KEY") or os.environ.get("VLLM_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1/* (default: $SHIPYARD_API_KEY or $VLLM_API_KEY)")
    p.add_argument("--max-batch-size", "--max-num-seqs", dest="max_batch_size", type=int,
                   help="most sequences decoded together (default 32)")
    p.add_argument("--max-prefill-tokens", "--max-num-batched-tokens", dest="max_prefill_tokens", type=int,
                   help="padded prompt tokens prefilled in one step when requests join (default 4096)")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, help="weights dtype (default auto: float32 on CPU)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--threads", type=int,
                   help="torch CPU threads (default: $OMP_NUM_THREADS, else all cores but one, which the HTTP "
                        "event loop keeps)")
    p.add_argument("--seed", type=int, help="seed for requests that bring none, for reproducible runs")
    p.add_argument("--chat-template", help="a Jinja chat template, or a file holding one (default: the tokenizer's)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code shipped with the model")
    p.add_argument("--engine", choices=("builtin", "vllm"), default="builtin",
                   help="builtin (this server) or vllm (exec vLLM's OpenAI server with the same flags; needs CUDA)")
    p.add_argument("--shutdown-timeout", type=float, default=25.0,
                   help="seconds in-flight requests get to finish after SIGTERM (default 25)")
    p.add_argument("--uvicorn-log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug", "trace"))
    return p


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 1


def _check_model_dir(model: str) -> str | None:
    """A reason the model path cannot work, found before anything slow happens; None when it looks fine."""
    path = Path(model).expanduser()
    if path.is_dir():
        return None if (path / "config.json").is_file() else (
            f"{model} has no config.json; expected a directory written by save_pretrained()")
    if path.exists():
        return f"{model} is a file; expected a directory written by save_pretrained()"
    # "org/name" may be a Hugging Face Hub id (resolved by transformers where the network allows); else a typo.
    if model.count("/") == 1 and not model.startswith((".", "/", "~")):
        return None
    return f"model directory {model} does not exist"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    model = args.model or args.model_tag
    if not model:
        return _fail("no model given: pass a model directory (positional) or --model DIR")
    if args.model and args.model_tag and args.model != args.model_tag:
        return _fail(f"two different models given: {args.model_tag} and --model {args.model}")
    port = args.port if args.port is not None else _env_port()
    if args.engine == "vllm":
        return _exec_vllm(args, model, port)
    if problem := _check_model_dir(model):
        return _fail(problem)
    for flag, value in (("--max-model-len", args.max_model_len), ("--max-batch-size", args.max_batch_size),
                        ("--max-prefill-tokens", args.max_prefill_tokens), ("--threads", args.threads)):
        if value is not None and value < 1:
            return _fail(f"{flag} must be at least 1, got {value}")
    settings = Settings(
        model=model, tokenizer=args.tokenizer,
        served_model_names=args.served_model_name or [os.path.basename(os.path.normpath(model))],
        max_model_len=args.max_model_len, max_batch_size=args.max_batch_size or 32,
        max_prefill_tokens=args.max_prefill_tokens or 4096, dtype=args.dtype or "auto", device=args.device,
        api_key=args.api_key or None, trust_remote_code=args.trust_remote_code, chat_template=args.chat_template,
        seed=args.seed, threads=args.threads)
    return serve(settings, args.host, port, shutdown_timeout=args.shutdown_timeout, log_level=args.uvicorn_log_level)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP is not pedantry: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP,
    # and without it Nagle + the client's delayed ACK add ~40 ms to every response on a kept-alive connection.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings, host: str, port: int, *, shutdown_timeout: float = 25.0, log_level: str = "info") -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("shipyard.serve")
    server: Any = None

    def stop(signum: int, frame: Any) -> None:
        # Before uvicorn installs its own handlers there is nothing to drain: just leave. Afterwards uvicorn
        # restores this handler and re-raises the signal it caught; exiting 0 is the right answer then too.
        state.drain()
        if server is None:
            raise SystemExit(0)
        server.should_exit = True

    state = ServerState(settings)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        sock = _listen(host, port)
    except OSError as exc:
        return _fail(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
    bound = sock.getsockname()[1]
    print(f"serve: listening on http://{host}:{bound} (model loading in the background)", flush=True)

    import uvicorn

    from .app import create_app

    exit_code = 0

    def on_fatal(message: str) -> None:
        nonlocal exit_code
        print(message, file=sys.stderr, flush=True)
        exit_code = 1
        if server is not None:
            server.should_exit = True

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            state.drain()  # /health turns 503 at once, so a load balancer stops sending traffic
            super().handle_exit(sig, frame)

    config = uvicorn.Config(create_app(state, on_fatal=on_fatal), log_level=log_level, lifespan="on",
                            timeout_graceful_shutdown=shutdown_timeout, timeout_keep_alive=5)
    server = Server(config)
    server.run(sockets=[sock])
    if exit_code == 0:
        log.info("stopped")
    return exit_code


def _exec_vllm(args: argparse.Namespace, model: str, port: int) -> int:
    """Replace this process with vLLM's OpenAI server, passing the flags both servers understand."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return _fail("--engine vllm needs the vllm package, which is not installed here (pip install vllm)")
    try:
        import torch
    except ImportError:
        return _fail("--engine vllm needs torch with CUDA, and torch is not installed here")
    if not torch.cuda.is_available():
        return _fail("--engine vllm needs a CUDA GPU, and torch.cuda.is_available() is False on this machine")
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
            "--host", args.host, "--port", str(port), "--uvicorn-log-level", args.uvicorn_log_level]
    dtypes = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
    for flag, value in (("--tokenizer", args.tokenizer), ("--max-model-len", args.max_model_len),
                        ("--max-num-seqs", args.max_batch_size),
                        ("--max-num-batched-tokens", args.max_prefill_tokens),
                        ("--dtype", dtypes.get(args.dtype, args.dtype)), ("--seed", args.seed),
                        ("--chat-template", args.chat_template)):
        if value is not None:
            argv += [flag, str(value)]
    if args.served_model_name:
        argv += ["--served-model-name", *args.served_model_name]
    if args.trust_remote_code:
        argv.append("--trust-remote-code")
    env = dict(os.environ)
    if args.api_key:
        env["VLLM_API_KEY"] = args.api_key  # by environment, so the key does not show in `ps`
    sys.stdout.flush()
    os.execve(sys.executable, argv, env)
    return 0  # not reached
