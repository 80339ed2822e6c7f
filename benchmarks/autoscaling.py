"""Autoscaling: how fast an Endpoint scales up on a load step (target ≤ 5 s to a new ready replica, excluding
the replica's own model load), how long the first request to a scaled-to-zero Endpoint takes, and what a real
GenAI serving trace costs in SLO violations and replica-seconds, autoscaled against fixed replica counts.

Everything runs through one isolated daemon (`shipyard up --detach --port 0 --gateway-port 0` in a temporary
SHIPYARD_HOME). The model is tiny and built offline (a byte-level BPE and a random-init GPT-2: 2 layers × 64,
as tests/workloads/serve_fixtures.py builds it) under `<home>/volumes/default/models/v1`; every Endpoint serves
it with the built-in server (`model: /models/v1`, `resources: {cpu: 250m}`, so one torch thread per replica)
and is applied with `shipyard apply -f`. Requests go through the gateway (`status.url`, read with `shipyard
get endpoint NAME -o json`) with a project key from `shipyard apikey create NAME -q`; every completion sets
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
    TARGET_REACTION_SECONDS, NAMESPACE, PARTS, DEFAULT_TRACE, POLL_SECONDS, build_model_in_subprocess,
    endpoint_manifest, Platform, pod_ready, completion_body, _session, _post, PodWatcher, load_trace,
    arrivals,
)

from benchmarks.trace_replay import (  # noqa: E402
    _s, run_replay, replica_seconds, print_replay,
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
# --- printing -----------------------------------------------------------------------------------------------

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
