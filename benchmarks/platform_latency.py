"""Platform latency: apply → all replicas running, and killed replica → gang running again (target ≤ 3 s each,
beyond the configured backoff and Python's own start-up).

The workload is tiny on purpose, so that only the platform is measured: a 2-replica TrainingJob whose command
is `python -c` printing one line with its replica, attempt and `time.time()` as soon as the interpreter is up,
then sleeping. "Running" means the workload has printed — not merely that a process exists.

  apply    t(client.apply call) → the later of the two replicas' printed timestamps, minus Python start-up.
  restart  t(SIGKILL of replica 1's workload process, found by its environment: SHIPYARD_HOME,
           SHIPYARD_JOB_NAME, SHIPYARD_REPLICA_INDEX=1, SHIPYARD_RESTART_COUNT=0) → both replicas of the
           next attempt printed, minus backoffSeconds and Python start-up.

Python start-up is measured here first: the median of launch → print of `python -c "import time;
print(time.time())"`. Timestamps are read from the pods' log files; where the time goes comes from the
job's status (lastRestartTime: when the controller recorded the failure), the runtime's pod objects
(startTime: when each pod's shim was launched) and a watch on the job (when a client sees the phase change).
Every repetition uses a fresh job name and deletes the job afterwards.

Usage: python benchmarks/platform_latency.py [--repeats 5] [--backoff 1]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

TARGET_SECONDS = 3.0
READY = "BENCH_READY"
NAMESPACE = "default"
RESTART_LABEL = "shipyard.dev/restart"
# One line as soon as the interpreter runs (os and time are loaded at start-up anyway), then sleep. The default
# SIGTERM action ends it at once, so stopping the surviving replica costs no grace period.
WORKLOAD = (
    "import os, time; print('" + READY + "', os.environ['SHIPYARD_JOB_NAME'], "
    "os.environ['SHIPYARD_REPLICA_INDEX'], os.environ['SHIPYARD_RESTART_COUNT'], repr(time.time()), flush=True); "
    "time.sleep(3600)"
)


def manifest(name: str, backoff: float) -> dict:
    return {
        "apiVersion": "shipyard.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "replicas": 2,
            "command": [sys.executable, "-c", WORKLOAD],
            "maxRestarts": 3,
            "backoffSeconds": backoff,
            "terminationGracePeriodSeconds": 5,
        },
    }


@dataclass
class Sample:
    apply_total: float  # apply call → later replica printed
    apply_shims: float  # apply call → later replica's shim launched (pod startTime)
    apply_seen_running: float | None  # apply call → a watcher sees phase Running
    restart_total: float  # SIGKILL → later replica of the next attempt printed
    restart_detect: float  # SIGKILL → the controller recorded the failure (status.lastRestartTime)
    restart_shims: float  # lastRestartTime + backoff → later new shim launched
    restart_seen_restarting: float | None  # SIGKILL → a watcher sees phase Restarting
    restart_seen_running: float | None  # SIGKILL → a watcher sees phase Running again


class PhaseWatch(threading.Thread):
    """Records (time seen, phase, restarts) of every change of one job, as a client watching it sees them."""

    def __init__(self, instance: common.Instance, name: str, since: str, timeout: float):
        super().__init__(name=f"watch-{name}", daemon=True)
        self.instance, self.job, self.since, self.timeout = instance, name, since, timeout
        self.seen: list[tuple[float, str, int]] = []
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with self.instance.client() as client:
                for type_, obj in client.watch("trainingjob", NAMESPACE, self.job, resource_version=self.since,
                                               timeout=self.timeout):
                    if type_ == "DELETED":
                        return
                    self.seen.append((time.time(), obj.status.phase, obj.status.restarts))
        except Exception as exc:  # noqa: BLE001 - reported with the figures, never fatal
            self.error = exc

    def first(self, phase: str, restarts: int) -> float | None:
        return next((t for t, p, r in self.seen if p == phase and r == restarts), None)


def ready_times(instance: common.Instance, name: str, restart: int) -> dict[int, float]:
    """Replica index → the timestamp it printed in attempt `restart`, from the pods' log files."""
    return ready_times_in((instance.home / "logs" / NAMESPACE).glob(f"{name}-*.log"), name, restart)


