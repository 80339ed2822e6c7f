"""python -m shipyard.gateway: the gateway with static routes (manual use, benchmarks), or on a cluster.

    python -m shipyard.gateway --port 8080 --route demo/echo=127.0.0.1:9001,127.0.0.1:9002 --public
    python -m shipyard.gateway --route demo/llm=127.0.0.1:9001 --key demo=sk-test
    python -m shipyard.gateway --in-cluster --host 0.0.0.0 --port 7480      # the chart's shipyard-gateway pods
    python -m shipyard.gateway --kubeconfig ~/.kube/config --port 7480       # the same, from outside a cluster

Static: routes are public with --public; otherwise each needs a key of its project (--key PROJECT=TOKEN,
repeatable, or SHIPYARD_GATEWAY_KEYS="PROJECT=TOKEN,…" to keep tokens out of the process list).
Cluster (--in-cluster or --kubeconfig): routes and keys come from the Kubernetes API (shipyard.gateway_cluster,
imported only then: the gateway package itself knows nothing of Shipyard's control plane).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import socket
import sys
import threading

from .auth import StaticKeys
from .routes import Route, RouteTable, Upstream


def parse_route(text: str, public: bool) -> Route:
    try:
        key, _, targets = text.partition("=")
        project, name = key.split("/")
        upstreams = []
        for i, target in enumerate(t for t in targets.split(",") if t):
            host, _, port = target.rpartition(":")
            upstreams.append(Upstream(id=f"{name}-{i}", host=host, port=int(port)))
        if not project or not name or not upstreams:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected PROJECT/NAME=HOST:PORT[,HOST:PORT…], got {text!r}") from None
    return Route(project=project, name=name, kind="Endpoint", public=public, upstreams=tuple(upstreams),
                 scalable_from_zero=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shipyard.gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port (printed at start)")
    parser.add_argument("--route", action="append", default=[], metavar="PROJECT/NAME=HOST:PORT[,…]")
    parser.add_argument("--public", action="store_true", help="no API key needed on any route")
    parser.add_argument("--key", action="append", default=[], metavar="PROJECT=TOKEN")
    parser.add_argument("--access-log", action="store_true", help="log one line per request to stderr")
    cluster = parser.add_argument_group("cluster mode: routes and keys from the Kubernetes API")
    cluster.add_argument("--in-cluster", action="store_true", help="use the pod's service account")
    cluster.add_argument("--kubeconfig", default=None, help="outside a cluster: a kubeconfig file")
    cluster.add_argument("--context", default=None, help="with --kubeconfig: its context")
    cluster.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", "shipyard-system"),
                         help="Shipyard's namespace: API keys, and this replica's traffic report")
    cluster.add_argument("--watch-namespaces", default="", help="comma-separated projects to route; empty: all")
    cluster.add_argument("--identity", default=os.environ.get("POD_NAME") or socket.gethostname(),
                         help="names this replica's traffic report (the pod's name)")
    cluster.add_argument("--domain", default=os.environ.get("SHIPYARD_GATEWAY_DOMAIN") or None,
                         help="also route by Host: NAME.PROJECT.DOMAIN")
    cluster.add_argument("--drain-seconds", type=float, default=0.0,
                         help="after SIGTERM, answer /-/ready with 503 but keep serving this long")
    args = parser.parse_args(argv)
    if args.in_cluster or args.kubeconfig:
        if args.route or args.key or args.public:
            parser.error("--route, --key and --public are for static routes, not with --in-cluster/--kubeconfig")
        logging.basicConfig(level=logging.INFO if args.access_log else logging.WARNING,
                            format="%(asctime)s %(name)s %(message)s")
        from shipyard.gateway_cluster import serve

        return serve(args)
    try:
        routes_given = [parse_route(r, args.public) for r in args.route]
    except argparse.ArgumentTypeError as exc:
        parser.error(str(exc))
    keys = StaticKeys()
    for item in [*args.key, *filter(None, os.environ.get("SHIPYARD_GATEWAY_KEYS", "").split(","))]:
        project, _, token = item.partition("=")
        if not project or not token:
            parser.error("--key expects PROJECT=TOKEN")
        keys.add(project, token)

    logging.basicConfig(level=logging.INFO if args.access_log else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    from .app import create_gateway_app
    from .server import GatewayServer

    table = RouteTable()
    for route in routes_given:
        table.set_route(route)
    server = GatewayServer(create_gateway_app(table, keys, None), args.host, args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    # Everything allocated so far lives as long as the process: keeping it out of the collector's scans
    # shortens the full collections that would otherwise stall requests (a latency tail, not throughput).
    gc.freeze()
    print(f"gateway: listening on {server.url}", flush=True)
    try:
        stop.wait()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
