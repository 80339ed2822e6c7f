"""The node agent's pure parts: pod status, IP allocation, devices, Node and Lease objects, PV provisioning."""

import pytest

from shipyard.cluster.nodeagent.devices import DevicePool, requested_gpus
from shipyard.cluster.nodeagent.ipam import PodNetwork
from shipyard.cluster.nodeagent.node import Machine, lease_object, node_object, node_status
from shipyard.cluster.nodeagent.pods import terminated_state
from shipyard.cluster.nodeagent.status import PodRun, pod_status, rfc3339
from shipyard.cluster.nodeagent.storage import volume_for, wants_volume

from .nodeagent_fake import merge, pod

T0 = 1_700_000_000.0


def run(**kw):
    return PodRun(**{"uid": "uid-p", "namespace": "default", "name": "p", "node": "node-a", "ip": "127.1.0.5",
                     "start_time": T0, **kw})


def conditions(status):
    return {c["type"]: c for c in status["conditions"]}


# --- pod status ------------------------------------------------------------------------------------------

def test_a_pod_waiting_for_its_config_is_pending_with_the_reason():
    status = pod_status(pod("p"), run(waiting={"reason": "CreateContainerConfigError", "message": "no secret"}),
                        "127.0.0.1", T0)
    assert status["phase"] == "Pending"
    container = status["containerStatuses"][0]
    assert container["state"] == {"running": None, "terminated": None,
                                  "waiting": {"reason": "CreateContainerConfigError", "message": "no secret"}}
    assert container["containerID"] is None and container["started"] is False
    assert conditions(status)["Ready"]["status"] == "False"
    assert conditions(status)["Ready"]["reason"] == "ContainersNotReady"
    assert status["podIP"] == "127.1.0.5" and status["podIPs"] == [{"ip": "127.1.0.5"}]
    assert status["hostIP"] == "127.0.0.1" and status["startTime"] == rfc3339(T0)
    assert "PodScheduled" not in conditions(status)  # the scheduler's, kept by the strategic merge


def test_a_running_ready_container():
    status = pod_status(pod("p"), run(pid=42, started_at=T0 + 1, ready=True), "127.0.0.1", T0 + 2)
    assert status["phase"] == "Running"
    container = status["containerStatuses"][0]
    assert container["state"]["running"] == {"startedAt": rfc3339(T0 + 1)}
    assert container["state"]["waiting"] is None and container["state"]["terminated"] is None
    assert container["ready"] is True and container["started"] is True
    assert container["containerID"] == "shipyard://uid-p-0" and container["image"] == "python:3.11"
    c = conditions(status)
    assert c["Ready"]["status"] == c["ContainersReady"]["status"] == "True"
    assert c["Ready"]["reason"] is None  # nulls clear an earlier reason in a strategic merge
    assert c["Initialized"]["status"] == c["PodReadyToStartContainers"]["status"] == "True"


def test_a_terminating_pod_is_not_ready_even_if_its_probe_passes():
    status = pod_status(pod("p"), run(pid=42, started_at=T0, ready=True, deletion_seen=T0 + 5), "127.0.0.1", T0 + 5)
    assert conditions(status)["Ready"]["status"] == "False"


@pytest.mark.parametrize("code, phase, reason", [(0, "Succeeded", "Completed"), (3, "Failed", "Error")])
def test_a_container_that_terminated_for_good(code, phase, reason):
    ended = {"exitCode": code, "reason": reason, "startedAt": T0 + 1, "finishedAt": T0 + 3}
    status = pod_status(pod("p"), run(terminated=ended), "127.0.0.1", T0 + 4)
    assert status["phase"] == phase
    state = status["containerStatuses"][0]["state"]
    assert state["terminated"]["exitCode"] == code and state["terminated"]["reason"] == reason
    assert state["terminated"]["finishedAt"] == rfc3339(T0 + 3)
    assert state["running"] is None
    assert conditions(status)["Ready"]["reason"] == "PodCompleted"
    assert conditions(status)["PodReadyToStartContainers"]["status"] == "False"


