"""The CLI for identities and access, against a real API on loopback over a real SQLite store: users and
their tokens, `login` (stored 0600, used instead of the admin token), `auth whoami`/`can-i`, project members,
service accounts for automation, and the audit log."""

from __future__ import annotations

import json
import os
import stat

import pytest

from shipyard.store.sqlite import SQLiteStore
from tests.unit.test_client_cli import JOB, cli, server, write  # noqa: F401 - fixtures
from tests.unit.test_api import TOKEN


@pytest.fixture
def store(tmp_path, server, monkeypatch):  # noqa: F811 - this module's store keeps identities and roles
    app, url = server
    s = SQLiteStore(tmp_path / "db")
    app.state.store, app.state.api_keys = s, s.api_keys
    app.state.identities, app.state.rbac, app.state.audit = s.identities, s.rbac, s.audit
    monkeypatch.setenv("SHIPYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHIPYARD_API_URL", url)
    monkeypatch.setenv("SHIPYARD_TOKEN", TOKEN)
    monkeypatch.delenv("SHIPYARD_PROJECT", raising=False)
    yield s
    from shipyard.store.rbac import BuiltinRbac

    app.state.identities, app.state.rbac, app.state.audit = None, BuiltinRbac(), None
    s.close()


def as_user(monkeypatch, token: str | None) -> None:
    if token is None:
        monkeypatch.delenv("SHIPYARD_TOKEN", raising=False)
    else:
        monkeypatch.setenv("SHIPYARD_TOKEN", token)


def test_a_second_user_with_a_role_logs_in_and_works_only_where_allowed(cli, store, tmp_path, monkeypatch):
    assert cli("user", "create", "alice", "--email", "alice@example.com") == (0, "user/alice created\n", "")
    code, token, _ = cli("user", "token", "create", "alice", "laptop", "-q", "--expires-days", "30")
    token = token.strip()
    assert code == 0 and token.startswith("sy_u_")
    assert cli("project", "create", "vision")[0] == 0
    assert cli("project", "add-member", "vision", "alice", "--role", "edit")[0] == 0
    code, out, _ = cli("project", "members", "vision")
    assert "alice" in out and "edit" in out

    # Log in: the token is checked, then stored for this server only, readable by its owner only.
    as_user(monkeypatch, None)
    code, out, err = cli("login", stdin=(token + "\n").encode())
    assert code == 0, err
    assert "as alice" in out
    credentials = tmp_path / "home" / "credentials.json"
    assert stat.S_IMODE(os.stat(credentials).st_mode) == 0o600
    assert token in credentials.read_text() and token not in out
    assert cli("auth", "whoami")[1].startswith("alice\t")
    assert cli("auth", "can-i", "create", "tj", "-p", "vision") == (0, "yes\n", "")
    code, out, _ = cli("auth", "can-i", "create", "rolebindings", "-p", "vision")
    assert code == 1 and out.startswith("no (user alice cannot create rolebindings") and "needs role admin" in out

    # Works in vision; refused, in one line, elsewhere.
    manifest = write(tmp_path, "job.yaml", JOB.format(name="mine"))
    assert cli("apply", "-f", manifest, "-p", "vision") == (0, "trainingjob/mine created\n", "")
    assert "mine" in cli("get", "tj", "-p", "vision")[1]
    code, _, err = cli("get", "tj", "-p", "audio")
    assert code == 1 and err.count("\n") == 1
    assert "user alice cannot list trainingjobs in project audio: needs role view" in err
    code, _, err = cli("user", "create", "mallory")
    assert code == 1 and "user alice cannot create users" in err

    # A wrong token is refused before it is stored; logout forgets the stored one.
    code, _, err = cli("login", "--token", "sy_u_" + "x" * 43)
    assert code == 1 and "missing or invalid API token" in err
    assert token in credentials.read_text()
    assert cli("logout")[0] == 0
    assert token not in credentials.read_text()


def test_a_service_account_automates_a_project_and_the_audit_log_shows_who(cli, store, tmp_path, monkeypatch):
    assert cli("project", "create", "vision")[0] == 0
    assert cli("serviceaccount", "create", "ci", "-p", "vision")[0] == 0
    assert "system:serviceaccount:vision:ci" in cli("serviceaccount", "get", "-p", "vision")[1]
    code, token, _ = cli("serviceaccount", "token", "create", "ci", "deploy", "-q", "-p", "vision")
    assert code == 0 and token.startswith("sy_sa_")
    assert cli("project", "add-member", "vision", "ci", "--kind", "serviceaccount", "--role", "edit")[0] == 0
    as_user(monkeypatch, token.strip())
    manifest = write(tmp_path, "job.yaml", JOB.format(name="from-ci"))
    assert cli("apply", "-f", manifest, "-p", "vision")[0] == 0
    assert cli("delete", "tj/from-ci", "-p", "default")[0] == 1  # not its project
    as_user(monkeypatch, TOKEN)
    listed = cli("serviceaccount", "token", "list", "ci", "-p", "vision")[1]
    assert "deploy" in listed and "active" in listed and token.strip() not in listed
    assert cli("serviceaccount", "token", "revoke", "ci", "deploy", "-p", "vision")[0] == 0
    as_user(monkeypatch, token.strip())
    code, _, err = cli("get", "tj", "-p", "vision")
    assert code == 1 and "missing or invalid API token" in err
    as_user(monkeypatch, TOKEN)
    code, out, _ = cli("audit", "-p", "vision", "-o", "json")
    records = [json.loads(line) for line in out.splitlines()]
    who = {(r["user"], r["verb"], r["resource"], r["name"], r["code"]) for r in records}
    assert ("system:serviceaccount:vision:ci", "apply", "trainingjobs", "from-ci", 200) in who
    assert all(token.strip() not in line for line in out.splitlines())
    table = cli("audit", "--user", "system:serviceaccount:vision:ci", "--since", "1h")[1]
    assert "from-ci" in table and "403" in table  # its refused delete in `default`


