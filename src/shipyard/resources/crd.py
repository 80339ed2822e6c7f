"""CustomResourceDefinitions for every Shipyard kind, generated from the same pydantic models.

On a cluster the API server, not Shipyard, is the first to see a manifest (`kubectl apply`, GitOps tools), so it
needs a schema of its own. Writing that schema by hand would drift from the models within a release; deriving
it from `model_json_schema()` keeps one source of truth, and the committed chart file is checked against this
module by the tests (`make crds` regenerates it).

Kubernetes accepts only *structural* OpenAPI v3 schemas: every node typed, no `$ref`, no type-bearing
`anyOf`, `properties` and `additionalProperties` mutually exclusive. Pydantic's JSON Schema is none of that,
so `_convert` rewrites it node by node and refuses keywords it does not know rather than passing them through
(a new kind of field then fails generation instead of producing a CRD the API server rejects).

The CRD checks what a schema can say about one field: types, enums, bounds, lengths, patterns; and, as CEL
rules (`x-kubernetes-validations`, `_RULES`), the simple cross-field rules a user most often gets wrong
(`replicas.min <= max`, `min: 0` needs `scaleToZero`, `engine: custom` and `command` go together, the drain
fits in the grace period), so `kubectl apply` refuses them at once with the same words Shipyard would use.
The rest (a Sweep's placeholders naming its parameters, unique volume names...) stays in the pydantic
validators, which Shipyard runs on every write; the CRD is a first line of defence, never the only one. Where a field cannot be expressed exactly, the
CRD accepts a superset of what Shipyard accepts, never less, except for quantities written as fractional
numbers (see `_QUANTITY`).

`python -m shipyard.resources.crd` prints all CRDs as one YAML stream; it writes no files.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import yaml

from .base import API_GROUP, API_VERSION, Resource
from .quantity import _QUANTITY
from .registry import KINDS

VERSION = API_VERSION.split("/", 1)[1]
PRESERVE = "x-kubernetes-preserve-unknown-fields"
INT_OR_STRING = "x-kubernetes-int-or-string"

# Quantities are int-or-string in Kubernetes itself (`cpu: 2` and `cpu: "500m"`). A fractional number such as
# `cpu: 0.5`, which Shipyard turns into "0.5", is refused by the CRD as by Kubernetes' own kinds: write "500m".
# parse_quantity strips surrounding blanks, hence the \s* around its grammar.
_QUANTITY_PATTERN = r"^\s*" + _QUANTITY.pattern.removeprefix("^").removesuffix("$") + r"\s*$"
# Fields whose JSON Schema says less than their validators accept (a `mode="before"` validator turns numbers
# into strings) or more than they allow, keyed by the model that declares them.
_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "ResourceRequirements": {
        "cpu": {INT_OR_STRING: True, "pattern": _QUANTITY_PATTERN},
        "memory": {INT_OR_STRING: True, "pattern": _QUANTITY_PATTERN},
    },
    "Volume": {"size": {"pattern": _QUANTITY_PATTERN}},
    # A Project's quota: quantities by what they cap (the keys are checked by check_quota).
    "ProjectSpec": {"quota": {"additionalProperties": {INT_OR_STRING: True, "pattern": _QUANTITY_PATTERN}}},
    # Seconds, or a duration ("30m"): parse_duration turns the string into seconds before the model checks it.
    "WorkspaceSpec": {"idleTimeout": {INT_OR_STRING: True, "pattern": r"^(\d+|(\d+h)?(\d+m)?(\d+s)?)$"}},
}
# Cross-field rules the API server checks with CEL, keyed by the model whose node they sit on: each mirrors a
# pydantic validator of that model (the tests hold both to the same verdicts). `has()` guards keep an absent
# optional field from failing a rule; defaults are applied before CEL runs, so `replicas` always has both bounds.
_SERVING_RULES = [
    {"rule": "!has(self.replicas) || self.replicas.min > 0 || has(self.scaleToZero)",
     "message": "replicas.min: 0 needs scaleToZero (e.g. scaleToZero: {idleSeconds: 300})",
     "fieldPath": ".replicas.min", "reason": "FieldValueInvalid"},
    {"rule": "!has(self.drainSeconds) || self.drainSeconds == 0 || "
             "self.drainSeconds < (has(self.terminationGracePeriodSeconds) ? self.terminationGracePeriodSeconds : 30)",
     "message": "drainSeconds must be less than terminationGracePeriodSeconds",
     "fieldPath": ".drainSeconds", "reason": "FieldValueInvalid"},
]
_RULES: dict[str, list[dict[str, str]]] = {
    "Replicas": [{"rule": "self.min <= self.max", "message": "min must not be greater than max",
                  "fieldPath": ".min", "reason": "FieldValueInvalid"}],
    "AppSpec": _SERVING_RULES,
    "EndpointSpec": [
        *_SERVING_RULES,
        {"rule": "!has(self.engine) || self.engine != 'custom' || has(self.command)",
         "message": "command: required when engine is custom", "fieldPath": ".command",
         "reason": "FieldValueRequired"},
        {"rule": "!has(self.command) || (has(self.engine) && self.engine == 'custom')",
         "message": "command: only allowed when engine is custom", "fieldPath": ".command",
         "reason": "FieldValueForbidden"},
    ],
}
# Validation keywords that mean the same in JSON Schema and in a CRD's OpenAPI v3 subset.
_CONSTRAINTS = {"format", "enum", "minimum", "maximum", "minLength", "maxLength", "pattern", "minItems", "maxItems",
                "uniqueItems", "multipleOf"}
_PY_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict,
}


def _column(name: str, type_: str, path: str, description: str, priority: int = 0) -> dict[str, Any]:
    col = {"name": name, "type": type_, "jsonPath": path, "description": description}
    return col | {"priority": priority} if priority else col


_PHASE = _column("Phase", "string", ".status.phase", "Lifecycle phase observed by the controller")
_AGE = _column("Age", "date", ".metadata.creationTimestamp", "Time since the resource was created")


def _serving_columns(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        _PHASE,
        _column("Ready", "integer", ".status.readyReplicas", "Replicas passing their readiness probe"),
        _column("Desired", "integer", ".status.desiredReplicas", "Replicas the autoscaler wants"),
        _column("Req/s", "number", ".status.requestsPerSecond", "Requests per second through the gateway"),
        _column("URL", "string", ".status.url", "Where the gateway serves it"),
        _AGE,
        _column("In-flight", "number", ".status.inFlight", "Requests being served now", 1),
        _column("Public", "boolean", ".spec.public", "Reachable without a project token", 1),
        *extra,
    ]


# What `kubectl get` shows: the same facts as `shipyard get` (cli/printers.py) where a JSONPath can reach them;
# priority 1 columns appear with `-o wide`, as Shipyard's wide columns do.
_COLUMNS: dict[str, list[dict[str, Any]]] = {
    "Workspace": [
        _PHASE,
        _column("IDE", "string", ".spec.ide", "jupyterlab or vscode"),
        _column("URL", "string", ".status.url", "Where the gateway serves it (open it with shipyard open)"),
        _column("Last Active", "date", ".status.lastActivityTime", "Last request, busy kernel or editor use"),
        _AGE,
        _column("Suspended", "string", ".status.suspendReason", "Idle or Manual", priority=1),
    ],
    "TrainingJob": [
        _PHASE,
        _column("Replicas", "integer", ".spec.replicas", "Replicas in the gang"),
        _column("Restarts", "integer", ".status.restarts", "Gang restarts so far"),
        _column("Step", "integer", ".status.progress.step", "Latest step rank 0 reported"),
        _column("Loss", "number", ".status.progress.loss", "Latest loss rank 0 reported"),
        _AGE,
        _column("Tokens/s", "number", ".status.progress.tokensPerSecond", "Latest training throughput", 1),
        _column("Started", "date", ".status.startTime", "When the replicas started", 1),
    ],
    "Endpoint": _serving_columns(_column("Model", "string", ".spec.model", "Model directory or registry URI", 1)),
    "App": _serving_columns(),
    "Sweep": [
        _PHASE,
        _column("Running", "integer", ".status.trialsRunning", "Trials running now"),
        _column("Succeeded", "integer", ".status.trialsSucceeded", "Trials that succeeded"),
        _column("Max", "integer", ".spec.maxTrials", "Trials the sweep runs in all"),
        _column("Best", "number", ".status.bestTrial.objective", "Best objective so far"),
        _column("Best Trial", "string", ".status.bestTrial.name", "Trial that reached it"),
        _AGE,
        _column("Metric", "string", ".spec.objective.metric", "Objective metric", 1),
        _column("Goal", "string", ".spec.objective.goal", "minimize or maximize", 1),
        _column("Failed", "integer", ".status.trialsFailed", "Trials that failed", 1),
        _column("Stopped", "integer", ".status.trialsStopped", "Trials stopped early", 1),
        _column("Model", "string", ".status.registeredModel.name", "Registered model of the best trial", 1),
    ],
    # Cluster-scoped: `kubectl get projects` lists every project (the namespaces workloads live in).
    "Project": [
        _PHASE,
        _column("Display Name", "string", ".spec.displayName", "The project's name for people"),
        _AGE,
        _column("Priority Class", "string", ".spec.defaults.priorityClass",
                "What workloads that name no priority class get", 1),
    ],
}


def _prose(text: str) -> str:
    # Docstrings are hard-wrapped for the source; `kubectl explain` wraps by itself, so keep paragraphs only.
    return "\n\n".join(" ".join(p.split()) for p in text.strip().split("\n\n"))


def _fits(value: Any, schema: dict[str, Any]) -> bool:
    """Whether a pydantic default is a valid value of the converted node: the API server refuses a CRD whose
    defaults do not validate, and it would apply them to every object."""
    if schema.get(INT_OR_STRING):
        ok = isinstance(value, (int, str))
    elif schema.get("type") in _PY_TYPES:
        ok = isinstance(value, _PY_TYPES[schema["type"]])
    else:
        return False
    return ok and (schema.get("type") == "boolean") == isinstance(value, bool) and value in schema.get("enum", [value])


def _union(branches: list[dict[str, Any]]) -> dict[str, Any]:
    """One structural node for a pydantic union (`anyOf`), accepting every value any branch accepts."""
    nullable = any(b.get("type") == "null" for b in branches)
    rest = [b for b in branches if b.get("type") != "null"]
    types = {b.get("type") for b in rest}
    if len(rest) == 1:
        out = rest[0]
    elif types <= {"integer", "number"}:
        # int | float: every JSON integer is a number; constraints survive only where all branches agree.
        out = {k: v for k, v in rest[0].items() if k != "type" and all(b.get(k) == v for b in rest)}
        out["type"] = "number"
    elif types == {"integer", "string"}:
        out = {INT_OR_STRING: True}
    else:
        # Any other mix (str | int | float, say): a structural schema has no union of types, and picking one
        # branch would refuse valid values, so the node accepts any value and Shipyard's validator decides.
        out = {PRESERVE: True}
    return out | {"nullable": True} if nullable else out


def _object(node: dict[str, Any], defs: dict[str, Any], seen: tuple[str, ...]) -> dict[str, Any]:
    props, extra = node.pop("properties", None), node.pop("additionalProperties", None)
    required = node.pop("required", None)
    out: dict[str, Any] = {"type": "object"}
    if props is not None:
        out["properties"] = {name: _convert(sub, defs, seen) for name, sub in props.items()}
        if required:
            out["required"] = list(required)
        # `additionalProperties: false` (extra="forbid") cannot sit next to `properties`; the API server prunes
        # unknown fields instead, and kubectl's strict field validation reports them, which is the same promise.
        if extra not in (None, False):
            out[PRESERVE] = True
    elif isinstance(extra, dict) and extra:
        out["additionalProperties"] = _convert(extra, defs, seen)
    else:
        out[PRESERVE] = True  # dict[str, Any] is free-form by design: there is nothing to prune
    return out


def _array(node: dict[str, Any], defs: dict[str, Any], seen: tuple[str, ...]) -> dict[str, Any]:
    items, prefix = node.pop("items", None), node.pop("prefixItems", None)
    if prefix:
        # A tuple (`history: list[tuple[int, float]]`): structural arrays have one item schema, so the items are
        # the union of the positions (int | float -> number) and min/maxItems keep the length.
        positions = [_convert(p, defs, seen) for p in prefix] + ([_convert(items, defs, seen)] if items else [])
        return {"type": "array", "items": _union(positions)}
    return {"type": "array", "items": _convert(items, defs, seen) if items else {PRESERVE: True}}


def _ref(ref: str, defs: dict[str, Any], seen: tuple[str, ...]) -> dict[str, Any]:
    name = ref.rsplit("/", 1)[-1]
    if name in seen:
        raise ValueError(f"{name} refers to itself; structural schemas cannot express recursion")
    out = _convert(defs[name], defs, (*seen, name))
    for prop, override in _OVERRIDES.get(name, {}).items():
        node = out["properties"][prop]
        if override.get(INT_OR_STRING):
            node.pop("type", None)
        node.update(override)
    if name in _RULES:
        out["x-kubernetes-validations"] = _RULES[name]
    return out


def _convert(schema: dict[str, Any], defs: dict[str, Any], seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A pydantic JSON Schema node as a structural OpenAPI v3 node, with every `$ref` inlined."""
    node = dict(schema)
    out: dict[str, Any] = {}
    if "$ref" in node:
        out = _ref(node.pop("$ref"), defs, seen)
    elif "anyOf" in node:
        out = _union([_convert(b, defs, seen) for b in node.pop("anyOf")])
    kind = node.pop("type", None)
    if kind == "object":
        out |= _object(node, defs, seen)
    elif kind == "array":
        out |= _array(node, defs, seen)
    elif kind is not None:
        out["type"] = kind
    elif not out:
        out[PRESERVE] = True  # `Any` has no structural type; its model's validators check it
    if "const" in node:
        out["enum"] = [node.pop("const")]
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        # JSON Schema 2020-12 gives the bound itself; OpenAPI v3.0 flags the ordinary bound as exclusive.
        if exclusive in node:
            out[bound], out[exclusive] = node.pop(exclusive), True
    node.pop("title", None)  # pydantic's titles repeat the field name
    default = node.pop("default", None)
    if "description" in node:
        out["description"] = _prose(node.pop("description"))
    unknown = set(node) - _CONSTRAINTS
    if unknown:
        raise ValueError(f"no CRD equivalent for JSON Schema keywords {sorted(unknown)} in {schema}")
    out |= node
    if default is not None and _fits(default, out):
        out["default"] = default
    # Type and description first, so the generated YAML reads like a hand-written CRD.
    return dict(sorted(out.items(), key=lambda item: ("type", "description").index(item[0])
                       if item[0] in ("type", "description") else 2))


