"""The `shipyard` command line: kubectl-shaped verbs over the client SDK.

It prints, never computes: every fact comes from the control plane through `shipyard.client`, except
manifest validation and `render`, which are pure and run locally so that errors show before anything is sent.
"""
