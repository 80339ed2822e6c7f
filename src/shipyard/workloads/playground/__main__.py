"""`python -m shipyard.workloads.playground [--ui gradio|streamlit] [flags]`.

Every flag has an env default, so a spec can configure the workload either way (flags win):

| flag | env | default |
|---|---|---|
| `--base-url` | `SHIPYARD_PLAYGROUND_BASE_URL`, else `OPENAI_BASE_URL` | http://127.0.0.1:8000/v1 |
| `--api-key` | `SHIPYARD_PLAYGROUND_API_KEY`, else `OPENAI_API_KEY` | none (a dummy key is sent) |
| `--model` | `SHIPYARD_PLAYGROUND_MODEL` | the server's first model |
| `--timeout` | `SHIPYARD_PLAYGROUND_TIMEOUT` | 300 seconds of server silence |
| `--host` | `HOST` | 0.0.0.0 |
| `--port` | `PORT` | 7860 |
| `--root-path` | `GRADIO_ROOT_PATH` | none: served at / (behind a gateway: /project/name) |

Prefer env for the key: a flag is visible to anyone who can list processes. The key is never printed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from .client import PlaygroundError, Settings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m shipyard.workloads.playground",
                                description="Chat with any OpenAI-compatible server (models, sampling, streaming).")
    p.add_argument("--ui", choices=("gradio", "streamlit"), default="gradio", help="which UI to serve")
    p.add_argument("--base-url", help="the server's OpenAI base URL, e.g. http://127.0.0.1:8000/v1 "
                                      "(a bare http://host:port gets /v1)")
    p.add_argument("--api-key", help="API key (prefer OPENAI_API_KEY: flags show in process lists)")
    p.add_argument("--model", help="model to preselect (default: the server's first)")
    p.add_argument("--timeout", type=float, help="seconds the server may stay silent before a reply fails")
    p.add_argument("--host", default=os.environ.get("HOST") or "0.0.0.0", help="address to listen on")
    p.add_argument("--port", type=int, help="port to listen on (default: $PORT, else 7860)")
    p.add_argument("--root-path", default=os.environ.get("GRADIO_ROOT_PATH") or None,
                   help="path prefix the app is served under behind a proxy, e.g. /project/playground")
    return p


def _port(args: argparse.Namespace) -> int:
    if args.port is not None:
        return args.port
    value = os.environ.get("PORT") or "7860"
    try:
        return int(value)
    except ValueError:
        raise PlaygroundError(f"PORT={value!r} is not a port number") from None


def _exec_streamlit(settings: Settings, host: str, port: int, root_path: str | None) -> None:
    """Replace this process with `streamlit run streamlit_app.py`, the settings handed over by env.

    exec, not a child: the platform's SIGTERM then reaches Streamlit itself and there is no process to reap.
    """
    env = {**os.environ, "SHIPYARD_PLAYGROUND_BASE_URL": settings.base_url,
           "SHIPYARD_PLAYGROUND_TIMEOUT": str(settings.timeout)}
    if settings.api_key:
        env["SHIPYARD_PLAYGROUND_API_KEY"] = settings.api_key  # env, never argv: argv is world-readable
    if settings.model:
        env["SHIPYARD_PLAYGROUND_MODEL"] = settings.model
    argv = [sys.executable, "-m", "streamlit", "run", str(Path(__file__).with_name("streamlit_app.py")),
            "--server.port", str(port), "--server.address", host, "--server.headless", "true",
            "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none"]  # the app never changes in a container; save the watcher
    if root_path:
        argv += ["--server.baseUrlPath", root_path.strip("/")]
    sys.stdout.flush()
    os.execve(sys.executable, argv, env)


def _stop_on_sigterm(signum: int, frame: object) -> None:
    # Gradio's launch() closes its server cleanly on KeyboardInterrupt; the platform stops pods with SIGTERM.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        port = _port(args)
        settings = Settings.from_env(base_url=args.base_url, api_key=args.api_key, model=args.model,
                                     timeout=args.timeout)
    except PlaygroundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"playground ({args.ui}) for {settings.base_url} on http://{args.host}:{port}{args.root_path or ''}",
          flush=True)
    if args.ui == "streamlit":
        _exec_streamlit(settings, args.host, port, args.root_path)
    # Gradio phones home for analytics and version checks, which stalls start-up where there is no egress.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from .gradio_app import launch  # imported late: Gradio takes seconds to import

    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    launch(settings, args.host, port, args.root_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
