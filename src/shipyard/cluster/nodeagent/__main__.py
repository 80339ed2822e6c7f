"""`python -m shipyard.cluster.nodeagent`: the command line of the node agent (see the package docstring).

It runs until SIGTERM or SIGINT, then stops every pod it runs (SIGTERM, the grace period, SIGKILL; reported
Failed with a DisruptionTarget condition, as a node shutting down reports them) and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from shipyard.cluster.api import KubeApi, load_config

from .agent import NodeAgent


def parse_service_url(text: str) -> tuple[str, str]:
    cluster, sep, local = text.partition("=")
    if not sep or not cluster.startswith(("http://", "https://")) or not local.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"expected CLUSTER_URL=LOCAL_URL, got {text!r}")
    return cluster.rstrip("/"), local.rstrip("/")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m shipyard.cluster.nodeagent",
                                description="Play the kubelet of one or more Nodes: run their pods as local processes.")
    p.add_argument("--kubeconfig", type=Path, help="kubeconfig (default: $KUBECONFIG, ~/.kube/config, in-cluster)")
    p.add_argument("--context", help="the kubeconfig context (default: its current one)")
    p.add_argument("--nodes", required=True, help="comma-separated Node names to register and serve")
    p.add_argument("--gpus", type=int, default=0, help="nvidia.com/gpu each Node declares (default 0)")
    p.add_argument("--root", type=Path, required=True, help="the agent's directory: pods, logs, volumes, TLS")
    p.add_argument("--pod-network", default="127.1.0.0/16", help="pod IPs come from here (default 127.1.0.0/16)")
    p.add_argument("--node-ip", default="127.0.0.1", help="the Nodes' InternalIP and the log server's address")
    p.add_argument("--port", type=int, default=0, help="the log server's port (default: a free one)")
    p.add_argument("--service-url", action="append", type=parse_service_url, default=[], metavar="CLUSTER=LOCAL",
                   help="rewrite a cluster-wide service URL in env values to a local one (repeatable)")
    p.add_argument("--resync-seconds", type=float, default=30.0, help="full relist period (default 30)")
    p.add_argument("--no-provisioner", action="store_true", help="do not provision PersistentVolumes")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request (Lease renewals) drowns the rest
    try:
        config = load_config(args.kubeconfig, args.context)
    except ValueError as exc:
        print(f"nodeagent: {exc}", file=sys.stderr)
        return 2
    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
    api = KubeApi(config, field_manager="shipyard-node-agent")
    agent = NodeAgent(api, nodes, args.root.resolve(), gpus=args.gpus, pod_network=args.pod_network,
                      node_ip=args.node_ip, service_urls=dict(args.service_url), resync_seconds=args.resync_seconds,
                      port=args.port, provision=not args.no_provisioner)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    agent.start()
    stop.wait()
    logging.getLogger(__name__).info("stopping: shutting every pod down")
    agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
