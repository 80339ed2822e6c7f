"""Pretrain throughput: tokens/s of the built-in GPT pretrain workload on 1 and 2 processes, and its model FLOPs
utilisation (MFU) against the matrix-multiply peak measured on this machine in the same run.

Configurations (all plain processes on loopback, no daemon: this measures the workload, not the platform):
  1x1  one process, one intra-op thread          (the single-core reference)
  1x2  one process, two intra-op threads         (one replica using the whole machine)
  2x1  torchrun, 2 processes × 1 thread, DDP/gloo (what the 2-replica lifecycle example runs)

Throughput comes from rank 0's SHIPYARD_PROGRESS lines over steps warmup+1 … steps (start-up, tokenizer and
the final save excluded). MFU = achieved model FLOP/s / peak FLOP/s, where a token costs 6·N + 12·L·d·T
FLOPs (forward + backward; N = parameters without the position table, L layers, d width, T sequence length:
the formula of the PaLM paper, appendix B) and the peak is the best float32 matmul rate measured with the same
number of cores.

Usage: python benchmarks/pretrain_throughput.py [--steps 40] [--warmup 10] [--configs 1x1,1x2,2x1]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

MODEL = {"n-layer": 4, "n-head": 4, "n-embd": 256, "seq-len": 256, "batch-size": 8}  # pretrain's defaults

_PEAK_SCRIPT = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1])); n = int(sys.argv[2]); seconds = float(sys.argv[3])
a, b = torch.randn(n, n), torch.randn(n, n)
for _ in range(3): a @ b
best, end = 0.0, time.perf_counter() + seconds
while time.perf_counter() < end:
    t = time.perf_counter(); a @ b; best = max(best, 2 * n ** 3 / (time.perf_counter() - t))
print(best)
"""


def matmul_peak(threads: int, processes: int, size: int = 1024, seconds: float = 3.0) -> float:
    """Best float32 matmul FLOP/s of `processes` concurrent processes with `threads` threads each, summed."""
    env = common.clean_env(OMP_NUM_THREADS=str(threads))
    procs = [subprocess.Popen([sys.executable, "-c", _PEAK_SCRIPT, str(threads), str(size), str(seconds)],
                              env=env, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    return sum(float(p.communicate(timeout=120)[0]) for p in procs)


def flops_per_token(params_without_positions: int, layers: int, width: int, seq_len: int) -> float:
    return 6 * params_without_positions + 12 * layers * width * seq_len


def run_config(name: str, processes: int, threads: int, args: argparse.Namespace, work: Path) -> dict:
    out = work / name
    flags = [f"--{k}={v}" for k, v in MODEL.items()] + [
        f"--steps={args.steps}", f"--log-every={args.window}", "--checkpoint-every=0", "--eval-batches=1",
        f"--output-dir={out / 'model'}", f"--tokenizer-dir={work / 'tokenizer'}"]
    env = common.clean_env(OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    if processes == 1:
        argv = [sys.executable, "-m", "shipyard.workloads.pretrain", *flags]
    else:
        argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={processes}",
                "--master-addr=127.0.0.1", f"--master-port={common.free_port()}", "--tee=3",
                "--local-ranks-filter=0", "-m", "shipyard.workloads.pretrain", *flags]
    started = time.monotonic()
    with common.ForeignLoad() as foreign:
        result = subprocess.run(argv, env=env, cwd=common.ROOT, capture_output=True, text=True,
                                timeout=args.timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{name} exited {result.returncode}:\n{(result.stdout + result.stderr)[-3000:]}")
    text = result.stdout + result.stderr
    tokens_per_second, steps = common.steady_throughput(common.progress_records(text), args.warmup, args.window)
    params = int(re.search(r"training ([\d,]+) params", text).group(1).replace(",", ""))
    config = json.loads((out / "model" / "config.json").read_text())
    positions = config["n_positions"] * config["n_embd"]
    per_token = flops_per_token(params - positions, config["n_layer"], config["n_embd"], MODEL["seq-len"])
    return {"name": name, "processes": processes, "threads": threads, "cores": processes * threads,
            "tokens_per_second": tokens_per_second, "steps_measured": steps, "params": params,
            "flops_per_token": per_token, "model_flops": tokens_per_second * per_token,
            "wall_seconds": time.monotonic() - started, "foreign_cores": foreign.cores}


def run(args: argparse.Namespace) -> dict:
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    print("== pretrain throughput (built-in GPT, "
          + ", ".join(f"{k} {v}" for k, v in MODEL.items()) + ")", flush=True)
    peaks: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="shipyard-bench-pretrain-") as tmp:
        work = Path(tmp)
        common.log("one-step run to build the tokenizer and token caches every configuration reuses…")
        subprocess.run([sys.executable, "-m", "shipyard.workloads.pretrain", *[f"--{k}={v}" for k, v in MODEL.items()],
                        "--steps=1", "--checkpoint-every=0", "--eval-batches=1", f"--output-dir={work / 'warm'}",
                        f"--tokenizer-dir={work / 'tokenizer'}"],
                       env=common.clean_env(TOKENIZERS_PARALLELISM="false"), cwd=common.ROOT, check=True,
                       capture_output=True, timeout=args.timeout)
        results = []
        for config in configs:
            processes, threads = (int(x) for x in config.split("x"))
            cores = processes * threads
            if cores not in peaks:
                # The best of one process with `cores` threads and `cores` single-thread processes: the
                # highest rate these cores reach on a plain matmul, whichever way they are used.
                peaks[cores] = max(matmul_peak(cores, 1), matmul_peak(1, cores) if cores > 1 else 0.0)
                common.log(f"matmul peak on {cores} core(s): {peaks[cores] / 1e9:.1f} GFLOP/s")
            common.log(f"running {config} ({args.steps} steps)…")
            result = run_config(config, processes, threads, args, work)
            result["peak_flops"] = peaks[cores]
            result["mfu"] = result["model_flops"] / peaks[cores]
            results.append(result)
    base = results[0]["tokens_per_second"]
    rows = [[r["name"], f"{r['processes']} × {r['threads']}", f"{r['tokens_per_second']:,.0f}",
             f"{r['tokens_per_second'] / base:.2f}", f"{r['model_flops'] / 1e9:.2f}", f"{r['peak_flops'] / 1e9:.1f}",
             f"{r['mfu']:.1%}", f"{r['foreign_cores']:.2f}"] for r in results]
    print(common.table(["config", "procs × threads", "tokens/s", f"vs {results[0]['name']}", "model GFLOP/s",
                        "peak GFLOP/s", "MFU", "foreign cores"], rows))
    print(f"model: {results[0]['params']:,} parameters, {results[0]['flops_per_token'] / 1e6:.1f} MFLOP per token; "
          f"measured steps {args.warmup + 1}..{args.steps} of each run", flush=True)
    return {"results": results, "peaks": peaks}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configs", default="1x1,1x2,2x1", help="PROCESSESxTHREADS, comma separated")
    parser.add_argument("--steps", type=int, default=40, help="steps per run")
    parser.add_argument("--warmup", type=int, default=10, help="first steps left out of the rate")
    parser.add_argument("--window", type=int, default=5, help="steps per progress line")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one run may take")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not re.fullmatch(r"\s*\d+x\d+\s*(,\s*\d+x\d+\s*)*", args.configs):
        parser.error("--configs: a comma-separated list like 1x1,2x1")
    if args.warmup % args.window or args.steps <= args.warmup or (args.steps - args.warmup) % args.window:
        parser.error("--warmup and --steps - --warmup must be positive multiples of --window")


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
