"""Pod log files (rotation, logical offsets, --since, --previous) and which pods `shipyard logs` picks."""

from __future__ import annotations

import pytest

from shipyard.api.logs import LogOptions, check_options
from shipyard.cli.logs import parse_duration
from shipyard.cli.common import CliError
from shipyard.config import log_limits
from shipyard.pod_logs import PodLogs, choose, merged, prefixed
from shipyard.runtime.local import podlog
from shipyard.store import NotFound


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def disk(path) -> int:
    return sum(f.stat().st_size for f in path.parent.iterdir() if f.name.startswith(path.name))


def test_rotation_caps_the_disk_and_keeps_logical_offsets(tmp_path):
    path = tmp_path / "p.log"
    log = podlog.RotatingLog(path, max_bytes=1000, max_files=2)
    data = b"".join(b"line %05d\n" % i for i in range(2000))  # 22 000 bytes
    for i in range(0, len(data), 333):
        log.write(data[i:i + 333])
    log.close()
    files = sorted(f.name for f in tmp_path.iterdir() if not f.name.endswith(".idx"))
    assert len(files) == 2 and "p.log" in files
    assert sum((tmp_path / f).stat().st_size for f in files) <= 2000
    assert podlog.end_offset(path) == len(data)
    # The newest bytes read back at their logical offsets; rotated-away bytes read as newlines.
    assert podlog.read_range(path, len(data) - 30, 30) == data[-30:]
    assert podlog.read_range(path, 0, 10) == b"\n" * 10
    assert b"".join(podlog.iter_range(path, 20500)) == data[20500:]
    assert podlog.tail_offset(path, 2) == len(data) - 22


def test_rotation_rejects_a_cap_without_a_backup(tmp_path):
    with pytest.raises(ValueError):
        podlog.RotatingLog(tmp_path / "p.log", max_bytes=10, max_files=1)


def test_since_finds_the_first_line_of_a_second(tmp_path):
    path, clock = tmp_path / "p.log", Clock(1000.2)
    log = podlog.RotatingLog(path, clock=clock)
    log.write(b"old 1\nold 2\n")
    clock.now = 1005.5
    log.write(b"new 1\nne")
    clock.now = 1005.9
    log.write(b"w 2\n")
    log.close()
    start = podlog.offset_since(path, 1004.0)
    assert b"".join(podlog.iter_range(path, start)) == b"new 1\nnew 2\n"
    assert podlog.offset_since(path, 999.0) == 0
    assert podlog.offset_since(path, 2000.0) == podlog.end_offset(path)


def test_a_new_attempt_keeps_one_previous_and_removal_takes_everything(tmp_path):
    path = tmp_path / "p.log"
    for attempt in (b"first\n", b"second\n", b"third\n"):
        podlog.start_new_attempt(path)
        log = podlog.RotatingLog(path, max_bytes=4, max_files=2)
        log.write(attempt)
        log.close()
    assert b"".join(podlog.iter_range(path, 0)) == b"third\n"  # two files of 4 bytes hold it whole
    assert b"".join(podlog.iter_range(podlog.previous_path(path), 0)) == b"second\n"
    assert not any("first" in f.read_text() for f in tmp_path.iterdir() if f.suffix != ".json")
    podlog.write_meta(path, {"uid": "u"})
    podlog.remove_pod_logs(path)
    assert list(tmp_path.iterdir()) == []


