"""Autoscaling: how fast an Endpoint scales up on a load step (target ≤ 5 s to a new ready replica, excluding
the replica's own model load), how long the first request to a scaled-to-zero Endpoint takes, and what a real
GenAI serving trace costs in SLO violations and replica-seconds, autoscaled against fixed replica counts.

Everything runs through one isolated daemon (`shipyard up --detach --port 0 --gateway-port 0` in a temporary
SHIPYARD_HOME). The model is tiny and built offline (a byte-level BPE and a random-init GPT-2: 2 layers × 64,
as tests/workloads/serve_fixtures.py builds it) under `<home>/volumes/default/models/v1`; every Endpoint serves
it with the built-in server (`model: /models/v1`, `resources: {cpu: 250m}`, so one torch thread per replica)
and is applied with `shipyard apply -f`. Requests go through the gateway (`status.url`, read with `shipyard
get endpoint NAME -o json`) with a project key from `shipyard token create NAME -q`; every completion sets
`ignore_eos`, so each request does a fixed amount of work whatever the random weights say.

Where the times come from: the runtime's own objects under `<home>/runtime/objects/` — the HPA's
status.lastScaleTime, each pod's metadata.creationTimestamp (the Deployment made it), status.startTime (its
shim was launched) and the lastTransitionTime of its Ready condition (the readiness probe passed) — and two
things the benchmark observes itself while polling every 50 ms: when the new pod's server first answers
GET /health with 200 (its model is loaded; polled on the pod's host port) and when the gateway's /-/metrics
first counts a request sent to the new pod (it is routed).

  reaction  Endpoint replicas {min 1, max 3}, autoscaling {inFlight, target 1, scaleDownStabilizationSeconds 5}.
            Once its one replica is ready, `--clients` closed-loop clients start at once (max_tokens 48); times
            run from that load step to the HPA's decision, the new pod's creation, its process start, its
            server up, Ready, and routed. "Start-up" = process start → server up (interpreter, imports, model
            load: the replica's own cost, which the target excludes); reaction = load step → Ready − start-up.
            The Endpoint is deleted after each repetition.
  zero      Endpoint replicas {min 0, max 1}, scaleToZero {idleSeconds 2}. Once it is Idle with no serve
            process left, one request is sent (the gateway holds it); times from the send to the pod's
            creation, process start, server up, Ready and the full response. Repeated on the same Endpoint,
            each time after it went back to zero.
  replay    The Alibaba cluster-trace-v2026-GenAI (GenTD26) `qps.csv`, request_type "Generative Requests":
            each sample is one container's QPS for its sampling period (57 s, the usual gap between a
            container's samples), summed time-weighted into `--bucket-seconds` buckets (summing raw samples per
            bucket double-counts a container whenever two of its samples fall in one bucket). The 22 h are
            compressed into `--replay-seconds` of wall time and scaled so that the busiest `--peak-window`
            seconds of the replay offer `--peak-rps` on average (default: `--peak-factor` 1.3 × one replica's
            measured capacity; one 60 s bucket lasts only 68 ms of replay, too short to build a queue).
            Arrivals are a Poisson process within each bucket, seeded, so every configuration gets the same
            ones; they are sent open loop (max_tokens 16). Latency runs from the scheduled arrival to the last
            byte, so a late generator cannot hide queueing; a request slower than `--slo` is an SLO violation,
            one that fails (not 200, or no answer within `--request-timeout`) is a failure and a violation.
            Replica-seconds integrate the pods whose process runs (starting, serving or draining; sampled every
            0.5 s from the pod objects) over the replay. Configurations: autoscaled (1–3, inFlight target 2,
            scaleDownStabilizationSeconds 10), fixed 1, fixed 3. Their Endpoints start together (idle replicas
            cost next to nothing), then the capacity of fixed 1 and of fixed 3 is measured (closed loop,
            `--capacity-clients` clients per replica, above serve's batch size of 32, for `--capacity-seconds`),
            then each configuration replays in turn and its Endpoint is deleted.

Benchmarks print figures; nothing here asserts on time. Everything started is stopped in `finally`.

Usage: python benchmarks/autoscaling.py [--parts reaction,zero,replay] [--repeats 3] [--replay-seconds 90]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

from benchmarks.serving_bench import (  # noqa: E402
    TARGET_REACTION_SECONDS, NAMESPACE, PARTS, DEFAULT_TRACE, TRACE_NAME,
    TRACE_REQUEST_TYPE, POLL_SECONDS, SAMPLE_SECONDS, build_model_in_subprocess, endpoint_manifest,
    Platform, pod_running, pod_ready,
    completion_body, _session, _post, PodWatcher, Trace, load_trace,
    smoothed_peak, arrivals,
)

# --- 1. reaction to a load step ------------------------------------------------------------------------------

@dataclass
class Reaction:
    scaled: float | None  # load step → HPA lastScaleTime
    desired: int | None  # the HPA's desiredReplicas then
    created: float | None  # → first-ready new pod created
    started: float | None  # → its process (shim) launched
    up: float | None  # → its /health first 200
    ready: float | None  # → Ready condition
    routed: float | None  # → the gateway sent a new replica its first request
    all_ready: float | None  # → every new pod Ready
    new_pods: int
    ok: int
    failures: list[str]

    @property
    def startup(self) -> float | None:
        return None if self.up is None or self.started is None else self.up - self.started

    @property
    def reaction(self) -> float | None:
        return None if self.ready is None or self.startup is None else self.ready - self.startup


async def _reaction_step(platform: Platform, name: str, url: str, key: str, known: set[str],
                         args: argparse.Namespace) -> Reaction:
    body = completion_body(name, args.reaction_max_tokens)
    stop = asyncio.Event()
    ok, failures = 0, []
    watcher = PodWatcher(platform, name, known, metrics=True)
    async with _session(key, args.request_timeout) as session, _session(None, 5) as probe:
        async def client() -> None:
            nonlocal ok
            while not stop.is_set():
                outcome = await _post(session, f"{url}v1/completions", body)
                if outcome is None:
                    ok += 1
                else:
                    failures.append(outcome)

        t_load = time.time()
        clients = [asyncio.create_task(client()) for _ in range(args.clients)]
        deadline = time.monotonic() + args.reaction_timeout
        try:
            while time.monotonic() < deadline:
                await watcher.poll(probe, t_load)
                wanted = (watcher.desired or 2) - len(known)
                if (len(watcher.pods) >= max(1, wanted) and watcher.routed
                        and all(pod_ready(p) for p in watcher.pods.values())):
                    break
                await asyncio.sleep(POLL_SECONDS)
        finally:
            stop.set()
            await asyncio.gather(*clients, return_exceptions=True)

    def rel(t: float | None) -> float | None:
        return None if t is None else t - t_load

    ready_pods = sorted((watcher.times(p)["ready"], p) for p in watcher.pods if watcher.times(p)["ready"])
    first = ready_pods[0][1] if ready_pods else (sorted(watcher.pods)[0] if watcher.pods else None)
    times = watcher.times(first) if first else {}
    all_ready = max(t for t, _ in ready_pods) if ready_pods and len(ready_pods) == len(watcher.pods) else None
    routed = min(watcher.routed.values(), default=None)  # whichever new replica the gateway used first
    return Reaction(scaled=rel(watcher.first_scale), desired=watcher.desired, created=rel(times.get("created")),
                    started=rel(times.get("started")), up=rel(times.get("up")), ready=rel(times.get("ready")),
                    routed=rel(routed), all_ready=rel(all_ready), new_pods=len(watcher.pods), ok=ok,
                    failures=failures)


def run_reaction(platform: Platform, args: argparse.Namespace) -> list[Reaction]:
    samples = []
    for i in range(1, args.repeats + 1):
        name = f"react-{i}"
        common.log(f"   reaction {i}/{args.repeats}: applying {name} and waiting for its first replica …")
        platform.apply(endpoint_manifest(name, replicas={"min": 1, "max": 3}, autoscaling={
            "metric": "inFlight", "target": 1, "scaleDownStabilizationSeconds": 5}))
        try:
            platform.wait_ready(name, 1, args.ready_timeout)
            url, key = platform.url(name), platform.key()
            known = {p["metadata"]["name"] for p in platform.pods(name)}
            if i > 1:
                wait_gone(platform, f"react-{i - 1}", args.ready_timeout)
            time.sleep(1.0)  # let the HPA see the idle replica once: the step starts from a settled state
            samples.append(asyncio.run(_reaction_step(platform, name, url, key, known, args)))
        finally:
            # Not waited for: its replicas drain while the next Endpoint's first replica loads, which is not
            # measured (the next load step starts once that replica is ready and the old ones are gone).
            platform.delete_quietly(name, wait=False)
    return samples


def wait_gone(platform: Platform, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (platform.pods(name) or platform.serve_pids(name)) and time.monotonic() < deadline:
        time.sleep(0.2)


# --- 2. scale from zero --------------------------------------------------------------------------------------

@dataclass
class Wake:
    created: float | None
    started: float | None
    up: float | None
    ready: float | None
    answered: float
    error: str | None


async def _wake_step(platform: Platform, name: str, url: str, key: str, args: argparse.Namespace) -> Wake:
    watcher = PodWatcher(platform, name, set(), metrics=False)
    async with _session(key, args.zero_timeout) as session, _session(None, 5) as probe:
        t0 = time.time()
        request = asyncio.create_task(_post(session, f"{url}v1/completions", completion_body(name, 16)))
        while not request.done():
            await watcher.poll(probe, t0)
            await asyncio.wait([request], timeout=POLL_SECONDS)
        answered = time.time() - t0
        error = request.result()
        await watcher.poll(probe, t0)
    pod = min(watcher.pods, key=lambda p: watcher.times(p)["created"] or math.inf) if watcher.pods else None
    times = watcher.times(pod) if pod else {}

    def rel(t: float | None) -> float | None:
        return None if t is None else t - t0

    return Wake(created=rel(times.get("created")), started=rel(times.get("started")), up=rel(times.get("up")),
                ready=rel(times.get("ready")), answered=answered, error=error)


def run_zero(platform: Platform, args: argparse.Namespace) -> list[Wake]:
    name = "sleepy"
    samples = []
    common.log(f"   scale from zero: applying {name} …")
    platform.apply(endpoint_manifest(name, replicas={"min": 0, "max": 1}, scaleToZero={"idleSeconds": 2}))
    try:
        key = platform.key()
        url = None
        for i in range(1, args.repeats + 1):
            deadline = time.monotonic() + args.ready_timeout
            while not (platform.status(name).phase == "Idle" and not platform.serve_pids(name)
                       and not platform.pods(name)):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not scale to zero within {args.ready_timeout:g}s")
                time.sleep(0.2)
            url = url or platform.url(name)
            common.log(f"   scale from zero {i}/{args.repeats}: idle, sending one request …")
            samples.append(asyncio.run(_wake_step(platform, name, url, key, args)))
    finally:
        platform.delete_quietly(name)
    return samples


# --- 3. trace replay ----------------------------------------------------------------------------------------
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


# --- printing -----------------------------------------------------------------------------------------------

def _percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest rank (no interpolation)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, math.ceil(len(sorted_values) * pct / 100))
    return sorted_values[rank - 1]


def _s(value: float | None, digits: int = 2) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def print_reaction(samples: list[Reaction], foreign: float) -> dict:
    print("\nload step → new replica (seconds from the load step; the first new replica to become Ready)")
    print(common.table(
        ["run", "HPA scaled (asked)", "pod created", "process started", "server up", "Ready", "first routed",
         "all new Ready (pods)", "start-up (excluded)", "reaction (−start-up)", "requests ok", "failed"],
        [[i, f"{_s(s.scaled)} ({s.desired if s.desired is not None else '-'})", _s(s.created), _s(s.started),
          _s(s.up), _s(s.ready), _s(s.routed), f"{_s(s.all_ready)} ({s.new_pods})", _s(s.startup),
          _s(s.reaction), s.ok, len(s.failures)] for i, s in enumerate(samples, 1)]))
    print("  start-up: process started → its server first answers /health 200 (Python, imports, model load), "
          "the replica's own cost\n  reaction: load step → Ready minus start-up, i.e. the platform's part "
          "(HPA sync and decision, pod creation, placement, shim launch, readiness probe period)")
    for s in samples:
        if s.failures:
            print(f"  failures: {Counter(s.failures).most_common(3)}")
    reactions = [s.reaction for s in samples if s.reaction is not None]
    result = {"reaction_median": common.median(reactions) if reactions else None,
              "reaction_max": max(reactions) if reactions else None,
              "startup_median": common.median([s.startup for s in samples if s.startup is not None] or [math.nan]),
              "ready_median": common.median([s.ready for s in samples if s.ready is not None] or [math.nan]),
              "failures": sum(len(s.failures) for s in samples), "complete": len(reactions) == len(samples),
              "foreign_cores": foreign}
    print(f"reaction (−start-up) median {_s(result['reaction_median'])} s, max {_s(result['reaction_max'])} s "
          f"(target <= {TARGET_REACTION_SECONDS:g} s); load step → Ready median {_s(result['ready_median'])} s; "
          f"foreign load {foreign:.2f} cores")
    return result


def print_zero(samples: list[Wake], foreign: float) -> dict:
    print("\nscale from zero: one request to an Idle Endpoint (seconds from sending it)")
    print(common.table(
        ["run", "pod created", "process started", "server up", "Ready", "answered", "Ready → answered", "error"],
        [[i, _s(s.created), _s(s.started), _s(s.up), _s(s.ready), _s(s.answered),
          _s(None if s.ready is None else s.answered - s.ready), s.error or "-"] for i, s in enumerate(samples, 1)]))
    print("  pod created: the gateway held the request and woke the controller, which set 1 replica; "
          "server up: process started → /health 200 is the replica's start-up")
    answered = [s.answered for s in samples]
    errors = sum(1 for s in samples if s.error)
    startups = [s.up - s.started for s in samples if s.up is not None and s.started is not None]
    result = {"answered_median": common.median(answered), "answered_max": max(answered), "errors": errors,
              "startup_median": common.median(startups) if startups else None,
              "platform_median": common.median([s.answered - (s.up - s.started) for s in samples
                                                if s.up is not None and s.started is not None] or [math.nan]),
              "foreign_cores": foreign}
    print(f"first response median {_s(result['answered_median'])} s, max {_s(result['answered_max'])} s "
          f"({errors} error(s)); without the replica's start-up median {_s(result['platform_median'])} s; "
          f"foreign load {foreign:.2f} cores")
    return result


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


# --- entry points -------------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> dict:
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    print(f"== autoscaling: Endpoints of a tiny GPT-2 (2 layers × 64, random weights, built offline) behind the "
          f"gateway, cpu 250m per replica; parts: {', '.join(parts)}")
    print(f"   machine: {common.machine()}", flush=True)
    trace = load_trace(args.trace, args.bucket_seconds) if "replay" in parts else None
    result: dict[str, Any] = {"target": TARGET_REACTION_SECONDS}
    started = time.monotonic()
    with common.shipyard_instance(prefix="shipyard-bench-autoscaling-") as instance:
        common.log("   building the tiny model …")
        build_model_in_subprocess(instance.home / "volumes" / NAMESPACE / "models" / "v1")
        with instance.client() as client:
            platform = Platform(instance, client)
            if "reaction" in parts:
                print(f"\n-- 1. reaction: replicas 1–3, inFlight target 1, {args.clients} closed-loop clients "
                      f"(max_tokens {args.reaction_max_tokens}), {args.repeats} repetition(s)", flush=True)
                part_started = time.monotonic()
                with common.ForeignLoad(roots=[instance.daemon_pid or 0]) as load:
                    samples = run_reaction(platform, args)
                result["reaction"] = print_reaction(samples, load.cores)
                print(f"   (part took {time.monotonic() - part_started:.0f} s)")
            if "zero" in parts:
                print(f"\n-- 2. scale from zero: replicas 0–1, idleSeconds 2, {args.repeats} repetition(s)",
                      flush=True)
                part_started = time.monotonic()
                with common.ForeignLoad(roots=[instance.daemon_pid or 0]) as load:
                    wakes = run_zero(platform, args)
                result["zero"] = print_zero(wakes, load.cores)
                print(f"   (part took {time.monotonic() - part_started:.0f} s)")
            if "replay" in parts and trace is not None:
                print(f"\n-- 3. trace replay: autoscaled (1–3, inFlight target 2, scale-down window 10 s), "
                      f"fixed 1, fixed 3", flush=True)
                part_started = time.monotonic()
                with common.ForeignLoad(roots=[instance.daemon_pid or 0]) as load:
                    replayed = run_replay(platform, args, trace)
                result["replay"] = print_replay(trace, replayed, args, load.cores)
                print(f"   (part took {time.monotonic() - part_started:.0f} s)")
    result["seconds"] = time.monotonic() - started
    print_summary(result)
    return result


def print_summary(result: dict) -> None:
    parts = []
    disturbed = max((result[p]["foreign_cores"] for p in ("reaction", "zero", "replay") if p in result),
                    default=0.0) > 0.05
    if "reaction" in result:
        r = result["reaction"]
        verdict = ("incomplete" if not r["complete"] else
                   "met" if r["reaction_max"] <= TARGET_REACTION_SECONDS else "missed")
        parts.append(f"reaction (−start-up) max {_s(r['reaction_max'])} s vs <= {TARGET_REACTION_SECONDS:g} s: "
                     f"{verdict}")
    if "zero" in result:
        z = result["zero"]
        parts.append(f"scale from zero: first response median {_s(z['answered_median'])} s, {z['errors']} error(s)")
    if "replay" in result:
        c = result["replay"]["configs"]
        parts.append("replay SLO violations / replica-seconds: " + ", ".join(
            f"{k} {100 * v['violations'] / max(1, v['requests']):.1f}% / {v['replica_seconds']:.0f}"
            for k, v in c.items()))
    print(f"\n== summary ({result['seconds']:.0f} s{', machine shared: figures disturbed' if disturbed else ''}): "
          + "; ".join(parts), flush=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to run (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="repetitions of the reaction and of the scale-from-zero parts (default %(default)s)")
    parser.add_argument("--clients", type=int, default=6,
                        help="closed-loop clients of the load step (default %(default)s)")
    parser.add_argument("--reaction-max-tokens", type=int, default=48,
                        help="max_tokens of the load step's requests (default %(default)s)")
    parser.add_argument("--reaction-timeout", type=float, default=90,
                        help="seconds to wait for the new replicas under load (default %(default)s)")
    parser.add_argument("--ready-timeout", type=float, default=120,
                        help="seconds to wait for an Endpoint to be ready or idle (default %(default)s)")
    parser.add_argument("--zero-timeout", type=float, default=120,
                        help="client timeout of the request to an idle Endpoint (default %(default)s)")
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="the GenTD26 qps.csv (default %(default)s)")
    parser.add_argument("--bucket-seconds", type=float, default=60,
                        help="trace time per rate bucket (default %(default)s)")
    parser.add_argument("--replay-seconds", type=float, default=90,
                        help="wall time the whole trace is compressed into (default %(default)s)")
    parser.add_argument("--peak-rps", type=float, default=None,
                        help="requests/s over the replay's busiest --peak-window (default: --peak-factor × one "
                             "replica's measured capacity)")
    parser.add_argument("--peak-factor", type=float, default=1.3,
                        help="peak = this × one replica's measured capacity (default %(default)s: one replica is "
                             "overloaded around the peak; on 2 cores three replicas measured 1.2–1.7 × one)")
    parser.add_argument("--peak-window", type=float, default=2.0,
                        help="the peak is the busiest rate averaged over this many seconds of replay time "
                             "(default %(default)s: about the SLO, the time scale on which a queue matters)")
    parser.add_argument("--capacity-clients", type=int, default=40,
                        help="closed-loop clients per replica measuring capacity; above serve's batch size of "
                             "32, so that batches are full (default %(default)s)")
    parser.add_argument("--capacity-seconds", type=float, default=4,
                        help="length of the capacity measurement (default %(default)s)")
    parser.add_argument("--replay-max-tokens", type=int, default=16,
                        help="max_tokens of the replayed requests (default %(default)s)")
    parser.add_argument("--slo", type=float, default=2.0,
                        help="SLO: seconds from arrival to the full response (default %(default)s)")
    parser.add_argument("--request-timeout", type=float, default=10,
                        help="client timeout of a replayed or load-step request (default %(default)s)")
    parser.add_argument("--window-seconds", type=float, default=10,
                        help="window of the replay's time series (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the replay's arrivals (default %(default)s)")


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if not parts or unknown:
        parser.error(f"--parts: choose from {', '.join(PARTS)} (got {args.parts!r})")
    if args.repeats < 1 or args.clients < 1 or args.capacity_clients < 1:
        parser.error("--repeats, --clients and --capacity-clients must be at least 1")
    for option in ("replay_seconds", "bucket_seconds", "slo", "request_timeout", "capacity_seconds",
                   "window_seconds", "peak_window", "reaction_timeout", "ready_timeout", "zero_timeout"):
        if getattr(args, option) <= 0:
            parser.error(f"--{option.replace('_', '-')} must be positive")
    if (args.peak_rps is not None and args.peak_rps <= 0) or args.peak_factor <= 0:
        parser.error("--peak-rps and --peak-factor must be positive")
    if "replay" in parts and not args.trace.is_file():
        parser.error(f"--trace: {args.trace} not found (the GenTD26 qps.csv; or leave out the replay part)")


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
