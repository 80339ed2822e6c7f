"""Users, service accounts and their tokens: validation, HMAC-only storage, expiry, revocation, restart."""

import hashlib
import hmac
import stat
from datetime import datetime, timedelta, timezone

import pytest

from shipyard.store.identities import Identity, SQLiteIdentities, load_or_create_key
from shipyard.store.protocol import Conflict, NotFound
from shipyard.store.sqlite import SQLiteStore

KEY = b"k" * 32


class Clock:
    def __init__(self):
        self.now = datetime(2025, 1, 1, tzinfo=timezone.utc)

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(tmp_path):
    s = SQLiteStore(tmp_path / "db")
    yield s
    s.close()


@pytest.fixture
def ids(store, clock):
    return SQLiteIdentities(store._engine, KEY, clock=clock)


def test_users_create_get_list_delete(ids):
    alice = ids.create_user("alice@example.com", email="alice@example.com", groups=["dev", "dev", "system:masters"])
    assert alice.groups == ("dev", "system:masters")
    ids.create_user("bob")
    with pytest.raises(Conflict):
        ids.create_user("bob")
    assert ids.get_user("alice@example.com").email == "alice@example.com"
    assert ids.get_user("carol") is None
    assert [u.name for u in ids.list_users()] == ["alice@example.com", "bob"]
    assert ids.delete_user("bob").name == "bob"
    assert ids.get_user("bob") is None
    with pytest.raises(NotFound):
        ids.delete_user("bob")


@pytest.mark.parametrize("name", ["", "Alice", "-a", "a-", "system:serviceaccount:ns:x", "a b", "a" * 254, "é"])
def test_user_names_validated(ids, name):
    with pytest.raises(ValueError, match="user name") as err:
        ids.create_user(name)
    assert "\n" not in str(err.value)


def test_user_fields_validated(ids):
    with pytest.raises(ValueError, match="email"):
        ids.create_user("a", email="not an email")
    with pytest.raises(ValueError, match="group"):
        ids.create_user("a", groups=["system:serviceaccounts:prod"])
    with pytest.raises(ValueError, match="groups"):
        ids.create_user("a", groups="dev")
    assert ids.list_users() == []


def test_service_accounts(ids):
    sa = ids.create_service_account("prod", "deployer")
    assert sa.username == "system:serviceaccount:prod:deployer"
    ids.create_service_account("dev", "deployer")
    with pytest.raises(Conflict):
        ids.create_service_account("prod", "deployer")
    for ns, name in [("Prod", "x"), ("prod", "Bad_Name"), ("a.b", "x"), ("p", "")]:
        with pytest.raises(ValueError):
            ids.create_service_account(ns, name)
    assert ids.get_service_account("prod", "deployer") == sa
    assert ids.get_service_account("prod", "nobody") is None
    assert [(s.namespace, s.name) for s in ids.list_service_accounts()] == [("dev", "deployer"), ("prod", "deployer")]
    assert [s.namespace for s in ids.list_service_accounts("prod")] == ["prod"]
    ids.delete_service_account("prod", "deployer")
    assert ids.list_service_accounts("prod") == []
    with pytest.raises(NotFound):
        ids.delete_service_account("prod", "deployer")


def test_token_prefixes_identities_and_listing(ids):
    ids.create_user("alice", groups=["dev"])
    ids.create_service_account("prod", "ci")
    utoken, urec = ids.create_token("User", "alice", None, "laptop", None)
    stoken, srec = ids.create_token("ServiceAccount", "ci", "prod", "deploy", timedelta(hours=1))
    assert utoken.startswith("sy_u_") and stoken.startswith("sy_sa_")
    assert len(utoken) == len("sy_u_") + 43
    assert urec.hint == utoken[:10] and urec.namespace is None and urec.expires_at is None
    assert srec.expires_at - srec.created_at == timedelta(hours=1)
    assert ids.authenticate(utoken) == Identity("alice", ("dev",), "User", None, "laptop")
    assert ids.authenticate(stoken) == Identity("system:serviceaccount:prod:ci",
                                                ("system:serviceaccounts", "system:serviceaccounts:prod"),
                                                "ServiceAccount", "prod", "deploy")
    listed = ids.list_tokens()
    assert {t.name for t in listed} == {"laptop", "deploy"}
    assert [t.name for t in ids.list_tokens(subject_kind="ServiceAccount", namespace="prod")] == ["deploy"]
    assert [t.name for t in ids.list_tokens(subject="alice")] == ["laptop"]
    assert all(utoken not in repr(t) and stoken not in repr(t) for t in listed)
    assert not hasattr(listed[0], "token_hmac")


def test_token_arguments_checked(ids):
    ids.create_user("alice")
    ids.create_service_account("prod", "ci")
    with pytest.raises(NotFound):
        ids.create_token("User", "bob", None, "t", None)
    with pytest.raises(NotFound):
        ids.create_token("ServiceAccount", "ci", "dev", "t", None)
    with pytest.raises(ValueError, match="namespace"):
        ids.create_token("User", "alice", "prod", "t", None)
    with pytest.raises(ValueError, match="namespace"):
        ids.create_token("ServiceAccount", "ci", None, "t", None)
    with pytest.raises(ValueError, match="subject_kind"):
        ids.create_token("Group", "alice", None, "t", None)
    with pytest.raises(ValueError, match="token name"):
        ids.create_token("User", "alice", None, "Bad Name", None)
    with pytest.raises(ValueError, match="expires_in"):
        ids.create_token("User", "alice", None, "t", timedelta(0))
    ids.create_token("User", "alice", None, "t", None)
    with pytest.raises(Conflict):
        ids.create_token("User", "alice", None, "t", None)


