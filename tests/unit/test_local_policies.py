"""Pure pieces of the local runtime: the Job sync policy, env networking rules, volume substitution."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

from shipyard.compiler import compile_resource
from shipyard.resources import TrainingJob
from shipyard.runtime.local.jobs import sync_job
from shipyard.runtime.local.network import PodAddress, expand, resolve_env
from shipyard.runtime.local.volumes import substitute

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def job_obj(replicas=2, **spec):
    tj = TrainingJob.model_validate({"metadata": {"name": "t", "uid": "u"},
                                     "spec": {"replicas": replicas, "command": ["x"], **spec}})
    return next(o for o in compile_resource(tj, admitted=True) if o["kind"] == "Job")


def pod(index, phase, code=None, conditions=(), name=None):
    status = {"phase": phase, "conditions": list(conditions)}
    if code is not None:
        status["containerStatuses"] = [{"name": "trainer", "state": {"terminated": {"exitCode": code}}}]
    return {"metadata": {"name": name or f"t-{index}", "namespace": "default",
                         "annotations": {"batch.kubernetes.io/job-completion-index": str(index)}},
            "spec": {"containers": [{"name": "trainer"}]}, "status": status}


def conditions(decision):
    return {c["type"]: c["reason"] for c in decision.status.get("conditions", [])}


def test_new_job_creates_every_index():
    d = sync_job(job_obj(3), [], NOW)
    assert d.create_indexes == [0, 1, 2] and d.status["active"] == 3


def test_first_failed_pod_fails_the_job_and_stops_the_rest():
    d = sync_job(job_obj(), [pod(0, "Running"), pod(1, "Failed", 3)], NOW)
    assert conditions(d)["Failed"] == "PodFailurePolicy"
    assert d.delete_pods == ["t-0"]  # the failed pod is kept for its logs; the running one is stopped
    assert "exit code 3" in next(c for c in d.status["conditions"] if c["type"] == "Failed")["message"]


def test_disrupted_pod_fails_the_compiled_job_by_its_own_rule():
    # A lone replacement could not join its peers' collective: the gang is stopped at once, and the Failed
    # condition names the disruption rule (index 0) in Kubernetes' words, which the controller reads.
    disrupted = pod(1, "Failed", 143, [{"type": "DisruptionTarget", "status": "True"}])
    d = sync_job(job_obj(), [pod(0, "Running"), disrupted], NOW)
    failed = next(c for c in d.status["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PodFailurePolicy"
    assert failed["message"] == "Pod default/t-1 has condition DisruptionTarget matching FailJob rule at index 0"
    assert d.delete_pods == ["t-0"] and d.create_indexes == []


def test_ignore_rule_replaces_the_pod_without_counting_it():
    job = job_obj()
    job["spec"]["podFailurePolicy"]["rules"][0]["action"] = "Ignore"
    disrupted = pod(1, "Failed", 143, [{"type": "DisruptionTarget", "status": "True"}])
    d = sync_job(job, [pod(0, "Running"), disrupted], NOW)
    assert "Failed" not in conditions(d) and d.status["failed"] == 0
    assert d.delete_pods == ["t-1"] and d.create_indexes == [1]


def test_all_indexes_succeeded_completes():
    d = sync_job(job_obj(), [pod(0, "Succeeded", 0), pod(1, "Succeeded", 0)], NOW)
    assert conditions(d)["Complete"] == "CompletionsReached" and d.status["completedIndexes"] == "0,1"


def test_deadline_exceeded():
    job = job_obj(activeDeadlineSeconds=10)
    job["status"] = {"startTime": (NOW - timedelta(seconds=11)).isoformat()}
    d = sync_job(job, [pod(0, "Running"), pod(1, "Running")], NOW)
    assert conditions(d)["Failed"] == "DeadlineExceeded" and sorted(d.delete_pods) == ["t-0", "t-1"]


def test_env_rules_resolve_names_and_remap_ports():
    tj = TrainingJob.model_validate({"metadata": {"name": "t", "uid": "u"},
                                     "spec": {"replicas": 2, "command": ["x"],
                                              "env": [{"name": "PORT", "value": "29500"},
                                                      {"name": "GREETING", "value": "at $(MASTER_ADDR):$$x"}]}})
    job = next(o for o in compile_resource(tj, admitted=True) if o["kind"] == "Job")
    template = job["spec"]["template"]
    pod1 = {"metadata": {"name": "t-1-abc", "namespace": "default",
                         "annotations": {"batch.kubernetes.io/job-completion-index": "1"}}, "spec": template["spec"]}
    me = PodAddress("default", "t-1", "t", {29500: 40001})
    master = PodAddress("default", "t-0", "t", {29500: 40000})
    env = resolve_env(pod1, template["spec"]["containers"][0], me, [master], {"t", "t.default"})
    assert env["PET_MASTER_ADDR"] == env["MASTER_ADDR"] == "127.0.0.1"
    assert env["PET_MASTER_PORT"] == env["MASTER_PORT"] == "40000"  # replica 0's rendezvous port
    assert env["PORT"] == "40001"  # its own containerPort
    assert env["PET_NODE_RANK"] == env["RANK"] == "1"
    assert env["GREETING"] == "at t-0.t:$x"  # expansion happens before name resolution, as on a cluster
    assert env["SHIPYARD_JOB_NAME"] == "t"  # a job named like its Service is not an address


def test_expand_keeps_unknown_references():
    assert expand("$(A)-$(B)", {"A": "1"}) == "1-$(B)"


def test_volume_paths_are_substituted_only_as_paths():
    mounts = {"/ckpt": Path("/home/u/.shipyard/volumes/default/ckpt")}
    assert substitute("--dir=/ckpt/run1", mounts) == "--dir=/home/u/.shipyard/volumes/default/ckpt/run1"
    assert substitute("/ckpt", mounts) == "/home/u/.shipyard/volumes/default/ckpt"
    assert substitute("/ckpt2/x /data/ckpt a/ckpt", mounts) == "/ckpt2/x /data/ckpt a/ckpt"


def test_a_compiled_pods_scratch_is_a_home_of_its_own_and_the_machines_tmp(tmp_path):
    """Issue 15: the emptyDirs of a read-only root run locally too. HOME is a directory of the pod's own (the
    env's HOME and the args that name it are substituted); /tmp, like /dev/shm, is the machine's own, so a
    `/tmp/...` path the user passes still means what it says."""
    from shipyard.runtime.local.container import container_process
    from shipyard.runtime.local.volumes import mount_map

    job = job_obj(replicas=1, args=["--cache", "/home/shipyard/.cache/x", "--out", "/tmp/run1"],
                  volumes=[{"name": "ckpt", "mountPath": "/ckpt"}])
    pod_obj = {"metadata": {"name": "t-0", "namespace": "default", "uid": "u0"},
               "spec": job["spec"]["template"]["spec"]}
    [container] = pod_obj["spec"]["containers"]
    mounts = mount_map(pod_obj, container, tmp_path / "volumes", tmp_path / "pods" / "t-0")
    home = tmp_path / "pods" / "t-0" / "emptydir" / "shipyard-home"
    assert mounts == {"/ckpt": tmp_path / "volumes" / "default" / "ckpt", "/home/shipyard": home}
    assert home.is_dir()
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    process = container_process(pod_obj, container, env, mounts, {}, {}, str(tmp_path))
    assert process.env["HOME"] == str(home)
    assert process.argv[-4:] == ["--cache", f"{home}/.cache/x", "--out", "/tmp/run1"]


def test_a_suspended_job_creates_no_pods_until_released():
    tj = TrainingJob.model_validate({"metadata": {"name": "t", "uid": "u"}, "spec": {"replicas": 2, "command": ["x"]}})
    suspended = next(o for o in compile_resource(tj) if o["kind"] == "Job")
    assert suspended["spec"]["suspend"] is True
    assert sync_job(suspended, [], NOW).create_indexes == []
    assert sync_job(job_obj(2), [], NOW).create_indexes == [0, 1]
