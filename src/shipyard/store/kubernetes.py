"""The Store protocol over custom resources: on a cluster, Shipyard's objects live in the Kubernetes API.

The API server already is what the protocol was modelled on (resourceVersion, watches, finalizers,
generation), so this is a translation, not a re-implementation. What differs, and why:
- Writes are a server-side apply of the user-owned parts (labels, annotations, spec) for `apply`, and
  conditional JSON merge patches (naming the resourceVersion read) for status and finalizers, so a stale
  writer gets Conflict exactly as with SQLite.
- Objects may arrive from `kubectl apply` (GitOps) without passing Shipyard's validation. The CRD schema
  catches most mistakes; what only the pydantic model can check (cross-field rules) is reported on the object
  itself (status condition `Valid=False`) and the object is treated as Invalid instead of being acted on.
- Watch versions are this process's own sequence over the events its watches saw (Kubernetes'
  resourceVersions are opaque strings, and `watch(since)` only serves this process's API clients).
- Applying several resources is not atomic: each is applied in turn after all were checked.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import deque
from datetime import datetime, timezone
from typing import Any, Callable, Literal

from pydantic import ValidationError

from shipyard.cluster.api import KubeApi, KubeConflict, KubeError, KubeNotFound, ResourceType
from shipyard.resources import KINDS, Resource, kind_class
from shipyard.resources.base import API_VERSION, format_loc, utcnow
from shipyard.resources.selector import Selector

from . import paging
from .kubernetes_apikeys import KubernetesApiKeys
from .protocol import ApplyResult, Conflict, Event, Gone, Invalid, ListPage, NotFound, StoreError, WatchEvent

log = logging.getLogger(__name__)

WATCH_HISTORY = 10_000
FIELD_MANAGER = "shipyard"
_META_FIELDS = ("name", "namespace", "labels", "annotations", "uid", "resourceVersion", "generation",
                "creationTimestamp", "deletionTimestamp", "finalizers", "ownerReferences")
_OWNER_FIELDS = ("apiVersion", "kind", "name", "uid", "controller", "blockOwnerDeletion")


# The kinds kept as custom resources; a Shipyard Secret is not one (see resources/secret.py).
CR_KINDS = sorted(kind for kind, cls in KINDS.items() if cls.CUSTOM_RESOURCE)
NATIVE_ONLY = ("on a cluster a Secret is a native Secret: create it with `kubectl create secret generic NAME "
               "--from-literal=KEY=VALUE -n PROJECT`; workloads reference it the same way (env valueFrom.secretKeyRef)")


def register_kinds(api: KubeApi) -> None:
    for cls in (KINDS[kind] for kind in CR_KINDS):
        api.register(ResourceType(API_VERSION, cls.KIND, cls.PLURAL, namespaced=not cls.CLUSTER_SCOPED))


def merge_diff(old: Any, new: Any) -> Any:
    """The JSON merge patch (RFC 7386) turning `old` into `new`: removed keys become null.

    Written by hand because no maintained library generates RFC 7386 patches (jsonpatch does RFC 6902)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    patch: dict[str, Any] = {key: None for key in old if key not in new}
    for key, value in new.items():
        if key not in old:
            patch[key] = value
        elif old[key] != value:
            patch[key] = merge_diff(old[key], value)
    return patch


def _to_resource(obj: dict[str, Any]) -> Resource:
    meta = obj.get("metadata") or {}
    clean_meta = {k: meta[k] for k in _META_FIELDS if k in meta}
    if "ownerReferences" in clean_meta:
        clean_meta["ownerReferences"] = [{k: r[k] for k in _OWNER_FIELDS if k in r}
                                         for r in clean_meta["ownerReferences"]]
    body = {"apiVersion": obj.get("apiVersion", API_VERSION), "kind": obj["kind"], "metadata": clean_meta,
            "spec": obj.get("spec") or {}}
    status = obj.get("status")
    if status:
        body["status"] = status
    return kind_class(obj["kind"]).model_validate(body)


