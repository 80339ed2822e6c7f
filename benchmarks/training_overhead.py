"""Training overhead: the same DDP script under Shipyard and under plain torchrun, tokens/s ratio (target ≥ 0.99).

Both sides run examples/train_ddp.py with the same arguments and the same topology — 2 nodes × 1 process
on this machine, one intra-op thread per process, rendezvous over loopback:

  plain     two `torchrun train_ddp.py …` processes started here with PET_NNODES=2, PET_NODE_RANK=0/1,
            PET_MASTER_ADDR=127.0.0.1, a free PET_MASTER_PORT, OMP_NUM_THREADS=1, PYTHONUNBUFFERED=1,
            output to a file;
  shipyard  the same command applied as a 2-replica TrainingJob (resources.cpu "1", so Shipyard sets
            OMP_NUM_THREADS=1) to a daemon started once in a temporary SHIPYARD_HOME, followed to completion
            with a watch (as `apply --wait` does); rank 0's output is read back with the logs API.

Throughput is the steady state from rank 0's own `SHIPYARD_PROGRESS` lines after a warm-up: total tokens /
total time over the measured steps (see common.steady_throughput). Rounds interleave plain and Shipyard runs
so that drift of the machine hits both alike, and the order within a round alternates (plain-shipyard,
shipyard-plain, …) so that drift within a round cancels too; the headline is the median of the per-round
ratios shipyard/plain. One daemon serves every round; each Shipyard job is deleted after its round.

Usage: python benchmarks/training_overhead.py [--rounds 3] [--steps 400] [--warmup 50] [--order alternate]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

SCRIPT = "train_ddp.py"  # in examples/, the working directory of both sides
TARGET_RATIO = 0.99
FOREIGN_WARNING_CORES = 0.05  # CPU of other processes, in cores, above which a run counts as disturbed
MARKER = "SHIPYARD_BENCH_RUN"


class RunFailed(RuntimeError):
    """One run of the training script did not succeed."""


@dataclass
class Run:
    side: str
    tokens_per_second: float
    measured_steps: int
    wall_seconds: float  # launch → every process exited (plain) / apply → Succeeded seen (shipyard)
    overhead_cpu_seconds: float | None = None  # the daemon's CPU time during the run (shipyard only)
    foreign_cores: float = 0.0  # CPU used meanwhile by processes this benchmark did not start, in cores


def script_args(args: argparse.Namespace, checkpoint_dir: Path) -> list[str]:
    # --checkpoint-every 0: no periodic saves (the final one comes after the last progress line); a fresh
    # directory per run, or the script would resume from the previous run's checkpoint.
    return [SCRIPT, "--steps", str(args.steps), "--checkpoint-every", "0",
            "--checkpoint-dir", str(checkpoint_dir), "--log-every", "1"]


def torchrun() -> str:
    # The same executable Shipyard runs: its local runtime puts this environment's bin/ first on PATH.
    return str(Path(sys.executable).parent / "torchrun")


def plain_run(args: argparse.Namespace, workdir: Path, label: str) -> Run:
    checkpoint_dir = workdir / f"ckpt-{label}"
    marker = uuid.uuid4().hex
    base = common.clean_env(PET_NNODES="2", PET_NPROC_PER_NODE="1", PET_MASTER_ADDR="127.0.0.1",
                            PET_MASTER_PORT=str(common.free_port()), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
                            **{MARKER: marker})
    logs = [workdir / f"{label}-rank{rank}.log" for rank in (0, 1)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        t0 = time.monotonic()
        for rank, path in enumerate(logs):
            with open(path, "wb") as out:
                procs.append(subprocess.Popen(
                    [torchrun(), *script_args(args, checkpoint_dir)], env={**base, "PET_NODE_RANK": str(rank)},
                    cwd=common.EXAMPLES, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    start_new_session=True))
        deadline = t0 + args.timeout
        try:
            codes = [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
        except subprocess.TimeoutExpired:
            codes = [p.poll() for p in procs]
            raise RunFailed(f"plain run {label} did not finish within {args.timeout:g}s (exit codes so far "
                            f"{codes})\n{_log_tails(logs)}") from None
        wall = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        # torchrun's workers live in sessions of their own; the marker finds whatever survived.
        leftovers = common.find_processes({MARKER: marker})
        if leftovers:
            common.log(f"warning: plain run {label} left processes {leftovers}; killing them")
            common.kill_processes(leftovers)
    text = logs[0].read_text(errors="replace")
    if any(codes):
        raise RunFailed(f"plain run {label} failed with exit codes {codes}\n{_log_tails(logs)}")
    tps, steps = common.steady_throughput(common.progress_records(text), args.warmup)
    return Run("plain", tps, steps, wall)


def manifest(args: argparse.Namespace, name: str, checkpoint_dir: Path) -> dict:
    return {
        "apiVersion": "shipyard.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": 2,
            "procsPerReplica": 1,
            "command": ["torchrun"],
            "args": script_args(args, checkpoint_dir),
            "workingDir": str(common.EXAMPLES),
            "resources": {"cpu": "1"},
            "maxRestarts": 0,
            "backoffSeconds": 1,
        },
    }


def shipyard_run(args: argparse.Namespace, instance: common.Instance, client, workdir: Path, label: str) -> Run:
    from shipyard.client import ShipyardError, WaitTimeout

    name = f"overhead-{label}-{uuid.uuid4().hex[:4]}"
    assert instance.daemon_pid is not None
    cpu0 = common.cpu_seconds(instance.daemon_pid)
    t0 = time.monotonic()
    client.apply([("training_overhead.py", 1, manifest(args, name, workdir / f"ckpt-{label}"))])

    def replica_log(replica: int) -> str:
        try:
            return _tail("\n".join(client.logs("trainingjob", name, replica=replica)))
        except ShipyardError as exc:
            return f"(no log: {exc})"

    def failure(what: str) -> RunFailed:
        logs = "\n".join(f"--- replica {r} (last lines):\n{replica_log(r)}" for r in (0, 1))
        return RunFailed(f"shipyard run {label} {what}\n{logs}")

    try:
        try:
            job = client.wait("trainingjob", name, until=lambda o: o.finished, timeout=args.timeout)
        except WaitTimeout:
            raise failure(f"did not finish within {args.timeout:g}s") from None
        wall = time.monotonic() - t0
        daemon_cpu = common.cpu_seconds(instance.daemon_pid) - cpu0
        text = "\n".join(client.logs("trainingjob", name, replica=0))
        if job.status.phase != "Succeeded":
            conditions = "; ".join(f"{c.type}={c.status} {c.reason}: {c.message}" for c in job.status.conditions)
            raise failure(f"ended {job.status.phase}: {conditions}")
    finally:
        deleted = client.delete("trainingjob", name)
        client.wait_deleted("trainingjob", name, resource_version=deleted.metadata.resource_version, timeout=120)
    tps, steps = common.steady_throughput(common.progress_records(text), args.warmup)
    return Run("shipyard", tps, steps, wall, daemon_cpu)


def _tail(text: str, lines: int = 40) -> str:
    """The last lines of a log without its progress lines (what explains a failure)."""
    return "\n".join([line for line in text.splitlines() if common.PROGRESS_PREFIX not in line][-lines:])


def _log_tails(paths: list[Path]) -> str:
    return "\n".join(f"--- rank {rank} (last lines):\n{_tail(path.read_text(errors='replace'))}"
                     for rank, path in enumerate(paths))


def run(args: argparse.Namespace) -> dict:
    """Run the benchmark, print its tables, and return the figures for run_all's summary."""
    print(f"== training overhead: examples/{SCRIPT}, 2 nodes x 1 process, --steps {args.steps}, "
          f"warm-up {args.warmup} steps excluded, {args.rounds} interleaved round(s), order {args.order}")
    print(f"   machine: {common.machine()}")
    workdir = Path(tempfile.mkdtemp(prefix="shipyard-bench-overhead-"))
    rounds: list[tuple[Run, Run]] = []
    failures: list[str] = []
    try:
        with common.shipyard_instance() as instance:
            with instance.client() as client:
                for i in range(1, args.rounds + 1):
                    shipyard_first = args.order == "alternate" and i % 2 == 0
                    for side in (("shipyard", "plain") if shipyard_first else ("plain", "shipyard")):
                        for attempt in range(1, args.retries + 2):
                            label = f"{side}{i}" + (f"-retry{attempt - 1}" if attempt > 1 else "")
                            common.log(f"   round {i}/{args.rounds}: {label} …")
                            try:
                                with common.ForeignLoad(roots=[instance.daemon_pid or 0]) as load:
                                    if side == "plain":
                                        measured = plain = plain_run(args, workdir, label)
                                    else:
                                        measured = ship = shipyard_run(args, instance, client, workdir, label)
                                measured.foreign_cores = load.cores
                                break
                            except RunFailed as exc:
                                # A failed run is a finding, not a figure: report it, then run the side again.
                                failures.append(str(exc))
                                print(f"\nWARNING: {exc}\n", flush=True)
                                if attempt > args.retries:
                                    raise
                    rounds.append((plain, ship))
                    _print_round(i, plain, ship, shipyard_first)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    ratios = [s.tokens_per_second / p.tokens_per_second for p, s in rounds]
    plain_tps = [p.tokens_per_second for p, _ in rounds]
    ship_tps = [s.tokens_per_second for _, s in rounds]
    result = {
        "ratio_median": common.median(ratios),
        "ratios": ratios,
        "plain_tps_median": common.median(plain_tps),
        "shipyard_tps_median": common.median(ship_tps),
        "plain_spread": common.spread(plain_tps),
        "shipyard_spread": common.spread(ship_tps),
        "plain_wall_median": common.median([p.wall_seconds for p, _ in rounds]),
        "shipyard_wall_median": common.median([s.wall_seconds for _, s in rounds]),
        "daemon_cpu_share": common.median([s.overhead_cpu_seconds / s.wall_seconds for _, s in rounds
                                           if s.overhead_cpu_seconds is not None]),
        "target": TARGET_RATIO,
        "failures": failures,
        "foreign_cores_max": max(r.foreign_cores for pair in rounds for r in pair),
        # Rounds in which no other process used the CPU noticeably: the figure to trust on a shared machine.
        "quiet_ratios": [s.tokens_per_second / p.tokens_per_second for p, s in rounds
                         if max(p.foreign_cores, s.foreign_cores) <= FOREIGN_WARNING_CORES],
    }
    result["quiet_ratio_median"] = common.median(result["quiet_ratios"]) if result["quiet_ratios"] else None
    print()
    print(common.table(
        ["", "median", "min", "max", "spread"],
        [["plain tokens/s", f"{result['plain_tps_median']:,.0f}", f"{min(plain_tps):,.0f}",
          f"{max(plain_tps):,.0f}", f"{result['plain_spread']:.1%}"],
         ["shipyard tokens/s", f"{result['shipyard_tps_median']:,.0f}", f"{min(ship_tps):,.0f}",
          f"{max(ship_tps):,.0f}", f"{result['shipyard_spread']:.1%}"],
         ["ratio shipyard/plain", f"{result['ratio_median']:.3f}", f"{min(ratios):.3f}", f"{max(ratios):.3f}",
          ""]]))
    if result["foreign_cores_max"] > FOREIGN_WARNING_CORES:
        quiet = result["quiet_ratios"]
        print(f"\nWARNING: other processes used up to {result['foreign_cores_max']:.2f} cores during a run; "
              "the figures are disturbed (run again on a quiet machine). "
              + (f"Undisturbed rounds: {len(quiet)}, median ratio {result['quiet_ratio_median']:.3f}."
                 if quiet else "No round was undisturbed."))
    if failures:
        print(f"\n{len(failures)} run(s) failed and were repeated; first failure:\n{failures[0]}")
    print(f"\nmedian ratio shipyard/plain: {result['ratio_median']:.3f} (target >= {TARGET_RATIO}); "
          f"end-to-end wall median {result['plain_wall_median']:.1f} s plain vs "
          f"{result['shipyard_wall_median']:.1f} s shipyard; daemon CPU while training: "
          f"{result['daemon_cpu_share']:.1%} of one core")
    return result


