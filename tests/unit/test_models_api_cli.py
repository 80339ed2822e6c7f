"""GET /api/v1/models and `shipyard models`: the registry through the API, with the in-memory FakeTracker."""

from __future__ import annotations

import httpx
import pytest

from shipyard.api import create_app, hash_token
from shipyard.cli.main import main_exit_code
from shipyard.controllers.tracking import FakeTracker
from tests.unit.test_api import TOKEN, FakeLogs, serve

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server():
    app = create_app(None, FakeLogs(), hash_token(TOKEN), "9.9.9")  # type: ignore[arg-type]
    with serve(app) as url:
        yield app, url


@pytest.fixture
def registry(server, monkeypatch, tmp_path):
    app, url = server
    tracker = FakeTracker()
    tracker.register_model("chat", "0123456789abcdef", "lifecycle", "/finetune/merged", project="default")
    tracker.register_model("chat", None, "lifecycle", "/sweep/best", aliases=("champion",), project="default")
    app.state.models = tracker
    monkeypatch.setenv("SHIPYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHIPYARD_API_URL", url)
    monkeypatch.setenv("SHIPYARD_TOKEN", TOKEN)
    yield tracker
    app.state.models = None


def test_the_api_lists_every_version_behind_the_admin_token(server, registry):
    app, url = server
    assert httpx.get(f"{url}/api/v1/models").status_code == 401
    body = httpx.get(f"{url}/api/v1/models", headers=AUTH).json()
    assert body["items"] == [  # newest version first
        {"name": "chat", "version": 2, "aliases": ["champion"], "project": "default", "volume": "lifecycle",
         "path": "/sweep/best", "runId": None},
        {"name": "chat", "version": 1, "aliases": [], "project": "default", "volume": "lifecycle",
         "path": "/finetune/merged", "runId": "0123456789abcdef"}]


def test_the_api_says_when_tracking_is_off_or_down(server, registry):
    app, url = server
    registry.fail = True
    resp = httpx.get(f"{url}/api/v1/models", headers=AUTH)
    assert resp.status_code == 503 and "unavailable" in resp.json()["detail"]
    app.state.models = None
    resp = httpx.get(f"{url}/api/v1/models", headers=AUTH)
    assert resp.status_code == 404 and "without experiment tracking" in resp.json()["detail"]


def test_shipyard_models_prints_a_table(registry, capsys):
    assert main_exit_code(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "ALIASES", "RUN", "PATH"]
    assert lines[1].split() == ["chat", "2", "champion", "-", "lifecycle:/sweep/best"]
    assert lines[2].split() == ["chat", "1", "-", "0123456789abcdef", "lifecycle:/finetune/merged"]


def test_shipyard_models_errors_are_one_line(server, registry, capsys):
    registry.fail = True
    assert main_exit_code(["models"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "unavailable" in err
