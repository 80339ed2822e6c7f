"""What the autoscaling benchmark stands on: an isolated daemon with a tiny model, Endpoints applied through
the CLI, the runtime's pod objects watched for timings, HTTP sessions, and the GenAI serving trace."""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

TARGET_REACTION_SECONDS = 5.0
NAMESPACE = "default"
MODEL_MOUNT = "/models"
PARTS = ("reaction", "zero", "replay")
DEFAULT_TRACE = common.ROOT.parent / "shared" / "data" / "alibaba-genai-2026" / "qps.csv"
TRACE_NAME = "Alibaba cluster-trace-v2026-GenAI (GenTD26)"
TRACE_REQUEST_TYPE = "Generative Requests"
POLL_SECONDS = 0.05
SAMPLE_SECONDS = 0.5
PROMPT = "def f(x):"

# --- the model ----------------------------------------------------------------------------------------------

def build_model_in_subprocess(out: Path, timeout: float = 300) -> None:
    """Build the model in a child process, so that this one (the load generator) never imports torch."""
    code = ("import sys; from pathlib import Path; from shipyard.workloads.tiny import build_tiny_model; "
            "build_tiny_model(Path(sys.argv[1]))")
    result = subprocess.run([sys.executable, "-c", code, str(out)], cwd=common.ROOT, capture_output=True, text=True,
                            env=common.clean_env(TOKENIZERS_PARALLELISM="false"), timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"building the tiny model failed:\n{result.stderr[-3000:]}")


# --- the platform: manifests, CLI, objects ------------------------------------------------------------------

def endpoint_manifest(name: str, **spec: Any) -> dict:
    return {"apiVersion": "shipyard.dev/v1alpha1", "kind": "Endpoint", "metadata": {"name": name},
            "spec": {"model": f"{MODEL_MOUNT}/v1", "volumes": [{"name": "models", "mountPath": MODEL_MOUNT}],
                     "resources": {"cpu": "250m"}, **spec}}


class Platform:
    """The benchmark's daemon as a user drives it (CLI) plus what it reads directly (runtime objects, SDK)."""

    def __init__(self, instance: common.Instance, client: Any):
        self.instance = instance
        self.client = client
        self.home = instance.home
        info = json.loads((instance.home / "daemon.json").read_text())
        self.gateway = str(info.get("gatewayUrl") or "").rstrip("/")
        self._key: str | None = None

    def apply(self, manifest: dict) -> None:
        path = self.home / "bench-manifests" / f"{manifest['metadata']['name']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(manifest))
        self.instance.cli("apply", "-f", str(path))

    def delete_quietly(self, name: str, wait: bool = True) -> None:
        try:
            self.instance.cli("delete", "endpoint", name, *(["--wait"] if wait else []), check=False, timeout=240)
        except Exception as exc:  # noqa: BLE001 - cleanup; `shipyard down` stops the rest
            common.log(f"warning: deleting endpoint {name} failed: {exc}")

    def key(self) -> str:
        """A project key (one serves every Endpoint of the project), created once."""
        if self._key is None:
            self._key = self.instance.cli("apikey", "create", "autoscaling-bench", "-q").stdout.strip()
        return self._key

    def url(self, name: str) -> str:
        data = json.loads(self.instance.cli("get", "endpoint", name, "-o", "json").stdout)
        url = data.get("status", {}).get("url")
        if not url:
            raise RuntimeError(f"endpoint {name} has no status.url: {data.get('status')}")
        return url if url.endswith("/") else url + "/"

    def status(self, name: str) -> Any:
        return self.client.get("endpoint", name, NAMESPACE).status

    def wait_ready(self, name: str, ready: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.status(name)
            if s.phase == "Ready" and s.ready_replicas == ready:
                return
            time.sleep(0.2)  # polling the status: only how soon we notice, not a measured figure
        raise RuntimeError(f"endpoint {name} did not get {ready} ready replica(s) within {timeout:g}s "
                           f"(status {self.status(name)}); daemon log:\n{self.instance.log_tail()}")

    def pods(self, name: str) -> list[dict]:
        """The Endpoint's pod objects as the runtime stores them (its Deployment owns them)."""
        out = []
        for path in (self.home / "runtime" / "objects" / "Pod" / NAMESPACE).glob(f"{name}-*.json"):
            try:
                pod = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # removed between glob and read
            if any(r.get("kind") == "Deployment" and r.get("name") == name
                   for r in pod["metadata"].get("ownerReferences", [])):
                out.append(pod)
        return out

    def hpa(self, name: str) -> dict | None:
        path = self.home / "runtime" / "objects" / "HorizontalPodAutoscaler" / NAMESPACE / f"{name}.json"
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def serve_pids(self, name: str) -> list[int]:
        pids = []
        for pid in self.instance.processes(SHIPYARD_NAME=name):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmdline = fh.read()
            except OSError:
                continue
            if b"shipyard.workloads.serve" in cmdline and b"shipyard.runtime.local.shim" not in cmdline:
                pids.append(pid)
        return pids

    def routed_requests(self, metrics_text: str, name: str) -> dict[str, float]:
        """pod → requests the gateway has sent it, from /-/metrics."""
        out = {}
        for line in metrics_text.splitlines():
            if not line.startswith("shipyard_gateway_upstream_requests_total{"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line[line.index("{"):line.rindex("}")]))
            if labels.get("route") == name and labels.get("project") == NAMESPACE:
                out[labels["pod"]] = float(line.rsplit(" ", 1)[1])
        return out


