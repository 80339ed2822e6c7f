"""A checker for the Kubernetes Pod Security Standards, "restricted" profile (which includes "baseline").

Why a checker of our own: the admission controller that enforces these rules runs only inside a real API
server, and the tests must catch a violation in a compiled object or a chart template before a cluster with
`pod-security.kubernetes.io/enforce: restricted` refuses the pod. The rules follow
https://kubernetes.io/docs/concepts/security/pod-security-standards/ (policy version 1.30+); each control is
one function below, named after the control, so a rule change is a one-place edit.

`restricted_violations(pod_spec)` returns one string per violation, "<where>: <control>: <detail>", where
<where> is `pod` or `container "name"` / `initContainer "name"` / `ephemeralContainer "name"`. An empty list
means the pod would be admitted into a namespace enforcing "restricted". `pod_templates(obj)` finds the pod
spec(s) of a Pod, Job, Deployment, ReplicaSet, StatefulSet, DaemonSet, CronJob (or a bare PodTemplate).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

# --- the allowlists the standard names -------------------------------------------------------------------

# Baseline: capabilities a container may add (the container runtimes' defaults).
BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP",
    "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})
# Restricted: the only capability a container may add; it must drop ALL.
RESTRICTED_CAPABILITIES = frozenset({"NET_BIND_SERVICE"})
# Restricted: the only volume types (each is namespaced, not a window onto the node).
RESTRICTED_VOLUME_TYPES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
})
# Baseline: the "safe" sysctls (namespaced, isolated per pod).
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
})
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"})
APPARMOR_TYPES = frozenset({"RuntimeDefault", "Localhost"})
APPARMOR_ANNOTATION_PREFIX = "container.apparmor.security.beta.kubernetes.io/"
SECCOMP_TYPES = frozenset({"RuntimeDefault", "Localhost"})
CONTAINER_FIELDS = (("containers", "container"), ("initContainers", "initContainer"),
                    ("ephemeralContainers", "ephemeralContainer"))

# The controls, as the standard names them: 11 baseline + 6 restricted.
BASELINE_CONTROLS = ("hostProcess", "hostNamespaces", "privileged", "capabilities", "hostPathVolumes", "hostPorts",
                     "appArmor", "seLinux", "procMount", "seccomp", "sysctls")
RESTRICTED_CONTROLS = ("volumeTypes", "allowPrivilegeEscalation", "runAsNonRoot", "runAsUser",
                       "seccompRestricted", "capabilitiesRestricted")
CONTROLS = BASELINE_CONTROLS + RESTRICTED_CONTROLS

Violations = list[str]
Container = tuple[str, dict[str, Any]]  # (where, container)


def _containers(spec: dict[str, Any]) -> Iterator[Container]:
    for field, label in CONTAINER_FIELDS:
        for c in spec.get(field) or []:
            yield f'{label} "{c.get("name", "?")}"', c


def _sc(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("securityContext") or {}


def _pod_and_containers(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The pod's security context, then each container's: the controls that apply at both levels."""
    yield "pod", _sc(spec)
    for where, c in _containers(spec):
        yield where, _sc(c)


def _is_windows(spec: dict[str, Any]) -> bool:
    return ((spec.get("os") or {}).get("name") or "").lower() == "windows"


# --- baseline ----------------------------------------------------------------------------------------------

def host_process(spec: dict[str, Any], annotations: dict[str, str]) -> Violations:
    return [f"{where}: hostProcess: windowsOptions.hostProcess must not be true"
            for where, sc in _pod_and_containers(spec) if (sc.get("windowsOptions") or {}).get("hostProcess")]


def host_namespaces(spec: dict[str, Any], annotations: dict[str, str]) -> Violations:
    return [f"pod: hostNamespaces: {field} must be false" for field in ("hostNetwork", "hostPID", "hostIPC")
            if spec.get(field)]


def privileged(spec: dict[str, Any], annotations: dict[str, str]) -> Violations:
    return [f"{where}: privileged: securityContext.privileged must be false"
            for where, c in _containers(spec) if _sc(c).get("privileged")]