def _summary(cls: type[Resource]) -> str | None:
    doc = vars(cls).get("__doc__") or sys.modules[cls.__module__].__doc__
    return _prose(doc.split("\n\n", 1)[0]) if doc else None


# Names kubectl resolves to a built-in kind first (core/v1 Endpoints is `endpoints`/`ep`): a custom resource
# claiming them would only be reachable by its full name anyway, and kubectl warns about the clash. The
# Shipyard CLI keeps its own short names; on kubectl, `kubectl get shipyard` lists every Shipyard kind
# (the category) and `endpoints.shipyard.dev` names this one.
_BUILTIN_NAMES = {"ep", "endpoint", "endpoints", "po", "svc", "deploy", "job", "jobs", "app", "apps"}


def crd_for(cls: type[Resource]) -> dict[str, Any]:
    """The `apiextensions.k8s.io/v1` CustomResourceDefinition of one Shipyard kind."""
    raw = cls.model_json_schema(by_alias=True, mode="validation")
    defs, props = raw.get("$defs", {}), raw["properties"]
    root: dict[str, Any] = {"type": "object"}
    if summary := _summary(cls):
        root["description"] = summary
    root["properties"] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        # The API server owns ObjectMeta's schema; a CRD may not constrain it beyond name and generateName.
        "metadata": {"type": "object"},
        "spec": _convert(props["spec"], defs),
        "status": _convert(props["status"], defs),
    }
    root["required"] = ["spec"]
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{cls.PLURAL}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            # A Project is the namespace others live in, so it is cluster-scoped (as a Namespace is).
            "scope": "Cluster" if cls.CLUSTER_SCOPED else "Namespaced",
            "names": {
                "kind": cls.KIND,
                "listKind": f"{cls.KIND}List",
                "plural": cls.PLURAL,
                "singular": cls.KIND.lower(),
                "shortNames": [n for n in cls.SHORT_NAMES if n not in _BUILTIN_NAMES and n != cls.KIND.lower()],
                "categories": ["shipyard"],
            },
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": _COLUMNS.get(cls.KIND, [_PHASE, _AGE]),
                "schema": {"openAPIV3Schema": root},
            }],
        },
    }
    # A JSON round trip unshares nodes inlined more than once, which YAML would otherwise print as anchors.
    return json.loads(json.dumps(crd))


def all_crds() -> list[dict[str, Any]]:
    return sorted((crd_for(cls) for cls in KINDS.values() if cls.CUSTOM_RESOURCE),
                  key=lambda crd: crd["metadata"]["name"])


def main() -> None:
    print(yaml.safe_dump_all(all_crds(), sort_keys=False, explicit_start=True, width=120,
                                allow_unicode=True), end="")


if __name__ == "__main__":
    main()