def _epoch(text: str | None) -> float | None:
    if not text:
        return None
    value = datetime.fromisoformat(text)
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()


def pod_times(pod: dict) -> dict[str, float | None]:
    status = pod.get("status", {})
    ready = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), None)
    return {"created": _epoch(pod["metadata"].get("creationTimestamp")),
            "started": _epoch(status.get("startTime")),
            "ready": _epoch(ready["lastTransitionTime"]) if ready and ready.get("status") == "True" else None}


def pod_running(pod: dict) -> bool:
    return pod.get("status", {}).get("phase") == "Running" and bool(pod["status"].get("pid"))


def pod_ready(pod: dict) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and pod_times(pod)["ready"] is not None


def pod_port(pod: dict) -> int | None:
    ports = list(pod.get("status", {}).get("hostPorts", {}).values())
    return int(ports[0]) if ports else None


def completion_body(model: str, max_tokens: int) -> dict:
    return {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True}


def _session(key: str | None, timeout: float, limit: int = 0) -> Any:
    import aiohttp

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=timeout),
                                 connector=aiohttp.TCPConnector(limit=limit, force_close=False))


async def _post(session: Any, url: str, body: dict) -> str | None:
    """None on a 200 with its whole body read, else what went wrong."""
    try:
        async with session.post(url, json=body) as r:
            text = await r.read()
            return None if r.status == 200 else f"{r.status} {text[:120]!r}"
    except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the load
        return f"{type(exc).__name__}: {exc}"[:200]


class PodWatcher:
    """Follows one Endpoint's new pods (those not in `known`) every poll: their runtime timestamps, when their
    server first answers /health 200 (polled by us on the pod's host port), and when the gateway first sends
    one a request (polled from /-/metrics)."""

    def __init__(self, platform: Platform, name: str, known: set[str], metrics: bool):
        self.platform, self.name, self.known, self.metrics = platform, name, known, metrics
        self.pods: dict[str, dict] = {}
        self.up: dict[str, float] = {}
        self.routed: dict[str, float] = {}
        self.first_scale: float | None = None
        self.desired: int | None = None

    async def poll(self, session: Any, since: float) -> None:
        import aiohttp

        for pod in self.platform.pods(self.name):
            pod_name = pod["metadata"]["name"]
            if pod_name in self.known:
                continue
            self.pods[pod_name] = pod
            port = pod_port(pod)
            if pod_name not in self.up and port and pod_running(pod):
                try:
                    async with session.get(f"http://127.0.0.1:{port}/health",
                                           timeout=aiohttp.ClientTimeout(total=0.5)) as r:
                        if r.status == 200:
                            self.up[pod_name] = time.time()
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
        hpa = self.platform.hpa(self.name)
        if hpa is not None:
            scaled = _epoch(hpa.get("status", {}).get("lastScaleTime"))
            if self.first_scale is None and scaled is not None and scaled >= since:
                self.first_scale = scaled
                self.desired = hpa["status"].get("desiredReplicas")
        if self.metrics and any(p in self.up and p not in self.routed for p in self.pods):
            try:
                async with session.get(f"{self.platform.gateway}/-/metrics") as r:
                    text = (await r.read()).decode()
                for pod_name, count in self.platform.routed_requests(text, self.name).items():
                    if pod_name in self.pods and count > 0 and pod_name not in self.routed:
                        self.routed[pod_name] = time.time()
            except Exception:  # noqa: BLE001 - a missed scrape only delays "routed"
                pass

    def times(self, pod_name: str) -> dict[str, float | None]:
        return {**pod_times(self.pods[pod_name]), "up": self.up.get(pod_name), "routed": self.routed.get(pod_name)}




