"""The MLflow tracking server for cluster mode, as native objects: what `shipyard up` runs locally as a child
process becomes a Deployment + Service + PVC in the platform's namespace.

One replica on purpose: MLflow's SQLite backend allows one writer. Teams with an existing server (a database
backend, object-store artifacts) point Shipyard at it instead (SHIPYARD_MLFLOW_TRACKING_URI) and skip these.
The image is the MLflow project's own, pinned to the version the client side is tested with.
"""

from __future__ import annotations

from typing import Any

from .common import MANAGED_BY, container_security_context, pod_security_context

TRACKING_NAME = "shipyard-mlflow"
MLFLOW_IMAGE = "ghcr.io/mlflow/mlflow:v3.17.2"
MLFLOW_PORT = 5000
DATA_DIR = "/mlflow"


def tracking_server_objects(namespace: str = "shipyard-system", storage: str = "10Gi",
                            storage_class: str | None = None) -> list[dict[str, Any]]:
    labels = {MANAGED_BY: "shipyard", "app.kubernetes.io/name": "shipyard", "app.kubernetes.io/component": "mlflow"}
    meta = {"name": TRACKING_NAME, "namespace": namespace, "labels": labels}
    claim_spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage}}}
    if storage_class:
        claim_spec["storageClassName"] = storage_class
    container = {
        "name": "mlflow",
        "image": MLFLOW_IMAGE,
        "command": ["mlflow", "server"],
        "args": ["--backend-store-uri", f"sqlite:///{DATA_DIR}/mlflow.db", "--artifacts-destination",
                 f"{DATA_DIR}/artifacts", "--host", "0.0.0.0", "--port", str(MLFLOW_PORT), "--workers", "1"],
        # Shipyard never uses MLflow's GenAI job runner, which would start several workers of its own.
        "env": [{"name": "MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "value": "false"}],
        "ports": [{"name": "http", "containerPort": MLFLOW_PORT}],
        "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 5},
        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}],
    }
    return [
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": dict(meta), "spec": claim_spec},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": dict(meta), "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # two servers on one SQLite file would corrupt it
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {
                "securityContext": pod_security_context(),
                "containers": [container],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": TRACKING_NAME}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": dict(meta), "spec": {
            "selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}},
    ]
