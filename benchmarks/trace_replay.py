"""The trace-replay part of the autoscaling benchmark: the GenAI QPS trace replayed open-loop against one
Endpoint configuration, and its report (SLO violations, latency, replica-seconds, a time series)."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

from benchmarks.serving_bench import (  # noqa: E402
    NAMESPACE, TRACE_NAME, TRACE_REQUEST_TYPE, SAMPLE_SECONDS, endpoint_manifest, Platform, pod_running,
    pod_ready, completion_body, _session, _post, Trace, smoothed_peak, arrivals,
)


def _percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest rank (no interpolation)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(len(sorted_values) * pct / 100))
    return sorted_values[rank - 1]


def _s(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"



@dataclass
class Replay:
    config: str
    latencies: list[float]  # of the requests answered with 200
    failures: list[str]
    scheduled: list[float]
    outcomes: list[tuple[float, float | None]]  # (scheduled time, latency or None if failed)
    series: list[tuple[float, int, int, int]]  # (t, running pods, ready pods, deployment replicas)
    lag_p99: float  # how late the generator sent, p99 (seconds)
    wall: float
    foreign: float = 0.0  # other processes' CPU meanwhile, in cores


async def _capacity(url: str, key: str, model: str, clients: int, args: argparse.Namespace) -> Capacity:
    """Closed loop at saturation: completions/s over `--capacity-seconds`, after a 1 s warm-up."""
    body = completion_body(model, args.replay_max_tokens)
    done: list[tuple[float, float]] = []
    failures = 0
    start = time.monotonic()
    stop = start + 1.0 + args.capacity_seconds
    async with _session(key, args.request_timeout) as session:
        async def client() -> None:
            nonlocal failures
            while time.monotonic() < stop:
                t = time.monotonic()
                outcome = await _post(session, f"{url}v1/completions", body)
                if outcome is None:
                    done.append((time.monotonic(), time.monotonic() - t))
                else:
                    failures += 1

        await asyncio.gather(*(client() for _ in range(clients)))
    window = [lat for t, lat in done if start + 1.0 <= t <= stop]
    return Capacity(len(window) / args.capacity_seconds, common.median(window) if window else float("nan"),
                    failures, clients)


async def _replay(platform: Platform, name: str, url: str, key: str, times: list[float], config: str,
                  args: argparse.Namespace) -> Replay:
    body = completion_body(name, args.replay_max_tokens)
    outcomes: list[tuple[float, float | None]] = []
    failures: list[str] = []
    lags: list[float] = []
    series: list[tuple[float, int, int, int]] = []
    loop = asyncio.get_running_loop()
    begin = loop.time() + 0.2
    finished = asyncio.Event()

    async def sample() -> None:
        deployment_path = platform.home / "runtime" / "objects" / "Deployment" / NAMESPACE / f"{name}.json"
        while not finished.is_set():
            pods = platform.pods(name)
            try:
                replicas = int(json.loads(deployment_path.read_text())["spec"].get("replicas", 0))
            except (OSError, ValueError, KeyError):
                replicas = -1
            series.append((loop.time() - begin, sum(pod_running(p) for p in pods), sum(pod_ready(p) for p in pods),
                           replicas))
            try:
                await asyncio.wait_for(finished.wait(), SAMPLE_SECONDS)
            except asyncio.TimeoutError:
                pass

    async with _session(key, args.request_timeout, limit=1024) as session:
        async def one(scheduled: float) -> None:
            lags.append(loop.time() - begin - scheduled)
            outcome = await _post(session, f"{url}v1/completions", body)
            latency = loop.time() - begin - scheduled
            if outcome is None:
                outcomes.append((scheduled, latency))
            else:
                outcomes.append((scheduled, None))
                failures.append(outcome)

        sampler = asyncio.create_task(sample())
        tasks = []
        for t in times:
            delay = begin + t - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(t)))
        remaining = begin + args.replay_seconds - loop.time()
        if remaining > 0:
            await asyncio.sleep(remaining)
        if tasks:
            await asyncio.wait(tasks)
        wall = loop.time() - begin
        finished.set()
        await sampler
    lags.sort()
    return Replay(config=config, latencies=sorted(lat for _, lat in outcomes if lat is not None), failures=failures,
                  scheduled=list(times), outcomes=outcomes, series=series,
                  lag_p99=_percentile(lags, 99) if lags else 0.0, wall=wall)


REPLAY_CONFIGS = {
    # configuration: (endpoint name, spec, replicas ready before the replay starts)
    "autoscaled": ("replay-auto", {"replicas": {"min": 1, "max": 3}, "autoscaling": {
        "metric": "inFlight", "target": 2, "scaleDownStabilizationSeconds": 10}}, 1),
    "fixed 1": ("replay-one", {"replicas": {"min": 1, "max": 1}}, 1),
    "fixed 3": ("replay-three", {"replicas": {"min": 3, "max": 3}}, 3),
}


@dataclass
class Capacity:
    rate: float  # completions/s
    latency: float  # median, seconds
    failures: int
    clients: int


def choose_peak(args: argparse.Namespace, one: Capacity) -> tuple[float, str]:
    if args.peak_rps is not None:
        return args.peak_rps, "--peak-rps"
    return round(args.peak_factor * one.rate, 1), f"--peak-factor {args.peak_factor:g}"


def run_replay(platform: Platform, args: argparse.Namespace, trace: Trace) -> dict:
    """All three Endpoints start together (idle replicas cost next to nothing, and starting them at once saves
    a start-up each); one replica's capacity sets the peak (three's is printed beside it); then each replays the
    same arrivals in turn, its Endpoint deleted right after its replay."""
    results: dict[str, Replay] = {}
    left = []
    try:
        common.log("   replay: applying the three Endpoints …")
        for config, (name, spec, _) in REPLAY_CONFIGS.items():
            platform.apply(endpoint_manifest(name, **spec))
            left.append(name)
        access = {}
        for config, (name, _, ready) in REPLAY_CONFIGS.items():
            platform.wait_ready(name, ready, args.ready_timeout)
            access[config] = (platform.url(name), platform.key())
            asyncio.run(_warmup(*access[config], name, args))
        capacities = {}
        for config, replicas in (("fixed 1", 1), ("fixed 3", 3)):
            clients = args.capacity_clients * replicas
            common.log(f"   capacity of {config}: {clients} closed-loop clients for {args.capacity_seconds:g} s …")
            capacities[config] = asyncio.run(_capacity(*access[config], REPLAY_CONFIGS[config][0], clients, args))
        peak, how = choose_peak(args, capacities["fixed 1"])
        times = arrivals(trace, args.replay_seconds, peak, args.peak_window, args.seed)
        for config, (name, _, _) in REPLAY_CONFIGS.items():
            time.sleep(1.0)  # the previous run's stragglers and deletion settle
            common.log(f"   replay, {config}: {len(times)} requests over {args.replay_seconds:g} s …")
            with common.ForeignLoad(roots=[platform.instance.daemon_pid or 0]) as load:
                results[config] = asyncio.run(_replay(platform, name, *access[config], times, config, args))
            results[config].foreign = load.cores
            platform.delete_quietly(name, wait=False)  # its replicas drain while the next replay starts
            left.remove(name)
    finally:
        for name in left:
            platform.delete_quietly(name, wait=False)
    return {"results": results, "capacities": capacities, "peak": peak, "peak_how": how, "requests": len(times)}


async def _warmup(url: str, key: str, model: str, args: argparse.Namespace) -> None:
    """A few requests one after another (one in flight: below any HPA target, so nothing scales)."""
    async with _session(key, args.request_timeout) as session:
        for _ in range(4):
            await _post(session, f"{url}v1/completions", completion_body(model, args.replay_max_tokens))


def replica_seconds(series: list[tuple[float, int, int, int]], until: float, column: int = 1) -> float:
    """Integrate a sampled count (step function, each sample holding until the next) over [0, until]."""
    total = 0.0
    points = [s for s in series if s[0] <= until]
    for (t, *values), nxt in zip(points, points[1:] + [(until, 0, 0, 0)]):
        total += values[column - 1] * max(0.0, min(nxt[0], until) - max(t, 0.0))
    return total



def print_replay(trace: Trace, run: dict, args: argparse.Namespace, foreign: float) -> dict:
    results: dict[str, Replay] = run["results"]
    hours = len(trace.rates) * trace.bucket_seconds / 3600
    peak_bucket = max(range(len(trace.rates)), key=trace.rates.__getitem__)
    smooth = smoothed_peak(trace, args.replay_seconds, args.peak_window)
    print(f"trace: {TRACE_NAME}, qps.csv, {TRACE_REQUEST_TYPE!r}: {trace.samples:,} samples from "
          f"{trace.containers} containers (period {trace.period:g} s) over {hours:.1f} h, in "
          f"{trace.bucket_seconds:g} s buckets: busiest bucket {max(trace.rates):.2f} QPS (trace units) at hour "
          f"{peak_bucket * trace.bucket_seconds / 3600:.1f}, busiest {args.peak_window:g} s of the replay "
          f"{smooth:.2f}, mean {sum(trace.rates) / len(trace.rates):.2f}")
    one, three = run["capacities"]["fixed 1"], run["capacities"]["fixed 3"]
    print(common.table(
        ["capacity (closed loop, max_tokens %d)" % args.replay_max_tokens, "clients", "completions/s",
         "vs one replica", "median latency s", "failed"],
        [[c, cap.clients, f"{cap.rate:.1f}", f"{cap.rate / one.rate:.2f}×" if one.rate else "-", _s(cap.latency),
          cap.failures] for c, cap in (("1 replica", one), ("3 replicas", three))]))
    print(f"replay: compressed {hours * 3600 / args.replay_seconds:.0f}× into {args.replay_seconds:g} s; peak "
          f"{run['peak']:g} requests/s over the busiest {args.peak_window:g} s ({run['peak_how']}; "
          f"{run['peak'] / one.rate:.2f}× one replica's, {run['peak'] / three.rate:.2f}× three's); "
          f"{run['requests']} Poisson arrivals (seed {args.seed}), "
          f"max_tokens {args.replay_max_tokens}; SLO: full response within {args.slo:g} s")
    if three.rate < run["peak"]:
        print(f"  note: three replicas measured only {three.rate / one.rate:.2f}× one on this machine (they share "
              "its cores, and no CPU limit is enforced locally), less than the peak: fixed 3 is overloaded there too")
    rows = []
    out = {}
    for config in ("autoscaled", "fixed 1", "fixed 3"):
        r = results.get(config)
        if r is None:
            continue
        n = len(r.outcomes)
        violations = sum(1 for _, lat in r.outcomes if lat is None or lat > args.slo)
        rs = replica_seconds(r.series, args.replay_seconds)
        peak_sample = max(r.series, key=lambda s: s[1]) if r.series else (0.0, 0, 0, 0)
        first_max = next((s for s in r.series if s[1] == peak_sample[1]), peak_sample)
        rows.append([config, n, violations, f"{100 * violations / max(1, n):.1f}", len(r.failures),
                     _s(_percentile(r.latencies, 50)), _s(_percentile(r.latencies, 99)), f"{rs:.0f}",
                     f"{rs / args.replay_seconds:.2f}", f"{peak_sample[1]} at {max(0.0, first_max[0]):.0f} s",
                     f"{1000 * r.lag_p99:.0f}", f"{r.foreign:.2f}"])
        out[config] = {"requests": n, "violations": violations, "failures": len(r.failures),
                       "p50": _percentile(r.latencies, 50), "p99": _percentile(r.latencies, 99),
                       "replica_seconds": rs, "max_replicas": peak_sample[1]}
    print(common.table(["config", "requests", "SLO violations", "%", "failures", "p50 s", "p99 s",
                        "replica-seconds", "mean replicas", "max replicas (at)", "send lag p99 ms",
                        "foreign cores"], rows))
    print("  replica-seconds: pods whose process runs (starting, serving or draining), sampled every "
          f"{SAMPLE_SECONDS:g} s over the {args.replay_seconds:g} s replay; latency: scheduled arrival → last byte")
    for r in results.values():
        if r.failures:
            print(f"  {r.config} failures: {Counter(f[:80] for f in r.failures).most_common(3)}")

    window = args.window_seconds
    head = ["window s", "offered req/s"]
    configs = [c for c in ("autoscaled", "fixed 1", "fixed 3") if c in results]
    for c in configs:
        head += [f"{c}: replicas run/ready", "p50 s", "viol %"]
    rows = []
    start = 0.0
    while start < args.replay_seconds - 1e-9:
        end = min(start + window, args.replay_seconds)
        any_r = next(iter(results.values()))
        offered = sum(1 for t in any_r.scheduled if start <= t < end) / (end - start)
        row = [f"{start:.0f}–{end:.0f}", f"{offered:.1f}"]
        for c in configs:
            r = results[c]
            pods = [s for s in r.series if start <= s[0] < end]
            inside = [lat for t, lat in r.outcomes if start <= t < end]
            bad = sum(1 for lat in inside if lat is None or lat > args.slo)
            answered = sorted(lat for lat in inside if lat is not None)
            row += [f"{sum(p[1] for p in pods) / len(pods):.1f}/{sum(p[2] for p in pods) / len(pods):.1f}"
                    if pods else "-", _s(_percentile(answered, 50)),
                    f"{100 * bad / len(inside):.0f}" if inside else "-"]
        rows.append(row)
        start = end
    print(f"\ntime series ({window:g} s windows; replicas: mean pods running / ready; trace hour = window start × "
          f"{hours / args.replay_seconds:.3f})")
    print(common.table(head, rows))
    print(f"foreign load during the replay: {foreign:.2f} cores")
    return {"configs": out, "peak": run["peak"], "capacity_one": one.rate, "capacity_three": three.rate,
            "foreign_cores": foreign}