def test_unknown_and_malformed_tokens(ids):
    for token in ["", "sy_u_nope", "Bearer x", "sy_u_" + "a" * 10_000, None]:
        assert ids.authenticate(token) is None


def test_stored_only_as_hmac(tmp_path, store, ids):
    ids.create_user("alice")
    token, _ = ids.create_token("User", "alice", None, "laptop", None)
    ids.authenticate(token)  # also writes last_used_at
    store._engine.dispose()  # let SQLite write what it holds; the WAL file is read below as well
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("db"))
    sha = hashlib.sha256(token.encode())
    assert token.encode() not in data and token[10:].encode() not in data
    assert sha.hexdigest().encode() not in data and sha.digest() not in data
    assert hmac.new(KEY, token.encode(), hashlib.sha256).hexdigest().encode() in data  # the check can see rows


def test_expiry_uses_the_clock_at_call_time(ids, clock):
    ids.create_service_account("prod", "ci")
    token, _ = ids.create_token("ServiceAccount", "ci", "prod", "short", timedelta(minutes=10))
    clock.now += timedelta(minutes=9, seconds=59)
    assert ids.authenticate(token) is not None
    clock.now += timedelta(seconds=1)
    assert ids.authenticate(token) is None
    with pytest.raises(NotFound):  # an expired token is not active: nothing to revoke ...
        ids.revoke_token("ServiceAccount", "ci", "prod", "short")
    again, _ = ids.create_token("ServiceAccount", "ci", "prod", "short", None)  # ... and its name is free again
    assert ids.authenticate(again).token_name == "short"
    assert ids.authenticate(token) is None


def test_revocation_is_immediate(ids):
    ids.create_user("alice")
    token, _ = ids.create_token("User", "alice", None, "laptop", None)
    assert ids.authenticate(token) is not None
    rec = ids.revoke_token("User", "alice", None, "laptop")
    assert rec.revoked_at is not None
    assert ids.authenticate(token) is None
    with pytest.raises(NotFound):
        ids.revoke_token("User", "alice", None, "laptop")
    ids.create_token("User", "alice", None, "laptop", None)  # the name may be reused once revoked
    assert len(ids.list_tokens(subject="alice")) == 2


def test_deleting_subjects_revokes_their_tokens(ids):
    ids.create_user("alice")
    ids.create_service_account("prod", "ci")
    utoken, _ = ids.create_token("User", "alice", None, "laptop", None)
    stoken, _ = ids.create_token("ServiceAccount", "ci", "prod", "deploy", None)
    ids.delete_user("alice")
    ids.delete_service_account("prod", "ci")
    assert ids.authenticate(utoken) is None and ids.authenticate(stoken) is None
    assert all(t.revoked_at is not None for t in ids.list_tokens())
    ids.create_user("alice")  # a new user of the same name does not inherit the old tokens
    assert ids.authenticate(utoken) is None


def test_restart_keeps_active_tokens_only(tmp_path, clock):
    store = SQLiteStore(tmp_path / "db")
    ids = SQLiteIdentities(store._engine, KEY, clock=clock)
    ids.create_user("alice", groups=["dev"])
    ids.create_service_account("prod", "ci")
    kept, _ = ids.create_token("User", "alice", None, "kept", None)
    gone, _ = ids.create_token("User", "alice", None, "gone", None)
    robot, _ = ids.create_token("ServiceAccount", "ci", "prod", "deploy", timedelta(hours=1))
    ids.revoke_token("User", "alice", None, "gone")
    store.close()

    store = SQLiteStore(tmp_path / "db")
    try:
        again = SQLiteIdentities(store._engine, KEY, clock=clock)
        assert again.authenticate(kept) == Identity("alice", ("dev",), "User", None, "kept")
        assert again.authenticate(gone) is None
        assert again.authenticate(robot).name == "system:serviceaccount:prod:ci"
        clock.now += timedelta(hours=1)
        assert again.authenticate(robot) is None  # expiry survives the restart
        other = SQLiteIdentities(store._engine, b"x" * 32, clock=clock)
        assert other.authenticate(kept) is None  # the wrong key authenticates nothing
    finally:
        store.close()


def test_last_used_written_at_most_once_a_minute(ids, clock):
    ids.create_user("alice")
    token, _ = ids.create_token("User", "alice", None, "laptop", None)
    start = clock.now
    ids.authenticate(token)
    clock.now += timedelta(seconds=30)
    ids.authenticate(token)
    assert ids.list_tokens()[0].last_used_at == start
    clock.now += timedelta(seconds=30)
    ids.authenticate(token)
    assert ids.list_tokens()[0].last_used_at == start + timedelta(minutes=1)


def test_short_key_refused(store):
    with pytest.raises(ValueError):
        SQLiteIdentities(store._engine, b"short")


def test_key_file(tmp_path):
    path = tmp_path / "secrets" / "token-key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert load_or_create_key(str(path)) == key
    assert [p.name for p in path.parent.iterdir()] == ["token-key"]  # no temporary file left behind
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="invalidates"):
        load_or_create_key(path)


def test_secret_file_race_keeps_the_winners_secret(tmp_path):
    from shipyard.secretfile import load_or_create

    path = tmp_path / "key"

    def new() -> bytes:  # another process creates the file while this one makes its own
        path.write_bytes(b"theirs")
        return b"mine"

    assert load_or_create(path, new, lambda p: p.read_bytes()) == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["key"]  # no temporary file left behind
