"""The Shipyard SDK: a typed HTTP client for the control plane, and the CLI's only road to it.

Every failure surfaces as a ShipyardError whose str() is one line a person can act on: NotRunning when no
control plane answers, ApiError with the server's `detail` when it refuses. Kinds are accepted the way a user
types them ("tj", "trainingjobs", "TrainingJob") and results come back as the kind's pydantic model.

Watches follow the Kubernetes contract: list, then watch from the list's resourceVersion; on 410 Gone relist
and report the differences, so a consumer never misses the latest state of an object.
"""

from __future__ import annotations

import base64
import json
import os
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from typing import TYPE_CHECKING

import shipyard.config as config
from shipyard.client_access import AccessMixin
from shipyard.resources.names import API_VERSION, KindName, resolve_name

if TYPE_CHECKING:
    import httpx

    from shipyard.resources import Resource
else:
    class _Httpx:
        """httpx, imported on first use: the `except httpx.…` clauses below are evaluated only when something
        fails, and plain `http://` requests go through `_stdhttp`, so a CLI call that succeeds never imports it."""

        def __getattr__(self, name: str) -> Any:
            import httpx as module

            globals()["httpx"] = module
            return getattr(module, name)

    httpx = _Httpx()

PREFIX = f"/apis/{API_VERSION}"
WATCH_SECONDS = 1800  # one watch connection's lifetime; the client reconnects transparently
LIST_PAGE = 500  # objects per list request: bounds one answer's size and time, whatever a project holds


class ShipyardError(Exception):
    """Base of every client error; str() is a single line."""

    def __str__(self) -> str:
        return " ".join(super().__str__().split())


class NotRunning(ShipyardError):
    pass


class ApiError(ShipyardError):
    def __init__(self, status: int, detail: str, errors: list[dict[str, Any]] | None = None):
        self.status, self.detail, self.errors = status, detail, errors or []
        super().__init__(detail)

    def __str__(self) -> str:
        text = " ".join(self.detail.split())
        if self.status == 401:
            return f"{text} (HTTP 401; the token comes from SHIPYARD_TOKEN or SHIPYARD_HOME/admin-token)"
        return f"{text} (HTTP {self.status})"


class WaitTimeout(ShipyardError):
    pass


def _json_default(value: Any) -> Any:
    # YAML turns unquoted dates into date objects; the server wants the text the user wrote.
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} values cannot be sent to the API")


def _typed(data: dict[str, Any]) -> Resource:
    # Imported here: the pydantic kinds cost more start-up CPU than a whole `shipyard get`, which prints wires.
    from shipyard.resources import kind_class

    return kind_class(data["kind"]).model_validate(data)


def _identity(kind: str, namespace: str, name: str, resource_version: str | None = None) -> Resource:
    """An object of which only the identity is known (one deleted while nobody watched)."""
    from shipyard.resources import ObjectMeta, kind_class

    return kind_class(kind).model_construct(
        metadata=ObjectMeta(namespace=namespace, name=name, resource_version=resource_version))


def _kind(word: str) -> KindName:
    try:
        return resolve_name(word)
    except KeyError as exc:
        raise ShipyardError(exc.args[0]) from None


# Where the Helm chart installs the API (charts/shipyard): Service shipyard-api:7433, token Secret.
CLUSTER_NAMESPACE = "shipyard-system"
API_SERVICE = "shipyard-api"
API_PORT = 7433
ADMIN_TOKEN_SECRET = "shipyard-admin-token"


