import time

import pytest


def wait_for(predicate, timeout=60.0, interval=0.05, message="condition"):
    """Poll until predicate() is truthy; the polling is the await, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@pytest.fixture
def waiter():
    return wait_for
