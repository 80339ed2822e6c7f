"""The embedded local runtime: runs compiled Jobs, Deployments (with their HPAs), Services and PVCs as
processes on this machine.

See docs/local-runtime.md for every adaptation it makes to Kubernetes semantics.
"""
