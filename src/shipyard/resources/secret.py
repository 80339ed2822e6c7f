"""Kind Secret: a user's credentials (registry passwords, dataset keys, tracking tokens) for their workloads.

Values are write-only. `spec.stringData` is accepted on apply and handed to the controllers (which compile it
to a native v1 Secret that workloads reference through `env[].valueFrom.secretKeyRef`), but the wire form —
what the API answers, what watch events carry, what the SQLite store keeps as the object's body — never
holds them: `to_wire` drops them and reports `status.keys`, each key's size in bytes. Where the values live
instead is the store's business (SQLite: encrypted beside the body, see store/secret_values.py).

Why a Secret must have at least one key: `get -o yaml | apply -f -` round-trips every other kind, but the
YAML of a Secret has no values; accepting an empty stringData would silently wipe the credentials.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from .base import Model, Resource, Status

# Kubernetes' rule for Secret and ConfigMap keys (IsConfigMapKey): file names in a mounted volume.
SECRET_KEY_PATTERN = re.compile(r"^[-._a-zA-Z0-9]+$")
MAX_KEY_LENGTH = 253
# The API server's limit for one Secret (its data, after decoding).
MAX_SECRET_BYTES = 1024 * 1024
_TYPE = re.compile(r"^[-._a-zA-Z0-9/]{1,253}$")


def check_secret_key(key: str, what: str = "key") -> str:
    # Never echo values in errors: only keys, which are names, appear in messages.
    if len(key) > MAX_KEY_LENGTH or not SECRET_KEY_PATTERN.match(key) or key in (".", ".."):
        raise ValueError(f"{what} {key[:80]!r} must be at most {MAX_KEY_LENGTH} letters, digits, '-', '_' or '.' "
                         "(and not '.' or '..')")
    return key


class SecretSpec(Model):
    type: str = "Opaque"
    # Write-only: never part of the wire form (see Secret.to_wire).
    string_data: dict[str, str] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        if not _TYPE.match(v):
            raise ValueError(f"type {v[:80]!r} must be a Secret type such as Opaque or kubernetes.io/dockerconfigjson")
        return v

    @field_validator("string_data", mode="before")
    @classmethod
    def _plain_strings(cls, v: Any) -> Any:
        # Checked here rather than by pydantic's own message, which would quote the offending input (a value).
        if isinstance(v, dict):
            for key, value in v.items():
                if not isinstance(value, str):
                    raise ValueError(f"key {str(key)[:80]!r}: a value must be a string (quote numbers and booleans)")
        return v

    @field_validator("string_data")
    @classmethod
    def _keys(cls, v: dict[str, str]) -> dict[str, str]:
        if not v:
            raise ValueError("a Secret needs at least one key (values are write-only: `get` shows only keys and "
                             "sizes, so apply them again from your own file)")
        for key in v:
            check_secret_key(key)
        total = sum(len(value.encode()) for value in v.values())
        if total > MAX_SECRET_BYTES:
            raise ValueError(f"the values add up to {total} bytes; a Secret holds at most {MAX_SECRET_BYTES} "
                             "(1 MiB)")
        return v


class SecretStatus(Status):
    phase: Literal["Pending", "Ready", "Failed"] = "Pending"
    # Each key's size in bytes (UTF-8): what `get` and `describe` show instead of the values.
    keys: dict[str, int] = Field(default_factory=dict)


def key_sizes(string_data: dict[str, str]) -> dict[str, int]:
    return {key: len(value.encode()) for key, value in sorted(string_data.items())}


class Secret(Resource):
    KIND: ClassVar[str] = "Secret"
    PLURAL: ClassVar[str] = "secrets"
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ("secret",)
    # On a cluster, a credential belongs in a native Secret (etcd encryption, RBAC on `secrets`), never in a
    # custom resource's spec: no CRD is generated, and the Kubernetes store refuses the kind.
    CUSTOM_RESOURCE: ClassVar[bool] = False

    kind: Literal["Secret"] = "Secret"
    spec: SecretSpec
    status: SecretStatus = Field(default_factory=SecretStatus)

    @model_validator(mode="after")
    def _sizes(self) -> "Secret":
        if self.spec.string_data:
            self.status.keys = key_sizes(self.spec.string_data)
        return self

    def to_wire(self) -> dict[str, Any]:
        """The redacted form: every road out of Shipyard (API answers, watch events, stored bodies) goes
        through here, so this is the one place values are dropped."""
        wire = super().to_wire()
        wire.get("spec", {}).pop("stringData", None)
        if self.spec.string_data:  # sizes from the values themselves, whatever status was last written
            wire.setdefault("status", {})["keys"] = key_sizes(self.spec.string_data)
        return wire

    def to_sealed(self) -> dict[str, str]:
        """The values, for whoever keeps them (a store): the only accessor besides `spec.string_data`."""
        return dict(self.spec.string_data)
