"""Shipyard's node agent: a kubelet for tests, that runs the pods a real scheduler binds as local processes.

`python -m shipyard.cluster.nodeagent --kubeconfig PATH --nodes node-a[,node-b] --gpus N --root DIR` registers
the named Nodes with a real API server and plays their kubelet, so a real control plane (API server, controller
manager, scheduler) runs Shipyard's native objects end to end on one machine, without containers:

- node.py      the Nodes (this machine's CPUs and memory, 110 pods, N declared GPUs), their status and Leases;
- agent.py     a watch of each node's pods (fieldSelector spec.nodeName), a periodic resync, one sync thread;
- pods.py      each pod's lifecycle, as the kubelet's pod workers: start, restart with back-off, readiness,
               graceful deletion, force deletion, node shutdown;
- status.py    the pod status the kubelet would write (pure);
- containers.py  the container's process from the API: env, Secrets, names of pods, volumes (no images: the
               command runs with this Python's environment on PATH, as on the embedded runtime);
- ipam.py      an IP per pod from --pod-network (127.1.0.0/16: loopback, so pods keep their containerPorts);
- devices.py   declared GPU indices per pod (CUDA_VISIBLE_DEVICES);
- storage.py   a hostPath provisioner for PersistentVolumeClaims;
- logs.py      the kubelet's /containerLogs endpoint over HTTPS, for `kubectl logs`.

What runs a pod is the embedded runtime's machinery (shipyard.runtime.local: the shim, lifecycle rules, env and
argv rules, volume substitution, readiness probes), shared rather than copied, so the two never disagree. The
agent talks to Kubernetes only through shipyard.cluster.api.KubeApi.

Not done (a kubelet does them; tests so far need none): containers after the first and init containers, exec
and port-forward, liveness and startup probes, resource limits (nothing is confined), configMapKeyRef and
envFrom, service-account tokens, Service routing (ClusterIPs lead nowhere: use pod IPs, or --service-url).
"""

from .agent import NodeAgent

__all__ = ["NodeAgent"]
