"""Kind Secret (issue 14): validation, values encrypted at rest, never in an API answer, compiled for pods."""

from __future__ import annotations

import json
import os
import stat

import httpx
import pytest
from pydantic import ValidationError

from shipyard.cli import printers
from shipyard.controllers.manager import ObjectKey
from shipyard.controllers.secret import SecretController
from shipyard.controllers.trainingjob.run_tracking import run_params
from shipyard.resources import Secret, TrainingJob, validate_document
from shipyard.resources.documents import Document, ManifestError
from shipyard.runtime.fake import FakeRuntime
from shipyard.runtime.pods import secret_value
from shipyard.store.secret_values import SecretCipher
from shipyard.store.sqlite import SQLiteStore
from tests.unit.test_api import API, TOKEN, api, app, items, server, store  # noqa: F401

VALUE = "s3cr3t-Value-that-must-never-leak"
SECRETS = f"{API}/namespaces/default/secrets"


def secret(name: str = "db", **data: str) -> dict:
    return {"apiVersion": "shipyard.dev/v1alpha1", "kind": "Secret", "metadata": {"name": name},
            "spec": {"stringData": data or {"password": VALUE, "user": "admin"}}}


def manifest_error(body: dict) -> ManifestError:
    with pytest.raises(ManifestError) as err:
        validate_document(Document("s.yaml", 1, body))
    return err.value


# --- the kind ----------------------------------------------------------------------------------------------

def test_wire_form_has_keys_and_sizes_never_values():
    s = Secret.model_validate(secret())
    wire = s.to_wire()
    assert "stringData" not in wire["spec"] and wire["spec"]["type"] == "Opaque"
    assert wire["status"]["keys"] == {"password": len(VALUE), "user": 5}
    assert VALUE not in json.dumps(wire)
    assert s.spec.string_data["password"] == VALUE  # the model itself (controllers) has it


@pytest.mark.parametrize("data, field, words", [
    ({"bad key": "x"}, "spec.stringData", "'bad key' must be"),
    ({"..": "x"}, "spec.stringData", "not '.' or '..'"),
    ({}, "spec.stringData", "at least one key"),
    ({"big": "x" * (1024 * 1024 + 1)}, "spec.stringData", "at most 1048576"),
])
def test_invalid_secrets_are_one_line_errors_naming_the_field(data, field, words):
    body = secret()
    body["spec"]["stringData"] = data
    err = manifest_error(body)
    assert err.path.startswith(field) and words in str(err) and "\n" not in str(err)


def test_a_non_string_value_is_refused_without_echoing_it():
    body = secret()
    body["spec"]["stringData"] = {"pin": 987654321}
    err = manifest_error(body)
    assert "must be a string" in str(err) and "987654321" not in str(err)


def test_env_takes_exactly_one_of_value_and_value_from():
    ref = {"secretKeyRef": {"name": "db", "key": "password"}}
    job = TrainingJob.model_validate({"metadata": {"name": "j"}, "spec": {"command": ["x"], "env": [
        {"name": "A"}, {"name": "P", "valueFrom": ref}]}})
    assert job.spec.env[0].value == "" and job.spec.env[1].value is None
    err = manifest_error({"apiVersion": "shipyard.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "j"},
                          "spec": {"command": ["x"], "env": [{"name": "P", "value": "v", "valueFrom": ref}]}})
    assert "either value or valueFrom" in str(err) and err.path.startswith("spec.env[0]")
    err = manifest_error({"apiVersion": "shipyard.dev/v1alpha1", "kind": "TrainingJob", "metadata": {"name": "j"},
                          "spec": {"command": ["x"], "env": [{"name": "P", "valueFrom": {"secretKeyRef": {
                              "name": "Bad_Name", "key": "k"}}}]}})
    assert "secretKeyRef.name" in err.path


# --- the store -----------------------------------------------------------------------------------------------

def _db_bytes(directory) -> bytes:
    return b"".join(p.read_bytes() for p in directory.iterdir() if p.name.startswith("shipyard.db"))


def test_values_are_encrypted_at_rest_and_decrypted_for_controllers(tmp_path):
    st = SQLiteStore(tmp_path / "shipyard.db")
    events = []
    st.subscribe(events.append)
    st.apply([Secret.model_validate(secret())])
    got = st.get("Secret", "default", "db")
    assert got.spec.string_data == {"password": VALUE, "user": "admin"}
    assert st.list("Secret")[0].spec.string_data["password"] == VALUE
    got.status.phase = "Ready"
    st.update_status(got)  # a status write keeps the values
    assert st.get("Secret", "default", "db").spec.string_data["password"] == VALUE
    assert st.apply([Secret.model_validate(secret())])[0].action == "unchanged"
    # Nothing readable in any of the database's files (WAL included), nor in a list page or a watch event.
    assert VALUE.encode() not in _db_bytes(tmp_path)
    assert VALUE not in json.dumps(st.list_page("Secret").items)
    assert events and all(VALUE not in json.dumps(e.object) for e in events)
    key = tmp_path / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    st.close()
    # A new store over the same files (a daemon restart) reads them back; a different key does not.
    again = SQLiteStore(tmp_path / "shipyard.db")
    assert again.get("Secret", "default", "db").spec.string_data["password"] == VALUE
    again.delete("Secret", "default", "db")
    again.close()
    assert VALUE.encode() not in _db_bytes(tmp_path)


