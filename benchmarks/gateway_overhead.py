"""Gateway overhead: a trivial upstream reached directly, through the Shipyard gateway and through nginx.

Three processes besides this one, all on 127.0.0.1: the upstream (uvicorn with uvloop and httptools, a raw ASGI
app answering a 50-byte JSON body), the proxy under test (`python -m shipyard.gateway` with a static route and
an API key, or nginx with one worker process and upstream keep-alive — installed from Debian's package if
missing and this runs as root), and a load generator (uvloop, raw keep-alive HTTP/1.1 connections, httptools'
response parser; every request carries the same Authorization header, which only the gateway checks).

Each target is measured three ways, in interleaved rounds (direct, gateway, nginx, direct, …) so that drift
of a shared machine hits all alike; the figures are medians over rounds:

  max      64 connections, each sending its next request as soon as the previous answer arrived (closed
           loop): the most requests/s the chain sustains, and the latencies at that saturation
  loaded   64 connections offered a fixed total rate (default 1,000 requests/s, half the gateway's target):
           latency under load without saturation. Measured from the actual send, because the generator's
           timers are only millisecond-accurate
  single   one connection, sequential: the latency a lone request pays

"added" is the target's latency minus direct's, per percentile. The proxy's CPU time per request (from
/proc, all its threads and processes) is reported too: it is what a request costs whatever the machine's
load. The direct figures also show that the generator is not the bottleneck: it sustains them on the same
cores. Benchmarks print figures; nothing here asserts on time.

Usage: python benchmarks/gateway_overhead.py [--rounds 2] [--duration 2] [--rate 1000] [--no-install-nginx]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

CONNECTIONS = 64
KEY = "sk-bench-0123456789abcdef"
TARGET_ADDED_P50_MS, TARGET_ADDED_P99_MS, TARGET_RPS = 1.0, 3.0, 2000
WARMUP_SECONDS = 0.5
MODES = ("max", "loaded", "single")
SELF = [sys.executable, str(Path(__file__).resolve())]

# --- the upstream and the load generator (run in processes of their own through --role) -----------------------

_BODY = b'{"ok": true, "message": "hello from the upstream"}'


async def _upstream_app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(_BODY)).encode())]})
    await send({"type": "http.response.body", "body": _BODY})


def serve_upstream(port: int) -> None:
    import uvicorn

    uvicorn.run(_upstream_app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning",
                access_log=False, lifespan="off")


def generate_load(port: int, path: str, connections: int, duration: float, rate: float | None) -> dict:
    """Run the load; return requests, statuses, latencies' percentiles and the generator's own CPU time."""
    import asyncio
    import resource

    import httptools
    import uvloop

    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {KEY}\r\n"
               "User-Agent: shipyard-bench\r\n\r\n").encode()
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    state = {"measure": False, "stop": False, "total": 0, "lost": 0}
    interval = connections / rate if rate else 0.0

    class Connection(asyncio.Protocol):
        def __init__(self, index: int):
            self.loop = asyncio.get_running_loop()
            self.parser = httptools.HttpResponseParser(self)
            self.closed = self.loop.create_future()
            self.next_at = self.loop.time() + (index * interval / connections if interval else 0.0)
            self.sent_at = 0.0

        def connection_made(self, transport) -> None:
            self.transport = transport
            self.schedule()

        def schedule(self) -> None:
            if state["stop"]:
                self.transport.close()
            elif interval:
                self.next_at += interval
                delay = self.next_at - self.loop.time()
                if delay > 0:
                    self.loop.call_later(delay, self.send)
                else:  # behind schedule (the chain saturates): send at once
                    self.send()
            else:
                self.send()

        def send(self) -> None:
            if self.transport.is_closing():  # the server closed it: counted in connection_lost
                return
            if state["stop"]:
                self.transport.close()
                return
            self.sent_at = time.perf_counter()
            self.transport.write(request)

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            done = time.perf_counter()
            state["total"] += 1
            if state["measure"]:
                latencies.append(done - self.sent_at)
                status = self.parser.get_status_code()
                statuses[status] = statuses.get(status, 0) + 1
            self.schedule()

        def connection_lost(self, exc) -> None:
            if not state["stop"]:
                state["lost"] += 1
            if not self.closed.done():
                self.closed.set_result(None)

    async def main() -> dict:
        loop = asyncio.get_running_loop()
        conns = []
        for i in range(connections):
            _, protocol = await loop.create_connection(lambda i=i: Connection(i), "127.0.0.1", port)
            conns.append(protocol)
        await asyncio.sleep(WARMUP_SECONDS)
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        state["measure"] = True
        started = time.perf_counter()
        await asyncio.sleep(duration)
        state["measure"] = False
        elapsed = time.perf_counter() - started
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        state["stop"] = True
        await asyncio.wait([c.closed for c in conns], timeout=10)
        latencies.sort()
        n = len(latencies)

        def pct(p: float) -> float:
            return latencies[min(n - 1, int(n * p))] * 1000 if n else float("nan")

        return {"requests": n, "requests_per_second": n / elapsed, "statuses": statuses, "total": state["total"],
                "connections_lost": state["lost"],
                "p50_ms": pct(0.50), "p90_ms": pct(0.90), "p99_ms": pct(0.99), "max_ms": pct(1.0),
                "generator_cpu_share": (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / elapsed}

    return uvloop.run(main())


# --- the targets ---------------------------------------------------------------------------------------------

def _wait_listening(port: int, process: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)  # polling a port that is not open yet
    raise RuntimeError(f"{what} did not listen on {port} within {timeout:g}s")


def _nginx_binary(install: bool) -> tuple[str | None, str]:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)
    if found:
        return found, ""
    if not install:
        return None, "nginx is not installed (apt-get install -y nginx) and --no-install-nginx was given"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, "nginx is not installed and cannot be installed here (needs root and apt-get)"
    common.log("   installing nginx (apt-get install -y nginx) …")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(["apt-get", "install", "-y", "-q", "nginx"], capture_output=True, text=True, env=env,
                            timeout=300)
    if result.returncode != 0:  # the package lists may be missing: update once, then try again
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=300, env=env)
        result = subprocess.run(["apt-get", "install", "-y", "-q", "nginx"], capture_output=True, text=True,
                                env=env, timeout=300)
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found:
        return found, ""
    return None, f"installing nginx failed: {result.stderr.strip()[-300:]}"


_NGINX_CONF = """
{user}
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
    upstream bench {{ server 127.0.0.1:{upstream}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
        }}
    }}
}}
"""


class Targets:
    """Starts the upstream and the proxies; stop() ends every process it started."""

    def __init__(self, work: Path, install_nginx: bool):
        self.work = work
        self.processes: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}
        self.paths = {"direct": "/", "gateway": "/bench/echo/", "nginx": "/"}
        self.nginx_note = ""
        self.install_nginx = install_nginx

    def start(self) -> None:
        env = common.clean_env(PYTHONUNBUFFERED="1")
        up = self.ports["direct"] = common.free_port()
        self.processes["upstream"] = subprocess.Popen([*SELF, "--role", "upstream", "--port", str(up)], env=env)
        _wait_listening(up, self.processes["upstream"], "the upstream")

        gw = self.ports["gateway"] = common.free_port()
        self.processes["gateway"] = subprocess.Popen(
            [sys.executable, "-m", "shipyard.gateway", "--port", str(gw), "--route", f"bench/echo=127.0.0.1:{up}"],
            env={**env, "SHIPYARD_GATEWAY_KEYS": f"bench={KEY}"}, cwd=common.ROOT, stdout=subprocess.DEVNULL)
        _wait_listening(gw, self.processes["gateway"], "the gateway")

        nginx, self.nginx_note = _nginx_binary(self.install_nginx)
        if nginx:
            port = self.ports["nginx"] = common.free_port()
            conf_dir = self.work / "nginx"
            conf_dir.mkdir()
            conf = conf_dir / "nginx.conf"
            conf.write_text(_NGINX_CONF.format(user="user root;" if os.geteuid() == 0 else "", dir=conf_dir,
                                               upstream=up, port=port))
            self.processes["nginx"] = subprocess.Popen([nginx, "-p", str(conf_dir), "-c", str(conf), "-g",
                                                        "daemon off;"], stderr=subprocess.PIPE)
            try:
                _wait_listening(port, self.processes["nginx"], "nginx")
            except RuntimeError as exc:
                err = self.processes.pop("nginx").stderr.read().decode(errors="replace")[-300:]  # type: ignore[union-attr]
                self.ports.pop("nginx")
                self.nginx_note = f"nginx failed to start: {exc}: {err}"

    def names(self) -> list[str]:
        return [n for n in ("direct", "gateway", "nginx") if n in self.ports]

    def proxy_cpu(self, name: str) -> float:
        """CPU seconds used so far by the target's proxy process and its children (nginx's worker)."""
        process = self.processes.get("upstream" if name == "direct" else name)
        if process is None:
            return 0.0
        table = common._process_table()
        pids = {process.pid} | {pid for pid, (ppid, _) in table.items() if ppid == process.pid}
        return sum(table[p][1] for p in pids if p in table)

    def stop(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is None:
                process.terminate()
        for name, process in self.processes.items():
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                common.log(f"warning: {name} did not stop on SIGTERM; killing it")
                process.kill()
                process.wait(10)


# --- measuring ---------------------------------------------------------------------------------------------

def measure(targets: Targets, name: str, mode: str, args: argparse.Namespace) -> dict:
    connections = 1 if mode == "single" else CONNECTIONS
    duration = args.duration * (0.75 if mode == "single" else 1.0)
    cmd = [*SELF, "--role", "loadgen", "--port", str(targets.ports[name]), "--path", targets.paths[name],
           "--connections", str(connections), "--duration", str(duration)]
    if mode == "loaded":
        cmd += ["--offered-rate", str(args.rate)]
    cpu0 = targets.proxy_cpu(name)
    upstream_cpu0 = targets.proxy_cpu("direct")
    out = subprocess.run(cmd, capture_output=True, text=True, env=common.clean_env(), timeout=duration + 60)
    if out.returncode != 0:
        raise RuntimeError(f"the load generator failed against {name}: {out.stderr.strip()[-500:]}")
    result = json.loads(out.stdout)
    result["proxy_cpu_us_per_request"] = ((targets.proxy_cpu(name) - cpu0) / max(1, result["total"]) * 1e6
                                          if name != "direct" else 0.0)
    result["upstream_cpu_us_per_request"] = (targets.proxy_cpu("direct") - upstream_cpu0) / max(1, result["total"]) * 1e6
    bad = {s: n for s, n in result["statuses"].items() if not str(s).startswith("2")}
    result["errors"] = sum(bad.values()) + result["connections_lost"]
    return result


def run(args: argparse.Namespace) -> dict:
    print(f"== gateway overhead: trivial upstream, direct vs Shipyard gateway vs nginx; {args.rounds} interleaved "
          f"round(s) of {args.duration:g} s per mode; {CONNECTIONS} connections (max, loaded at {args.rate:g} "
          "req/s) and 1 (single)")
    print(f"   machine: {common.machine()}")
    work = Path(tempfile.mkdtemp(prefix="shipyard-bench-gateway-"))
    targets = Targets(work, not args.no_install_nginx)
    samples: dict[tuple[str, str], list[dict]] = {}
    try:
        targets.start()
        if targets.nginx_note:
            print(f"   note: {targets.nginx_note}; nginx is skipped")
        with common.ForeignLoad(roots=[p.pid for p in targets.processes.values()]) as foreign:
            for i in range(1, args.rounds + 1):
                for mode in MODES:
                    for name in targets.names():
                        common.log(f"   round {i}/{args.rounds}: {mode} {name} …")
                        samples.setdefault((mode, name), []).append(measure(targets, name, mode, args))
    finally:
        targets.stop()
        shutil.rmtree(work, ignore_errors=True)
    return _report(samples, targets.names(), foreign.cores, targets.nginx_note)


def _median(samples: list[dict], key: str) -> float:
    return common.median([s[key] for s in samples])


def _report(samples: dict[tuple[str, str], list[dict]], names: list[str], foreign_cores: float, nginx_note: str) -> dict:
    result: dict = {"modes": {}, "foreign_cores": foreign_cores, "nginx_note": nginx_note}
    for mode in MODES:
        title = {"max": f"max throughput: {CONNECTIONS} connections, closed loop",
                 "loaded": f"under load: {CONNECTIONS} connections, fixed offered rate",
                 "single": "single client, sequential"}[mode]
        direct = samples[(mode, "direct")]
        rows, figures = [], {}
        for name in names:
            s = samples[(mode, name)]
            f = {k: _median(s, k) for k in ("requests_per_second", "p50_ms", "p90_ms", "p99_ms",
                                             "proxy_cpu_us_per_request", "generator_cpu_share")}
            f["errors"] = sum(x["errors"] for x in s)
            f["added_p50_ms"] = f["p50_ms"] - _median(direct, "p50_ms")
            f["added_p99_ms"] = f["p99_ms"] - _median(direct, "p99_ms")
            figures[name] = f
            rows.append([name, f"{f['requests_per_second']:,.0f}", f"{f['p50_ms']:.2f}", f"{f['p90_ms']:.2f}",
                         f"{f['p99_ms']:.2f}", "-" if name == "direct" else f"{f['added_p50_ms']:+.2f}",
                         "-" if name == "direct" else f"{f['added_p99_ms']:+.2f}",
                         "-" if name == "direct" else f"{f['proxy_cpu_us_per_request']:.0f}",
                         f"{f['generator_cpu_share']:.0%}", f["errors"]])
        print(f"\n{title}")
        print(common.table(["target", "req/s", "p50 ms", "p90 ms", "p99 ms", "added p50", "added p99",
                            "proxy CPU us/req", "generator CPU", "errors"], rows))
        result["modes"][mode] = figures
    gw = result["modes"]["max"]["gateway"]
    print(f"\ngateway: {gw['requests_per_second']:,.0f} req/s at {CONNECTIONS} clients (target >= {TARGET_RPS:,}); "
          f"added latency p50/p99: {result['modes']['loaded']['gateway']['added_p50_ms']:+.2f}/"
          f"{result['modes']['loaded']['gateway']['added_p99_ms']:+.2f} ms under load, "
          f"{result['modes']['single']['gateway']['added_p50_ms']:+.2f}/"
          f"{result['modes']['single']['gateway']['added_p99_ms']:+.2f} ms single "
          f"(targets <= {TARGET_ADDED_P50_MS:g}/{TARGET_ADDED_P99_MS:g} ms)")
    if "nginx" in names:
        ng = result["modes"]["max"]["nginx"]
        result["ratio_rps_gateway_to_nginx"] = gw["requests_per_second"] / ng["requests_per_second"]
        result["ratio_cpu_gateway_to_nginx"] = (gw["proxy_cpu_us_per_request"] /
                                                max(1e-9, ng["proxy_cpu_us_per_request"]))
        print(f"gateway/nginx: {result['ratio_rps_gateway_to_nginx']:.2f}x the requests/s, "
              f"{result['ratio_cpu_gateway_to_nginx']:.1f}x the CPU per request")
    if foreign_cores > 0.05:
        print(f"WARNING: other processes used {foreign_cores:.2f} cores on average during the run: the figures are "
              "disturbed (run again on a quiet machine)")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default %(default)s)")
    parser.add_argument("--duration", type=float, default=2.0,
                        help="measured seconds per target and mode (single: 3/4 of it) (default %(default)s)")
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="offered requests/s in the loaded mode (default %(default)s)")
    parser.add_argument("--no-install-nginx", action="store_true",
                        help="skip nginx when missing instead of installing the Debian package")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.rounds < 1 or args.duration <= 0 or args.rate <= 0:
        parser.error("--rounds must be at least 1, --duration and --rate positive")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    add_arguments(parser)
    parser.add_argument("--role", choices=("upstream", "loadgen"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--path", default="/", help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, default=CONNECTIONS, help=argparse.SUPPRESS)
    parser.add_argument("--offered-rate", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "upstream":
        serve_upstream(args.port)
        return 0
    if args.role == "loadgen":
        print(json.dumps(generate_load(args.port, args.path, args.connections, args.duration, args.offered_rate)))
        return 0
    check_arguments(parser, args)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