def test_log_limits_from_env(monkeypatch):
    assert log_limits("SHIPYARD_POD_LOG") == (50 << 20, 2)
    monkeypatch.setenv("SHIPYARD_POD_LOG_MAX_BYTES", "1Mi")
    monkeypatch.setenv("SHIPYARD_POD_LOG_MAX_FILES", "3")
    assert log_limits("SHIPYARD_POD_LOG") == (1 << 20, 3)
    monkeypatch.setenv("SHIPYARD_POD_LOG_MAX_FILES", "1")
    with pytest.raises(ValueError, match="at least 2"):
        log_limits("SHIPYARD_POD_LOG")
    monkeypatch.setenv("SHIPYARD_POD_LOG_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match="not a size"):
        log_limits("SHIPYARD_POD_LOG")


def test_since_durations():
    assert parse_duration("10m") == 600 and parse_duration("1h30m") == 5400 and parse_duration("45") == 45
    for bad in ("garbage", "10x", "", "0s", "m"):
        with pytest.raises(CliError):
            parse_duration(bad)


def test_contradictory_options_are_refused():
    with pytest.raises(ValueError, match="--pod and --replica"):
        check_options(LogOptions(pod="a", replica=1))
    with pytest.raises(ValueError, match="cannot be followed"):
        check_options(LogOptions(previous=True, follow=True))
    with pytest.raises(ValueError, match="label"):
        check_options(LogOptions(selector="a=b=c"))


# --- choosing pods -------------------------------------------------------------------------------------------


def pod(name, created, index=None, ready=False, labels=None, departed=False, sts=False):
    meta = {"name": name, "creationTimestamp": f"2026-01-01T00:00:{created:02d}", "labels": dict(labels or {}),
            "annotations": {}}
    if index is not None:
        meta["annotations"]["batch.kubernetes.io/job-completion-index"] = str(index)
    if sts:
        meta["labels"]["statefulset.kubernetes.io/pod-name"] = name
    out = {"metadata": meta, "status": {"conditions": [{"type": "Ready", "status": str(ready)}]}}
    if departed:
        out["departed"] = True
    return out


def names(pods):
    return [p["metadata"]["name"] for p in pods]


def test_a_job_defaults_to_replica_zero_and_picks_the_newest_attempt():
    pods = [pod("j-0-old", 1, 0, departed=True), pod("j-1-old", 1, 1, departed=True), pod("j-0-new", 5, 0),
            pod("j-1-new", 5, 1)]
    assert names(choose("tj/j", pods, LogOptions())) == ["j-0-new"]
    assert names(choose("tj/j", pods, LogOptions(replica=1))) == ["j-1-new"]
    assert names(choose("tj/j", pods, LogOptions(all_pods=True))) == ["j-0-new", "j-1-new"]
    assert names(choose("tj/j", pods, LogOptions(pod="j-0-old"))) == ["j-0-old"]
    with pytest.raises(ValueError, match="out of range"):
        choose("tj/j", pods, LogOptions(replica=2))
    with pytest.raises(NotFound, match="no pod 'x'"):
        choose("tj/j", pods, LogOptions(pod="x"))


def test_serving_defaults_to_the_newest_ready_pod():
    pods = [pod("e-a", 1, ready=True, labels={"v": "1"}), pod("e-b", 2, ready=True, labels={"v": "2"}),
            pod("e-c", 3, ready=False), pod("e-gone", 0, departed=True)]
    assert names(choose("endpoint/e", pods, LogOptions())) == ["e-b"]
    assert names(choose("endpoint/e", pods, LogOptions(replica=0))) == ["e-a"]
    assert names(choose("endpoint/e", pods, LogOptions(all_pods=True))) == ["e-a", "e-b", "e-c"]
    assert names(choose("endpoint/e", pods, LogOptions(all_pods=True, selector="v=1"))) == ["e-a"]
    with pytest.raises(ValueError, match="below 3"):
        choose("endpoint/e", pods, LogOptions(replica=3))
    with pytest.raises(NotFound, match="matching"):
        choose("endpoint/e", pods, LogOptions(selector="v=9"))
    # Scaled to zero: the last pods' logs still show.
    assert names(choose("endpoint/e", [pod("e-gone", 0, departed=True)], LogOptions())) == ["e-gone"]


def test_a_statefulset_pod_is_its_ordinal():
    pods = [pod("ws-0", 1, sts=True)]
    assert names(choose("workspace/ws", pods, LogOptions(replica=0))) == ["ws-0"]


class Backend:
    def __init__(self, pods, logs, restarted=()):
        self._pods, self._logs, self._restarted = pods, logs, set(restarted)

    def pods(self, namespace, labels):
        return self._pods

    def read(self, namespace, pod, previous, options):
        yield from self._logs[(pod["metadata"]["name"], previous)]

    def has_previous(self, namespace, pod):
        return pod["metadata"]["name"] in self._restarted


class Resource:
    kind = "TrainingJob"
    ref = "trainingjob/j"

    class metadata:
        namespace, name = "default", "j"


def test_previous_is_the_restart_in_place_or_the_pod_before():
    pods = [pod("j-0-a", 1, 0, departed=True), pod("j-0-b", 5, 0), pod("j-1-b", 5, 1)]
    logs = {("j-0-a", False): [b"attempt 1\n"], ("j-0-b", False): [b"attempt 2\n"], ("j-1-b", True): [b"in place\n"],
            ("j-1-b", False): [b"now\n"]}
    source = PodLogs(Backend(pods, logs, restarted={"j-1-b"}))
    assert b"".join(source.stream(Resource, LogOptions(previous=True))) == b"attempt 1\n"
    assert b"".join(source.stream(Resource, LogOptions(previous=True, replica=1))) == b"in place\n"
    assert b"".join(source.stream(Resource, LogOptions(all_pods=True))) == \
        b"[pod/j-0-b] attempt 2\n[pod/j-1-b] now\n"
    with pytest.raises(NotFound, match="no previous attempt"):
        PodLogs(Backend(pods[1:], logs)).stream(Resource, LogOptions(previous=True))


def test_prefixes_split_chunks_into_whole_lines_and_merge_interleaves():
    assert b"".join(prefixed("a", iter([b"x", b"y\nz", b"", b"\n", b"tail"]))) == \
        b"[pod/a] xy\n[pod/a] z\n[pod/a] tail\n"
    out = b"".join(merged([iter([b"1\n", b"2\n"]), iter([b"3\n"])]))
    assert sorted(out.splitlines()) == [b"1", b"2", b"3"]
