"""Control plane at scale: what 10,000 objects that wait cost a daemon that runs nothing.

Applies a mix of kinds and phases through the API to a fresh daemon (`shipyard up`, tracking off, no GPU, so
GPU jobs cannot be placed), waits until every object has settled, then measures:

- apply: objects/s through `POST /apply`, in batches, while the controllers reconcile what arrives;
- idle CPU: the daemon's CPU (user + system, from /proc) over a window once everything has settled;
- list: one full list of every TrainingJob (no limit), and the client's paged list (`limit`/`continue`);
- memory: the daemon's RSS growth per stored object.

The default mix (10,000 stored objects): 43% TrainingJobs that need a GPU (Pending, Unschedulable: a Job,
Service, NetworkPolicy and pod each in the runtime), 30% TrainingJobs in a Kueue queue (Pending, Admitted=False:
a suspended Job), 12.5% Sweeps and their 12.5% trial TrainingJobs (which need a GPU too), and 2% TrainingJobs
that ran `true` and Succeeded.

Figures are printed, never asserted (timing on a shared machine is not a test); the machine's load average is
printed beside them. Usage: python benchmarks/control_plane_scale.py [--objects 10000] [--idle-seconds 30]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

RESYNC_SECONDS = 1800.0  # shipyard.controllers.manager.RESYNC_SECONDS (not imported: `--help` needs no package)
TARGET_IDLE_CORE = 0.05
TARGET_LIST_SECONDS = 0.2
TARGET_APPLY_PER_SECOND = 500.0
BATCH = 500
PROJECTS = 10  # objects are spread over projects, as a shared instance's are


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--objects", type=int, default=10_000, help="stored objects to create (default 10000)")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="idle CPU window (default 30)")
    parser.add_argument("--settle-timeout", type=float, default=900.0,
                        help="longest wait for every object to settle (default 900 s)")


def _job(name: str, ns: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "shipyard.dev/v1alpha1", "kind": "TrainingJob",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": 1, "command": ["python", "train.py"], **spec}}


def _sweep(name: str, ns: str) -> dict[str, Any]:
    return {"apiVersion": "shipyard.dev/v1alpha1", "kind": "Sweep", "metadata": {"name": name, "namespace": ns},
            "spec": {"parameters": [{"name": "lr", "type": "categorical", "values": ["1e-3", "1e-2"]}],
                     "objective": {"metric": "loss", "goal": "minimize"}, "parallelism": 1,
                     "trial": {"command": ["python", "train.py", "--lr", "${lr}"],
                               "resources": {"nvidia.com/gpu": 1}}}}


def mix(objects: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The manifests to apply, and how many stored objects of each sort they make (trials included)."""
    counts = {"succeeded": objects * 2 // 100, "queued": objects * 30 // 100, "sweeps": objects * 125 // 1000}
    counts["unschedulable"] = objects - counts["succeeded"] - counts["queued"] - 2 * counts["sweeps"]
    out: list[dict[str, Any]] = []
    for i in range(counts["succeeded"]):
        out.append(_job(f"done-{i}", f"p{i % PROJECTS}", command=["true"]))
    for i in range(counts["unschedulable"]):
        out.append(_job(f"gpu-{i}", f"p{i % PROJECTS}", resources={"nvidia.com/gpu": 1}))
    for i in range(counts["queued"]):
        queued = _job(f"queued-{i}", f"p{i % PROJECTS}")
        queued["metadata"]["labels"] = {"kueue.x-k8s.io/queue-name": "gpus"}
        out.append(queued)
    for i in range(counts["sweeps"]):
        out.append(_sweep(f"sweep-{i}", f"p{i % PROJECTS}"))
    return out, counts


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _settled(client: Any, counts: dict[str, int]) -> tuple[bool, str]:
    jobs, _ = client.list_wire("TrainingJob", None)
    sweeps, _ = client.list_wire("Sweep", None)
    phases: dict[str, int] = {}
    waiting = 0
    for job in jobs:
        status = job.get("status") or {}
        phase = status.get("phase") or "-"
        phases[phase] = phases.get(phase, 0) + 1
        reasons = {c.get("reason") for c in status.get("conditions") or []}
        if phase == "Pending" and reasons & {"Unschedulable", "Queued"}:
            waiting += 1
    done = phases.get("Succeeded", 0)
    expected_jobs = counts["succeeded"] + counts["unschedulable"] + counts["queued"] + counts["sweeps"]
    ok = (len(jobs) == expected_jobs and done == counts["succeeded"] and waiting == expected_jobs - done
          and len(sweeps) == counts["sweeps"])
    return ok, f"{len(jobs)} jobs {phases}, {waiting} waiting, {len(sweeps)} sweeps"


def _list_once(client: Any, path: str) -> tuple[float, int, int]:
    started = time.perf_counter()
    resp = client._http.get(path)  # noqa: SLF001 - one raw request: the client's own paging is timed apart
    body = resp.read()
    elapsed = time.perf_counter() - started
    if resp.status_code != 200:
        raise RuntimeError(f"GET {path}: {resp.status_code} {body[:200]!r}")
    return elapsed, len(resp.json()["items"]), len(body)


def run(args: argparse.Namespace) -> dict[str, Any]:
    manifests, counts = mix(args.objects)
    common.log(f"control plane scale: {args.objects} objects ({counts})")
    with common.shipyard_instance("shipyard-scale-", env={"SHIPYARD_LOCAL_GPUS": "0",
                                                          "SHIPYARD_TRACKING": "off"}) as inst:
        pid = inst.daemon_pid
        assert pid is not None
        client = inst.client(timeout=300)
        time.sleep(2)  # the daemon's own start-up work (imports, first resync of nothing) finishes
        rss_before = rss_bytes(pid)

        started = time.perf_counter()
        for i in range(0, len(manifests), BATCH):
            client.apply([("bench", j + 1, m) for j, m in enumerate(manifests[i:i + BATCH])])
        apply_seconds = time.perf_counter() - started
        applied = len(manifests)
        common.log(f"applied {applied} manifests in {apply_seconds:.1f} s; waiting for them to settle")

        deadline = time.monotonic() + args.settle_timeout
        while True:
            ok, summary = _settled(client, counts)
            if ok:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"objects did not settle in {args.settle_timeout:.0f} s: {summary}")
            time.sleep(5)
        settle_seconds = time.perf_counter() - started
        common.log(f"settled after {settle_seconds:.0f} s: {summary}")
        # Quiet: wait until the controllers' last status writes and the runtime's last ticks are done.
        quiet_deadline = time.monotonic() + 120
        while time.monotonic() < quiet_deadline:
            before = common.cpu_seconds(pid)
            time.sleep(3)
            if common.cpu_seconds(pid) - before < 0.15:
                break

        load_before = os.getloadavg()
        cpu_start, wall_start = common.cpu_seconds(pid), time.monotonic()
        time.sleep(args.idle_seconds)
        idle_core = (common.cpu_seconds(pid) - cpu_start) / (time.monotonic() - wall_start)
        rss_after = rss_bytes(pid)

        path = "/apis/shipyard.dev/v1alpha1/trainingjobs"
        full = [_list_once(client, path) for _ in range(5)]
        list_seconds = statistics.median(f[0] for f in full)
        paged = []
        for _ in range(3):
            t0 = time.perf_counter()
            items, _ = client.list_wire("TrainingJob", None)
            paged.append(time.perf_counter() - t0)
        load_after = os.getloadavg()
        inst.down()
        resync_cpu, resynced = resync_pass(inst.home)

    stored = args.objects
    return {
        "objects": stored, "counts": counts, "apply_per_second": applied / apply_seconds,
        "apply_seconds": apply_seconds, "settle_seconds": settle_seconds, "idle_core": idle_core,
        "idle_seconds": args.idle_seconds, "list_seconds": list_seconds, "list_items": full[0][1],
        "list_bytes": full[0][2], "paged_seconds": statistics.median(paged), "paged_items": len(items),
        "rss_before": rss_before, "rss_after": rss_after,
        "rss_per_object": (rss_after - rss_before) / stored, "load": (load_before, load_after),
        "resync_cpu": resync_cpu, "resynced": resynced,
    }


