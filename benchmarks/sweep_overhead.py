"""Sweep overhead: what the platform adds per trial, and a sweep's makespan against the same trials run one
after another as plain processes.

The trial is a fixed amount of single-threaded CPU work (a pure-Python loop of `--work` iterations, about
5 s here), printing `BENCH_TRIAL <name> <time.time()>` as soon as its interpreter runs and `BENCH_DONE` at the
end, so "running" means the trial's own code runs, not merely that a process exists.

- per-trial overhead: trial TrainingJob created by the Sweep controller (its creationTimestamp) → the trial's
  first line, minus Python's own start-up (measured first, as in platform_latency.py); and sweep apply → the
  first trial's first line.
- makespan: a Sweep of `--trials` trials with `--parallelism` (default 2, the cores here), apply → Succeeded,
  against the same commands run sequentially as plain processes. The ratio sequential/sweep is the speed-up
  the platform delivers (at most min(parallelism, cores)).

The daemon runs with MLflow tracking as `shipyard up` does by default (each trial gets a run); the run waits
for the tracking server to answer before it starts, so its start-up is not counted.

Usage: python benchmarks/sweep_overhead.py [--trials 4] [--parallelism 2] [--work 10000000]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

TRIAL = (
    "import os, sys, time\n"
    "name = os.environ.get('SHIPYARD_JOB_NAME', 'plain')\n"
    "print('BENCH_TRIAL', name, repr(time.time()), flush=True)\n"
    "x = 0\n"
    "for i in range(int(sys.argv[1])):\n"
    "    x += i * i\n"
    "print('SHIPYARD_PROGRESS {\"step\": 1, \"total_steps\": 1, \"loss\": 1.0}', flush=True)\n"
    "print('BENCH_DONE', name, repr(time.time()), flush=True)\n"
)
_LINE = re.compile(r"BENCH_TRIAL (\S+) ([0-9.]+)")


def sweep_manifest(name: str, args: argparse.Namespace) -> dict:
    return {"apiVersion": "shipyard.dev/v1alpha1", "kind": "Sweep", "metadata": {"name": name}, "spec": {
        "parameters": [{"name": "seed", "type": "categorical", "values": list(range(1, args.trials + 1))}],
        "algorithm": {"type": "grid"},
        "objective": {"metric": "loss", "goal": "minimize"},
        "parallelism": args.parallelism,
        "maxTrials": args.trials,
        "trial": {"command": ["python", "-c", TRIAL + "# seed ${seed}\n", str(args.work)],
                  "resources": {"cpu": "1"}, "maxRestarts": 0}}}


def plain_sequential(args: argparse.Namespace) -> float:
    started = time.monotonic()
    for _ in range(args.trials):
        subprocess.run([sys.executable, "-c", TRIAL, str(args.work)], check=True, capture_output=True,
                       env=common.clean_env(OMP_NUM_THREADS="1"))
    return time.monotonic() - started


def _wait_tracking(instance: common.Instance, timeout: float = 120) -> None:
    import httpx

    url = json.loads((instance.home / "daemon.json").read_text()).get("mlflowUrl")
    if not url:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)  # polling a server that is starting: nothing to wait on
    common.log("warning: the MLflow server did not answer; measuring without it")


def run_sweep(instance: common.Instance, client, args: argparse.Namespace, name: str) -> dict:
    applied = time.time()
    client.apply([("bench", 1, sweep_manifest(name, args))])
    sweep = client.wait("sweep", name, until=lambda s: s.status.phase in ("Succeeded", "Failed"),
                        timeout=args.timeout)
    finished = time.time()
    if sweep.status.phase != "Succeeded":
        raise RuntimeError(f"sweep {name} ended {sweep.status.phase}: {sweep.status.conditions}")
    firsts, overheads = [], []
    for trial in sweep.status.trials:
        job = client.get("trainingjob", trial.name)
        text = "".join(client.logs("trainingjob", trial.name))
        match = _LINE.search(text)
        if match is None:
            raise RuntimeError(f"trial {trial.name} printed no BENCH_TRIAL line:\n{text[-2000:]}")
        started = float(match.group(2))
        firsts.append(started)
        created = job.metadata.creation_timestamp
        assert isinstance(created, datetime)
        overheads.append(started - created.timestamp())
    deleted = client.delete("sweep", name)
    client.wait_deleted("sweep", name, resource_version=deleted.metadata.resource_version, timeout=args.timeout)
    return {"makespan": finished - applied, "first_trial": min(firsts) - applied, "overheads": overheads}


def run(args: argparse.Namespace) -> dict:
    print(f"== sweep overhead: {args.trials} trials of {args.work:,} loop iterations, parallelism "
          f"{args.parallelism}, {args.repeats} repeat(s)", flush=True)
    startup = common.median(common.python_startup())
    common.log("plain: the same trials one after another…")
    with common.ForeignLoad() as plain_foreign:
        sequential = [plain_sequential(args) for _ in range(args.repeats)]
    sweeps = []
    with common.shipyard_instance() as instance:
        _wait_tracking(instance)
        client = instance.client(timeout=60)
        with common.ForeignLoad(roots=[instance.daemon_pid or 0]) as foreign:
            for i in range(args.repeats):
                common.log(f"sweep {i + 1}/{args.repeats}…")
                sweeps.append(run_sweep(instance, client, args, f"bench-{i}"))
        client.close()
    overheads = [o - startup for s in sweeps for o in s["overheads"]]
    seq, span = common.median(sequential), common.median([s["makespan"] for s in sweeps])
    rows = [
        ["trial created → trial running, beyond Python start-up", f"{common.median(overheads):.2f} s median, "
         f"{max(overheads):.2f} s max ({len(overheads)} trials)"],
        ["sweep apply → first trial running", f"{common.median([s['first_trial'] for s in sweeps]):.2f} s median"],
        ["makespan: plain, one after another", f"{seq:.1f} s"],
        [f"makespan: Sweep, parallelism {args.parallelism} (apply → Succeeded)", f"{span:.1f} s"],
        ["speed-up (plain sequential / sweep)", f"{seq / span:.2f}x"],
    ]
    print(common.table(["measure", "value"], rows, align="ll"))
    print(f"Python start-up subtracted: {startup:.3f} s; foreign load: {plain_foreign.cores:.2f} cores during the "
          f"plain runs, {foreign.cores:.2f} during the sweeps", flush=True)
    return {"overhead_median": common.median(overheads), "overhead_max": max(overheads), "sequential": seq,
            "makespan": span, "speedup": seq / span, "foreign_cores": foreign.cores}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--work", type=int, default=10_000_000, help="loop iterations per trial (~5 s here)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600)


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if min(args.trials, args.parallelism, args.work, args.repeats) < 1:
        parser.error("--trials, --parallelism, --work and --repeats must be positive")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    print(f"on {common.machine()}", flush=True)
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