def capabilities(spec: dict[str, Any], annotations: dict[str, str]) -> Violations:
    out = []
    for where, c in _containers(spec):
        for cap in (_sc(c).get("capabilities") or {}).get("add") or []:
            if cap not in BASELINE_CAPABILITIES:
                out.append(f"{where}: capabilities: adds {cap}, outside the baseline allowlist")
    return out


def host_path_volumes(spec: dict[str, Any], annotations: dict[str, str]) -> Violations:
    return [f'pod: hostPathVolumes: volume "{v.get("name", "?")}" is a hostPath'
            for v in spec.get("volumes") or [] if "hostPath" in v]


def host_ports(spec: dict[str, Any], annotations: dict[str, str]) -> Violations:
    return [f"{where}: hostPorts: port {p.get('containerPort')} sets hostPort {p['hostPort']}"
            for where, c in _containers(spec) for p in c.get("ports") or [] if p.get("hostPort")]


def app_armor(spec: dict[str, Any], annotations: dict[str, str]) -> Violations:
    out = []
    for where, sc in _pod_and_containers(spec):
        kind = (sc.get("appArmorProfile") or {}).get("type")
        if kind is not None and kind not in APPARMOR_TYPES:
            out.append(f"{where}: appArmor: appArmorProfile.type {kind} (allowed: RuntimeDefault, Localhost)")
    for key, value in annotations.items():
        if key.startswith(APPARMOR_ANNOTATION_PREFIX) and value != "runtime/default" \
                and not value.startswith("localhost/"):
            name = key[len(APPARMOR_ANNOTATION_PREFIX):]
            out.append(f'container "{name}": appArmor: annotation {key}={value} '
                       "(allowed: runtime/default, localhost/*)")
    return out


def se_linux(spec: dict[str, Any], annotations: dict[str, str]) -> Violations:
    out = []
    for where, sc in _pod_and_containers(spec):
        opts = sc.get("seLinuxOptions") or {}
        if opts.get("type", "") not in SELINUX_TYPES:
            out.append(f"{where}: seLinux: seLinuxOptions.type {opts['type']} is not a container type")
        for field in ("user", "role"):
            if opts.get(field):
                out.append(f"{where}: seLinux: seLinuxOptions.{field} must not be set")
    return out


def proc_mount(spec: dict[str, Any], annotations: dict[str, str]) -> Violations:
    return [f"{where}: procMount: procMount {_sc(c)['procMount']} (allowed: Default)"
            for where, c in _containers(spec) if _sc(c).get("procMount") not in (None, "Default")]


def seccomp(spec: dict[str, Any], annotations: dict[str, str]) -> Violations:
    return [f"{where}: seccomp: seccompProfile.type must not be Unconfined"
            for where, sc in _pod_and_containers(spec) if (sc.get("seccompProfile") or {}).get("type") == "Unconfined"]


def sysctls(spec: dict[str, Any], annotations: dict[str, str]) -> Violations:
    return [f"pod: sysctls: {s.get('name')} is not a safe sysctl"
            for s in _sc(spec).get("sysctls") or [] if s.get("name") not in SAFE_SYSCTLS]


# --- restricted --------------------------------------------------------------------------------------------

def volume_types(spec: dict[str, Any], annotations: dict[str, str]) -> Violations:
    out = []
    for v in spec.get("volumes") or []:
        kinds = set(v) - {"name"}
        for kind in sorted(kinds - RESTRICTED_VOLUME_TYPES):
            out.append(f'pod: volumeTypes: volume "{v.get("name", "?")}" is of type {kind}')
    return out


def allow_privilege_escalation(spec: dict[str, Any], annotations: dict[str, str]) -> Violations:
    if _is_windows(spec):
        return []
    return [f"{where}: allowPrivilegeEscalation: must be set to false"
            for where, c in _containers(spec) if _sc(c).get("allowPrivilegeEscalation") is not False]


def run_as_non_root(spec: dict[str, Any], annotations: dict[str, str]) -> Violations:
    pod = _sc(spec).get("runAsNonRoot")
    out = []
    if pod is False:
        out.append("pod: runAsNonRoot: must not be false")
    for where, c in _containers(spec):
        own = _sc(c).get("runAsNonRoot")
        if own is False:
            out.append(f"{where}: runAsNonRoot: must not be false")
        elif own is None and pod is not True:
            out.append(f"{where}: runAsNonRoot: must be true (here or in the pod's securityContext)")
    return out