def resync_pass(home: Path) -> tuple[float, int]:
    """CPU seconds of one safety resync over the stopped daemon's state (every object reconciled once), in
    this process: the idle window above is shorter than the resync period, so its cost is measured apart."""
    from shipyard.controllers.manager import Manager
    from shipyard.controllers.sweep import SweepController
    from shipyard.controllers.trainingjob import TrainingJobController
    from shipyard.runtime.local.capacity import Capacity
    from shipyard.runtime.local.runtime import LocalRuntime
    from shipyard.store.sqlite import SQLiteStore

    store = SQLiteStore(home / "shipyard.db")
    runtime = LocalRuntime(home / "runtime", home / "volumes", home / "logs",  # never started: no tick runs
                           capacity=dataclasses.replace(Capacity.detect(), gpus=[]))
    manager = Manager(store, runtime, [TrainingJobController(store, runtime), SweepController(store)])
    try:
        started = time.process_time()
        manager.enqueue_all()
        count = 0
        while manager.process_one(timeout=0):
            count += 1
        return time.process_time() - started, count
    finally:
        store.close()


def report(result: dict[str, Any]) -> str:
    rows = [
        ["apply through the API", f"{result['apply_per_second']:.0f} objects/s "
         f"({len(result['counts'])} sorts, {result['apply_seconds']:.1f} s)", f">= {TARGET_APPLY_PER_SECOND:.0f}/s",
         _verdict(result["apply_per_second"] >= TARGET_APPLY_PER_SECOND)],
        ["idle daemon, everything settled", f"{100 * result['idle_core']:.1f}% of a core "
         f"(over {result['idle_seconds']:.0f} s)", f"<= {100 * TARGET_IDLE_CORE:.0f}%",
         _verdict(result["idle_core"] <= TARGET_IDLE_CORE)],
        ["full list, one request", f"{1000 * result['list_seconds']:.0f} ms ({result['list_items']} TrainingJobs, "
         f"{result['list_bytes'] / 1e6:.1f} MB)", f"<= {1000 * TARGET_LIST_SECONDS:.0f} ms",
         _verdict(result["list_seconds"] <= TARGET_LIST_SECONDS)],
        ["full list, client (pages of 500, typed)", f"{1000 * result['paged_seconds']:.0f} ms "
         f"({result['paged_items']} items)", "-", "-"],
        ["one safety resync (every object once)", f"{result['resync_cpu']:.1f} CPU s for {result['resynced']} "
         f"reconciles = {100 * result['resync_cpu'] / RESYNC_SECONDS:.1f}% of a core over the "
         f"{RESYNC_SECONDS / 60:.0f}-minute period", "-", "-"],
        ["daemon RSS growth per stored object", f"{result['rss_per_object'] / 1024:.1f} KiB "
         f"({result['rss_before'] >> 20} -> {result['rss_after'] >> 20} MiB)", "-", "-"],
    ]
    before, after = result["load"]
    return (common.table(["measure", "value", "target", "verdict"], rows, align="llll")
            + f"\nsettled {result['settle_seconds']:.0f} s after the first apply; load average "
              f"{before[0]:.2f} before the idle window, {after[0]:.2f} after the lists")


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    print(f"Control plane scale on {common.machine()}\n", flush=True)
    print(report(run(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
