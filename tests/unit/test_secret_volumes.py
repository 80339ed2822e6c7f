"""Issue 14 item 6: a Secret mounted as files. Validation, compiled pods (no claim, read-only mount, schema-valid,
restricted), and the local runtime's files: on a tmpfs outside SHIPYARD_HOME, with the volume's modes, gone when
the container stops and, at the daemon's start, for pods that stopped meanwhile."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import sys
from decimal import Decimal

import kubernetes_validate
import pytest

from shipyard.compiler import compile_resource
from shipyard.compiler.secret import native_secret
from shipyard.resources import App, Secret, TrainingJob, Workspace, validate_document
from shipyard.resources.documents import Document, ManifestError
from shipyard.runtime.local.capacity import Capacity
from shipyard.runtime.local.runtime import LocalRuntime
from shipyard.runtime.local.secretvolumes import SecretVolumes, choose_base, volume_files
from tests.conftest import wait_for
from tests.pod_security import object_violations

VALUE = "file-Secret-Value-91c2e7"
KUBERNETES_VERSIONS = ["1.30", "1.37"]


def job_body(*volumes: dict, command=("python", "train.py")) -> dict:
    return {"apiVersion": "shipyard.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "j"},
            "spec": {"command": list(command), "volumes": list(volumes)}}


def error_of(body: dict) -> str:
    with pytest.raises(ManifestError) as err:
        validate_document(Document("j.yaml", 1, body))
    return str(err.value)


# --- validation --------------------------------------------------------------------------------------------

def test_a_secret_volume_has_no_storage_and_round_trips():
    job = validate_document(Document("j.yaml", 1, job_body(
        {"name": "creds", "mountPath": "/etc/creds/", "secret": {"secretName": "db"}},
        {"name": "data", "mountPath": "/data"})))
    creds, data = job.to_wire()["spec"]["volumes"]
    assert creds == {"name": "creds", "mountPath": "/etc/creds",
                     "secret": {"secretName": "db", "items": [], "defaultMode": 0o400}}
    # A persistent volume keeps the defaults `get -o yaml` has always shown.
    assert data == {"name": "data", "mountPath": "/data", "size": "10Gi", "accessMode": "ReadWriteMany"}
    again = validate_document(Document("j.yaml", 1, {**job_body(), "spec": job.to_wire()["spec"]}))
    assert again.to_wire()["spec"]["volumes"] == [creds, data]


@pytest.mark.parametrize("volume, field, words", [
    ({"size": "1Gi", "secret": {"secretName": "db"}}, "spec.volumes[0].secret", "set either secret or size"),
    ({"accessMode": "ReadWriteOnce", "storageClassName": "fast", "secret": {"secretName": "db"}},
     "spec.volumes[0].secret", "accessMode, storageClassName"),
    ({"secret": {"secretName": "DB"}}, "spec.volumes[0].secret.secretName", "DNS-1123"),
    ({"secret": {}}, "spec.volumes[0].secret.secretName", "required"),
    ({"secret": {"secretName": "db", "items": [{"key": "a/b", "path": "x"}]}},
     "spec.volumes[0].secret.items[0].key", "letters, digits"),
    ({"secret": {"secretName": "db", "items": [{"key": "a", "path": "../x"}]}},
     "spec.volumes[0].secret.items[0].path", "relative file path"),
    ({"secret": {"secretName": "db", "items": [{"key": "a", "path": "/x"}]}},
     "spec.volumes[0].secret.items[0].path", "relative file path"),
    ({"secret": {"secretName": "db", "items": [{"key": "a", "path": "x"}, {"key": "b", "path": "x"}]}},
     "spec.volumes[0].secret.items", "each path may appear once"),
    ({"secret": {"secretName": "db", "defaultMode": 0o1000}}, "spec.volumes[0].secret.defaultMode", "file mode"),
    ({"secret": {"secretName": "db", "items": [{"key": "a", "path": "x", "mode": -1}]}},
     "spec.volumes[0].secret.items[0].mode", "file mode"),
])
def test_invalid_secret_volumes_are_one_line_errors_naming_the_field(volume, field, words):
    message = error_of(job_body({"name": "creds", "mountPath": "/creds", **volume}))
    assert f"{field}:" in message and words in message and "\n" not in message.strip()


def test_a_model_or_a_registration_never_lives_in_a_secret_volume():
    message = error_of({"apiVersion": "shipyard.dev/v1alpha1", "kind": "Endpoint", "metadata": {"name": "e"},
                        "spec": {"model": "/creds/m", "volumes": [
                            {"name": "creds", "mountPath": "/creds", "secret": {"secretName": "db"}}]}})
    assert "secret volume 'creds'" in message
    message = error_of({"apiVersion": "shipyard.dev/v1alpha1", "kind": "Sweep", "metadata": {"name": "s"},
                        "spec": {"trial": {"command": ["python", "t.py", "--lr", "${lr}"], "volumes": [
                            {"name": "creds", "mountPath": "/creds", "secret": {"secretName": "db"}}]},
                            "parameters": [{"name": "lr", "type": "categorical", "values": [1, 2]}],
                            "objective": {"metric": "loss", "goal": "minimize"},
                            "register": {"model": "m", "volume": "creds", "path": "/out/${trial}"}}})
    assert "spec.register.volume: 'creds' is not among trial.volumes" in message


# --- compiled pods -----------------------------------------------------------------------------------------

SECRET_VOLUME = {"name": "creds", "mountPath": "/etc/creds",
                 "secret": {"secretName": "db", "items": [{"key": "password", "path": "db/password"}]}}


def workloads():
    job = TrainingJob.model_validate({"metadata": {"name": "j", "uid": "u1"}, "spec": {
        "command": ["python", "t.py"], "volumes": [SECRET_VOLUME, {"name": "data", "mountPath": "/data"}]}})
    app = App.model_validate({"metadata": {"name": "a", "uid": "u2"}, "spec": {
        "command": ["python", "-m", "http.server"], "port": 8000, "volumes": [SECRET_VOLUME]}})
    ws = Workspace.model_validate({"metadata": {"name": "w", "uid": "u3"}, "spec": {"volumes": [SECRET_VOLUME]}})
    return [job, app, ws]


@pytest.mark.parametrize("resource", workloads(), ids=lambda r: r.kind)
def test_a_secret_volume_compiles_to_a_read_only_secret_mount_and_no_claim(resource):
    objs = compile_resource(resource)
    claims = [o["metadata"]["name"] for o in objs if o["kind"] == "PersistentVolumeClaim"]
    assert "creds" not in claims
    [pod] = [o["spec"]["template"]["spec"] for o in objs if o["kind"] in ("Job", "Deployment", "StatefulSet")]
    volume = next(v for v in pod["volumes"] if v["name"] == "creds")
    assert volume == {"name": "creds", "secret": {"defaultMode": 0o400, "items": [
        {"key": "password", "path": "db/password"}], "secretName": "db"}}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "creds")
    assert mount == {"mountPath": "/etc/creds", "name": "creds", "readOnly": True}
    for obj in objs:
        assert object_violations(obj) == []
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


# --- the local runtime's files -----------------------------------------------------------------------------

def native(**data: str) -> dict:
    return native_secret(Secret.model_validate({"metadata": {"name": "db", "uid": "s1"},
                                                "spec": {"stringData": data or {"password": VALUE, "user": "me"}}}))


def pod_volume(**source) -> dict:
    return {"name": "creds", "secret": {"secretName": "db", **source}}


def test_volume_files_are_every_key_or_the_items_with_their_modes():
    secret = native()
    assert volume_files(pod_volume(), secret) == {"password": (VALUE.encode(), 0o400), "user": (b"me", 0o400)}
    files = volume_files(pod_volume(defaultMode=0o440, items=[{"key": "password", "path": "db/pw"},
                                                               {"key": "user", "path": "u", "mode": 0o444}]), secret)
    assert files == {"db/pw": (VALUE.encode(), 0o440), "u": (b"me", 0o444)}
    # As written (stringData) too, and binary values stay bytes.
    raw = {"metadata": {"name": "db"}, "data": {"bin": base64.b64encode(b"\x00\xff").decode()},
           "stringData": {"s": "x"}}
    assert volume_files(pod_volume(), raw) == {"bin": (b"\x00\xff", 0o400), "s": (b"x", 0o400)}


def test_a_missing_secret_or_key_fails_the_start_without_a_value_in_the_message():
    with pytest.raises(ValueError, match="secret 'db' not found"):
        volume_files(pod_volume(), None)
    with pytest.raises(ValueError, match="has no key 'nope'") as err:
        volume_files(pod_volume(items=[{"key": "nope", "path": "x"}]), native())
    assert VALUE not in str(err.value)


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_files_are_private_with_the_volumes_mode_and_removed_with_the_pod(tmp_path):
    volumes = SecretVolumes(tmp_path / "home" / "runtime", base=tmp_path / "shm")
    pod = {"metadata": {"uid": "pod-1"}}
    target = volumes.place(pod, pod_volume(items=[{"key": "password", "path": "db/pw"}]), {"db": native()})
    assert target == volumes.root / "pod-1" / "creds"
    assert (target / "db" / "pw").read_text() == VALUE and _mode(target / "db" / "pw") == 0o400
    for directory in (volumes.root.parent, volumes.root, volumes.root / "pod-1", target, target / "db"):
        assert _mode(directory) == 0o700, directory
    # Placed again (a restart): written afresh, what the Secret no longer names is gone.
    target = volumes.place(pod, pod_volume(defaultMode=0o440), {"db": native(token="t")})
    assert sorted(p.name for p in target.iterdir()) == ["token"] and _mode(target / "token") == 0o440
    volumes.remove("pod-1")
    assert not (volumes.root / "pod-1").exists()


def test_each_runtime_has_its_own_directory_and_stale_pods_are_removed(tmp_path):
    one = SecretVolumes(tmp_path / "a" / "runtime", base=tmp_path / "shm")
    two = SecretVolumes(tmp_path / "b" / "runtime", base=tmp_path / "shm")
    assert one.root != two.root and one.root.parent == two.root.parent
    for uid in ("live", "gone"):
        one.place({"metadata": {"uid": uid}}, pod_volume(), {"db": native()})
    two.place({"metadata": {"uid": "other"}}, pod_volume(), {"db": native()})
    assert one.remove_stale({"live"}) == ["gone"]
    assert (one.root / "live").is_dir() and (two.root / "other").is_dir()


def test_a_shared_directory_not_ours_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    volumes = SecretVolumes(tmp_path / "runtime", base=tmp_path / "shm")
    (tmp_path / "shm").mkdir()
    volumes.root.parent.symlink_to(elsewhere)  # planted in a world-writable /dev/shm by someone else
    with pytest.raises(ValueError, match="not a directory of this user"):
        volumes.place({"metadata": {"uid": "p"}}, pod_volume(), {"db": native()})
    assert list(elsewhere.iterdir()) == []


def test_the_base_is_a_tmpfs_and_any_fallback_says_why(tmp_path):
    shm = tmp_path / "shm"
    shm.mkdir()
    assert choose_base({}, shm) == (shm, None)
    runtime_dir = tmp_path / "run-user"
    runtime_dir.mkdir()
    assert choose_base({"XDG_RUNTIME_DIR": str(runtime_dir)}, tmp_path / "none") == (runtime_dir, None)
    base, reason = choose_base({}, tmp_path / "none")
    assert reason and "may be on a disk" in reason and "/dev/shm" in reason


@pytest.fixture
def runtime(tmp_path):
    rt = LocalRuntime(tmp_path / "home" / "runtime", tmp_path / "home" / "volumes", tmp_path / "home" / "logs",
                      capacity=Capacity(cpu=Decimal(4), memory=Decimal(8 << 30)), secret_volumes=tmp_path / "shm")
    yield rt
    rt.stop(stop_pods=True, timeout=20)


READ_FILE = ("import hashlib, os, stat, sys; p = sys.argv[1]; v = open(p).read();"
             "print('sha256=' + hashlib.sha256(v.encode()).hexdigest(), 'mode=' + oct(stat.S_IMODE(os.stat(p).st_mode)),"
             " 'home=' + str(p.startswith(os.environ['HOME_DIR'])))")


def run_job(rt: LocalRuntime, tmp_path, name: str, volume: dict) -> dict:
    job = TrainingJob.model_validate({"metadata": {"name": name, "uid": f"uid-{name}"}, "spec": {
        "command": [sys.executable, "-c", READ_FILE, "/etc/creds/db/password"],
        "env": [{"name": "HOME_DIR", "value": str(tmp_path / "home")}],
        "maxRestarts": 0, "volumes": [volume]}})
    for obj in compile_resource(job, admitted=True):
        rt.apply(obj)
    return wait_for(lambda: next((p for p in rt.list("Pod", "default", {"shipyard.dev/name": name})
                                  if p["status"].get("phase") in ("Succeeded", "Failed")), None),
                    message=f"{name}'s pod finished")


def test_a_job_reads_its_secret_file_which_is_gone_once_it_stops(runtime, tmp_path):
    runtime.apply(native())
    runtime.start()
    pod = run_job(runtime, tmp_path, "reads", SECRET_VOLUME | {
        "secret": {"secretName": "db", "items": [{"key": "password", "path": "db/password"}]}})
    log = b"".join(runtime.read_log("default", pod["metadata"]["name"])).decode()
    assert pod["status"]["phase"] == "Succeeded", log
    assert f"sha256={hashlib.sha256(VALUE.encode()).hexdigest()}" in log and "mode=0o400" in log
    assert "home=False" in log  # the file was not under SHIPYARD_HOME
    assert not (runtime._kubelet.secret_volumes.root / pod["metadata"]["uid"]).exists()
    assert list((tmp_path / "shm").rglob("password")) == []
    # In clear nowhere under SHIPYARD_HOME (the native Secret object holds it base64, in a 0600 file).
    holding = [p for p in (tmp_path / "home").rglob("*") if p.is_file() and VALUE.encode() in p.read_bytes()]
    assert holding == []


def test_a_missing_secret_fails_the_start_like_a_missing_secret_key_ref(runtime, tmp_path):
    runtime.start()
    pod = run_job(runtime, tmp_path, "no-secret", SECRET_VOLUME)
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["reason"] == "StartError" and "secret 'db' not found" in terminated["message"]
    assert not (runtime._kubelet.secret_volumes.root / pod["metadata"]["uid"]).exists()


def test_the_daemon_start_removes_secret_files_of_pods_that_are_not_running(tmp_path):
    volumes = SecretVolumes(tmp_path / "home" / "runtime", base=tmp_path / "shm")
    volumes.place({"metadata": {"uid": "stopped-while-down"}}, pod_volume(), {"db": native()})
    rt = LocalRuntime(tmp_path / "home" / "runtime", tmp_path / "home" / "volumes", tmp_path / "home" / "logs",
                      capacity=Capacity(cpu=Decimal(1), memory=Decimal(1 << 30)), secret_volumes=tmp_path / "shm")
    rt.start()
    try:
        assert not (volumes.root / "stopped-while-down").exists()
    finally:
        rt.stop()


def test_deleting_a_running_pod_removes_its_secret_files(runtime, tmp_path):
    runtime.apply(native())
    runtime.start()
    job = TrainingJob.model_validate({"metadata": {"name": "sleeper", "uid": "uid-sleeper"}, "spec": {
        "command": [sys.executable, "-c", "import time; time.sleep(60)"], "terminationGracePeriodSeconds": 2,
        "volumes": [SECRET_VOLUME]}})
    for obj in compile_resource(job, admitted=True):
        runtime.apply(obj)
    root = runtime._kubelet.secret_volumes.root
    pw = wait_for(lambda: next(iter(root.glob("*/creds/db/password")), None), message="the secret file")
    assert pw.read_text() == VALUE
    runtime.delete("Job", "default", "sleeper")
    wait_for(lambda: not runtime.list("Pod", "default", {"shipyard.dev/name": "sleeper"}), message="pod removed")
    assert not pw.exists() and not root.exists()  # nothing left behind, not even the runtime's directory
