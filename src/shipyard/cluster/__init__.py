"""Talking to a Kubernetes cluster: the one client adapter (`api`) and leader election (`leader`).

The store and runtime adapters for a cluster (`store.kubernetes`, `runtime.kubernetes`) and the operator's
composition root (`shipyard.operator`) build on these; nothing else of Shipyard touches a Kubernetes client.
"""