class Client(AccessMixin):
    cluster = False  # reached through the Kubernetes API server (`--context`) rather than directly

    def __init__(self, url: str | None = None, token: str | None = None, home: Path | None = None,
                 timeout: float = 30.0):
        p = config.paths(home)
        self.url = (url or os.environ.get("SHIPYARD_API_URL") or self._daemon_url(p.daemon_info) or "").rstrip("/")
        if not self.url:
            raise NotRunning("no Shipyard control plane is running (start one with `shipyard up`)")
        token = token or os.environ.get("SHIPYARD_TOKEN") or self._login_token(p.credentials, self.url) \
            or self._read_token(p.admin_token)
        self.token = token  # for the few callers that speak to the API without httpx (port-forward's WebSocket)
        self.timeout = timeout
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if self.url.startswith("http://"):
            from shipyard._stdhttp import StdClient

            self._http: Any = StdClient(self.url, headers, timeout)
        else:
            self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, trust_env=False)

    @classmethod
    def for_cluster(cls, context: str | None, kubeconfig: str | None = None, timeout: float = 30.0,
                    namespace: str = CLUSTER_NAMESPACE) -> "Client":
        """The API of Shipyard installed on a cluster (the Helm chart), through the Kubernetes API server's
        service proxy, as the kubeconfig context's user: no port-forward, no exposed API.

        The user's own bearer token (a static token, a tokenFile, an exec plugin's, fetched afresh for each
        client) is sent again in X-Shipyard-Token, since the API server strips the Authorization header it
        authenticates: Shipyard's API reviews it (TokenReview) and asks Kubernetes' RBAC about every request
        (SubjectAccessReview), so nobody reads the admin token. A user with only a client certificate (kind's and
        kubeadm's admin kubeconfigs) has no token to forward: they get the admin token's Secret if Kubernetes
        lets them read it (they are an admin of the cluster anyway), else a one-line error."""
        try:
            from shipyard.cluster.api import KubeApi, KubeError, bearer_token, load_config, service_proxy_client
        except ImportError:
            raise ShipyardError("targeting a cluster needs the Kubernetes client: pip install 'shipyard[kubernetes]'") \
                from None
        try:
            config = load_config(kubeconfig, context)
            token = bearer_token(config)
        except ValueError as exc:
            raise ShipyardError(str(exc)) from None
        where = f"context {context!r}" if context else "the current context"
        own = token is not None
        if token is None:
            api = KubeApi(config, field_manager="shipyard-cli", timeout=timeout)
            try:
                secret = api.get("Secret", namespace, ADMIN_TOKEN_SECRET)
            except KubeError as exc:
                if exc.status in (401, 403):
                    raise ShipyardError(
                        f"the user of {where} has no bearer token to send to Shipyard (a client certificate only) "
                        f"and may not read the {ADMIN_TOKEN_SECRET} Secret: use a kubeconfig user with a token "
                        "(a ServiceAccount token, or OIDC through an exec plugin)") from None
                raise NotRunning(f"cannot reach the cluster of {where}: {exc}") from None
            finally:
                api.close()
            if secret is None:
                raise NotRunning(f"Shipyard is not installed in {namespace} on {where} (no {ADMIN_TOKEN_SECRET} "
                                 "Secret): helm install shipyard charts/shipyard -n shipyard-system")
            token = base64.b64decode((secret.get("data") or {}).get("token", "")).decode().strip()
        client = cls.__new__(cls)
        client._http = service_proxy_client(config, namespace, API_SERVICE, API_PORT, timeout,
                                            token=token if own else None)
        client._http.headers["X-Shipyard-Token"] = token
        client.url = str(client._http.base_url).rstrip("/")
        client.token = token
        client.timeout = timeout
        client.cluster = True
        return client

    @staticmethod
    def _daemon_url(path: Path) -> str | None:
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        url = info.get("url") if isinstance(info, dict) else None
        return url if isinstance(url, str) and url else None

    @staticmethod
    def _login_token(path: Path, url: str) -> str | None:
        """The token `shipyard login` stored for this control plane, if any (before the admin token: who
        logged in acts as themselves, even on the machine that holds the admin token)."""
        from shipyard import credentials

        return credentials.token_for(path, url)

    @staticmethod
    def _read_token(path: Path) -> str | None:
        try:
            return path.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    # --- plumbing ---------------------------------------------------------------------------------------

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _timeout(self, read: float | None) -> Any:
        """A connect timeout and a read timeout (None: wait forever), in the transport's own type."""
        from shipyard._stdhttp import StdClient, Timeout

        if isinstance(self._http, StdClient):
            return Timeout(self.timeout, read=read)
        return httpx.Timeout(self.timeout, read=read)

    def _transport_error(self, exc: httpx.HTTPError) -> ShipyardError:
        if isinstance(exc, httpx.ConnectError):
            return NotRunning(f"cannot reach the Shipyard control plane at {self.url} ({exc}); "
                              "start one with `shipyard up`")
        if isinstance(exc, httpx.TimeoutException):
            return ShipyardError(f"the control plane at {self.url} did not answer in time ({type(exc).__name__})")
        return ShipyardError(f"lost the connection to the control plane at {self.url} ({exc or type(exc).__name__})")

    @staticmethod
    def _raise_for(resp: httpx.Response) -> None:
        if resp.status_code < 400:
            return
        if not resp.is_closed:
            resp.read()
        try:
            body = resp.json()
        except ValueError:
            body = None
        detail = body.get("detail") if isinstance(body, dict) else None
        if not isinstance(detail, str) and isinstance(body, dict) and body.get("kind") == "Status":
            detail = body.get("message")  # the Kubernetes API server's own answer (`--context`: its service proxy)
        if not isinstance(detail, str):
            detail = resp.text.strip()[:200] or resp.reason_phrase or "error"
        errors = body.get("errors") if isinstance(body, dict) else None
        raise ApiError(resp.status_code, detail, errors if isinstance(errors, list) else None)

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        self._raise_for(resp)
        try:
            return resp.json()
        except ValueError:
            raise ShipyardError(f"the control plane answered {method} {path} with invalid JSON") from None

    @staticmethod
    def _collection(cls: KindName, namespace: str | None) -> str:
        # A cluster-scoped kind (Project) has one collection, whatever project the caller works in.
        if namespace and not cls.CLUSTER_SCOPED:
            return f"{PREFIX}/namespaces/{namespace}/{cls.PLURAL}"
        return f"{PREFIX}/{cls.PLURAL}"

    def _object(self, kind: str, name: str, namespace: str) -> str:
        return f"{self._collection(_kind(kind), namespace)}/{name}"

    # --- API --------------------------------------------------------------------------------------------

    def health(self) -> bool:
        try:
            return self._http.get("/healthz", timeout=min(self.timeout, 5.0)).status_code == 200
        except httpx.HTTPError:
            return False

    def version(self) -> dict[str, Any]:
        return self._request("GET", "/version")  # type: ignore[no-any-return]

    def apply(self, items: list[tuple[str, int, dict[str, Any]]], dry_run: bool = False) -> list[dict[str, Any]]:
        """Create or update all objects atomically; `items` are (source, document index, object)."""
        body = {"items": [{"source": s, "document": d, "object": o} for s, d, o in items], "dryRun": dry_run}
        content = json.dumps(body, default=_json_default, separators=(",", ":"))
        result = self._request("POST", f"{PREFIX}/apply", content=content,
                               headers={"Content-Type": "application/json"})
        return list(result.get("items", []))

    def get(self, kind: str, name: str, namespace: str = "default") -> Resource:
        return _typed(self.get_wire(kind, name, namespace))

    def get_wire(self, kind: str, name: str, namespace: str = "default") -> dict[str, Any]:
        """The object as the API sends it (a camelCase dict), without building its pydantic model."""
        return dict(self._request("GET", self._object(kind, name, namespace)))

    def workspace_access(self, name: str, namespace: str = "default") -> dict[str, Any]:
        """{url, token, ide, phase, suspendReason}: what opens a Workspace. The token is a secret: show it only
        to the person who asked."""
        return dict(self._request("GET", self._object("Workspace", name, namespace) + "/access"))

    def list_with_version(self, kind: str, namespace: str | None = "default",
                          name: str | None = None) -> tuple[list[Resource], str]:
        """The objects and the resourceVersion to watch from so that no later change is missed."""
        items, version = self.list_wire(kind, namespace, name)
        return [_typed(item) for item in items], version

    def list_wire(self, kind: str, namespace: str | None = "default", name: str | None = None,
                  selector: str | None = None) -> tuple[list[dict[str, Any]], str]:
        """As list_with_version, in wire form (camelCase dicts): no pydantic model is built. `selector` (a
        kubectl label selector) is applied by the server, which then sends only what matches."""
        params: dict[str, Any] = {"limit": LIST_PAGE}
        if name:
            params["fieldSelector"] = f"metadata.name={name}"
        if selector:
            params["labelSelector"] = selector
        path = self._collection(_kind(kind), namespace)
        data = self._request("GET", path, params=params)
        # The first page's version is every page's: watching from it misses nothing the pages did not show.
        items, version = list(data.get("items", [])), str(data["metadata"]["resourceVersion"])
        while data["metadata"].get("continue"):
            data = self._request("GET", path, params={**params, "continue": data["metadata"]["continue"]})
            items.extend(data.get("items", []))
        return items, version

    def list(self, kind: str, namespace: str | None = "default") -> list[Resource]:
        return self.list_with_version(kind, namespace)[0]

    def delete(self, kind: str, name: str, namespace: str = "default") -> Resource:
        return _typed(self.delete_wire(kind, name, namespace))

    def delete_wire(self, kind: str, name: str, namespace: str = "default", force: bool = False) -> dict[str, Any]:
        """`force`: a Project's deletion deletes what it holds too (refused without it while it holds any)."""
        params = {"force": "true"} if force else None
        return dict(self._request("DELETE", self._object(kind, name, namespace), params=params))

    # --- API keys for the gateway ---------------------------------------------------------------------

    def create_api_key(self, name: str, project: str = "default", *, expires_in_days: float | None = None,
                       endpoints: list[str] | None = None, requests_per_second: float | None = None,
                       burst: int | None = None) -> dict[str, Any]:
        """A new key for the project's endpoints and apps; `token` is in this answer only, never again.

        Optional restrictions: expire after `expires_in_days`; reach only the Endpoints/Apps named in
        `endpoints`; at most `requests_per_second` (a token bucket of `burst`, by default one second's worth)."""
        body: dict[str, Any] = {"name": name}
        if expires_in_days is not None:
            body["expiresInDays"] = expires_in_days
        if endpoints:
            body["endpoints"] = list(endpoints)
        if requests_per_second is not None or burst is not None:
            body["rateLimit"] = {"requestsPerSecond": requests_per_second,
                                 **({"burst": burst} if burst is not None else {})}
        return dict(self._request("POST", f"/api/v1/projects/{project}/apikeys", json=body))

    def list_api_keys(self, project: str = "default") -> list[dict[str, Any]]:
        return list(self._request("GET", f"/api/v1/projects/{project}/apikeys").get("items", []))

    def revoke_api_key(self, name: str, project: str = "default") -> dict[str, Any]:
        return dict(self._request("DELETE", f"/api/v1/projects/{project}/apikeys/{name}"))

    # --- the model registry (MLflow, when the control plane tracks experiments) ------------------------

    def list_models(self) -> list[dict[str, Any]]:
        """Every registered model version: name, version, aliases, project, volume, path, runId."""
        return list(self._request("GET", "/api/v1/models").get("items", []))

    def events(self, kind: str, name: str, namespace: str = "default") -> list[dict[str, Any]]:
        return list(self._request("GET", self._object(kind, name, namespace) + "/events").get("items", []))

    def logs(self, kind: str, name: str, namespace: str = "default", replica: int | None = None,
             follow: bool = False, tail_lines: int | None = None, *, pod: str | None = None,
             all_pods: bool = False, previous: bool = False, since_seconds: int | None = None,
             selector: str | None = None, trial: int | None = None) -> Iterator[str]:
        """Lines of a resource's pod logs: replica 0 of a job or the newest ready pod by default; `replica`,
        `pod` or `all_pods` (lines prefixed `[pod/NAME] `) pick others, `selector` narrows them by label;
        `trial` picks a Sweep's trial. `previous`, `since_seconds`, `tail_lines` and `follow` are the pod
        log API's."""
        params: dict[str, Any] = {"follow": str(follow).lower()}
        for key, value in (("replica", replica), ("tailLines", tail_lines), ("pod", pod),
                           ("sinceSeconds", since_seconds), ("labelSelector", selector), ("trial", trial)):
            if value is not None:
                params[key] = value
        if all_pods:
            params["all"] = "true"
        if previous:
            params["previous"] = "true"
        timeout = self._timeout(read=None if follow else self.timeout)
        try:
            with self._http.stream("GET", self._object(kind, name, namespace) + "/log", params=params,
                                   timeout=timeout) as resp:
                self._raise_for(resp)
                yield from resp.iter_lines()
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None

    # --- watch and wait ---------------------------------------------------------------------------------

    def _stream_events(self, cls: KindName, namespace: str | None, name: str | None, since: str,
                       seconds: int) -> Iterator[dict[str, Any]]:
        """One watch connection's events (BOOKMARK and ERROR included), until the server ends it."""
        params: dict[str, Any] = {"watch": "true", "resourceVersion": since, "timeoutSeconds": seconds}
        if name:
            params["fieldSelector"] = f"metadata.name={name}"
        timeout = self._timeout(read=None)
        with self._http.stream("GET", self._collection(cls, namespace), params=params, timeout=timeout) as resp:
            self._raise_for(resp)
            for line in resp.iter_lines():
                if line.strip():
                    yield json.loads(line)

    def watch(self, kind: str, namespace: str | None = "default", name: str | None = None,
              resource_version: str | None = None, initial: bool = False,
              timeout: float | None = None) -> Iterator[tuple[str, Resource]]:
        """Yield (ADDED|MODIFIED|DELETED, object) for every change after `resource_version` (or after a first
        list; with `initial`, listed objects come first as ADDED). Ends only after `timeout` seconds, if any."""
        return self._watch(kind, namespace, name, resource_version, initial, timeout, [])

    def _watch(self, kind: str, namespace: str | None, name: str | None, resource_version: str | None,
               initial: bool, timeout: float | None, seed: list[Resource]) -> Iterator[tuple[str, Resource]]:
        cls = _kind(kind)
        deadline = None if timeout is None else time.monotonic() + timeout
        # What this watcher has seen, so that a relist after 410 Gone can report what changed meanwhile.
        known = {(o.metadata.namespace, o.metadata.name): o.metadata.resource_version or "" for o in seed}

        def relist(first: bool) -> Iterator[tuple[str, Resource]]:
            nonlocal since
            objects, since = self.list_with_version(kind, namespace, name)
            current = {(o.metadata.namespace, o.metadata.name): o for o in objects}
            for key, obj in current.items():
                previous = known.get(key)
                known[key] = obj.metadata.resource_version or ""
                if first and not initial:
                    continue
                if previous is None:
                    yield "ADDED", obj
                elif previous != known[key]:
                    yield "MODIFIED", obj
            for key in [k for k in known if k not in current]:
                gone = known.pop(key)
                # Deleted while we were not watching: only the identity is known.
                yield "DELETED", _identity(cls.KIND, key[0], key[1], gone or None)

        since = resource_version or ""
        if not since:
            yield from relist(True)
        reconnect_budget = 3
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return
            seconds = WATCH_SECONDS if left is None else max(1, min(WATCH_SECONDS, int(left + 0.999)))
            expired = False
            try:
                for event in self._stream_events(cls, namespace, name, since, seconds):
                    reconnect_budget = 3
                    kind_ = event.get("type")
                    obj = event.get("object") or {}
                    if kind_ == "BOOKMARK":
                        since = str(obj.get("metadata", {}).get("resourceVersion", since))
                        continue
                    if kind_ == "ERROR":
                        if obj.get("code") == 410:
                            expired = True
                            break
                        raise ApiError(int(obj.get("code") or 500), str(obj.get("message") or "watch failed"))
                    resource = _typed(obj)
                    since = resource.metadata.resource_version or since
                    key = (resource.metadata.namespace, resource.metadata.name)
                    if kind_ == "DELETED":
                        known.pop(key, None)
                    else:
                        known[key] = since
                    yield str(kind_), resource
            except ApiError as exc:
                if exc.status != 410:
                    raise
                expired = True
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                raise self._transport_error(exc) from None
            except httpx.HTTPError as exc:
                # A dropped stream (daemon restart, proxy timeout): resume from the last version seen.
                reconnect_budget -= 1
                if reconnect_budget <= 0:
                    raise self._transport_error(exc) from None
            if expired:
                yield from relist(False)

    def wait(self, kind: str, name: str, namespace: str = "default", *, until: Callable[[Resource], bool],
             timeout: float | None = None) -> Resource:
        """Return the object as soon as `until(object)` holds; WaitTimeout after `timeout` seconds."""
        obj = self.get(kind, name, namespace)
        if until(obj):
            return obj
        for type_, obj in self._watch(kind, namespace, name, obj.metadata.resource_version, False, timeout, [obj]):
            if type_ == "DELETED":
                raise ShipyardError(f"{obj.ref} was deleted while waiting for it")
            if until(obj):
                return obj
        raise WaitTimeout(f"timed out after {timeout:g}s waiting for {_kind(kind).KIND.lower()}/{name}")

    def wait_deleted(self, kind: str, name: str, namespace: str = "default", *,
                     resource_version: str | None = None, timeout: float | None = None) -> None:
        """Return once the object is gone (finalizers done); pass the version a delete returned to avoid a
        race with a deletion that completes before the watch starts."""
        objects: list[Resource] = []
        if resource_version is None:
            objects, resource_version = self.list_with_version(kind, namespace, name)
            if not objects:
                return
        else:
            objects = [_identity(_kind(kind).KIND, namespace, name)]
        for type_, _ in self._watch(kind, namespace, name, resource_version, False, timeout, objects):
            if type_ == "DELETED":
                return
        raise WaitTimeout(f"timed out after {timeout:g}s waiting for {_kind(kind).KIND.lower()}/{name} "
                          "to be deleted")

