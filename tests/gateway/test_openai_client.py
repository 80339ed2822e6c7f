"""The official `openai` client through the gateway, against a fake OpenAI-compatible upstream."""

from __future__ import annotations

import openai
import pytest

from tests.gateway.conftest import KEY, route
from tests.gateway.upstreams import FakeOpenAI


@pytest.fixture
def fake(gateway, start_upstream):
    upstream = start_upstream("llm-0", FakeOpenAI())
    gateway.table.set_route(route("llm", upstream.upstream))
    return upstream.app


def _client(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/proj/llm/v1", api_key=key, max_retries=0, timeout=30)


def test_chat_completion_and_streaming_with_a_project_key(gateway, fake):
    client = _client(gateway, KEY)
    assert [m.id for m in client.models.list()] == ["tiny"]
    reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi there"}])
    assert reply.choices[0].message.content == "echo: hi there"
    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "a b c"}],
                                            stream=True)
    pieces = [chunk.choices[0].delta.content for chunk in stream if chunk.choices]
    assert "".join(pieces).strip() == "echo: a b c" and len(pieces) == 4
    assert fake.authorization_seen == [None, None, None]  # the key stopped at the gateway


def test_wrong_key_is_an_authentication_error(gateway, fake):
    with pytest.raises(openai.AuthenticationError) as error:
        _client(gateway, "sk-revoked").chat.completions.create(model="tiny", messages=[{"role": "user",
                                                                                       "content": "hi"}])
    assert error.value.status_code == 401 and error.value.code == "invalid_api_key"
    assert fake.authorization_seen == []