def run_as_user(spec: dict[str, Any], annotations: dict[str, str]) -> Violations:
    return [f"{where}: runAsUser: must not be 0 (root)"
            for where, sc in _pod_and_containers(spec) if sc.get("runAsUser") == 0]


def seccomp_restricted(spec: dict[str, Any], annotations: dict[str, str]) -> Violations:
    if _is_windows(spec):
        return []
    pod = (_sc(spec).get("seccompProfile") or {}).get("type")
    out = []
    if pod is not None and pod not in SECCOMP_TYPES:
        out.append(f"pod: seccompRestricted: seccompProfile.type {pod} (allowed: RuntimeDefault, Localhost)")
    for where, c in _containers(spec):
        own = (_sc(c).get("seccompProfile") or {}).get("type")
        if own is not None and own not in SECCOMP_TYPES:
            out.append(f"{where}: seccompRestricted: seccompProfile.type {own} (allowed: RuntimeDefault, Localhost)")
        elif own is None and pod is None:
            out.append(f"{where}: seccompRestricted: seccompProfile.type must be RuntimeDefault or Localhost "
                       "(here or in the pod's securityContext)")
    return out


def capabilities_restricted(spec: dict[str, Any], annotations: dict[str, str]) -> Violations:
    if _is_windows(spec):
        return []
    out = []
    for where, c in _containers(spec):
        caps = _sc(c).get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{where}: capabilitiesRestricted: must drop ALL")
        for cap in caps.get("add") or []:
            if cap not in RESTRICTED_CAPABILITIES:
                out.append(f"{where}: capabilitiesRestricted: adds {cap} (only NET_BIND_SERVICE may be added)")
    return out


RULES: dict[str, Callable[[dict[str, Any], dict[str, str]], Violations]] = {
    "hostProcess": host_process,
    "hostNamespaces": host_namespaces,
    "privileged": privileged,
    "capabilities": capabilities,
    "hostPathVolumes": host_path_volumes,
    "hostPorts": host_ports,
    "appArmor": app_armor,
    "seLinux": se_linux,
    "procMount": proc_mount,
    "seccomp": seccomp,
    "sysctls": sysctls,
    "volumeTypes": volume_types,
    "allowPrivilegeEscalation": allow_privilege_escalation,
    "runAsNonRoot": run_as_non_root,
    "runAsUser": run_as_user,
    "seccompRestricted": seccomp_restricted,
    "capabilitiesRestricted": capabilities_restricted,
}
assert tuple(RULES) == CONTROLS


def restricted_violations(pod_spec: dict[str, Any], annotations: dict[str, str] | None = None) -> list[str]:
    """Every way `pod_spec` breaks the "restricted" profile (baseline included); [] if it is admitted.

    `annotations` are the pod's (or pod template's) metadata annotations, for the AppArmor annotation form.
    """
    annotations = annotations or {}
    return [v for rule in RULES.values() for v in rule(pod_spec, annotations)]


_TEMPLATE_KINDS = {"Job", "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "ReplicationController",
                   "PodTemplate"}


def pod_template_objects(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod (or pod template) objects, each with `metadata` and `spec`, that `obj` creates pods from."""
    kind = obj.get("kind")
    if kind == "Pod":
        return [obj]
    if kind == "CronJob":
        return [obj["spec"]["jobTemplate"]["spec"]["template"]]
    if kind == "PodTemplate":
        return [obj["template"]]
    if kind in _TEMPLATE_KINDS:
        return [obj["spec"]["template"]]
    return []


def pod_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod specs inside a Pod, Job, Deployment, ReplicaSet, StatefulSet, DaemonSet or CronJob; [] for
    objects that create no pods (a Service, a ConfigMap …)."""
    return [t.get("spec") or {} for t in pod_template_objects(obj)]


def object_violations(obj: dict[str, Any]) -> list[str]:
    """`restricted_violations` of every pod template of `obj`, each prefixed with the object's kind/name."""
    name = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
    return [f"{name}: {v}" for t in pod_template_objects(obj)
            for v in restricted_violations(t.get("spec") or {}, (t.get("metadata") or {}).get("annotations"))]
