"""Workspace latency: how long until a Jupyter Lab workspace answers, against Jupyter Lab started by hand.

- plain: `python -m jupyterlab` launched directly → its first 200 on `/api` (the same readiness the
  workspace's probe uses), `--repeats` times.
- create: `Workspace` applied → its first 200 on `/PROJECT/NAME/api` through the gateway (token in the header):
  the controller, the local StatefulSet, the probe, the route and the gateway all included.
- wake: a workspace suspended for idleness (`idleTimeout`) → the first request through the gateway answered
  (held at the gateway while the IDE starts again).
The ratios create/plain and wake/plain are what the platform costs on top of Jupyter's own start-up.

Usage: python benchmarks/workspace_latency.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import sys
import time
from pathlib import Path

import httpx

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

TOKEN = "bench-token-0123456789abcdef0123456789"


def _first_ok(url: str, headers: dict[str, str], timeout: float = 180.0) -> float:
    """Poll until `url` answers 200; the time it did (a request the gateway holds counts as one long poll)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=timeout).status_code == 200:
                return time.monotonic()
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer in {timeout:.0f} s")


def plain_start(workdir: Path) -> float:
    port = common.free_port()
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                             f"--ServerApp.port={port}", f"--ServerApp.root_dir={workdir}", "--ServerApp.allow_root=True",
                             f"--IdentityProvider.token={TOKEN}"],
                            env=common.clean_env(HOME=str(workdir)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return _first_ok(f"http://127.0.0.1:{port}/api", {}) - t0
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def manifest(name: str, idle: int | None) -> str:
    spec = {"ide": "jupyterlab", **({"idleTimeout": idle} if idle else {})}
    return json.dumps({"apiVersion": "shipyard.dev/v1alpha1", "kind": "Workspace", "metadata": {"name": name},
                       "spec": spec})


def gateway_url(instance: common.Instance) -> str:
    return str(json.loads((instance.home / "daemon.json").read_text())["gatewayUrl"])


def workspace_runs(instance: common.Instance, name: str, idle: int | None) -> tuple[float, str]:
    t0 = time.monotonic()
    subprocess.run([*common.SHIPYARD_CLI, "apply", "-f", "-"], input=manifest(name, idle), text=True, check=True,
                   env=instance.env, capture_output=True)
    with instance.client() as client:
        token = client.workspace_access(name)["token"] if _wait_access(client, name) else ""
    url = f"{gateway_url(instance)}/default/{name}/api"
    return _first_ok(url, {"Authorization": f"token {token}"}) - t0, token


def _wait_access(client, name: str) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            client.workspace_access(name)
            return True
        except Exception:  # noqa: BLE001 - not set up yet (409): try again
            time.sleep(0.05)
    return False


def wake(instance: common.Instance, name: str, token: str) -> float:
    with instance.client() as client:
        deadline = time.monotonic() + 120
        while client.get("Workspace", name).status.phase != "Suspended":  # type: ignore[attr-defined]
            if time.monotonic() > deadline:
                raise RuntimeError("the workspace was not suspended for idleness")
            time.sleep(0.2)
    while instance.processes(SHIPYARD_WORKSPACE=name):  # its IDE has really stopped
        time.sleep(0.1)
    t0 = time.monotonic()
    return _first_ok(f"{gateway_url(instance)}/default/{name}/api/contents", {"Authorization": f"token {token}"}) - t0


def run(args: argparse.Namespace) -> dict:
    print(f"== workspace latency: Jupyter Lab, {args.repeats} repeats", flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench-jupyter-"))
    plain = [plain_start(scratch) for _ in range(args.repeats)]
    create, woken = [], []
    with common.shipyard_instance() as instance:
        for i in range(args.repeats):
            seconds, token = workspace_runs(instance, f"bench{i}", idle=args.idle)
            create.append(seconds)
            woken.append(wake(instance, f"bench{i}", token))
            instance.cli("delete", "workspace", f"bench{i}", "--wait")
    rows = [["plain jupyterlab: start → first answer", f"{common.median(plain):.2f} s", "1.00"],
            ["workspace: apply → first answer via gateway", f"{common.median(create):.2f} s",
             f"{common.median(create) / common.median(plain):.2f}"],
            ["workspace: idle-suspended → first answer", f"{common.median(woken):.2f} s",
             f"{common.median(woken) / common.median(plain):.2f}"]]
    print(common.table(["measure (median)", "value", "× plain"], rows, align="lll"))
    print(f"samples: plain {[round(x, 2) for x in plain]}, create {[round(x, 2) for x in create]}, "
          f"wake {[round(x, 2) for x in woken]}", flush=True)
    return {"plain": plain, "create": create, "wake": woken}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=3, help="samples of each measure")
    parser.add_argument("--idle", type=int, default=5, help="the workspaces' idleTimeout in seconds")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    print(f"on {common.machine()}", flush=True)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