def test_a_crash_looping_container_is_running_with_its_last_state():
    last = {"exitCode": 1, "reason": "Error", "startedAt": T0, "finishedAt": T0 + 1}
    status = pod_status(pod("p", restartPolicy="Always"),
                        run(restart_count=2, last_terminated=last,
                            waiting={"reason": "CrashLoopBackOff", "message": "back-off 2s"}), "127.0.0.1", T0 + 2)
    assert status["phase"] == "Running"
    container = status["containerStatuses"][0]
    assert container["restartCount"] == 2
    assert container["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    assert container["lastState"]["terminated"]["exitCode"] == 1


def test_transition_times_are_kept_while_a_condition_holds():
    p = pod("p")
    first = pod_status(p, run(pid=1, started_at=T0, ready=True), "127.0.0.1", T0)
    merge(p, {"status": first}, strategic=True)  # as the API server applies the agent's patch
    again = pod_status(p, run(pid=1, started_at=T0, ready=True), "127.0.0.1", T0 + 60)
    assert again == first  # nothing changed, so nothing to write
    merge(p, {"status": again}, strategic=True)
    unready = pod_status(p, run(pid=1, started_at=T0, ready=False), "127.0.0.1", T0 + 90)
    assert conditions(unready)["Ready"]["lastTransitionTime"] == rfc3339(T0 + 90)
    assert conditions(unready)["Initialized"]["lastTransitionTime"] == rfc3339(T0)


def test_a_pod_bound_by_its_creator_gets_podscheduled():
    p = pod("p")
    p["status"] = {}
    assert conditions(pod_status(p, run(), "127.0.0.1", T0))["PodScheduled"]["status"] == "True"


def test_containers_after_the_first_are_reported_not_run():
    p = pod("p")
    p["spec"]["containers"].append({"name": "sidecar", "image": "busybox"})
    statuses = pod_status(p, run(pid=1, started_at=T0, ready=True), "127.0.0.1", T0)["containerStatuses"]
    assert [s["name"] for s in statuses] == ["main", "sidecar"]
    assert statuses[1]["state"]["waiting"]["reason"] == "ContainerNotRun"


def test_exit_reasons_are_the_kubelets():
    assert terminated_state({"exitCode": 0, "reason": "Terminated", "finishedAt": T0}, T0 - 1, T0)["reason"] == \
        "Completed"
    signaled = terminated_state({"exitCode": 143, "reason": "Signaled", "signal": 15, "finishedAt": T0}, None, T0)
    assert signaled["reason"] == "Error" and signaled["signal"] == 15
    start = terminated_state({"exitCode": 127, "reason": "StartError", "message": "no such file"}, None, T0)
    assert start["reason"] == "StartError" and start["message"] == "no such file"
    lost = terminated_state(None, T0 - 5, T0)
    assert lost["exitCode"] == 137 and lost["reason"] == "ContainerStatusUnknown"


# --- IP allocation ---------------------------------------------------------------------------------------

def test_pod_ips_are_unique_stable_and_round_robin():
    net = PodNetwork("127.1.0.0/29", reserved={"127.1.0.1"})
    a, b = net.allocate("a"), net.allocate("b")
    assert (a, b) == ("127.1.0.2", "127.1.0.3")
    assert net.allocate("a") == a  # the same pod keeps its address
    net.release("a")
    assert net.allocate("c") == "127.1.0.4"  # not the address just freed
    assert net.allocate("d") == "127.1.0.5"
    assert net.allocate("e") == "127.1.0.6"
    assert net.allocate("f") == "127.1.0.2"  # wrapped around to the free one
    with pytest.raises(RuntimeError):
        net.allocate("g")


def test_claimed_addresses_are_not_handed_out_again():
    net = PodNetwork("127.1.0.0/16")
    assert net.claim("old", "127.1.0.1")
    assert not net.claim("other", "127.1.0.1")
    assert not net.claim("outside", "10.0.0.1")
    assert net.allocate("new") != "127.1.0.1"


# --- devices ---------------------------------------------------------------------------------------------

def test_gpu_indices_per_node():
    pool = DevicePool(["node-a", "node-b"], 2)
    gpu_pod = pod("g", container={"resources": {"limits": {"nvidia.com/gpu": "2"}}})
    assert requested_gpus(gpu_pod) == 2 and requested_gpus(pod("cpu")) == 0
    assert pool.allocate("g", "node-a", 2) == ["0", "1"]
    assert pool.allocate("h", "node-b", 1) == ["0"]
    assert pool.allocate("i", "node-a", 1) == []  # the scheduler would not have placed it: nothing left
    pool.release("g")
    assert pool.allocate("j", "node-a", 1) == ["0"]


# --- Node and Lease --------------------------------------------------------------------------------------

MACHINE = Machine(cpus=2, memory_bytes=8 * 2**30, disk_bytes=100 * 2**30)


def test_node_declares_the_machine_and_its_gpus():
    node = node_object("node-a", MACHINE)
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "node-a"
    assert node["metadata"]["labels"]["type"] == "shipyard-node-agent"
    status = node_status("node-a", MACHINE, 2, "127.0.0.1", 10250, T0)
    assert status["capacity"] == {"cpu": "2", "memory": f"{8 * 2**20}Ki", "ephemeral-storage": f"{100 * 2**20}Ki",
                                  "pods": "110", "nvidia.com/gpu": "2"}
    assert status["allocatable"] == status["capacity"]
    c = {x["type"]: x for x in status["conditions"]}
    assert c["Ready"]["status"] == "True" and c["MemoryPressure"]["status"] == "False"
    assert {"type": "InternalIP", "address": "127.0.0.1"} in status["addresses"]
    assert status["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}
    assert status["nodeInfo"]["kubeletVersion"] == "v1.37.2"
    later = node_status("node-a", MACHINE, 2, "127.0.0.1", 10250, T0 + 60, previous=status)
    ready = {x["type"]: x for x in later["conditions"]}["Ready"]
    assert ready["lastTransitionTime"] == rfc3339(T0) and ready["lastHeartbeatTime"] == rfc3339(T0 + 60)
    assert "nvidia.com/gpu" not in node_status("n", MACHINE, 0, "127.0.0.1", 1, T0)["capacity"]


def test_lease_is_owned_by_its_node():
    lease = lease_object("node-a", "uid-1", T0)
    assert lease["metadata"]["namespace"] == "kube-node-lease"
    assert lease["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert lease["spec"]["holderIdentity"] == "node-a" and lease["spec"]["renewTime"].endswith(".000000Z")


# --- provisioning ----------------------------------------------------------------------------------------

def test_a_pending_claim_gets_a_prebound_hostpath_volume(tmp_path):
    claim = {"kind": "PersistentVolumeClaim",
             "metadata": {"name": "ckpt", "namespace": "ns", "uid": "u1"},
             "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "standard",
                      "resources": {"requests": {"storage": "5Gi"}}},
             "status": {"phase": "Pending"}}
    assert wants_volume(claim)
    pv = volume_for(claim, tmp_path)
    assert pv["metadata"]["name"] == "pvc-u1"
    assert pv["spec"]["hostPath"]["path"] == str(tmp_path / "ns" / "ckpt")
    assert pv["spec"]["capacity"] == {"storage": "5Gi"} and pv["spec"]["accessModes"] == ["ReadWriteMany"]
    assert pv["spec"]["storageClassName"] == "standard"
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert pv["spec"]["claimRef"] == {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": "ns",
                                      "name": "ckpt", "uid": "u1"}
    assert not wants_volume({**claim, "spec": {**claim["spec"], "volumeName": "pv-x"}})
    assert not wants_volume({**claim, "status": {"phase": "Bound"}})
