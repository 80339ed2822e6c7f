"""Gateway keys' owner and restrictions in both stores (fields, old-database migration, expiry on an injected
clock, the grant the gateway reads per request) and the token bucket that enforces a key's rate."""

from __future__ import annotations

import base64
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from shipyard.gateway.auth import Grant, StaticKeys, default_burst
from shipyard.gateway.ratelimit import SWEEP_AT, RateLimiter, TokenBucket
from shipyard.store.apikeys import SQLiteApiKeys
from shipyard.store.kubernetes_apikeys import (
    ENDPOINTS_ANNOTATION, RATE_ANNOTATION, KubernetesApiKeys)
from shipyard.store.protocol import ApiKeyGrant, Conflict, RateLimit

T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


# --- SQLite -----------------------------------------------------------------------------------------------

def test_sqlite_keys_record_creator_expiry_endpoints_and_rate(tmp_path):
    clock = Clock()
    engine = create_engine(f"sqlite:///{tmp_path / 'db'}")
    keys = SQLiteApiKeys(engine, clock=clock)
    expires = datetime.fromtimestamp(T0 + 3600, timezone.utc)
    made = keys.add_api_key("team-a", "ci", "h1", "sy_key_abcde", created_by="alice", expires_at=expires,
                            endpoints=("chat", "embed"), rate_limit=RateLimit(2.5, 3))
    keys.add_api_key("team-a", "plain", "h2", "sy_key_fghij")
    assert (made.created_by, made.expires_at, made.endpoints, made.rate_limit) == (
        "alice", expires, ("chat", "embed"), RateLimit(2.5, 3))
    assert made.created_at == datetime.fromtimestamp(T0, timezone.utc)
    reopened = SQLiteApiKeys(engine, clock=clock)  # the in-memory grants are rebuilt from the table
    listed = {k.name: k for k in reopened.list_api_keys("team-a")}
    assert listed["ci"] == made
    assert (listed["plain"].created_by, listed["plain"].expires_at, listed["plain"].endpoints,
            listed["plain"].rate_limit) == ("unknown", None, (), None)
    assert reopened.api_key_grant("h1") == ApiKeyGrant("h1", "team-a", frozenset({"chat", "embed"}), 2.5, 3,
                                                       T0 + 3600)
    assert reopened.api_key_grant("h2") == ApiKeyGrant("h2", "team-a")
    assert reopened.api_key_grant("h1") is reopened.api_key_grant("h1")  # built once, not per lookup


def test_sqlite_expired_keys_are_refused_like_revoked_ones_and_still_block_their_name(tmp_path):
    clock = Clock()
    keys = SQLiteApiKeys(create_engine(f"sqlite:///{tmp_path / 'db'}"), clock=clock)
    keys.add_api_key("p", "k", "h", "hint", expires_at=datetime.fromtimestamp(T0 + 60, timezone.utc))
    assert keys.api_key_project("h") == "p"
    clock.now = T0 + 59.9
    assert keys.api_key_grant("h") is not None
    clock.now = T0 + 60
    assert keys.api_key_grant("h") is None and keys.api_key_project("h") is None
    with pytest.raises(Conflict):
        keys.add_api_key("p", "k", "h2", "hint")  # revoke it first: the name stays taken, as listed
    assert keys.revoke_api_key("p", "k").revoked_at is not None
    keys.add_api_key("p", "k", "h2", "hint")


