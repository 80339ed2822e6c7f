"""Table tests for the small policies: restart decisions, backoff, progress lines, the work queue."""

from datetime import datetime, timedelta, timezone

import pytest

from shipyard.controllers.clock import FakeClock
from shipyard.controllers.trainingjob.progress import last_progress, parse_line
from shipyard.controllers.trainingjob.restart_policy import backoff_remaining, decide
from shipyard.controllers.workqueue import WorkQueue

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("restarts, max_restarts, reason, restart, decided", [
    (0, 3, "PodFailurePolicy", True, "GangRestart"),
    (2, 3, "PodFailurePolicy", True, "GangRestart"),
    (3, 3, "PodFailurePolicy", False, "RestartLimitExceeded"),
    (0, 0, "BackoffLimitExceeded", False, "RestartLimitExceeded"),
    (0, 3, "DeadlineExceeded", False, "DeadlineExceeded"),
])
def test_restart_decision(restarts, max_restarts, reason, restart, decided):
    d = decide(restarts, max_restarts, reason, "replica 1 exited with code 3")
    assert (d.restart, d.reason) == (restart, decided)
    assert "replica 1 exited with code 3" in d.message


@pytest.mark.parametrize("elapsed, backoff, remaining", [(0, 5, 5), (2, 5, 3), (5, 5, 0), (9, 5, 0)])
def test_backoff_remaining(elapsed, backoff, remaining):
    assert backoff_remaining(T0, backoff, T0 + timedelta(seconds=elapsed)) == remaining
    assert backoff_remaining(None, backoff, T0) == 0


@pytest.mark.parametrize("line, expected", [
    ('SHIPYARD_PROGRESS {"step": 3, "total_steps": 9, "loss": 1.5}', {"step": 3, "total_steps": 9, "loss": 1.5}),
    ('SHIPYARD_PROGRESS {"step": 3, "totalSteps": 9, "tokensPerSecond": 10}',
     {"step": 3, "total_steps": 9, "tokens_per_second": 10.0}),
    ('SHIPYARD_PROGRESS {"step": 1, "acc": 0.5, "note": "x", "nan": NaN}', {"step": 1, "metrics": {"acc": 0.5}}),
    ("SHIPYARD_PROGRESS not json", None),
    ("SHIPYARD_PROGRESS [1, 2]", None),
    ('progress {"step": 1}', None),
])
def test_progress_lines(line, expected):
    parsed = parse_line(line)
    if expected is None:
        assert parsed is None
    else:
        assert {k: v for k, v in parsed.items() if k != "metrics" or v} == expected


def test_last_progress_takes_newest_valid_line():
    text = 'SHIPYARD_PROGRESS {"step": 1}\nSHIPYARD_PROGRESS {"step": 2}\nSHIPYARD_PROGRESS {oops\n'
    assert last_progress(text)["step"] == 2


def test_work_queue_dedups_and_delays_on_the_clock():
    clock = FakeClock()
    q: WorkQueue[str] = WorkQueue(clock)
    q.add("a")
    q.add("a")
    assert q.pending() == 1
    assert q.get(timeout=0) == "a"
    q.add("a")  # re-added while processing: processed again after done()
    assert q.get(timeout=0) is None
    q.done("a")
    assert q.get(timeout=0) == "a"
    q.done("a")
    q.add_after("b", 10)
    assert q.get(timeout=0) is None
    clock.advance(10)
    assert q.get(timeout=0) == "b"


def test_repeated_requeues_of_one_key_keep_one_earliest_deadline():
    clock = FakeClock()
    q: WorkQueue[str] = WorkQueue(clock)
    for _ in range(50):
        q.add_after("job", 2)
    q.add_after("job", 1)
    assert len(q._delayed) == 2  # the superseded entry is skipped, never processed
    clock.advance(1)
    assert q.get(timeout=0) == "job"
    q.done("job")
    clock.advance(5)
    assert q.get(timeout=0) is None  # no second chain


def test_last_progress_keeps_the_newest_value_of_every_metric_in_the_chunk():
    text = "\n".join([
        'SHIPYARD_PROGRESS {"step": 60, "loss": 1.0, "exact_match": 0.4, "eval_loss": 2.0}',
        'SHIPYARD_PROGRESS {"step": 65, "loss": 0.9, "lr": 0.01}',
        'SHIPYARD_PROGRESS {"step": 120, "loss": 0.8, "exact_match": 0.7}',
        'SHIPYARD_PROGRESS {"step": 125, "loss": 0.7, "lr": 0.005}',
    ])
    latest = last_progress(text)
    assert (latest["step"], latest["loss"]) == (125, 0.7)
    assert latest["metrics"] == {"lr": 0.005, "exact_match": 0.7, "eval_loss": 2.0}
