"""The Pod Security "restricted" checker (tests/pod_security.py): every control fires on a spec that breaks it
and stays quiet on the allowed variants; and every pod Shipyard compiles passes it."""

from __future__ import annotations

import copy
from typing import Any, Callable

import pytest

from shipyard.resources import ServingResource
from tests.pod_security import CONTROLS, RULES, object_violations, pod_templates, restricted_violations
from tests.unit.test_compiler import CASES, compiled


def good() -> dict[str, Any]:
    sc = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "initContainers": [{"name": "init", "image": "x", "securityContext": copy.deepcopy(sc)}],
        "containers": [{"name": "main", "image": "x", "securityContext": copy.deepcopy(sc),
                        "ports": [{"containerPort": 8000}]}],
        "ephemeralContainers": [{"name": "debug", "image": "x", "securityContext": copy.deepcopy(sc)}],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "tmp", "emptyDir": {}}],
    }


def main_sc(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["containers"][0]["securityContext"]


def pod_sc(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["securityContext"]


Mutation = Callable[[dict[str, Any]], Any]

# (control, what breaks it, where the message must point)
BAD: list[tuple[str, Mutation, str]] = [
    ("hostProcess", lambda s: main_sc(s).update(windowsOptions={"hostProcess": True}), 'container "main"'),
    ("hostProcess", lambda s: pod_sc(s).update(windowsOptions={"hostProcess": True}), "pod"),
    ("hostNamespaces", lambda s: s.update(hostNetwork=True), "hostNetwork"),
    ("hostNamespaces", lambda s: s.update(hostPID=True), "hostPID"),
    ("hostNamespaces", lambda s: s.update(hostIPC=True), "hostIPC"),
    ("privileged", lambda s: main_sc(s).update(privileged=True), 'container "main"'),
    ("privileged", lambda s: s["initContainers"][0]["securityContext"].update(privileged=True), 'initContainer "init"'),
    ("capabilities", lambda s: main_sc(s)["capabilities"].update(add=["SYS_ADMIN"]), "SYS_ADMIN"),
    ("hostPathVolumes", lambda s: s["volumes"].append({"name": "host", "hostPath": {"path": "/"}}), '"host"'),
    ("hostPorts", lambda s: s["containers"][0]["ports"][0].update(hostPort=8000), "hostPort 8000"),
    ("appArmor", lambda s: main_sc(s).update(appArmorProfile={"type": "Unconfined"}), 'container "main"'),
    ("appArmor", lambda s: pod_sc(s).update(appArmorProfile={"type": "Unconfined"}), "pod"),
    ("seLinux", lambda s: main_sc(s).update(seLinuxOptions={"type": "spc_t"}), "spc_t"),
    ("seLinux", lambda s: pod_sc(s).update(seLinuxOptions={"user": "system_u"}), "user"),
    ("seLinux", lambda s: main_sc(s).update(seLinuxOptions={"role": "sysadm_r"}), "role"),
    ("procMount", lambda s: main_sc(s).update(procMount="Unmasked"), "Unmasked"),
    ("seccomp", lambda s: main_sc(s).update(seccompProfile={"type": "Unconfined"}), 'container "main"'),
    ("seccomp", lambda s: pod_sc(s).update(seccompProfile={"type": "Unconfined"}), "pod"),
    ("sysctls", lambda s: pod_sc(s).update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]), "kernel.msgmax"),
    ("volumeTypes", lambda s: s["volumes"].append({"name": "nfs", "nfs": {"server": "a", "path": "/"}}), "nfs"),
    ("volumeTypes", lambda s: s["volumes"].append({"name": "host", "hostPath": {"path": "/"}}), "hostPath"),
    ("allowPrivilegeEscalation", lambda s: main_sc(s).pop("allowPrivilegeEscalation"), 'container "main"'),
    ("allowPrivilegeEscalation", lambda s: s["ephemeralContainers"][0]["securityContext"].update(
        allowPrivilegeEscalation=True), 'ephemeralContainer "debug"'),
    ("runAsNonRoot", lambda s: pod_sc(s).pop("runAsNonRoot"), 'container "main"'),
    ("runAsNonRoot", lambda s: main_sc(s).update(runAsNonRoot=False), 'container "main"'),
    ("runAsNonRoot", lambda s: pod_sc(s).update(runAsNonRoot=False), "pod"),
    ("runAsUser", lambda s: pod_sc(s).update(runAsUser=0), "pod"),
    ("runAsUser", lambda s: main_sc(s).update(runAsUser=0), 'container "main"'),
    ("seccompRestricted", lambda s: pod_sc(s).pop("seccompProfile"), 'container "main"'),
    ("seccompRestricted", lambda s: main_sc(s).update(seccompProfile={"type": "Unconfined"}), 'container "main"'),
    ("capabilitiesRestricted", lambda s: main_sc(s).pop("capabilities"), "must drop ALL"),
    ("capabilitiesRestricted", lambda s: main_sc(s)["capabilities"].update(drop=["NET_RAW"]), "must drop ALL"),
    ("capabilitiesRestricted", lambda s: main_sc(s)["capabilities"].update(add=["CHOWN"]), "CHOWN"),
]