def test_an_old_api_keys_table_gains_the_new_columns_and_its_keys_stay_valid(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'db'}")
    with engine.begin() as conn:  # the table as the first release made it
        conn.execute(text("CREATE TABLE api_keys (id INTEGER PRIMARY KEY AUTOINCREMENT, project VARCHAR NOT NULL, "
                          "name VARCHAR NOT NULL, token_hash VARCHAR NOT NULL UNIQUE, hint VARCHAR NOT NULL, "
                          "created_at VARCHAR NOT NULL, revoked_at VARCHAR)"))
        conn.execute(text("INSERT INTO api_keys (project, name, token_hash, hint, created_at) VALUES "
                          "('p', 'old', 'h-old', 'sy_key_old', '2024-01-01T00:00:00+00:00')"))
    keys = SQLiteApiKeys(engine)
    SQLiteApiKeys(engine)  # migrating twice is a no-op
    with engine.connect() as conn:
        columns = {row[1] for row in conn.execute(text("PRAGMA table_info(api_keys)"))}
    assert {"created_by", "expires_at", "endpoints", "rate_per_second", "rate_burst"} <= columns
    [old] = keys.list_api_keys("p")
    assert (old.name, old.created_by, old.expires_at, old.endpoints, old.rate_limit) == (
        "old", "unknown", None, (), None)
    assert keys.api_key_grant("h-old") == ApiKeyGrant("h-old", "p")
    keys.add_api_key("p", "new", "h-new", "hint", created_by="admin", endpoints=("chat",))
    assert keys.api_key_grant("h-new").endpoints == frozenset({"chat"})


# --- Kubernetes Secrets -----------------------------------------------------------------------------------

class FakeKube:
    """What KubernetesApiKeys asks of KubeApi, over a dict of Secrets."""

    def __init__(self) -> None:
        self.secrets: dict[str, dict[str, Any]] = {}

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.secrets.get(name)

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.secrets[obj["metadata"]["name"]] = obj
        return obj

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.secrets.pop(name, None)

    def list(self, kind: str, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        return list(self.secrets.values())

    def merge_patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.secrets[name]["metadata"]["annotations"].update(patch["metadata"]["annotations"])
        return self.secrets[name]


def test_kubernetes_keys_keep_the_new_fields_in_annotations_and_expire_on_the_clock():
    api, clock = FakeKube(), Clock()
    keys = KubernetesApiKeys(api, "shipyard-system", clock=clock)  # type: ignore[arg-type]
    expires = datetime.fromtimestamp(T0 + 60, timezone.utc)
    made = keys.add_api_key("p", "ci", "h1", "hint", created_by="bob", expires_at=expires, endpoints=("chat",),
                            rate_limit=RateLimit(1.0, 4))
    keys.add_api_key("p", "plain", "h2", "hint")
    assert (made.created_by, made.expires_at, made.endpoints, made.rate_limit) == (
        "bob", expires, ("chat",), RateLimit(1.0, 4))
    [secret] = [s for s in api.secrets.values() if s["metadata"]["annotations"]["shipyard.dev/key-name"] == "ci"]
    assert base64.b64decode(secret["data"]["sha256"]).decode() == "h1"  # still only the hash
    fresh = KubernetesApiKeys(api, "shipyard-system", clock=clock)  # type: ignore[arg-type]
    fresh.sync()  # another gateway replica, from the Secrets alone
    assert fresh.api_key_grant("h1") == ApiKeyGrant("h1", "p", frozenset({"chat"}), 1.0, 4, T0 + 60)
    assert fresh.api_key_grant("h2") == ApiKeyGrant("h2", "p")
    assert {k.name: k.created_by for k in fresh.list_api_keys("p")} == {"ci": "bob", "plain": "unknown"}
    clock.now = T0 + 60
    assert fresh.api_key_grant("h1") is None and fresh.api_key_project("h2") == "p"


def test_a_secret_with_unreadable_restrictions_reaches_nothing():
    api = FakeKube()
    keys = KubernetesApiKeys(api, "ns", clock=Clock())  # type: ignore[arg-type]
    keys.add_api_key("p", "ci", "h1", "hint", endpoints=("chat",))
    [secret] = api.secrets.values()
    secret["metadata"]["annotations"][ENDPOINTS_ANNOTATION] = "not json"
    secret["metadata"]["annotations"][RATE_ANNOTATION] = "{}"
    keys.sync()
    grant = keys.api_key_grant("h1")
    assert grant is not None and grant.endpoints == frozenset({"-"})  # "-" is no valid name


# --- the token bucket -------------------------------------------------------------------------------------

def test_bucket_allows_its_burst_then_refuses_until_refilled():
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)  # one token comes back every 1/rate s
    assert bucket.take(0.25) == pytest.approx(0.25)
    assert bucket.take(0.5) == 0.0
    assert bucket.take(10.0) == 0.0 and bucket.tokens == pytest.approx(2.0)  # refill stops at the burst


