"""How much CPU does a `shipyard` call cost before and while it answers? Per verb, against a running daemon.

CPU time is user + sys of the child process (os.wait4's rusage), the median of --samples runs, so a busy
machine inflates it less than wall time would; `python -c pass` is measured beside it (the interpreter's own
floor) and, where the cluster tier's binaries are built, `kubectl version --client` (Go, no imports).

`--baseline-src DIR` runs every verb a second time with PYTHONPATH=DIR, e.g. another revision's sources:
    git archive HEAD~1 src | tar -x -C /tmp/base && .venv/bin/python benchmarks/cli_startup.py --baseline-src /tmp/base/src
Target: ≤ 0.150 s for get, describe, logs, apply, delete, version and --help.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHIPYARD_CLI, ForeignLoad, log, machine, shipyard_instance, table  # noqa: E402

TARGET = 0.150
JOB = """\
apiVersion: shipyard.dev/v1alpha1
kind: TrainingJob
metadata: {name: bench, labels: {team: a}}
spec: {replicas: 1, command: [python, -c, "print(1)"]}
"""


def cpu_of(argv: list[str], env: dict[str, str], samples: int) -> tuple[float, float]:
    """(median, minimum) CPU seconds (user + sys) of `argv` run to completion, after one unmeasured run (which writes the
    bytecode caches an installed CLI has: compiling sources would be measured otherwise)."""
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    seconds = []
    for _ in range(samples):
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, _, usage = os.wait4(proc.pid, 0)
        proc.returncode = 0  # reaped above
        seconds.append(usage.ru_utime + usage.ru_stime)
    return statistics.median(seconds), min(seconds)


def verbs(manifest: str) -> list[tuple[str, list[str]]]:
    return [
        ("--help", ["--help"]),
        ("version", ["version"]),
        ("get tj", ["get", "tj"]),
        ("get tj -l team=a", ["get", "tj", "-l", "team=a"]),
        ("get tj/bench -o yaml", ["get", "tj/bench", "-o", "yaml"]),
        ("describe tj bench", ["describe", "tj", "bench"]),
        ("logs tj/bench", ["logs", "tj/bench"]),
        ("apply -f (unchanged)", ["apply", "-f", manifest]),
        ("delete tj/absent", ["delete", "tj/absent", "--ignore-not-found"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=9)
    parser.add_argument("--baseline-src", help="Also measure with PYTHONPATH=DIR (another revision's src/).")
    args = parser.parse_args()
    kubectl = sorted(glob.glob(os.path.expanduser("~/.cache/shipyard/k8s/bin/*/kubectl")))
    manifest = Path(tempfile.mkdtemp(prefix="shipyard-cli-bench-")) / "job.yaml"
    manifest.write_text(JOB)
    with shipyard_instance("shipyard-cli-bench-") as inst, ForeignLoad([inst.daemon_pid or 0]) as load:
        inst.cli("apply", "-f", str(manifest))
        floor, floor_min = cpu_of([sys.executable, "-c", "pass"], inst.env, args.samples)
        rows = []
        for label, argv in verbs(str(manifest)):
            log(f"measuring shipyard {label}")
            mine, least = cpu_of([*SHIPYARD_CLI, *argv], inst.env, args.samples)
            row = [f"shipyard {label}", f"{mine:.3f}", f"{least:.3f}", f"{mine - floor:.3f}",
                   "yes" if mine <= TARGET else "no"]
            if args.baseline_src:
                env = {**inst.env, "PYTHONPATH": args.baseline_src}
                row.insert(3, f"{cpu_of([*SHIPYARD_CLI, *argv], env, args.samples)[0]:.3f}")
            rows.append(row)
        extra = [["python -c pass", f"{floor:.3f}", f"{floor_min:.3f}", "0.000", ""]]
        if kubectl:
            seconds, least = cpu_of([kubectl[-1], "version", "--client"], inst.env, args.samples)
            extra.append(["kubectl version --client", f"{seconds:.3f}", f"{least:.3f}", "", ""])
        if args.baseline_src:
            extra = [[*r[:3], "", *r[3:]] for r in extra]
    headers = ["command", "CPU s (median)", "min", "beyond python", f"median ≤ {TARGET:.3f}"]
    if args.baseline_src:
        headers.insert(3, "baseline median")
    print(table(headers, rows + extra))
    print(f"\n{machine()}; median of {args.samples}; foreign load {load.cores:.2f} cores"
          + (" (disturbed: figures inflated)" if load.cores > 0.05 else ""))


if __name__ == "__main__":
    main()
