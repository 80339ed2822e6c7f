"""The node agent's kubelet log endpoint and its PersistentVolume provisioner, against fakes."""

import ssl
import urllib.error
import urllib.request

import pytest

from shipyard.cluster.nodeagent.logs import LogServer
from shipyard.cluster.nodeagent.storage import PROVISIONED_BY, PROVISIONER, Provisioner

from .nodeagent_fake import FakeKubeApi


@pytest.fixture
def logs(tmp_path):
    current, previous = tmp_path / "p.log", tmp_path / "p.previous.log"
    current.write_bytes(b"one\ntwo\nthree\n")
    previous.write_bytes(b"before\n")
    state = {"running": True}
    server = LogServer(tmp_path / "tls", "127.0.0.1", 0,
                       lambda ns, pod: (current, previous, state["running"]) if (ns, pod) == ("ns", "p") else None)
    server.start()
    yield server, current, state
    server.stop()


def get(server, path, timeout=10):
    context = ssl._create_unverified_context()  # noqa: S323 - a self-signed certificate, as the API server sees it
    with urllib.request.urlopen(f"https://127.0.0.1:{server.port}{path}", context=context, timeout=timeout) as resp:
        return resp.read()


def test_logs_tail_and_previous(logs):
    server, _, state = logs
    state["running"] = False
    assert get(server, "/containerLogs/ns/p/main") == b"one\ntwo\nthree\n"
    assert get(server, "/containerLogs/ns/p/main?tailLines=2") == b"two\nthree\n"
    assert get(server, "/containerLogs/ns/p/main?limitBytes=5") == b"one\nt"
    assert get(server, "/containerLogs/ns/p/main?previous=true") == b"before\n"
    with pytest.raises(urllib.error.HTTPError) as err:
        get(server, "/containerLogs/ns/other/main")
    assert err.value.code == 404


def test_follow_streams_until_the_container_stops(logs):
    server, current, state = logs
    context = ssl._create_unverified_context()  # noqa: S323
    with urllib.request.urlopen(f"https://127.0.0.1:{server.port}/containerLogs/ns/p/main?follow=true&tailLines=1",
                                context=context, timeout=10) as resp:
        assert resp.readline() == b"three\n"
        with open(current, "ab") as fh:
            fh.write(b"four\n")
        assert resp.readline() == b"four\n"  # streamed as it is written
        with open(current, "ab") as fh:
            fh.write(b"last words\n")
        state["running"] = False
        assert resp.read() == b"last words\n"  # everything up to the container's end, then the stream ends


def test_pending_claims_get_volumes_and_released_ones_are_cleaned_up(tmp_path):
    api = FakeKubeApi()
    api.add({"kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "ns", "uid": "u1"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
             "status": {"phase": "Pending"}})
    api.add({"kind": "PersistentVolumeClaim", "metadata": {"name": "bound", "namespace": "ns", "uid": "u2"},
             "spec": {"volumeName": "other"}, "status": {"phase": "Bound"}})
    provisioner = Provisioner(api, tmp_path / "volumes")
    provisioner.reconcile()
    provisioner.reconcile()  # idempotent
    created = [obj for call, obj in api.calls if call == "create"]
    assert [pv["metadata"]["name"] for pv in created] == ["pvc-u1"]
    directory = tmp_path / "volumes" / "ns" / "data"
    assert directory.is_dir()
    pv = api.get("PersistentVolume", None, "pvc-u1")
    assert pv["metadata"]["annotations"][PROVISIONED_BY] == PROVISIONER
    pv["status"] = {"phase": "Released"}
    api.add(pv)
    api.add({"kind": "PersistentVolume", "metadata": {"name": "someone-elses"}, "spec": {"hostPath": {"path": "/x"}},
             "status": {"phase": "Released"}})
    del api.objects[("PersistentVolumeClaim", "ns", "data")]
    provisioner.reconcile()
    assert api.get("PersistentVolume", None, "pvc-u1") is None and not directory.exists()
    assert api.get("PersistentVolume", None, "someone-elses") is not None
