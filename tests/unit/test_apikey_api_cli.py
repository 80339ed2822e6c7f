"""Project keys' owner and restrictions through the API, the client and `shipyard apikey` (real API on
loopback over a real SQLite store): what is stored and shown, and one-line refusals naming the field."""

from __future__ import annotations

import httpx
import pytest

from shipyard.store.protocol import RateLimit
from shipyard.tokens import hash_token
from tests.unit.test_access_cli import as_user, store  # noqa: F401 - fixtures (a store with users and roles)
from tests.unit.test_api import TOKEN
from tests.unit.test_client_cli import cli, one_error_line, server  # noqa: F401 - fixtures


def api(server, method: str, path: str, token: str = TOKEN, **kwargs) -> httpx.Response:  # noqa: F811
    _, url = server
    return httpx.request(method, url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30, **kwargs)


def test_create_records_creator_and_restrictions_and_the_token_only_once(server, store):  # noqa: F811
    created = api(server, "POST", "/api/v1/projects/team-a/apikeys", json={
        "name": "ci", "expiresInDays": 7, "endpoints": ["chat", "embed", "chat"],
        "rateLimit": {"requestsPerSecond": 2.5}})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["createdBy"] == "admin" and body["endpoints"] == ["chat", "embed"]
    assert body["rateLimit"] == {"requestsPerSecond": 2.5, "burst": 3}  # burst: ceil(rate)
    assert body["status"] == "active" and body["expiresAt"] > body["createdAt"]
    grant = store.api_keys.api_key_grant(hash_token(body["token"]))
    assert grant.endpoints == frozenset({"chat", "embed"}) and (grant.requests_per_second, grant.burst) == (2.5, 3)
    listed = api(server, "GET", "/api/v1/projects/team-a/apikeys").json()["items"]
    assert [{k: v for k, v in item.items() if k != "createdAt"} for item in listed] == [
        {k: v for k, v in body.items() if k not in ("token", "createdAt")}]
    assert "token" not in listed[0]
    plain = api(server, "POST", "/api/v1/projects/team-a/apikeys", json={"name": "plain"}).json()
    assert (plain["expiresAt"], plain["endpoints"], plain["rateLimit"]) == (None, [], None)
    explicit = api(server, "POST", "/api/v1/projects/team-a/apikeys", json={
        "name": "bursty", "rateLimit": {"requestsPerSecond": 0.5, "burst": 20}}).json()
    assert explicit["rateLimit"] == {"requestsPerSecond": 0.5, "burst": 20}
    revoked = api(server, "DELETE", "/api/v1/projects/team-a/apikeys/ci").json()
    assert revoked["status"] == "revoked" and revoked["createdBy"] == "admin" and "token" not in revoked


@pytest.mark.parametrize("body, field", [
    ({"expiresInDays": 0}, "expiresInDays"),
    ({"expiresInDays": 10_000}, "expiresInDays"),
    ({"expiresInDays": "soon"}, "expiresInDays"),
    ({"endpoints": ["Bad_Name"]}, "endpoints entry 'Bad_Name'"),
    ({"endpoints": "chat"}, "endpoints"),
    ({"rateLimit": {"requestsPerSecond": 0}}, "rateLimit.requestsPerSecond"),
    ({"rateLimit": {"requestsPerSecond": -1}}, "rateLimit.requestsPerSecond"),
    ({"rateLimit": {"burst": 5}}, "rateLimit.requestsPerSecond"),
    ({"rateLimit": {"requestsPerSecond": 1, "burst": 0}}, "rateLimit.burst"),
    ({"rateLimit": {"requestsPerSecond": 1, "per": "minute"}}, "rateLimit.per"),
])
def test_invalid_restrictions_are_one_line_422_naming_the_field(server, store, body, field):  # noqa: F811
    answer = api(server, "POST", "/api/v1/projects/team-a/apikeys", json={"name": "k", **body})
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert field in detail and "\n" not in detail, detail
    assert store.api_keys.list_api_keys("team-a") == []


def test_a_users_key_records_the_user(cli, server, store, monkeypatch):  # noqa: F811
    assert cli("user", "create", "alice")[0] == 0
    token = cli("user", "token", "create", "alice", "laptop", "-q")[1].strip()
    assert cli("project", "create", "vision")[0] == 0
    assert cli("project", "add-member", "vision", "alice", "--role", "edit")[0] == 0
    as_user(monkeypatch, token)
    code, out, err = cli("apikey", "create", "mine", "-p", "vision", "--endpoint", "chat")
    assert code == 0, err
    [key] = store.api_keys.list_api_keys("vision")
    assert key.created_by == "alice" and key.endpoints == ("chat",)
    assert "alice" in cli("apikey", "list", "-p", "vision")[1]


def test_apikey_cli_create_with_restrictions_and_list_columns(cli, store):  # noqa: F811
    code, out, err = cli("apikey", "create", "ci", "-p", "team-a", "--expires-days", "30", "--endpoint", "chat",
                         "--endpoint", "embed", "--rate", "5", "--burst", "10")
    assert code == 0 and err == "", err
    assert "only chat, embed" in out and "at most 5/s burst 10" in out and "expires 20" in out
    token = out.splitlines()[-1]
    [key] = store.api_keys.list_api_keys("team-a")
    assert key.created_by == "admin" and key.endpoints == ("chat", "embed")
    assert key.rate_limit == RateLimit(5.0, 10) and key.expires_at is not None
    assert store.api_keys.api_key_project(hash_token(token)) == "team-a"
    assert cli("apikey", "create", "quiet", "-p", "team-a", "--rate", "0.5", "-q")[1].startswith("sy_key_")
    code, out, _ = cli("apikey", "list", "-p", "team-a")
    header, *rows = out.splitlines()
    assert header.split() == ["PROJECT", "NAME", "HINT", "STATUS", "CREATED", "CREATED", "BY", "EXPIRES",
                              "ENDPOINTS", "RATE"]
    ci = next(r for r in rows if " ci " in r)
    assert "admin" in ci and "chat,embed" in ci and "5/s burst 10" in ci and token not in out
    quiet = next(r for r in rows if " quiet " in r)
    assert "0.5/s burst 1" in quiet and " * " in quiet  # every endpoint of the project


def test_apikey_cli_refusals_are_one_line(cli, store):  # noqa: F811
    code, _, err = cli("apikey", "create", "k", "--burst", "3")
    assert code == 1
    one_error_line(err, "--burst needs --rate")
    code, _, err = cli("apikey", "create", "k", "--rate", "0")
    assert code == 1
    one_error_line(err, "rateLimit.requestsPerSecond")
    code, _, err = cli("apikey", "create", "k", "--endpoint", "Not_A_Name")
    assert code == 1
    one_error_line(err, "endpoints entry")
    code, _, err = cli("apikey", "create", "k", "--expires-days", "-1")
    assert code == 1
    one_error_line(err, "expiresInDays")
    assert store.api_keys.list_api_keys() == []
