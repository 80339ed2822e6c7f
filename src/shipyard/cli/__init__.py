"""The `shipyard` command line: kubectl-shaped verbs over the client SDK.

It prints, never computes: every fact comes from the control plane through `shipyard.client`, except
reading manifests and `render`, which are pure and run locally. The control plane validates what `apply`
sends, all documents or none, with errors naming file, document and field.
"""