class KubernetesStore:
    def __init__(self, api: KubeApi, namespaces: list[str] | None = None, system_namespace: str = "shipyard-system"):
        self._api = api
        register_kinds(api)
        self._namespaces = namespaces or [None]  # type: ignore[list-item]  # None: every namespace
        self.api_keys = KubernetesApiKeys(api, system_namespace)
        self._lock = threading.Condition()
        self._version = 0
        self._compacted = 0
        self._history: deque[WatchEvent] = deque(maxlen=WATCH_HISTORY)
        self._subscribers: list[Callable[[WatchEvent], None]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._last_event: dict[str, tuple[str, str, str, int]] = {}  # uid → (event name, reason, message, count)

    # --- reads ---------------------------------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> Resource | None:
        if kind not in CR_KINDS:
            return None
        obj = self._call(self._api.get, kind, namespace, name)
        return None if obj is None else self._load(obj)

    def list(self, kind: str | None = None, namespace: str | None = None,
             selector: Selector | None = None) -> list[Resource]:
        out: list[Resource] = []
        # With watched namespaces the operator may have no right to list cluster-wide: ask each namespace.
        kinds = [k for k in ([kind] if kind else CR_KINDS) if k in CR_KINDS]
        for k, ns in [(k, ns) for k in kinds for ns in self._scopes(k, namespace)]:
            for obj in self._call(self._api.list, k, ns, None, None, selector):
                try:
                    out.append(self._load(obj))
                except Invalid:
                    continue  # reported on the object; a list shows only what Shipyard can act on
        return sorted(out, key=lambda r: r.key)

    def list_page(self, kind: str, namespace: str | None = None, name: str | None = None,
                  limit: int | None = None, continue_token: str | None = None,
                  selector: Selector | None = None) -> ListPage:
        """A page of the cluster's own list: `limit` and the cluster's continue token pass through (wrapped
        with this store's version, which is what watches here resume from)."""
        scopes = self._scopes(kind, namespace)
        if name is not None or len(scopes) > 1 or kind not in CR_KINDS:
            # One object, or several namespaces asked one by one: no single cluster list to page.
            return paging.page_resources(self.list(kind, namespace, selector), kind, namespace, name, limit,
                                         continue_token, self._version)
        version, upstream = self._version, None
        if continue_token:
            token = paging.decode(kind, namespace, name, continue_token)
            version, upstream = token.resource_version, token.upstream
        objs, following = self._call(self._api.list_page, kind, scopes[0], paging.check_limit(limit), upstream,
                                     selector)
        items = []
        for obj in objs:
            try:
                items.append(json.dumps(self._load(obj).to_wire()))
            except Invalid:
                continue  # reported on the object; a list shows only what Shipyard can act on
        nxt = paging.encode(kind, namespace, name, paging.Continuation(version, upstream=following)) \
            if following else None
        return ListPage(items, version, nxt)

    def current_version(self) -> int:
        return self._version

    # --- writes --------------------------------------------------------------------------------------

    def apply(self, resources: list[Resource]) -> list[ApplyResult]:
        # Every refusal is found before the first write: nothing is half-stored because of a Conflict or an
        # immutable spec (the API server has no multi-object transaction; a failure of the server itself
        # between writes can still leave the earlier ones applied).
        plan: list[tuple[Resource, Resource | None, bool]] = []
        for incoming in resources:
            if incoming.kind not in CR_KINDS:
                raise Invalid(f"{incoming.ref}: {NATIVE_ONLY}")
            existing = self.get(*incoming.key)
            changed = True
            if existing is not None:
                if existing.metadata.deletion_timestamp is not None:
                    raise Conflict(f"{existing.ref} is being deleted; apply it again once it is gone")
                spec_changed = existing.spec != incoming.spec  # type: ignore[attr-defined]
                if spec_changed and type(existing).SPEC_IMMUTABLE:
                    raise Invalid(f"{existing.ref}: spec is immutable for {existing.kind}; "
                                  f"delete it and apply again to change it")
                changed = spec_changed or existing.metadata.labels != incoming.metadata.labels \
                    or existing.metadata.annotations != incoming.metadata.annotations
            plan.append((incoming, existing, changed))
        results = []
        for incoming, existing, changed in plan:
            if existing is not None and not changed:
                results.append(ApplyResult(existing, "unchanged"))
                continue
            wire = incoming.to_wire()
            body = {"apiVersion": API_VERSION, "kind": incoming.kind,
                    # ownerReferences: a Sweep's trials are TrainingJobs it owns (and garbage-collects).
                    "metadata": {k: wire["metadata"][k] for k in ("name", "namespace", "labels", "annotations",
                                                                  "ownerReferences") if wire["metadata"].get(k)},
                    "spec": wire.get("spec", {})}
            stored = self._load(self._call(self._api.apply, body))
            results.append(ApplyResult(stored, "created" if existing is None else "configured"))
        return results

    def update_status(self, resource: Resource) -> Resource:
        current = self._raw(resource)
        patch = {"metadata": {"resourceVersion": resource.metadata.resource_version},
                 "status": merge_diff(current.get("status") or {},
                                      resource.status.to_wire())}  # type: ignore[attr-defined]
        return self._load(self._call(self._api.merge_patch, resource.kind, resource.metadata.namespace,
                                     resource.metadata.name, patch, True))

    def update_metadata(self, resource: Resource) -> Resource:
        patch = {"metadata": {"resourceVersion": resource.metadata.resource_version,
                              "finalizers": list(resource.metadata.finalizers)}}
        obj = self._call(self._api.merge_patch, resource.kind, resource.metadata.namespace, resource.metadata.name,
                         patch)
        return self._load(obj)

    def delete(self, kind: str, namespace: str, name: str) -> Resource | None:
        current = self.get(kind, namespace, name)
        if current is None:
            return None
        self._call(self._api.delete, kind, namespace, name)
        if current.metadata.finalizers and current.metadata.deletion_timestamp is None:
            current.metadata.deletion_timestamp = utcnow()
        return current

    def _scopes(self, kind: str | None, namespace: str | None) -> list[str | None]:
        """Where to ask: a cluster-scoped kind once, cluster-wide (a watched-namespaces list does not apply)."""
        if kind is not None and kind in CR_KINDS and KINDS[kind].CLUSTER_SCOPED:
            return [None]
        return [namespace] if namespace else list(self._namespaces)

    # --- watch ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Watch every kind in every watched namespace; each change becomes a WatchEvent for subscribers."""
        for kind in CR_KINDS:
            for ns in self._scopes(kind, None):
                thread = threading.Thread(target=self._watch, args=(kind, ns), name=f"watch-{kind}", daemon=True)
                thread.start()
                self._threads.append(thread)
        self.api_keys.start()

    def _watch(self, kind: str, namespace: str | None) -> None:
        for type_, obj in self._api.watch(kind, namespace, None, self._stop):
            if type_ not in ("ADDED", "MODIFIED", "DELETED"):
                continue
            try:
                # Shipyard's wire form (no managedFields and the like): what API watchers parse.
                wire, valid = _to_resource(obj).to_wire(), True
            except ValidationError:
                # Still worth a reconcile (which reports what is wrong on the object), but not an object to
                # show API watchers, as list() does not show it either.
                wire, valid = {"apiVersion": obj.get("apiVersion"), "kind": obj["kind"],
                               "metadata": {k: v for k, v in obj["metadata"].items()
                                            if k in ("name", "namespace", "ownerReferences")}}, False
            with self._lock:
                self._version += 1
                event = WatchEvent(type_, self._version, wire)  # type: ignore[arg-type]
                if valid:
                    self._history.append(event)
                self._lock.notify_all()
            for callback in self._subscribers:
                try:
                    callback(event)
                except Exception:  # noqa: BLE001 - one subscriber's bug must not end the watch
                    log.exception("watch subscriber failed")

    def watch(self, since: int, timeout: float) -> list[WatchEvent]:
        with self._lock:
            if since < self._compacted or (self._history and since < self._history[0].resource_version - 1):
                raise Gone(f"resourceVersion {since} is too old; list again and watch from the version returned")
            self._lock.wait_for(lambda: self._version > since or self._stop.is_set(), timeout=timeout)
            return [e for e in self._history if e.resource_version > since]

    def subscribe(self, callback: Callable[[WatchEvent], None]) -> None:
        self._subscribers.append(callback)

    # --- events --------------------------------------------------------------------------------------

    def record_event(self, resource: Resource, type_: Literal["Normal", "Warning"], reason: str,
                     message: str) -> None:
        """A core/v1 Event on the object, as `kubectl describe` shows; a repeat of the latest bumps its count."""
        uid = resource.metadata.uid or ""
        now = utcnow().isoformat().replace("+00:00", "Z")
        # Kubernetes keeps a cluster-scoped object's events in namespace default, as kubectl describe looks.
        ns = resource.metadata.namespace or "default"
        last = self._last_event.get(uid)
        try:
            if last and last[1:3] == (reason, message):
                self._api.merge_patch("Event", ns, last[0], {"count": last[3] + 1, "lastTimestamp": now})
                self._last_event[uid] = (last[0], reason, message, last[3] + 1)
                return
            name = f"{resource.metadata.name}.{uuid.uuid4().hex[:16]}"
            self._api.create({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": ns},
                "involvedObject": {"apiVersion": API_VERSION, "kind": resource.kind, "name": resource.metadata.name,
                                   "namespace": resource.metadata.namespace, "uid": uid},
                "type": type_, "reason": reason, "message": message, "count": 1,
                "firstTimestamp": now, "lastTimestamp": now,
                "source": {"component": "shipyard-operator"}, "reportingComponent": "shipyard.dev/operator",
            })
            self._last_event[uid] = (name, reason, message, 1)
        except KubeError as exc:
            # Events are best effort (as in client-go's recorder): losing one must not fail a reconcile.
            log.warning("could not record event %s on %s: %s", reason, resource.ref, exc)

    def list_events(self, kind: str, namespace: str, name: str) -> list[Event]:
        current = self.get(kind, namespace, name)
        if current is None:
            return []
        raw = self._call(self._api.list, "Event", namespace or "default", None, {"involvedObject.name": name})
        out = []
        for e in raw:
            if (e.get("involvedObject") or {}).get("uid") != current.metadata.uid:
                continue
            first = _time(e.get("firstTimestamp") or e.get("eventTime"))
            out.append(Event(kind=kind, namespace=namespace, name=name, type=e.get("type", "Normal"),
                             reason=e.get("reason", ""), message=e.get("message", ""), count=int(e.get("count", 1)),
                             first_timestamp=first, last_timestamp=_time(e.get("lastTimestamp")) or first))
        return sorted(out, key=lambda e: e.first_timestamp)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        self.api_keys.stop()

    # --- internals -----------------------------------------------------------------------------------

    def _raw(self, resource: Resource) -> dict[str, Any]:
        obj = self._call(self._api.get, resource.kind, resource.metadata.namespace, resource.metadata.name)
        if obj is None:
            raise NotFound(f"{resource.ref} not found")
        return obj

    def _load(self, obj: dict[str, Any]) -> Resource:
        try:
            return _to_resource(obj)
        except ValidationError as exc:
            first = exc.errors()[0]
            message = f"{format_loc(tuple(first['loc']))}: {first['msg']}"
            self._report_invalid(obj, message)
            raise Invalid(f"{obj['kind'].lower()}/{obj['metadata']['name']}: {message}") from None

    def _report_invalid(self, obj: dict[str, Any], message: str) -> None:
        status = obj.get("status") or {}
        if any(c.get("type") == "Valid" and c.get("message") == message for c in status.get("conditions") or []):
            return
        now = utcnow().isoformat().replace("+00:00", "Z")
        condition = {"type": "Valid", "status": "False", "reason": "InvalidSpec", "message": message,
                     "lastTransitionTime": now}
        others = [c for c in status.get("conditions") or [] if c.get("type") != "Valid"]
        try:
            self._api.merge_patch(obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"],
                                  {"status": {"phase": "Failed", "conditions": others + [condition]}}, status=True)
        except KubeError as exc:
            log.warning("could not report an invalid %s: %s", obj["kind"], exc)

    @staticmethod
    def _call(fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except KubeConflict as exc:
            raise Conflict(str(exc)) from None
        except KubeNotFound as exc:
            raise NotFound(str(exc)) from None
        except KubeError as exc:
            if exc.status == 422:
                raise Invalid(str(exc)) from None
            error = StoreError(str(exc))
            error.status = 503 if exc.status in (0, 429) or exc.status >= 500 else exc.status
            raise error from None


def _time(value: str | None) -> datetime:
    if not value:
        return datetime.now(timezone.utc)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