@dataclass
class Trace:
    rates: list[float]  # aggregate QPS per bucket, in the trace's units
    bucket_seconds: float
    samples: int
    containers: int
    period: float  # a container's sampling period


def load_trace(path: Path, bucket_seconds: float) -> Trace:
    import csv

    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["request_type"] == TRACE_REQUEST_TYPE:
                rows.append((row["container_ip"], float(row["timestamp_anon"]), float(row["value"])))
    if not rows:
        raise RuntimeError(f"{path}: no {TRACE_REQUEST_TYPE!r} rows")
    by_container: dict[str, list[float]] = defaultdict(list)
    for container, t, _ in rows:
        by_container[container].append(t)
    gaps: Counter[int] = Counter()
    for times in by_container.values():
        times.sort()
        gaps.update(round(b - a) for a, b in zip(times, times[1:]) if b > a)
    period = float(gaps.most_common(1)[0][0]) if gaps else bucket_seconds
    start = min(t for _, t, _ in rows)
    end = max(t for _, t, _ in rows) + period
    rates = [0.0] * max(1, math.ceil((end - start) / bucket_seconds))
    for _, t, value in rows:  # the sample holds for [t, t + period): spread it over the buckets it overlaps
        a, b = t - start, t - start + period
        i = int(a // bucket_seconds)
        while i < len(rates) and i * bucket_seconds < b:
            overlap = min(b, (i + 1) * bucket_seconds) - max(a, i * bucket_seconds)
            rates[i] += value * max(0.0, overlap) / bucket_seconds
            i += 1
    return Trace(rates, bucket_seconds, len(rows), len(by_container), period)


def smoothed_peak(trace: Trace, replay_seconds: float, window: float) -> float:
    """The trace's highest rate averaged over `window` seconds of replay (wall) time: the peak that matters for
    queueing. A single bucket lasts only replay_seconds / buckets of wall time (68 ms at the defaults), too
    short for any queue to build, so scaling by the busiest bucket would overstate the load."""
    k = max(1, min(len(trace.rates), round(window / (replay_seconds / len(trace.rates)))))
    total = sum(trace.rates[:k])
    best = total
    for i in range(k, len(trace.rates)):
        total += trace.rates[i] - trace.rates[i - k]
        best = max(best, total)
    return best / k


def arrivals(trace: Trace, replay_seconds: float, peak_rps: float, peak_window: float, seed: int) -> list[float]:
    """Seconds from the replay's start: a Poisson process whose rate is constant within each compressed bucket,
    scaled so that the busiest `peak_window` seconds offer `peak_rps` on average."""
    rng = random.Random(seed)
    scale = peak_rps / smoothed_peak(trace, replay_seconds, peak_window)
    width = replay_seconds / len(trace.rates)
    out = []
    for i, rate in enumerate(trace.rates):
        rps = rate * scale
        if rps <= 0:
            continue
        t, end = i * width, (i + 1) * width
        while True:
            t += rng.expovariate(rps)
            if t >= end:
                break
            out.append(t)
    return out