def test_a_key_file_of_the_wrong_size_is_refused(tmp_path):
    (tmp_path / "secret.key").write_bytes(b"x" * 33)
    with pytest.raises(ValueError, match="holds 33 bytes, expected 32"):
        SecretCipher.beside(tmp_path / "shipyard.db")


def test_ciphertext_is_bound_to_its_object():
    cipher = SecretCipher(os.urandom(32))
    sealed = cipher.seal("uid-1", {"k": VALUE})
    assert cipher.open("uid-1", sealed) == {"k": VALUE}
    with pytest.raises(ValueError, match="do not decrypt") as err:
        cipher.open("uid-2", sealed)
    assert VALUE not in str(err.value)
    with pytest.raises(ValueError):
        SecretCipher(os.urandom(32)).open("uid-1", sealed)


# --- the API -------------------------------------------------------------------------------------------------

def test_no_api_answer_holds_a_value(api, store):  # noqa: F811
    answers = []
    dry = api.post(f"{API}/apply", json={**items(secret()), "dryRun": True})
    created = api.post(f"{API}/apply", json=items(secret()))
    assert created.status_code == 200 and created.json()["items"][0]["action"] == "created"
    got = api.get(f"{SECRETS}/db")
    assert got.json()["status"]["keys"] == {"password": len(VALUE), "user": 5}
    answers += [dry, created, got, api.get(SECRETS), api.get(f"{API}/secrets"), api.get(f"{SECRETS}/db/events"),
                api.post(f"{API}/apply", json=items(secret()))]
    with api.stream("GET", SECRETS, params={"watch": "true", "resourceVersion": 0, "timeoutSeconds": 1},
                    timeout=httpx.Timeout(10)) as resp:
        watched = resp.read().decode()
    assert '"ADDED"' in watched
    changed = secret(password="another-" + VALUE)
    answers.append(api.post(f"{API}/apply", json=items(changed)))
    assert store.get("Secret", "default", "db").spec.string_data["password"] == "another-" + VALUE
    answers.append(api.delete(f"{SECRETS}/db"))
    for answer in answers:
        assert answer.status_code < 300, answer.text
        assert VALUE not in answer.text
    assert VALUE not in watched


def test_describe_and_get_show_keys_and_sizes_only():
    wire = Secret.model_validate(secret()).to_wire()
    text = printers.describe(wire, [])
    assert f"password:  {len(VALUE)} bytes" in text and VALUE not in text
    header, row = printers.table(printers.columns_for("Secret", False, False), [wire])[0]
    assert header.split() == ["NAME", "TYPE", "DATA", "AGE"] and row.split()[:3] == ["db", "Opaque", "2"]


# --- the controller ------------------------------------------------------------------------------------------

def test_controller_applies_the_native_secret_and_deletes_it_with_the_resource(tmp_path):
    st, runtime = SQLiteStore(":memory:"), FakeRuntime()
    events = []
    st.subscribe(events.append)
    st.apply([Secret.model_validate(secret())])
    ctrl = SecretController(st, runtime)
    ctrl.reconcile(ObjectKey("Secret", "default", "db"))
    native = runtime.get("Secret", "default", "db")
    assert secret_value(native, "password") == VALUE
    stored = st.get("Secret", "default", "db")
    assert stored.status.phase == "Ready" and stored.status.keys == {"password": len(VALUE), "user": 5}
    recorded = st.list_events("Secret", "default", "db")
    assert recorded and all(VALUE not in e.message for e in recorded)
    st.delete("Secret", "default", "db")
    ctrl.reconcile(ObjectKey("Secret", "default", "db"))
    assert runtime.get("Secret", "default", "db") is None and st.get("Secret", "default", "db") is None
    assert all(VALUE not in json.dumps(e.object) for e in events)


def test_controller_never_takes_over_a_native_secret_it_does_not_own():
    st, runtime = SQLiteStore(":memory:"), FakeRuntime()
    foreign = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "stringData": {"token": "theirs"},
               "metadata": {"name": "ws-token", "namespace": "default", "ownerReferences": [
                   {"apiVersion": "shipyard.dev/v1alpha1", "kind": "Workspace", "name": "ws", "uid": "w",
                    "controller": True}]}}
    runtime.apply(foreign)
    st.apply([Secret.model_validate(secret("ws-token"))])
    SecretController(st, runtime).reconcile(ObjectKey("Secret", "default", "ws-token"))
    assert secret_value(runtime.get("Secret", "default", "ws-token"), "token") == "theirs"
    stored = st.get("Secret", "default", "ws-token")
    assert stored.status.phase == "Failed" and stored.status.condition("Ready").reason == "NameConflict"


def test_tracked_parameters_never_hold_env_values():
    job = TrainingJob.model_validate({"metadata": {"name": "j"}, "spec": {"command": ["python", "t.py"], "env": [
        {"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}, {"name": "X", "value": VALUE}]}})
    assert VALUE not in json.dumps(run_params(job))
