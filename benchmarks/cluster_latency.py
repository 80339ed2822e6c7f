"""Cluster latency: the real control plane's start-up, and `apply` → gang running on it beside the same figure on
the embedded runtime, in one run.

The cluster is the one the `make test-k8s` tier runs (tests/k8s/controlplane.py: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler v1.37 on loopback), Shipyard's node agent running the pods, and the
operator as its own process (`python -m shipyard.operator`). The workload is platform_latency.py's: a 2-replica
TrainingJob whose replicas print a timestamp as soon as Python is up, so only the platform is measured.

  start-up     etcd healthy; kube-apiserver /readyz; controller-manager and scheduler up (the default
               ServiceAccount made); each from its own start.
  apply        create of the TrainingJob → the later of the two replicas' printed timestamps, minus Python's own
               start-up. On the cluster the path is: the operator's watch, a suspended Job applied and released,
               the Job controller's pods, the scheduler's bindings, the node agent's watch and launch.
  restart      SIGKILL of replica 1's workload → both replicas of the next attempt printed, minus backoffSeconds
               and Python's start-up.

Usage: python benchmarks/cluster_latency.py [--repeats 3] [--backoff 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common, platform_latency  # noqa: E402

NAMESPACE = "default"


class Cluster:
    """Control plane + node agent + CRDs + operator, all under one temporary directory."""

    def __init__(self, workdir: Path):
        from tests.k8s.controlplane import ControlPlane

        self.workdir = workdir
        self.plane = ControlPlane(workdir / "control-plane")
        self.agent_root = workdir / "node-agent"
        self.processes: list[subprocess.Popen[bytes]] = []
        self.api = None

    def start(self) -> dict[str, float]:
        import yaml

        from tests.k8s.conftest import CRDS, kube_api

        self.plane.start()
        self.api = kube_api(self.plane.kubeconfig)
        self.agent_root.mkdir(parents=True)
        self._spawn("node-agent", [sys.executable, "-m", "shipyard.cluster.nodeagent", "--kubeconfig",
                                   str(self.plane.kubeconfig), "--nodes", "bench-node", "--root", str(self.agent_root)])
        for doc in yaml.safe_load_all(CRDS.read_text()):
            if doc:
                self.api.apply(doc)
        self.api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shipyard-system"}})
        gateway = common.free_port()
        self._spawn("operator", [sys.executable, "-m", "shipyard.operator", "--kubeconfig", str(self.plane.kubeconfig),
                                 "--host", "127.0.0.1", "--api-port", str(common.free_port()),
                                 "--gateway-port", str(gateway), "--identity", "bench"],
                    SHIPYARD_ADMIN_TOKEN="sy_bench-" + uuid.uuid4().hex)
        deadline = time.monotonic() + 120
        while not self._leading(gateway):
            if time.monotonic() > deadline:
                raise RuntimeError("the operator did not lead within 120 s")
            time.sleep(0.1)
        return dict(self.plane.timings)

    def _spawn(self, name: str, argv: list[str], **env: str) -> None:
        with open(self.workdir / f"{name}.log", "wb") as out:
            self.processes.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                                   env={**os.environ, **env}, start_new_session=True))

    @staticmethod
    def _leading(port: int) -> bool:
        import httpx

        try:
            return httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def ready_times(self, name: str, restart: int) -> dict[int, float]:
        return platform_latency.ready_times_in((self.agent_root / "logs" / NAMESPACE).glob(f"{name}-*"), name, restart)

    def wait_ready(self, name: str, restart: int, timeout: float) -> dict[int, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.ready_times(name, restart)
            if len(found) == 2:
                return found
            time.sleep(0.02)
        raise RuntimeError(f"{name}: attempt {restart} did not print from both replicas within {timeout:g}s")

    def sample(self, index: int, backoff: float, timeout: float) -> tuple[float, float]:
        name = f"cluster-{index}-{uuid.uuid4().hex[:4]}"
        t_apply = time.time()
        self.api.create(platform_latency.manifest(name, backoff))
        first = self.wait_ready(name, 0, timeout)
        victims = common.find_processes({"SHIPYARD_JOB_NAME": name, "SHIPYARD_REPLICA_INDEX": "1",
                                         "SHIPYARD_RESTART_COUNT": "0"}, exclude_cmdline=b"shipyard.runtime.local.shim")
        if not victims:
            raise RuntimeError(f"{name}: no workload process of replica 1")
        t_kill = time.time()
        common.kill_processes(victims)
        second = self.wait_ready(name, 1, timeout)
        self.api.delete("TrainingJob", NAMESPACE, name)
        return max(first.values()) - t_apply, max(second.values()) - t_kill

    def stop(self) -> None:
        from tests.k8s.controlplane import stop_process

        for proc in reversed(self.processes):
            stop_process(proc, grace=60)
        if self.api is not None:
            self.api.close()
        self.plane.remove()


def run(args: argparse.Namespace) -> dict:
    startup = common.median(common.python_startup())
    common.log(f"python start-up: {startup:.3f} s")
    cluster_apply, cluster_restart, startups = [], [], []
    with tempfile.TemporaryDirectory(prefix="shipyard-cluster-bench-") as tmp:
        cluster = Cluster(Path(tmp))
        try:
            startups.append(cluster.start())
            common.log("control plane: " + ", ".join(f"{k} {v:.2f} s" for k, v in startups[0].items()))
            for i in range(args.repeats):
                applied, restarted = cluster.sample(i, args.backoff, args.latency_timeout)
                cluster_apply.append(applied - startup)
                cluster_restart.append(restarted - args.backoff - startup)
                common.log(f"cluster sample {i}: apply {cluster_apply[-1]:.2f} s, restart {cluster_restart[-1]:.2f} s")
        finally:
            cluster.stop()
    embedded_apply, embedded_restart = [], []
    with common.shipyard_instance() as instance, instance.client() as client:
        for i in range(args.repeats):
            sample = platform_latency.one_sample(instance, client, i, args)
            embedded_apply.append(sample.apply_total - startup)
            embedded_restart.append(sample.restart_total - args.backoff - startup)
            common.log(f"embedded sample {i}: apply {embedded_apply[-1]:.2f} s, restart {embedded_restart[-1]:.2f} s")
    result = {
        "startup": startups[0],
        "cluster": {"apply": common.median(cluster_apply), "restart": common.median(cluster_restart)},
        "embedded": {"apply": common.median(embedded_apply), "restart": common.median(embedded_restart)},
    }
    print(common.table(["", "embedded", "real control plane", "ratio"], [
        [what, f"{result['embedded'][what]:.2f} s", f"{result['cluster'][what]:.2f} s",
         f"{result['cluster'][what] / result['embedded'][what]:.1f}x"] for what in ("apply", "restart")]))
    print("control-plane start-up: " + ", ".join(f"{k} {v:.2f} s" for k, v in result["startup"].items()))
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backoff", type=float, default=1.0)
    parser.add_argument("--latency-timeout", type=float, default=120.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