def _print_round(i: int, plain: Run, ship: Run, shipyard_first: bool) -> None:
    print(f"\nround {i} ({'shipyard, then plain' if shipyard_first else 'plain, then shipyard'})")
    rows = []
    for r in ((ship, plain) if shipyard_first else (plain, ship)):
        rows.append([r.side, f"{r.tokens_per_second:,.0f}", r.measured_steps, f"{r.wall_seconds:.1f}",
                     "-" if r.overhead_cpu_seconds is None else f"{r.overhead_cpu_seconds:.2f}",
                     f"{r.foreign_cores:.2f}"])
    rows.append(["ratio", f"{ship.tokens_per_second / plain.tokens_per_second:.3f}", "", "", "", ""])
    print(common.table(["side", "tokens/s", "steps measured", "wall s", "daemon CPU s", "foreign load (cores)"],
                       rows), flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=3, help="interleaved plain/shipyard pairs (default %(default)s)")
    parser.add_argument("--steps", type=int, default=400, help="training steps per run (default %(default)s)")
    parser.add_argument("--order", choices=("alternate", "fixed"), default="alternate",
                        help="alternate: plain first in odd rounds, shipyard first in even ones, so that drift "
                             "within a round cancels over rounds; fixed: plain first always (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=50, help="first steps excluded (default %(default)s)")
    parser.add_argument("--retries", type=int, default=1,
                        help="times a failed run is repeated before giving up (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds one run may take (default %(default)s)")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.rounds < 1 or args.retries < 0:
        parser.error("--rounds must be at least 1 and --retries not negative")
    if args.warmup < 10 or args.steps < args.warmup + 10:
        parser.error("need --warmup >= 10 and --steps >= warmup + 10 (rates come in windows of 10 steps)")


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