def test_limiter_answers_retry_after_in_whole_seconds_and_refills():
    clock = Clock(100.0)
    limiter = RateLimiter(clock=clock)
    slow = Grant("k1", "p", requests_per_second=0.25, burst=2)
    assert [limiter.retry_after(slow) for _ in range(3)] == [0, 0, 4]
    clock.now += 3.5
    assert limiter.retry_after(slow) == 1  # 0.5 s left: Retry-After is at least 1, rounded up
    clock.now += 0.5
    assert limiter.retry_after(slow) == 0
    fast = Grant("k2", "p", requests_per_second=50.0)  # burst 0: one second's worth
    assert default_burst(50.0) == 50 and default_burst(0.2) == 1 and default_burst(2.5) == 3
    assert sum(limiter.retry_after(fast) == 0 for _ in range(60)) == 50
    assert limiter.retry_after(fast) == 1
    assert limiter.retry_after(Grant("k3", "p")) == 0  # no rate: never counted
    assert len(limiter) == 2


def test_limiter_keeps_keys_apart_and_restarts_a_bucket_whose_limit_changed():
    clock = Clock(0.0)
    limiter = RateLimiter(clock=clock)
    a, b = Grant("a", "p", requests_per_second=1.0), Grant("b", "p", requests_per_second=1.0)
    assert limiter.retry_after(a) == 0 and limiter.retry_after(a) == 1
    assert limiter.retry_after(b) == 0
    assert limiter.retry_after(Grant("a", "p", requests_per_second=5.0)) == 0  # re-made with a new rate


def test_limiter_forgets_full_buckets_when_many_keys_were_seen():
    clock = Clock(0.0)
    limiter = RateLimiter(clock=clock)
    for i in range(SWEEP_AT):
        limiter.retry_after(Grant(f"k{i}", "p", requests_per_second=1.0, burst=1))
    busy = Grant("busy", "p", requests_per_second=0.001, burst=1)
    clock.now = 5.0  # every bucket so far has refilled
    assert limiter.retry_after(busy) == 0
    assert len(limiter) == 1
    assert limiter.retry_after(busy) > 0  # the one in use keeps its state


def test_static_keys_grant_by_token_and_never_across_projects():
    keys = StaticKeys({"a": ["tok-a"]})
    keys.add("b", "tok-b", endpoints=["chat"], requests_per_second=1.0)
    assert keys.grant("tok-a").project == "a" and keys.verify("a", "tok-a") and not keys.verify("b", "tok-a")
    assert keys.grant("tok-b").endpoints == frozenset({"chat"}) and keys.grant("nope") is None
    keys.revoke("a", "tok-b")  # not a's key: nothing happens
    assert keys.verify("b", "tok-b")
    keys.revoke("b", "tok-b")
    assert keys.grant("tok-b") is None


def test_verify_microbenchmark_printed_not_asserted(tmp_path):
    """The per-request cost the gateway pays for a key: StoreKeys' hash and lookup, then the rate check."""
    from shipyard.gateway_wiring import StoreKeys
    from shipyard.tokens import hash_token

    keys = SQLiteApiKeys(create_engine(f"sqlite:///{tmp_path / 'db'}"))
    token = "sy_key_" + "x" * 43
    keys.add_api_key("p", "k", hash_token(token), "hint", endpoints=("chat",), rate_limit=RateLimit(1e5, 10**6),
                     expires_at=datetime.now(timezone.utc) + timedelta(days=1))
    verifier, limiter, n = StoreKeys(keys), RateLimiter(), 20_000
    started = time.perf_counter()
    for _ in range(n):
        grant = verifier.grant(token)
    grant_ns = (time.perf_counter() - started) / n * 1e9
    assert grant is not None
    started = time.perf_counter()
    for _ in range(n):
        limiter.retry_after(grant)
    rate_ns = (time.perf_counter() - started) / n * 1e9
    print(f"\nper request: grant (sha256 + lookup + expiry) {grant_ns:.0f} ns, rate check {rate_ns:.0f} ns")
