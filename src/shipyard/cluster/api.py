"""The one door to the Kubernetes API: the only module of Shipyard that imports a Kubernetes client.

Why lightkube (0.x): it is synchronous and asynchronous over httpx (the HTTP stack Shipyard already uses),
does server-side apply with a field manager natively, treats custom resources as plain dicts (generic
resources), watches with automatic reconnection, and reads kubeconfig files, in-cluster service accounts and
exec credential plugins. The official `kubernetes` client is generated, heavy, and does server-side apply only
through its discovery-driven dynamic client; kopf is a framework that would replace our own controllers;
kr8s is async-first. lightkube 1.x moved to a fork of httpx (httpx2), so it is pinned below 1.

Everything here speaks Kubernetes wire form (dicts) in and out, so the store and runtime adapters above it
never see a lightkube type, and an error is one of three exceptions with the HTTP status in it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
from lightkube import ApiError, Client, operators
from lightkube.config.client_adapter import ConnectionParams, user_auth
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.core.exceptions import ConfigError
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.types import CascadeType, PatchType

from shipyard.resources.selector import Selector

log = logging.getLogger(__name__)


class KubeError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class KubeNotFound(KubeError):
    pass


class KubeConflict(KubeError):
    pass


@dataclass(frozen=True)
class ResourceType:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]


# The native kinds Shipyard compiles to, reads or writes. A custom resource is registered with `register`.
NATIVE_TYPES = {t.kind: t for t in [
    ResourceType("v1", "Pod", "pods"),
    ResourceType("v1", "Service", "services"),
    ResourceType("v1", "PersistentVolumeClaim", "persistentvolumeclaims"),
    ResourceType("v1", "Secret", "secrets"),
    ResourceType("v1", "ConfigMap", "configmaps"),
    ResourceType("v1", "Event", "events"),
    ResourceType("v1", "Namespace", "namespaces", namespaced=False),
    ResourceType("v1", "LimitRange", "limitranges"),
    ResourceType("v1", "ResourceQuota", "resourcequotas"),
    ResourceType("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings"),
    ResourceType("v1", "Node", "nodes", namespaced=False),
    ResourceType("v1", "PersistentVolume", "persistentvolumes", namespaced=False),
    ResourceType("batch/v1", "Job", "jobs"),
    ResourceType("apps/v1", "Deployment", "deployments"),
    ResourceType("apps/v1", "StatefulSet", "statefulsets"),
    ResourceType("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    ResourceType("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ResourceType("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies"),
    ResourceType("networking.k8s.io/v1", "Ingress", "ingresses"),
    ResourceType("coordination.k8s.io/v1", "Lease", "leases"),
    ResourceType("apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions",
                 namespaced=False),
]}


# lightkube registers each generic resource class process-wide and refuses a second class for a core-group
# kind, so classes are made once per process and shared by every KubeApi.
_CLASSES: dict[ResourceType, Any] = {}
_CLASSES_LOCK = threading.Lock()


def _resource_class(t: ResourceType) -> Any:
    with _CLASSES_LOCK:
        if t not in _CLASSES:
            make = create_namespaced_resource if t.namespaced else create_global_resource
            _CLASSES[t] = make(t.group, t.version, t.kind, t.plural)
        return _CLASSES[t]


def load_config(kubeconfig: str | Path | None = None, context: str | None = None) -> SingleConfig:
    """A kubeconfig context (the current one by default), or the pod's service account inside a cluster.

    Raises ValueError with a one-line reason when there is no usable configuration."""
    try:
        if kubeconfig is not None:
            config = KubeConfig.from_file(kubeconfig)
        else:
            config = KubeConfig.from_env()  # $KUBECONFIG, ~/.kube/config, else the in-cluster service account
        single = config.get(context_name=context)
    except ConfigError as exc:
        raise ValueError(f"no Kubernetes configuration: {exc}") from None
    except OSError as exc:
        raise ValueError(f"cannot read the kubeconfig: {exc}") from None
    if single is None:
        raise ValueError(f"the kubeconfig has no context {context!r}" if context else "the kubeconfig has no context")
    return single


# lightkube runs exec plugins of v1alpha1 and v1beta1 only; a v1 plugin prints the same `status.token`.
_EXEC_V1BETA1 = "client.authentication.k8s.io/v1beta1"


def bearer_token(config: SingleConfig) -> str | None:
    """The bearer token the kubeconfig's user presents to the API server, fetched now: a static `token`, the
    contents of a `tokenFile`, what an exec credential plugin prints (the plugin runs here, as kubectl runs it;
    its tokens are short-lived, so ask again for each client rather than keeping one), or an `auth-provider`'s
    cached `id-token` (oidc) or `access-token`. None for a user who proves who they are otherwise (a client
    certificate, as kind's and kubeadm's admin kubeconfigs do, or basic auth): they have no token to forward.

    Raises ValueError with a one-line reason when the plugin cannot run or gives no token."""
    user = config.user
    if user is None:
        return None
    if user.token is None and user.token_file is None and user.exec is None:
        if user.auth_provider:  # lightkube refuses auth providers; their token is cached in the kubeconfig
            settings = user.auth_provider.get("config") or {}
            token = str(settings.get("id-token") or settings.get("access-token") or "").strip()
            return token or None
        return None
    if user.exec is not None and user.exec.apiVersion == "client.authentication.k8s.io/v1":
        user = dataclasses.replace(user, exec=dataclasses.replace(user.exec, apiVersion=_EXEC_V1BETA1))
    try:
        auth = user_auth(user)
        # The auth flow a request would go through: it reads the token file or runs the exec plugin.
        request = next(auth.sync_auth_flow(httpx.Request("GET", config.cluster.server))) if auth else None
    except ConfigError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"cannot get the kubeconfig user's token: {first}") from None
    except OSError as exc:
        raise ValueError(f"cannot run the kubeconfig user's exec plugin: {exc}") from None
    except (KeyError, TypeError, ValueError):
        raise ValueError("the kubeconfig user's exec plugin printed no ExecCredential with status.token") from None
    if request is None:
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return (token.strip() or None) if scheme == "Bearer" else None


def service_proxy_client(config: SingleConfig, namespace: str, service: str, port: int,
                         timeout: float = 30.0, token: str | None = None) -> httpx.Client:
    """An httpx client whose base URL is a Service reached through the API server's proxy, authenticated as the
    kubeconfig's user (`token`, the one bearer_token fetched, else whatever the kubeconfig says: token, client
    certificate or exec plugin): how `shipyard --context` reaches the in-cluster API without a port-forward. The
    API server removes the user's Authorization header after authenticating it, so the token Shipyard's API
    authenticates travels again in another header (see shipyard.client)."""
    params = ConnectionParams(timeout=httpx.Timeout(timeout))
    if token is not None and config.user is not None:
        # The same token as the one in X-Shipyard-Token, and an auth-provider user (lightkube refuses them) works.
        config = config._replace(user=dataclasses.replace(
            config.user, token=token, token_file=None, exec=None, auth_provider=None))
    kwargs = params.httpx_params(config)
    base = str(kwargs.pop("base_url")).rstrip("/")
    kwargs["base_url"] = f"{base}/api/v1/namespaces/{namespace}/services/http:{service}:{port}/proxy"
    return httpx.Client(**kwargs)


def _error(exc: Exception) -> KubeError:
    status = 0
    message = str(exc)
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        if isinstance(exc, ApiError) and exc.status.message:
            message = exc.status.message
    if status == 404:
        return KubeNotFound(status, message)
    if status == 409:
        return KubeConflict(status, message)
    return KubeError(status, message)


class KubeApi:
    """Dict-in, dict-out calls to one cluster, as one field manager."""

    def __init__(self, config: SingleConfig, field_manager: str = "shipyard", timeout: float = 30.0):
        self._config = config
        self.field_manager = field_manager
        self._timeout = timeout
        self._client = self._new_client()
        self._types: dict[str, ResourceType] = dict(NATIVE_TYPES)
        self._lock = threading.Lock()
        self._watch_clients: list[Client] = []

    def _new_client(self, timeout: float | None = None) -> Client:
        return Client(self._config, field_manager=self.field_manager, timeout=httpx.Timeout(timeout or self._timeout),
                      lazy=False)

    def register(self, rtype: ResourceType) -> None:
        self._types[rtype.kind] = rtype

    def resource_type(self, kind: str) -> ResourceType:
        try:
            return self._types[kind]
        except KeyError:
            raise ValueError(f"no Kubernetes resource type is known for kind {kind!r}") from None

    def _cls(self, kind: str) -> Any:
        return _resource_class(self.resource_type(kind))

    @staticmethod
    def _ns(t: ResourceType, namespace: str | None) -> dict[str, Any]:
        return {"namespace": namespace} if t.namespaced and namespace is not None else {}

    # --- reads ---------------------------------------------------------------------------------------

    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        t = self.resource_type(kind)
        try:
            return _plain(self._client.get(self._cls(kind), name, **self._ns(t, namespace)))
        except httpx.HTTPError as exc:
            error = _error(exc)
            if isinstance(error, KubeNotFound):
                return None
            raise error from None

    def list(self, kind: str, namespace: str | None = None, labels: dict[str, str] | None = None,
             fields: dict[str, str] | None = None, selector: Selector | None = None) -> list[dict[str, Any]]:
        """Objects of a kind; `labels` (equality) and `selector` (any kubectl selector) are both sent to the
        API server as its labelSelector."""
        t = self.resource_type(kind)
        try:
            items = self._client.list(self._cls(kind), labels=_label_selector(labels, selector),
                                      fields=fields or None,
                                      **({"namespace": namespace or "*"} if t.namespaced else {}))
            plain = [_plain(item) for item in items]
            # A selector with two terms on one key cannot ride in lightkube's dict: check every term here too.
            return [o for o in plain if selector.matches(o["metadata"].get("labels"))] if selector else plain
        except httpx.HTTPError as exc:
            raise _error(exc) from None

    def list_page(self, kind: str, namespace: str | None, limit: int | None,
                  continue_token: str | None, selector: Selector | None = None,
                  ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a list and the cluster's token for the next (None on the last): the API server's own
        `limit`/`continue`, which lightkube's `list` follows by itself, so one request is made by hand."""
        t = self.resource_type(kind)
        generic = self._client._client  # noqa: SLF001 - lightkube has no public one-page list
        try:
            br = generic.prepare_request("list", res=self._cls(kind),
                                         **({"namespace": namespace or "*"} if t.namespaced else {}),
                                         params={"limit": limit, "continue": continue_token,
                                                 "labelSelector": selector.text() if selector else None})
            more, _, items = generic.handle_response("list", generic.send(generic.build_adapter_request(br)), br)
            return [_plain(item) for item in items], br.params.get("continue") if more else None
        except httpx.HTTPError as exc:
            raise _error(exc) from None

    # --- writes --------------------------------------------------------------------------------------

    def apply(self, obj: dict[str, Any], force: bool = True, field_manager: str | None = None) -> dict[str, Any]:
        """Server-side apply: this field manager (or `field_manager`) owns exactly the fields in `obj`; `force`
        takes over fields another manager changed (drift correction), as a controller must."""
        try:
            return _plain(self._client.apply(self._cls(obj["kind"]).from_dict(obj),
                                             field_manager=field_manager or self.field_manager, force=force))
        except httpx.HTTPError as exc:
            raise _error(exc) from None

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        try:
            return _plain(self._client.create(self._cls(obj["kind"]).from_dict(obj)))
        except httpx.HTTPError as exc:
            raise _error(exc) from None

    def merge_patch(self, kind: str, namespace: str | None, name: str, patch: dict[str, Any],
                    status: bool = False, strategic: bool = False) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386), of the status subresource with `status`. A `metadata.resourceVersion`
        in the patch makes it conditional: KubeConflict if the object changed since. `strategic`: a strategic
        merge patch instead (built-in kinds only), whose lists of conditions and container statuses merge by
        their keys, so a writer of some conditions (the kubelet) keeps those others wrote (DisruptionTarget)."""
        t = self.resource_type(kind)
        cls = self._cls(kind)
        try:
            return _plain(self._client.patch(cls.Status if status else cls, name, patch,
                                             patch_type=PatchType.STRATEGIC if strategic else PatchType.MERGE,
                                             **self._ns(t, namespace)))
        except httpx.HTTPError as exc:
            raise _error(exc) from None

    def delete(self, kind: str, namespace: str | None, name: str, foreground: bool = False,
               grace_period_seconds: int | None = None, uid: str | None = None) -> bool:
        """Begin deletion; False if it was already gone. `foreground` keeps the object visible until the
        objects it owns are gone (a Job until its pods have stopped). `grace_period_seconds=0` removes a pod at
        once (how the kubelet finishes a graceful deletion once its containers stopped). `uid` is a
        precondition: KubeConflict if the object of that name is another one now (deleted and recreated)."""
        t = self.resource_type(kind)
        cascade = CascadeType.FOREGROUND if foreground else None
        try:
            if uid is None:
                self._client.delete(self._cls(kind), name, **self._ns(t, namespace), grace_period=grace_period_seconds,
                                    **({"cascade": cascade} if cascade else {}))
            else:
                self._delete_with_options(kind, namespace, name, cascade, grace_period_seconds, uid)
            return True
        except httpx.HTTPError as exc:
            error = _error(exc)
            if isinstance(error, KubeNotFound):
                return False
            raise error from None

    def _delete_with_options(self, kind: str, namespace: str | None, name: str, cascade: CascadeType | None,
                             grace_period_seconds: int | None, uid: str) -> None:
        # lightkube's delete() sends no body, and preconditions live only in the DeleteOptions body: build its
        # request and add one (lightkube's generic client sends a request's data as its JSON body). With a body
        # the API server reads every option from it and ignores the query, so they all go in the body.
        t = self.resource_type(kind)
        generic = self._client._client
        request = generic.prepare_request("delete", self._cls(kind), name=name,
                                          namespace=namespace if t.namespaced else None)
        options: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        if cascade is not None:
            options["propagationPolicy"] = cascade.value
        request = dataclasses.replace(request, data=options)
        generic.handle_response("delete", generic.send(generic.build_adapter_request(request)), request)

    # --- streams -------------------------------------------------------------------------------------

    def watch(self, kind: str, namespace: str | None, labels: dict[str, str] | None,
              stop: threading.Event, fields: dict[str, str] | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """(type, object) events until `stop` is set; reconnects after errors. Every (re)connection starts
        with the current objects as ADDED events, so a consumer that treats events as "look again" (a
        level-triggered controller) misses nothing across reconnects. `fields`: a field selector
        (`{"spec.nodeName": "node-a"}`: the pods bound to a node)."""
        t = self.resource_type(kind)
        client = self._new_client(timeout=None)
        with self._lock:
            self._watch_clients.append(client)
        scope = {"namespace": namespace or "*"} if t.namespaced else {}
        try:
            while not stop.is_set():
                try:
                    for type_, obj in client.watch(self._cls(kind), labels=labels or None, fields=fields or None,
                                                   server_timeout=60, **scope):
                        if stop.is_set():
                            return
                        yield type_, _plain(obj)
                except (httpx.HTTPError, ValueError, RuntimeError) as exc:
                    if stop.is_set():
                        return
                    log.warning("watch of %s failed (%s); reconnecting", t.plural, exc)
                    stop.wait(1.0)
        finally:
            with self._lock:
                if client in self._watch_clients:
                    self._watch_clients.remove(client)
            _close(client)

    def log(self, namespace: str, pod: str, follow: bool = False, tail_lines: int | None = None,
            previous: bool = False, since_seconds: int | None = None) -> Iterator[str]:
        """Lines of a pod's log: the pod log API's `follow`, `tailLines`, `previous` and `sinceSeconds`."""
        if not previous:
            try:
                yield from self._client.log(pod, namespace=namespace, follow=follow, tail_lines=tail_lines,
                                            since=since_seconds)
            except httpx.HTTPError as exc:
                error = _error(exc)
                if isinstance(error, KubeNotFound):
                    return
                raise error from None
            return
        # lightkube's log() has no `previous`: the same request, made by hand with it.
        from lightkube.core.internal_resources import core_v1

        generic = self._client._client  # noqa: SLF001
        params = {"previous": True, "follow": follow, "tailLines": tail_lines, "sinceSeconds": since_seconds}
        try:
            br = generic.prepare_request("get", core_v1.PodLog, name=pod, namespace=namespace, params=params)
            resp = generic.send(generic.build_adapter_request(br), stream=follow)
            if resp.is_error and follow:
                resp.read()
            generic.raise_for_status(resp)
            yield from (line + "\n" for line in resp.iter_lines())
        except httpx.HTTPError as exc:
            error = _error(exc)
            if isinstance(error, KubeNotFound):
                return
            raise error from None

    def close(self) -> None:
        """Close every connection, which also ends the watches blocked reading one."""
        with self._lock:
            clients, self._watch_clients = self._watch_clients, []
        for client in clients:
            _close(client)
        _close(self._client)


def _close(client: Client) -> None:
    try:
        client._client.close()  # lightkube's sync Client has no close() of its own; its generic client does
    except Exception:  # noqa: BLE001 - closing is best effort
        pass


def _label_selector(labels: dict[str, str] | None, selector: Selector | None) -> dict[str, Any] | None:
    """Equality labels and a parsed selector as lightkube's label dict (operators for the other terms)."""
    out: dict[str, Any] = dict(labels or {})
    for req in selector.requirements if selector else ():
        if req.key in out:
            continue  # a second term on the key: list() checks it on what comes back
        out[req.key] = {"=": lambda r: r.values[0], "!=": lambda r: operators.not_equal(r.values[0]),
                        "in": lambda r: operators.in_(list(r.values)), "notin": lambda r: operators.not_in(list(r.values)),
                        "exists": lambda r: operators.exists(), "!exists": lambda r: operators.not_exists()}[req.op](req)
    return out or None


def _plain(obj: Any) -> dict[str, Any]:
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    return _drop_nulls(dict(obj))


def _drop_nulls(value: Any) -> Any:
    # A merge patch removes a field by setting it to null; the API server never returns nulls, so neither do we.
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


__all__ = ["KubeApi", "KubeConflict", "KubeError", "KubeNotFound", "NATIVE_TYPES", "ResourceType", "load_config",
           "service_proxy_client"]
