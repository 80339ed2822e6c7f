"""The playground workload: configuration and message handling in-process, then the real apps as processes.

An OpenAI-compatible stub (FastAPI + uvicorn in a thread) records every request and answers deterministically
with "echo: <last user message>", streamed word by word, so a test proves both that a prompt travels through
the app and that the chosen model and sampling parameters reach the server. The stub can be stopped and
restarted on the same port to show the app answering "server unreachable" instead of crashing.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_for
from tests.workloads.conftest import free_port

pytest.importorskip("openai")
pytest.importorskip("fastapi")
import uvicorn  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402  (module level: FastAPI resolves annotations by name)
from fastapi.responses import JSONResponse, StreamingResponse  # noqa: E402

from shipyard.workloads.playground.client import (ERROR_PREFIX, PlaygroundError, Sampling,  # noqa: E402
                                                  Settings, build_messages, normalize_base_url, parse_stop)

MODELS = ["stub-model-a", "stub-model-b"]
SECRET = "sk-playground-test-secret"
ROOT_PATH = "/team-a/playground"
APP_DIR = Path(__file__).resolve().parents[2] / "src/shipyard/workloads/playground"


# ---- the stub server --------------------------------------------------------------------------------------
class Stub:
    """A minimal OpenAI-compatible server on 127.0.0.1 that records what it receives."""

    def __init__(self):
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.requests: list[dict] = []
        self.server = self.thread = None

    def app(self):
        app = FastAPI()

        @app.get("/v1/models")
        def models(request: Request):
            self.requests.append({"path": "/v1/models", "auth": request.headers.get("authorization")})
            return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "stub"}
                                               for m in MODELS]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            self.requests.append({"path": "/v1/chat/completions", "auth": request.headers.get("authorization"),
                                  "body": body})
            if body.get("model") not in MODELS:
                return JSONResponse({"error": {"message": f"The model `{body.get('model')}` does not exist.",
                                               "type": "NotFoundError", "code": 404}}, status_code=404)
            reply = f"echo: {body['messages'][-1]['content']}"
            base = {"id": "chatcmpl-stub", "created": 0, "model": body["model"]}
            if not body.get("stream"):
                return {**base, "object": "chat.completion", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}]}

            def events():
                for piece in re.findall(r"\S+\s*", reply):
                    chunk = {**base, "object": "chat.completion.chunk",
                             "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n"
                done = {**base, "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                yield f"data: {json.dumps(done)}\n\ndata: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")

        return app

    def start(self) -> None:
        self.server = uvicorn.Server(uvicorn.Config(self.app(), host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started or not self.thread.is_alive(), timeout=30, message="stub to start")
        assert self.server.started, "stub server failed to start"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def chats(self) -> list[dict]:
        return [r["body"] for r in self.requests if r["path"] == "/v1/chat/completions"]


@pytest.fixture(scope="module")
def stub():
    server = Stub()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ---- in-process: configuration and messages ---------------------------------------------------------------
def test_settings_from_env_flags_win_and_key_stays_hidden():
    env = {"OPENAI_BASE_URL": "http://a:1/v1", "SHIPYARD_PLAYGROUND_BASE_URL": "http://b:2", "OPENAI_API_KEY": SECRET}
    settings = Settings.from_env(env)
    assert settings.base_url == "http://b:2/v1"  # the Shipyard name wins; a bare address gets /v1
    assert settings.api_key == SECRET and SECRET not in repr(settings)
    assert Settings.from_env(env, base_url="http://c:3/prefix/v1/", model="m").base_url == "http://c:3/prefix/v1"
    assert Settings.from_env({}).base_url == "http://127.0.0.1:8000/v1" and Settings.from_env({}).api_key == ""
    with pytest.raises(PlaygroundError, match="not an http"):
        normalize_base_url("localhost:8000")


def test_sampling_from_widgets_and_stop_sequences():
    sampling = Sampling.from_ui(temperature=0, top_p="0.5", max_tokens=16.0, seed=7.0, stop="END\n\\n\\n\n")
    assert sampling.request_kwargs() == {"temperature": 0.0, "top_p": 0.5, "max_tokens": 16, "seed": 7,
                                        "stop": ["END", "\n\n"]}
    assert Sampling.from_ui(None, None, 0, "", "").request_kwargs() == {}  # unset: the server's defaults
    assert parse_stop(["a\\n", "b"]) == ("a\\n", "b")  # a list from a script is taken literally


def test_build_messages_accepts_gradio6_openai_and_pair_histories():
    gradio6 = [{"role": "user", "content": [{"type": "text", "text": "hi"}], "metadata": None, "options": None},
               {"role": "assistant", "content": [{"type": "text", "text": "hello"}], "metadata": None},
               {"role": "user", "content": [{"type": "text", "text": "q"}]},
               {"role": "assistant", "content": [{"type": "text", "text": f"{ERROR_PREFIX}cannot reach"}]},
               {"role": "user", "content": [{"file": {"path": "/tmp/x.png"}, "type": "file"}]}]
    assert build_messages("sys", gradio6, "next") == [
        {"role": "system", "content": "sys"}, {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"}, {"role": "user", "content": "q"},
        {"role": "user", "content": "next"}]
    assert build_messages("", [["u", "a"], ("u2", f"partial\n\n{ERROR_PREFIX}lost")], "m") == [
        {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"},
        {"role": "user", "content": "u2"}, {"role": "assistant", "content": "partial"},
        {"role": "user", "content": "m"}]


def test_ui_handlers_report_an_unreachable_server_in_the_chat():
    pytest.importorskip("gradio")
    from shipyard.workloads.playground.gradio_app import make_handlers

    handlers = make_handlers(Settings(base_url=f"http://127.0.0.1:{free_port()}/v1"))  # nothing listens there
    replies = list(handlers["respond"]("hi", [], "m", "", 0.7, 1.0, 32, None, ""))
    assert len(replies) == 1 and replies[0].startswith(ERROR_PREFIX) and "cannot reach" in replies[0]
    dropdown, note = handlers["refresh_models"]("typed-model")
    assert dropdown.value == "typed-model" and "cannot reach" in note


@pytest.mark.slow
def test_ui_handlers_fill_models_from_the_server(stub):
    pytest.importorskip("gradio")
    from shipyard.workloads.playground.gradio_app import make_handlers

    handlers = make_handlers(Settings(base_url=stub.base_url, model="stub-model-b"))
    dropdown, note = handlers["refresh_models"](None)
    assert [c[0] for c in dropdown.choices] == MODELS and dropdown.value == "stub-model-b" and "2 model" in note
    replies = list(handlers["respond"]("one two three", [], "stub-model-a", "", 0.7, 1.0, 32, None, ""))
    assert replies[-1] == "echo: one two three" and len(replies) == 4  # streamed: one update per word


# ---- the Gradio app as a process --------------------------------------------------------------------------
def wait_http(url: str, proc, log: Path, timeout: float = 90) -> None:
    """Poll until url answers 200; fail at once, with the log, if the process died."""
    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"{log.name} exited {proc.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.TransportError:
            return False
    wait_for(ready, timeout=timeout, interval=0.1, message=f"{url} to answer 200")


def start_playground(launcher, name: str, base_url: str, *args: str, **env: str):
    port = free_port()
    proc, log = launcher.start(name, [sys.executable, "-m", "shipyard.workloads.playground", "--host", "127.0.0.1",
                                      "--port", str(port), *args],
                               **{"OPENAI_BASE_URL": base_url, "GRADIO_ROOT_PATH": "", **env})
    url = f"http://127.0.0.1:{port}"
    return proc, log, url


@pytest.fixture(scope="module")
def playground(stub, module_launcher):
    # Served under a path prefix, as behind the gateway (/{project}/{name}/), which need not strip it.
    proc, log, url = start_playground(module_launcher, "playground", stub.base_url, OPENAI_API_KEY=SECRET,
                                      GRADIO_ROOT_PATH=ROOT_PATH)
    wait_http(f"{url}{ROOT_PATH}/", proc, log)
    from gradio_client import Client

    return proc, log, Client(f"{url}{ROOT_PATH}/", verbose=False)


@pytest.mark.slow
def test_chat_endpoint_answers_through_the_app_with_the_chosen_model_and_params(stub, playground):
    proc, log, client = playground
    history = [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "noted"}]
    reply = client.predict(message="hello playground", history=history, model="stub-model-b", temperature=0.3,
                           top_p=0.9, max_tokens=17, seed=42, system_prompt="be brief", stop=["END"],
                           api_name="/chat")
    assert reply == "echo: hello playground"
    request = stub.chats()[-1]
    assert request["messages"] == [{"role": "system", "content": "be brief"}, *history,
                                   {"role": "user", "content": "hello playground"}]
    assert {k: request[k] for k in ("model", "temperature", "top_p", "max_tokens", "seed", "stop", "stream")} == {
        "model": "stub-model-b", "temperature": 0.3, "top_p": 0.9, "max_tokens": 17, "seed": 42, "stop": ["END"],
        "stream": True}
    assert stub.requests[-1]["auth"] == f"Bearer {SECRET}"  # the key reaches the server…
    assert SECRET not in log.read_text(errors="replace")  # …and is never printed

    # Defaults: an empty model means the server's first; a bare message needs nothing else.
    assert client.predict("just this", api_name="/chat") == "echo: just this"
    assert stub.chats()[-1]["model"] == MODELS[0]


@pytest.mark.slow
def test_models_come_from_the_server_and_the_chat_box_streams(stub, playground):
    _, _, client = playground
    assert client.predict(api_name="/models") == MODELS
    job = client.submit("stream these four words", "stub-model-a", "", 0.7, 1.0, 64, None, "", api_name="/chat_ui")
    final = job.result(timeout=60)
    assert final == "echo: stream these four words"
    assert len(job.outputs()) > 1 and job.outputs()[-1] == final  # partial replies arrived before the end
    assert stub.chats()[-1]["model"] == "stub-model-a"


@pytest.mark.slow
def test_server_errors_become_chat_messages_and_the_app_survives_the_server_going_down(stub, playground):
    from gradio_client.exceptions import AppError

    proc, log, client = playground
    reply = client.predict("hi", "no-such-model", "", 0.7, 1.0, 64, None, "", api_name="/chat_ui")
    assert reply.startswith(ERROR_PREFIX) and "404" in reply and "does not exist" in reply

    stub.stop()
    try:
        reply = client.predict("hi", "stub-model-a", "", 0.7, 1.0, 64, None, "", api_name="/chat_ui")
        assert reply.startswith(ERROR_PREFIX) and f"cannot reach the server at {stub.base_url}" in reply
        with pytest.raises(AppError, match="cannot reach the server"):
            client.predict("hi", model="stub-model-a", api_name="/chat")
        with pytest.raises(AppError, match="cannot reach the server"):
            client.predict(api_name="/models")
        assert proc.poll() is None
    finally:
        stub.start()
    assert client.predict("back again", model="stub-model-a", api_name="/chat") == "echo: back again"
    assert "Traceback" not in log.read_text(errors="replace")


# ---- the Streamlit variant --------------------------------------------------------------------------------
@pytest.mark.slow
def test_streamlit_variant_serves_its_page(stub, launcher):
    pytest.importorskip("streamlit")
    proc, log, url = start_playground(launcher, "playground-streamlit", stub.base_url, "--ui", "streamlit",
                                      OPENAI_API_KEY=SECRET)
    wait_http(f"{url}/_stcore/health", proc, log)
    page = httpx.get(f"{url}/", timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()
    assert SECRET not in log.read_text(errors="replace")


@pytest.mark.slow
def test_streamlit_script_lists_models_and_streams_a_reply(stub, monkeypatch):
    """The script itself, run by Streamlit's AppTest (a simulated browser session, in-process)."""
    pytest.importorskip("streamlit")
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
    monkeypatch.delenv("SHIPYARD_PLAYGROUND_BASE_URL", raising=False)
    monkeypatch.setenv("SHIPYARD_PLAYGROUND_MODEL", "stub-model-b")
    at = AppTest.from_file(str(APP_DIR / "streamlit_app.py"), default_timeout=60).run()
    assert not at.exception and not at.error
    assert at.sidebar.selectbox[0].options == MODELS and at.sidebar.selectbox[0].value == "stub-model-b"

    at.sidebar.slider[0].set_value(0.25)  # temperature
    at.sidebar.number_input[1].set_value(5)  # seed
    at.sidebar.text_area[1].input("STOP")
    at.chat_input[0].set_value("hi from streamlit").run()
    assert not at.exception and not at.error
    assert at.chat_message[-1].markdown[0].value == "echo: hi from streamlit"
    request = stub.chats()[-1]
    assert (request["model"], request["temperature"], request["seed"], request["stop"], request["stream"]) == (
        "stub-model-b", 0.25, 5, ["STOP"], True)

    stub.stop()
    try:
        at.sidebar.button[0].click().run()  # "Refresh models" with the server down
        assert not at.exception and "cannot reach the server" in at.sidebar.error[0].value
        assert at.sidebar.text_input[0].value == "stub-model-b"  # nothing listed: a typed model name instead
        at.chat_input[0].set_value("anyone there?").run()
        assert not at.exception and "cannot reach the server" in at.chat_message[-1].error[0].value
    finally:
        stub.start()


