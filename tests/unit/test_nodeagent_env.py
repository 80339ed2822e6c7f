"""The node agent's container configuration: env, names of pods, addresses, volumes, read through a fake API."""

import base64
import os
import sys
from pathlib import Path

import pytest

from shipyard.cluster.nodeagent.containers import ContainerConfig
from shipyard.cluster.nodeagent.status import PodRun
from shipyard.runtime.local.network import field_value, listen_address, resolve_argv

from .nodeagent_fake import FakeKubeApi, pod


def run_of(p, ip="127.1.0.9", gpus=()):
    return PodRun(uid=p["metadata"]["uid"], namespace=p["metadata"]["namespace"], name=p["metadata"]["name"],
                  node=p["spec"]["nodeName"], ip=ip, start_time=0.0, gpus=list(gpus))


@pytest.fixture
def api():
    return FakeKubeApi()


@pytest.fixture
def config(api, tmp_path):
    return ContainerConfig(api, tmp_path, "127.0.0.1",
                           {"http://shipyard-gateway.shipyard-system.svc": "http://127.0.0.1:7480"})


def process(config, p, tmp_path, **kw):
    return config.process(p, run_of(p, **kw), tmp_path / "pods" / p["metadata"]["uid"])


def test_field_refs_name_the_real_node_and_the_pods_own_ip(config, tmp_path):
    fields = ["spec.nodeName", "status.podIP", "status.hostIP", "metadata.name", "metadata.annotations['a']"]
    p = pod("p", node="node-b", container={"command": ["python", "-c", "pass"], "env": [
        {"name": f"F{i}", "valueFrom": {"fieldRef": {"fieldPath": f}}} for i, f in enumerate(fields)]})
    p["metadata"]["annotations"] = {"a": "x"}
    env = process(config, p, tmp_path).env
    assert [env[f"F{i}"] for i in range(5)] == ["node-b", "127.1.0.9", "127.0.0.1", "p", "x"]


def test_a_pod_keeps_its_ports_and_listens_on_its_own_ip(config, tmp_path):
    p = pod("p", container={"command": ["python", "-m", "http.server", "--bind", "0.0.0.0", "--port", "8000"],
                            "ports": [{"name": "metrics", "containerPort": 9090},
                                      {"name": "http", "containerPort": 8000}]})
    proc = process(config, p, tmp_path)
    assert proc.argv == ["python", "-m", "http.server", "--bind", "127.1.0.9", "--port", "8000"]
    assert proc.env["PORT"] == "8000"  # the serving contract: the http port, not remapped
    assert proc.env["SHIPYARD_POD_UID"] == "uid-p" and proc.env["HOSTNAME"] == "p"
    assert proc.env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert proc.env["CUDA_VISIBLE_DEVICES"] == ""  # asked for no GPU: sees none


def test_declared_gpus_are_visible(config, tmp_path):
    p = pod("p", container={"command": ["true"]})
    assert process(config, p, tmp_path, gpus=["0", "1"]).env["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_names_of_pods_under_a_headless_service_become_their_ips(api, config, tmp_path):
    api.add({"kind": "Service", "metadata": {"name": "train", "namespace": "default"},
             "spec": {"clusterIP": "None"}})
    leader = pod("train-0-abc", hostname="train-0", subdomain="train",
                 container={"ports": [{"containerPort": 29500}]})
    leader["status"]["podIP"] = "127.1.0.2"
    api.add(leader)
    worker = pod("train-1-def", hostname="train-1", subdomain="train", container={
        "command": ["torchrun"], "ports": [{"containerPort": 29500}],
        "env": [{"name": "MASTER_ADDR", "value": "train-0.train"},
                {"name": "MASTER_PORT", "value": "29500"},
                {"name": "PET_MASTER_ADDR", "value": "train-0.train.default.svc.cluster.local"},
                {"name": "GATEWAY", "value": "http://shipyard-gateway.shipyard-system.svc/v1/models"},
                {"name": "URL", "value": "http://$(MASTER_ADDR):$(MASTER_PORT)"}]})
    api.add(worker)
    env = process(config, worker, tmp_path).env
    assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == "127.1.0.2"
    assert env["MASTER_PORT"] == "29500"
    assert env["GATEWAY"] == "http://127.0.0.1:7480/v1/models"
    assert env["URL"] == "http://train-0.train:29500"  # expanded in declaration order, before name resolution


def test_a_name_of_a_pod_without_an_ip_yet_makes_the_container_wait(api, config, tmp_path):
    api.add({"kind": "Service", "metadata": {"name": "train", "namespace": "default"},
             "spec": {"clusterIP": "None"}})
    worker = pod("w", hostname="train-1", subdomain="train", container={
        "command": ["true"], "env": [{"name": "MASTER_ADDR", "value": "train-0.train"}]})
    with pytest.raises(ValueError, match="no pod named"):
        process(config, worker, tmp_path)
    api.add(pod("train-0-x", hostname="train-0", subdomain="train"))  # exists, no IP yet
    with pytest.raises(ValueError, match="no IP yet"):
        process(config, worker, tmp_path)
    leader = api.get("Pod", "default", "train-0-x")
    leader["status"]["podIP"] = "127.1.0.3"
    api.add(leader)
    assert process(config, worker, tmp_path).env["MASTER_ADDR"] == "127.1.0.3"


def test_a_pod_naming_itself_gets_its_own_ip(api, config, tmp_path):
    api.add({"kind": "Service", "metadata": {"name": "train", "namespace": "default"},
             "spec": {"clusterIP": "None"}})
    me = pod("train-0-x", hostname="train-0", subdomain="train", container={
        "command": ["true"], "env": [{"name": "MASTER_ADDR", "value": "train-0.train"}]})
    api.add(me)
    assert process(config, me, tmp_path).env["MASTER_ADDR"] == "127.1.0.9"


def test_secret_refs_are_read_from_the_api(api, config, tmp_path):
    p = pod("p", container={"command": ["true"], "env": [
        {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}}]})
    with pytest.raises(ValueError):
        process(config, p, tmp_path)
    api.add({"kind": "Secret", "metadata": {"name": "s", "namespace": "default"},
             "data": {"token": base64.b64encode(b"hunter2").decode()}})
    assert process(config, p, tmp_path).env["KEY"] == "hunter2"