def ready_times_in(paths, name: str, restart: int) -> dict[int, float]:
    """The same from any log files (the cluster benchmark reads the node agent's)."""
    found: dict[int, float] = {}
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 5 and parts[0] == READY and parts[1] == name and parts[3] == str(restart):
                found[int(parts[2])] = float(parts[4])
    return found


def wait_ready(instance: common.Instance, name: str, restart: int, timeout: float) -> dict[int, float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = ready_times(instance, name, restart)
        if len(found) == 2:
            return found
        time.sleep(0.02)  # only how soon we notice; the figures come from the printed timestamps
    raise RuntimeError(f"{name}: attempt {restart} did not print from both replicas within {timeout:g}s; "
                       f"daemon log:\n{instance.log_tail()}")


def shim_launch_times(instance: common.Instance, name: str, restart: int) -> list[float]:
    """When the runtime launched each pod's shim (the pod's status.startTime) for attempt `restart`."""
    out = []
    for path in (instance.home / "runtime" / "objects" / "Pod" / NAMESPACE).glob(f"{name}-*.json"):
        try:
            pod = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if pod["metadata"].get("labels", {}).get(RESTART_LABEL) == str(restart) and pod["status"].get("startTime"):
            out.append(_epoch(datetime.fromisoformat(pod["status"]["startTime"])))
    return out


def _epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()


def one_sample(instance: common.Instance, client, index: int, args: argparse.Namespace) -> Sample:
    name = f"latency-{index}-{uuid.uuid4().hex[:4]}"
    _, since = client.list_with_version("trainingjob", NAMESPACE, name)
    watch = PhaseWatch(instance, name, since, timeout=args.latency_timeout * 3)
    watch.start()
    try:
        t_apply = time.time()
        client.apply([("platform_latency.py", 1, manifest(name, args.backoff))])
        first = wait_ready(instance, name, 0, args.latency_timeout)
        first_shims = shim_launch_times(instance, name, 0)

        victims = instance.processes(SHIPYARD_JOB_NAME=name, SHIPYARD_REPLICA_INDEX="1",
                                     SHIPYARD_RESTART_COUNT="0")
        if len(victims) != 1:
            raise RuntimeError(f"{name}: expected one workload process of replica 1, found {victims}")
        t_kill = time.time()
        os.kill(victims[0], signal.SIGKILL)
        second = wait_ready(instance, name, 1, args.latency_timeout)
        second_shims = shim_launch_times(instance, name, 1)
        job = client.get("trainingjob", name, NAMESPACE)
        if job.status.restarts != 1 or job.status.last_restart_time is None:
            raise RuntimeError(f"{name}: expected restarts=1 with a lastRestartTime, got {job.status}")
        recorded = _epoch(job.status.last_restart_time)
    finally:
        try:
            deleted = client.delete("trainingjob", name, NAMESPACE)
            client.wait_deleted("trainingjob", name, NAMESPACE, resource_version=deleted.metadata.resource_version,
                                timeout=120)
        finally:
            watch.join(timeout=10)
    if watch.error is not None:
        common.log(f"warning: the watch on {name} failed: {watch.error}")

    def since_kill(t: float | None) -> float | None:
        return None if t is None else t - t_kill

    return Sample(
        apply_total=max(first.values()) - t_apply,
        apply_shims=max(first_shims) - t_apply if len(first_shims) == 2 else float("nan"),
        apply_seen_running=None if watch.first("Running", 0) is None else watch.first("Running", 0) - t_apply,
        restart_total=max(second.values()) - t_kill,
        restart_detect=recorded - t_kill,
        restart_shims=(max(second_shims) - (recorded + args.backoff)) if len(second_shims) == 2 else float("nan"),
        restart_seen_restarting=since_kill(watch.first("Restarting", 1)),
        restart_seen_running=since_kill(watch.first("Running", 1)),
    )


def _s(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.2f}"


def run(args: argparse.Namespace) -> dict:
    """Run the benchmark, print its tables, and return the figures for run_all's summary."""
    print(f"== platform latency: 2-replica TrainingJob of `python -c` (print, then sleep), backoffSeconds "
          f"{args.backoff:g}, {args.repeats} repetition(s)")
    print(f"   machine: {common.machine()}")
    samples: list[Sample] = []
    with common.shipyard_instance() as instance:
        startup_samples = common.python_startup(args.startup_samples)
        startup = common.median(startup_samples)
        print(f"   Python start-up (launch → first print): median {startup:.3f} s "
              f"(min {min(startup_samples):.3f}, max {max(startup_samples):.3f}, n={len(startup_samples)})")
        with instance.client() as client, common.ForeignLoad(roots=[instance.daemon_pid or 0]) as load:
            for i in range(1, args.repeats + 1):
                common.log(f"   repetition {i}/{args.repeats} …")
                samples.append(one_sample(instance, client, i, args))

    apply_latency = [s.apply_total - startup for s in samples]
    restart_latency = [s.restart_total - args.backoff - startup for s in samples]
    print("\napply → both replicas printed (seconds)")
    print(common.table(
        ["run", "total", "latency (−start-up)", "shims launched", "watch sees Running"],
        [[i, _s(s.apply_total), _s(lat), _s(s.apply_shims), _s(s.apply_seen_running)]
         for i, (s, lat) in enumerate(zip(samples, apply_latency), 1)]))
    print(f"\nSIGKILL of replica 1 → both replicas of attempt 2 printed (seconds; backoff {args.backoff:g} s)")
    print(common.table(
        ["run", "total", "latency (−backoff −start-up)", "failure recorded", "shims launched after backoff",
         "watch sees Restarting", "watch sees Running"],
        [[i, _s(s.restart_total), _s(lat), _s(s.restart_detect), _s(s.restart_shims),
          _s(s.restart_seen_restarting), _s(s.restart_seen_running)]
         for i, (s, lat) in enumerate(zip(samples, restart_latency), 1)]))
    print("\n  failure recorded: SIGKILL → status.lastRestartTime (shim reaps, runtime observes, Job fails, "
          "controller counts the restart)\n  shims launched after backoff: lastRestartTime + backoff → the "
          "later new pod's shim started (old gang stopped, backoff, new Job, placement)\n  the rest of the "
          "total is the shim's own start-up plus the workload's Python start-up")

    result = {
        "python_startup": startup,
        "apply_median": common.median(apply_latency), "apply_max": max(apply_latency),
        "restart_median": common.median(restart_latency), "restart_max": max(restart_latency),
        "restart_detect_median": common.median([s.restart_detect for s in samples]),
        "restart_shims_median": common.median([s.restart_shims for s in samples]),
        "backoff": args.backoff, "target": TARGET_SECONDS, "foreign_cores": load.cores,
    }
    print(f"\napply latency median {result['apply_median']:.2f} s, max {result['apply_max']:.2f} s; "
          f"restart latency median {result['restart_median']:.2f} s, max {result['restart_max']:.2f} s "
          f"(target <= {TARGET_SECONDS:g} s beyond backoff and Python start-up {startup:.2f} s); "
          f"other processes' load meanwhile {load.cores:.2f} cores")
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=5,
                        help="repetitions, each with a fresh job (default %(default)s)")
    parser.add_argument("--backoff", type=float, default=1.0, help="the job's backoffSeconds (default %(default)s)")
    parser.add_argument("--startup-samples", type=int, default=7,
                        help="launches to measure Python start-up (default %(default)s)")
    parser.add_argument("--latency-timeout", dest="latency_timeout", type=float, default=60,
                        help="seconds to wait for one step before giving up (default %(default)s)")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.repeats < 1 or args.startup_samples < 1:
        parser.error("--repeats and --startup-samples must be at least 1")
    if args.backoff < 0:
        parser.error("--backoff must not be negative")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    add_arguments(parser)
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