# ---- against the real serve workload ----------------------------------------------------------------------
@pytest.mark.slow
def test_playground_chats_with_the_real_serve_workload(tmp_path, launcher):
    pytest.importorskip("transformers")
    from gradio_client import Client

    from tests.workloads.serve_fixtures import build_tiny_model

    # The playground starts first and needs no server to come up (its models list just says unreachable), so
    # its start-up overlaps building the tiny model and serve loading it.
    serve_port = free_port()
    proc, log, url = start_playground(launcher, "playground-serve", f"http://127.0.0.1:{serve_port}")  # gets /v1
    model = build_tiny_model(tmp_path / "tiny-gpt")
    serve, serve_log = launcher.start("serve", [
        sys.executable, "-m", "shipyard.workloads.serve", str(model), "--host", "127.0.0.1", "--port",
        str(serve_port), "--served-model-name", "tiny", "--max-model-len", "160", "--uvicorn-log-level", "warning"],
        SHIPYARD_API_KEY="", VLLM_API_KEY="")  # empty: no auth, whatever the developer's shell exports
    wait_http(f"http://127.0.0.1:{serve_port}/health", serve, serve_log)
    wait_http(f"{url}/", proc, log)
    client = Client(url, verbose=False)
    assert client.predict(api_name="/models") == ["tiny"]
    greedy = {"model": "tiny", "temperature": 0.0, "max_tokens": 8, "system_prompt": "be terse", "api_name": "/chat"}
    first = client.predict("def foo(x):", **greedy)
    assert isinstance(first, str) and client.predict("def foo(x):", **greedy) == first  # greedy: repeatable
    streamed = client.predict("def foo(x):", "tiny", "be terse", 0.0, 1.0, 8, None, "", api_name="/chat_ui")
    assert streamed == first