def test_a_claim_is_its_bound_volumes_directory(api, config, tmp_path):
    p = pod("p", container={"command": ["train", "--ckpt", "/ckpt/run1"],
                            "volumeMounts": [{"name": "data", "mountPath": "/ckpt"},
                                             {"name": "scratch", "mountPath": "/tmp/scratch"},
                                             {"name": "shm", "mountPath": "/dev/shm"}]},
            volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "ckpt"}},
                     {"name": "scratch", "emptyDir": {}}, {"name": "shm", "emptyDir": {"medium": "Memory"}}])
    api.add({"kind": "PersistentVolumeClaim", "metadata": {"name": "ckpt", "namespace": "default"},
             "spec": {}, "status": {"phase": "Pending"}})
    with pytest.raises(ValueError, match="not bound"):
        process(config, p, tmp_path)
    api.add({"kind": "PersistentVolumeClaim", "metadata": {"name": "ckpt", "namespace": "default"},
             "spec": {"volumeName": "pv-1"}, "status": {"phase": "Bound"}})
    api.add({"kind": "PersistentVolume", "metadata": {"name": "pv-1"},
             "spec": {"hostPath": {"path": str(tmp_path / "disk")}}})
    proc = process(config, p, tmp_path)
    assert proc.argv == ["train", "--ckpt", f"{tmp_path / 'disk'}/run1"]
    assert proc.env["SHIPYARD_VOLUME_DATA"] == str(tmp_path / "disk")
    assert Path(proc.env["SHIPYARD_VOLUME_SCRATCH"]).is_relative_to(tmp_path / "pods" / "uid-p")
    assert "SHIPYARD_VOLUME_SHM" not in proc.env


def test_config_maps_secrets_and_projected_volumes_are_written_as_files(api, config, tmp_path):
    api.add({"kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": "default"}, "data": {"a.yaml": "x: 1"}})
    api.add({"kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt", "namespace": "default"},
             "data": {"ca.crt": "PEM"}})
    api.add({"kind": "Secret", "metadata": {"name": "sec", "namespace": "default"},
             "data": {"k": base64.b64encode(b"v").decode()}})
    p = pod("p", container={"command": ["cat", "/etc/cfg/a.yaml"], "volumeMounts": [
        {"name": "cfg", "mountPath": "/etc/cfg"}, {"name": "sec", "mountPath": "/etc/sec"},
        {"name": "sa", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]},
        volumes=[{"name": "cfg", "configMap": {"name": "cfg"}}, {"name": "sec", "secret": {"secretName": "sec"}},
                 {"name": "sa", "projected": {"sources": [
                     {"serviceAccountToken": {"path": "token"}},
                     {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                     {"downwardAPI": {"items": [{"path": "namespace",
                                                 "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}}])
    proc = process(config, p, tmp_path)
    cfg = Path(proc.argv[1])
    assert cfg.read_text() == "x: 1"
    assert (Path(proc.env["SHIPYARD_VOLUME_SEC"]) / "k").read_bytes() == b"v"
    sa = Path(proc.env["SHIPYARD_VOLUME_SA"])
    assert (sa / "ca.crt").read_text() == "PEM" and (sa / "namespace").read_text() == "default"
    assert not (sa / "token").exists()


# --- the embedded runtime's rules, now parameterised by address ---------------------------------------------

def test_the_shared_rules_take_the_pods_address():
    p = pod("p")
    assert field_value(p, "status.podIP") == "127.0.0.1"  # the embedded runtime's default
    assert field_value(p, "status.podIP", pod_ip="127.1.0.4") == "127.1.0.4"
    assert listen_address("--host=0.0.0.0", "127.1.0.4") == "--host=127.1.0.4"
    assert listen_address("0.0.0.0:8888", "127.1.0.4") == "127.1.0.4:8888"
    assert resolve_argv(["--port", "8000", "--bind", "0.0.0.0"], {}, {8000: 8000}, "127.1.0.4") == \
        ["--port", "8000", "--bind", "127.1.0.4"]