def test_the_current_project_and_kubectls_n(cli, store, tmp_path):
    manifest = write(tmp_path, "job.yaml", JOB.format(name="here"))
    assert cli("apply", "-f", manifest, "-n", "vision") == (0, "trainingjob/here created\n", "")
    assert cli("project", "current") == (0, "default\n", "")
    assert "No trainingjobs found in project default" in cli("get", "tj")[2]
    assert cli("project", "use", "vision") == (0, "Now working in project vision\n", "")
    assert cli("project", "current") == (0, "vision\n", "")
    assert "here" in cli("get", "tj")[1]  # the fast path reads it too
    assert "here" in cli("describe", "tj", "here")[1]
    assert "No trainingjobs found in project default" in cli("-n", "default", "get", "tj")[2]  # a flag wins
    assert "No trainingjobs found in project default" in cli("get", "tj", "-p", "default")[2]
    code, _, err = cli("project", "use", "Not_A_Name")
    assert code == 1 and err.count("\n") == 1 and "project" in err


def test_token_manages_your_own_tokens_or_a_users_or_a_service_accounts(cli, store, monkeypatch):
    assert cli("user", "create", "alice")[0] == 0
    assert cli("user", "create", "bob")[0] == 0
    # The admin makes alice's first token (--user); then she manages her own without naming herself.
    code, first, err = cli("token", "create", "laptop", "--user", "alice", "-q")
    first = first.strip()
    assert code == 0 and first.startswith("sy_u_"), err
    as_user(monkeypatch, first)
    code, out, err = cli("token", "create", "ci", "--expires-days", "7")
    assert code == 0 and out.startswith("token/ci created for user alice, expires "), err
    second = out.splitlines()[-1]
    assert second.startswith("sy_u_") and second != first
    listed = cli("token", "list")[1]
    assert "laptop" in listed and "ci" in listed and first not in listed and second not in listed
    assert cli("token", "revoke", "laptop") == (0, "token/laptop of user alice revoked\n", "")
    code, _, err = cli("token", "list")
    assert code == 1 and "missing or invalid API token" in err  # that was the token in use
    as_user(monkeypatch, second)
    assert "revoked" in cli("token", "list")[1]
    # Anybody else's tokens need the RBAC permission: one line.
    for args in (["list", "--user", "bob"], ["create", "x", "--user", "bob"],
                 ["list", "--serviceaccount", "ci", "-p", "vision"]):
        code, _, err = cli("token", *args)
        assert code == 1 and err.count("\n") == 1 and "user alice cannot" in err, (args, err)

    # A service account's tokens, by the admin; the service account itself is sent to its own.
    as_user(monkeypatch, TOKEN)
    assert cli("project", "create", "vision")[0] == 0
    assert cli("serviceaccount", "create", "ci", "-p", "vision")[0] == 0
    code, out, err = cli("token", "create", "deploy", "--serviceaccount", "ci", "-n", "vision")
    assert code == 0 and out.startswith("token/deploy created for serviceaccount ci in project vision."), err
    sa_token = out.splitlines()[-1]
    assert sa_token.startswith("sy_sa_")
    assert "deploy" in cli("token", "list", "--serviceaccount", "ci", "-p", "vision")[1]
    as_user(monkeypatch, sa_token)
    code, _, err = cli("token", "list")
    assert code == 1 and "system:serviceaccount:vision:ci cannot list serviceaccounts" in err, err
    as_user(monkeypatch, TOKEN)
    assert cli("token", "revoke", "deploy", "--serviceaccount", "ci", "-p", "vision") == (
        0, "token/deploy of serviceaccount ci in project vision revoked\n", "")

    # Usage mistakes: one line each. The admin token is no stored user's: it has no tokens of its own.
    for args, words in ((["create", "x"], "user admin not found: you have no tokens to manage"),
                        (["create", "x", "--user", "a", "--serviceaccount", "b"], "give one of them"),
                        (["list", "-p", "vision"], "--project goes with --serviceaccount"),
                        (["create", "x", "--user", "alice", "--expires-days", "-1"], "--expires-days")):
        code, _, err = cli("token", *args)
        assert code in (1, 2) and err.count("\n") == 1 and words in err, (args, err)