# Allowed variants: none of these may produce a violation.
GOOD: list[tuple[str, Mutation]] = [
    ("NET_BIND_SERVICE may be added", lambda s: main_sc(s)["capabilities"].update(add=["NET_BIND_SERVICE"])),
    ("Localhost seccomp", lambda s: pod_sc(s).update(seccompProfile={"type": "Localhost",
                                                                      "localhostProfile": "p.json"})),
    ("seccomp on every container instead of the pod", lambda s: [
        pod_sc(s).pop("seccompProfile"),
        *[c["securityContext"].update(seccompProfile={"type": "RuntimeDefault"})
          for f in ("containers", "initContainers", "ephemeralContainers") for c in s[f]]]),
    ("runAsNonRoot on every container instead of the pod", lambda s: [
        pod_sc(s).pop("runAsNonRoot"),
        *[c["securityContext"].update(runAsNonRoot=True)
          for f in ("containers", "initContainers", "ephemeralContainers") for c in s[f]]]),
    ("explicit false host namespaces", lambda s: s.update(hostNetwork=False, hostPID=False, hostIPC=False)),
    ("a safe sysctl", lambda s: pod_sc(s).update(sysctls=[{"name": "net.ipv4.ip_local_port_range",
                                                            "value": "1024 65535"}])),
    ("every allowed volume type", lambda s: s.update(volumes=[
        {"name": "a", "configMap": {"name": "c"}}, {"name": "b", "csi": {"driver": "d"}},
        {"name": "c", "downwardAPI": {"items": []}}, {"name": "d", "emptyDir": {}},
        {"name": "e", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
        {"name": "f", "persistentVolumeClaim": {"claimName": "x"}}, {"name": "g", "projected": {"sources": []}},
        {"name": "h", "secret": {"secretName": "s"}}])),
    ("AppArmor RuntimeDefault / Localhost", lambda s: [
        pod_sc(s).update(appArmorProfile={"type": "RuntimeDefault"}),
        main_sc(s).update(appArmorProfile={"type": "Localhost", "localhostProfile": "p"})]),
    ("SELinux container_t with a level", lambda s: main_sc(s).update(seLinuxOptions={"type": "container_t",
                                                                                      "level": "s0:c1"})),
    ("procMount Default", lambda s: main_sc(s).update(procMount="Default")),
    ("hostPort 0", lambda s: s["containers"][0]["ports"][0].update(hostPort=0)),
    ("a Windows pod needs no seccomp, capabilities or allowPrivilegeEscalation", lambda s: [
        s.update(os={"name": "windows"}), pod_sc(s).pop("seccompProfile"),
        *[c.update(securityContext={}) for f in ("containers", "initContainers", "ephemeralContainers")
          for c in s[f]]]),
]


def test_every_control_of_the_standard_is_implemented_and_tested():
    assert len(CONTROLS) == len(RULES) == 17  # 11 baseline + 6 restricted
    assert {control for control, _, _ in BAD} == set(CONTROLS)


def test_a_good_spec_has_no_violation():
    assert restricted_violations(good()) == []


@pytest.mark.parametrize("control, break_it, where", BAD, ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(BAD)])
def test_each_control_fires(control, break_it, where):
    spec = good()
    break_it(spec)
    violations = restricted_violations(spec)
    ours = [v for v in violations if f": {control}: " in v]
    assert ours, violations
    assert any(where in v for v in ours), ours
    # The control's own function is what reports it.
    assert RULES[control](spec, {}) == ours


