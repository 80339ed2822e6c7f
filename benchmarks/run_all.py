"""Run every Shipyard benchmark and print their headline figures beside the targets (what `make bench` runs).

The benchmarks print figures; nothing here fails on a missed target (timing on a shared machine is not a
test). The exit code is non-zero only if a benchmark could not run. See docs/benchmarks.md.

Usage: python benchmarks/run_all.py [--rounds 6] [--steps 400] [--repeats 5] [--backoff 1]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import (  # noqa: E402
    common, gateway_overhead, platform_latency, pretrain_throughput, serve_throughput, sweep_overhead,
    training_overhead, workspace_latency,
)

RUN_ALL_ROUNDS = 6  # more than training_overhead.py's default of 3 (the budget allows it), and even, so that
# the alternating order puts each side first equally often


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="Takes about 13 minutes on 2 quiet cores with the defaults.")
    training = parser.add_argument_group("training overhead")
    training_overhead.add_arguments(training)
    training.set_defaults(rounds=RUN_ALL_ROUNDS)
    latency = parser.add_argument_group("platform latency")
    platform_latency.add_arguments(latency)
    pretrain = parser.add_argument_group("pretrain throughput")
    _add_prefixed(pretrain, pretrain_throughput.add_arguments, "pretrain")
    serve = parser.add_argument_group("serve throughput")
    _add_prefixed(serve, serve_throughput.add_arguments, "serve")
    gateway = parser.add_argument_group("gateway overhead")
    _add_prefixed(gateway, gateway_overhead.add_arguments, "gateway")
    sweep = parser.add_argument_group("sweep overhead")
    _add_prefixed(sweep, sweep_overhead.add_arguments, "sweep")
    workspace = parser.add_argument_group("workspace latency")
    _add_prefixed(workspace, workspace_latency.add_arguments, "workspace")
    args = parser.parse_args(argv)
    training_overhead.check_arguments(parser, args)
    platform_latency.check_arguments(parser, args)
    pretrain_args, serve_args = _unprefixed(args, "pretrain"), _unprefixed(args, "serve")
    pretrain_throughput.check_arguments(parser, pretrain_args)
    serve_throughput.check_arguments(parser, serve_args)
    gateway_args, sweep_args = _unprefixed(args, "gateway"), _unprefixed(args, "sweep")
    gateway_overhead.check_arguments(parser, gateway_args)
    sweep_overhead.check_arguments(parser, sweep_args)

    started = time.monotonic()
    print(f"Shipyard benchmarks on {common.machine()}\n", flush=True)
    overhead = training_overhead.run(args)
    print(flush=True)
    latency_result = platform_latency.run(args)
    print(flush=True)
    pretrain_result = pretrain_throughput.run(pretrain_args)
    print(flush=True)
    serve_result = serve_throughput.run(serve_args)
    print(flush=True)
    gateway_result = gateway_overhead.run(gateway_args)
    print(flush=True)
    sweep_result = sweep_overhead.run(sweep_args)
    print(flush=True)
    workspace_result = workspace_latency.run(_unprefixed(args, "workspace"))
    elapsed = time.monotonic() - started

    disturbed = overhead["foreign_cores_max"] > training_overhead.FOREIGN_WARNING_CORES
    rows = [
        ["training tokens/s, shipyard / plain torchrun",
         f"{overhead['ratio_median']:.3f} (rounds {', '.join(f'{r:.3f}' for r in overhead['ratios'])})",
         f">= {overhead['target']}",
         "inconclusive (disturbed)" if disturbed else _verdict(overhead["ratio_median"] >= overhead["target"])],
        ["apply -> all replicas running, beyond Python start-up",
         f"{latency_result['apply_median']:.2f} s median, {latency_result['apply_max']:.2f} s max",
         f"<= {latency_result['target']:g} s", _verdict(latency_result["apply_max"] <= latency_result["target"])],
        [f"killed replica -> gang running, beyond backoff ({latency_result['backoff']:g} s) and start-up",
         f"{latency_result['restart_median']:.2f} s median, {latency_result['restart_max']:.2f} s max",
         f"<= {latency_result['target']:g} s", _verdict(latency_result["restart_max"] <= latency_result["target"])],
    ]
    for r in pretrain_result["results"]:
        rows.append([f"pretrain tokens/s, {r['processes']} process(es) × {r['threads']} thread(s)",
                     f"{r['tokens_per_second']:,.0f} (MFU {r['mfu']:.0%} of {r['peak_flops'] / 1e9:.0f} GFLOP/s)",
                     "-", "figure"])
    naive = serve_result["naive"]["tokens_per_second"]
    for r in serve_result["results"]:
        ratio = r["tokens_per_second"] / naive
        rows.append([f"serve output tokens/s at concurrency {r['concurrency']} / naive generate",
                     f"{r['tokens_per_second']:,.0f} ({ratio:.1f}×; TTFT p50 {r['ttft_p50'] * 1000:.0f} ms, "
                     f"p99 {r['ttft_p99'] * 1000:.0f} ms)",
                     ">= 5×" if r["concurrency"] == 32 else "-",
                     _verdict(ratio >= 5) if r["concurrency"] == 32 else "figure"])
    gw = gateway_result["modes"]
    rows.append(["gateway requests/s at 64 clients (trivial upstream)",
                 f"{gw['max']['gateway']['requests_per_second']:,.0f}", ">= 2,000",
                 _verdict(gw["max"]["gateway"]["requests_per_second"] >= 2000)])
    added = (gw["loaded"]["gateway"]["added_p50_ms"], gw["loaded"]["gateway"]["added_p99_ms"])
    rows.append(["gateway added latency p50 / p99 (1,000 req/s offered)", f"{added[0]:+.2f} / {added[1]:+.2f} ms",
                 "<= 1 / 3 ms", _verdict(added[0] <= 1 and added[1] <= 3)])
    rows.append(["sweep: trial created -> running, beyond start-up",
                 f"{sweep_result['overhead_median']:.2f} s median, {sweep_result['overhead_max']:.2f} s max", "-",
                 "figure"])
    rows.append(["sweep makespan vs the same trials one after another",
                 f"{sweep_result['makespan']:.1f} s vs {sweep_result['sequential']:.1f} s "
                 f"({sweep_result['speedup']:.2f}x)", "-", "figure"])
    plain_ide = common.median(workspace_result["plain"])
    for label, key in (("workspace: apply -> Jupyter answers via the gateway", "create"),
                       ("workspace: idle-suspended -> first request answered", "wake")):
        value = common.median(workspace_result[key])
        rows.append([label, f"{value:.2f} s ({value / plain_ide:.2f}x Jupyter by hand, {plain_ide:.2f} s)", "-",
                     "figure"])
    print("\n== summary")
    print(common.table(["benchmark", "measured", "target", "verdict"], rows, align="llll"))
    print(f"\nnoise: run-to-run spread of tokens/s (max-min)/median: plain {overhead['plain_spread']:.1%}, "
          f"shipyard {overhead['shipyard_spread']:.1%}")
    foreign = max(overhead["foreign_cores_max"], latency_result["foreign_cores"])
    print(f"load from other processes: up to {overhead['foreign_cores_max']:.2f} cores during a training run, "
          f"{latency_result['foreign_cores']:.2f} cores during the latency runs"
          + (" -- DISTURBED: rerun on a quiet machine" if foreign > training_overhead.FOREIGN_WARNING_CORES else ""))
    quiet = overhead["quiet_ratios"]
    if disturbed:
        print(f"training rounds without foreign load: {len(quiet)} of {len(overhead['ratios'])}"
              + (f", median ratio {overhead['quiet_ratio_median']:.3f} "
                 f"({', '.join(f'{r:.3f}' for r in quiet)})" if quiet else ""))
    if overhead["failures"]:
        print(f"FAILED training runs (repeated; see WARNING above): {len(overhead['failures'])}")
    print(f"daemon CPU while training: {overhead['daemon_cpu_share']:.1%} of one core; "
          f"Python start-up subtracted: {latency_result['python_startup']:.3f} s; total time {elapsed / 60:.1f} min")
    return 0


def _add_prefixed(group, add_arguments, prefix: str) -> None:
    """Add a benchmark's options as --PREFIX-OPTION (two benchmarks both have --steps, --timeout, …)."""
    class Prefixed:
        def add_argument(self, flag: str, **kwargs):
            kwargs["dest"] = f"{prefix}_{flag.lstrip('-').replace('-', '_')}"
            return group.add_argument(f"--{prefix}-{flag.lstrip('-')}", **kwargs)
    add_arguments(Prefixed())


def _unprefixed(args: argparse.Namespace, prefix: str) -> argparse.Namespace:
    start = f"{prefix}_"
    return argparse.Namespace(**{k[len(start):]: v for k, v in vars(args).items() if k.startswith(start)})


def _verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


if __name__ == "__main__":
    sys.exit(main())
