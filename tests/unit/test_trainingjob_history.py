"""The incremental progress reader behind metric histories: offsets, partial lines, restarts, departed pods."""

from __future__ import annotations

import pytest

from shipyard.controllers.trainingjob.history import metrics_of, rank0_pods, read_new


def line(**fields) -> bytes:
    import json

    return b"SHIPYARD_PROGRESS " + json.dumps(fields).encode() + b"\n"


class Logs:
    def __init__(self):
        self.data: dict[str, bytes] = {}
        self.reads: list[tuple[str, int, int]] = []

    def read(self, pod: str, offset: int, size: int) -> bytes:
        self.reads.append((pod, offset, size))
        return self.data.get(pod, b"")[offset:offset + size]


def points(batch):
    return [(m.key, m.value, m.step) for m in batch.metrics]


def test_every_numeric_field_of_every_line_at_its_step():
    text = (line(step=1, total_steps=10, loss=2.5, tokens_per_second=100.0, lr=0.001)
            + b"plain output\nSHIPYARD_PROGRESS not json\n"
            + line(step=2, loss=2.0, eval_loss=2.2, exact_match=0.5, note="text", flag=True)
            + line(eval_accuracy=0.7)).decode()  # no step: belongs to the previous line's step
    got = [(m.key, m.value, m.step, m.timestamp_ms) for m in metrics_of(text, 1234)]
    assert got == [("loss", 2.5, 1, 1234), ("tokens_per_second", 100.0, 1, 1234), ("lr", 0.001, 1, 1234),
                   ("loss", 2.0, 2, 1234), ("eval_loss", 2.2, 2, 1234), ("exact_match", 0.5, 2, 1234),
                   ("eval_accuracy", 0.7, 2, 1234)]


def test_reads_only_what_is_new_and_only_complete_lines():
    logs = Logs()
    logs.data["job-0-a"] = line(step=1, loss=3.0) + b'SHIPYARD_PROGRESS {"step": 2, "lo'
    first = read_new(logs.read, ["job-0-a"], set(), {}, 0)
    assert points(first) == [("loss", 3.0, 1)]
    complete = len(line(step=1, loss=3.0))
    assert first.offsets == {"job-0-a": complete}  # the half-written line waits

    logs.data["job-0-a"] += b'ss": 2.5}\n' + line(step=3, loss=2.0)
    second = read_new(logs.read, ["job-0-a"], set(), first.offsets, 0)
    assert points(second) == [("loss", 2.5, 2), ("loss", 2.0, 3)]
    assert logs.reads[-1][1] == complete  # from where the last read stopped, not from the start
    assert second.offsets == {"job-0-a": len(logs.data["job-0-a"])}

    third = read_new(logs.read, ["job-0-a"], set(), second.offsets, 0)
    assert third.metrics == [] and third.offsets == second.offsets


def test_a_finished_pods_last_line_counts_without_a_newline():
    logs = Logs()
    logs.data["job-0-a"] = line(step=1, loss=3.0) + b'SHIPYARD_PROGRESS {"step": 2, "loss": 1.5}'
    running = read_new(logs.read, ["job-0-a"], set(), {}, 0)
    assert points(running) == [("loss", 3.0, 1)]
    done = read_new(logs.read, ["job-0-a"], {"job-0-a"}, running.offsets, 0)
    assert points(done) == [("loss", 1.5, 2)]


def test_a_gang_restart_brings_new_pods_and_the_departed_are_read_to_the_end_then_forgotten():
    logs = Logs()
    logs.data["job-0-a"] = line(step=1, loss=3.0)
    first = read_new(logs.read, ["job-0-a"], set(), {}, 0)
    # Attempt 1 failed: its pod wrote one more line, then left; attempt 2 resumes from its checkpoint.
    logs.data["job-0-a"] += line(step=2, loss=2.9)
    logs.data["job-0-b"] = line(step=2, loss=2.8) + line(step=3, loss=2.5)
    second = read_new(logs.read, ["job-0-b"], set(), first.offsets, 0)
    assert points(second) == [("loss", 2.9, 2), ("loss", 2.8, 2), ("loss", 2.5, 3)]  # old pod's tail first
    assert set(second.offsets) == {"job-0-a", "job-0-b"}
    third = read_new(logs.read, ["job-0-b"], set(), second.offsets, 0)
    assert third.metrics == [] and set(third.offsets) == {"job-0-b"}


def test_a_departed_pod_whose_log_is_gone_is_forgotten():
    logs = Logs()
    batch = read_new(logs.read, [], set(), {"job-0-x": 500}, 0)
    assert batch.metrics == [] and batch.offsets == {}


@pytest.mark.parametrize("window", [64, 100])
def test_a_backlog_is_caught_up_over_several_reads_without_losing_lines(window):
    logs = Logs()
    logs.data["p"] = b"".join(line(step=i, loss=float(i)) for i in range(20))
    offsets: dict[str, int] = {}
    seen = []
    for _ in range(100):
        batch = read_new(logs.read, ["p"], set(), offsets, 0, max_bytes=window)
        seen += points(batch)
        if batch.offsets == offsets:
            break
        offsets = batch.offsets
    assert [s for _, _, s in seen] == list(range(20))


def test_a_line_longer_than_a_read_is_stepped_over():
    logs = Logs()
    logs.data["p"] = b"x" * 300 + b"\n" + line(step=7, loss=1.0)
    offsets: dict[str, int] = {}
    seen = []
    for _ in range(10):
        batch = read_new(logs.read, ["p"], set(), offsets, 0, max_bytes=128)
        seen += points(batch)
        offsets = batch.offsets
    assert seen == [("loss", 1.0, 7)]


def test_rank0_pods_of_every_attempt_oldest_first():
    def pod(name, index, created, phase="Running"):
        return {"metadata": {"name": name, "creationTimestamp": created,
                             "annotations": {"batch.kubernetes.io/job-completion-index": str(index)}},
                "status": {"phase": phase}}

    pods = [pod("j-0-new", 0, "2026-01-01T00:00:09Z"), pod("j-1-new", 1, "2026-01-01T00:00:09Z"),
            pod("j-0-old", 0, "2026-01-01T00:00:01Z", "Failed")]
    assert rank0_pods(pods) == (["j-0-old", "j-0-new"], {"j-0-old"})


def test_the_local_runtime_reads_a_range_of_a_pods_log(tmp_path):
    from shipyard.runtime.local.runtime import LocalRuntime
    from shipyard.runtime.protocol import LogRangeReader

    runtime = LocalRuntime(tmp_path / "runtime", tmp_path / "volumes", tmp_path / "logs")  # not started: no pods
    assert isinstance(runtime, LogRangeReader)
    assert runtime.read_log_range("default", "nobody", 0, 10) == b""
    runtime.log_path("default", "p").parent.mkdir(parents=True)
    runtime.log_path("default", "p").write_bytes(b"0123456789")
    assert runtime.read_log_range("default", "p", 3, 4) == b"3456"
    assert runtime.read_log_range("default", "p", 8, 100) == b"89"
    assert runtime.read_log_range("default", "p", 50, 100) == b""