@pytest.mark.parametrize("why, variant", GOOD, ids=[w for w, _ in GOOD])
def test_allowed_variants_do_not_fire(why, variant):
    spec = good()
    variant(spec)
    assert restricted_violations(spec) == []


def test_apparmor_annotations():
    spec = good()
    ok = {"container.apparmor.security.beta.kubernetes.io/main": "runtime/default",
          "container.apparmor.security.beta.kubernetes.io/init": "localhost/my-profile"}
    assert restricted_violations(spec, ok) == []
    [v] = restricted_violations(spec, {"container.apparmor.security.beta.kubernetes.io/main": "unconfined"})
    assert v.startswith('container "main": appArmor:')
    pod = {"kind": "Pod", "metadata": {"name": "p", "annotations": {
        "container.apparmor.security.beta.kubernetes.io/main": "unconfined"}}, "spec": spec}
    assert object_violations(pod) == [f"Pod/p: {v}"]


def test_messages_name_the_container_and_rule():
    spec = good()
    main_sc(spec).update(privileged=True, runAsUser=0)
    assert restricted_violations(spec) == ['container "main": privileged: securityContext.privileged must be false',
                                           'container "main": runAsUser: must not be 0 (root)']


def test_pod_templates_of_every_workload_kind():
    spec = good()
    template = {"metadata": {"labels": {"a": "b"}}, "spec": spec}
    objects = {
        "Pod": {"kind": "Pod", "metadata": {"name": "x"}, "spec": spec},
        "Job": {"kind": "Job", "spec": {"template": template}},
        "Deployment": {"kind": "Deployment", "spec": {"template": template}},
        "StatefulSet": {"kind": "StatefulSet", "spec": {"template": template}},
        "DaemonSet": {"kind": "DaemonSet", "spec": {"template": template}},
        "ReplicaSet": {"kind": "ReplicaSet", "spec": {"template": template}},
        "CronJob": {"kind": "CronJob", "spec": {"jobTemplate": {"spec": {"template": template}}}},
    }
    for kind, obj in objects.items():
        assert pod_templates(obj) == [spec], kind
    assert pod_templates({"kind": "Service", "spec": {}}) == []
    assert pod_templates({"kind": "ConfigMap", "data": {}}) == []


# --- what Shipyard compiles ---------------------------------------------------------------------------------

def scales(resource) -> list[dict[str, Any]]:
    if not isinstance(resource, ServingResource):
        return [{"restart": 0}, {"restart": 2}]
    out: list[dict[str, Any]] = [{}, {"replicas": 0, "autoscale": False}, {"replicas": 3, "autoscale": False}]
    if resource.spec.autoscaling is not None:
        out += [{"replicas": 1, "autoscale": True}, {"autoscale": True}]
    return out


# A Secret compiles to data only, a Project to its namespace and policies: every other kind runs pods.
POD_CASES = [c for c in CASES if c[1].kind not in ("Secret", "Project")]


@pytest.mark.parametrize("name, resource", POD_CASES, ids=[c[0] for c in POD_CASES])
def test_every_compiled_pod_is_restricted(name, resource):
    seen = 0
    for kwargs in scales(resource):
        for obj in compiled(name, resource, **kwargs):
            seen += len(pod_templates(obj))
            assert object_violations(obj) == []
    assert seen, f"{name} compiled no pod template"

