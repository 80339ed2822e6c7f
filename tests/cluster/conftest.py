"""Fixtures for operator tests: a Kubernetes API mock server over real HTTP, a kubeconfig pointing at it, and
operators (the real composition of controllers, store and runtime) started and stopped by the tests."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from kmock import ResourceInfo

from shipyard.cluster.api import KubeApi, load_config
from shipyard.resources import KINDS
from shipyard.store.kubernetes import register_kinds

from .apiserver import ApiServer

SYSTEM_NAMESPACE = "shipyard-system"


@pytest.fixture
def apiserver():
    custom = {f"shipyard.dev/v1alpha1/{cls.PLURAL}": ResourceInfo(
        kind=cls.KIND, namespaced=True, subresources={"status"},
        verbs={"get", "list", "watch", "create", "update", "patch", "delete"}) for cls in KINDS.values()}
    server = ApiServer(custom).start()
    yield server
    server.stop()


@pytest.fixture
def kubeconfig(apiserver, tmp_path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(apiserver.kubeconfig()))
    path.chmod(0o600)
    return path


@pytest.fixture
def kubectl(kubeconfig):
    """What a user (or Kubernetes' own controllers, played by the test) does, as another field manager."""
    api = KubeApi(load_config(kubeconfig), field_manager="kubectl")
    register_kinds(api)
    yield api
    api.close()


@pytest.fixture
def operators(kubeconfig):
    from shipyard.operator import Operator

    started: list[Any] = []

    def start(identity: str = "operator-a", **kwargs: Any) -> Operator:
        api = KubeApi(load_config(kubeconfig))
        options = {"resync_seconds": 1.0, "lease_seconds": 2, "retry_period": 0.2, **kwargs}
        operator = Operator(api, SYSTEM_NAMESPACE, identity, **options)
        operator.start()
        started.append(operator)
        return operator

    yield start
    for operator in started:
        operator.stop()


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll a condition the operator is expected to bring about (it acts asynchronously, over HTTP)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (KeyError, TypeError, IndexError):
            last = None
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
