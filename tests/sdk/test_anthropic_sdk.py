"""The gateway's Anthropic Messages API as the official `anthropic` Python SDK sees it.

A gateway of its own (the real binary, standalone) serves a config written here: an `anthropic`
Provider for `claude-*` pointing at a fake Anthropic on loopback (`fake_anthropic.py`), a `mock`
Provider for `mock-*`, a Service and a MachineToken whose token Secret is supplied up front. The
SDK authenticates with that uprox token (`x-api-key`); the fake only accepts the provider key.
"""

from __future__ import annotations

from typing import Iterator

import anthropic
import pytest
from anthropic import Anthropic

from conftest import Gateway, anthropic_gateway_on
from fake_anthropic import RATE_LIMITED_MODEL, FakeAnthropic, count_tokens

MODEL = "claude-sonnet-test"
PROVIDER_KEY = "sk-ant-fake-provider-key-0123456789"
MESSAGES = [{"role": "user", "content": "Name three primary colours."}]
EXPECTED = "Echo: Name three primary colours."


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic(PROVIDER_KEY).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def anthropic_gateway(fake: FakeAnthropic) -> Iterator[Gateway]:
    with anthropic_gateway_on(fake.base_url, PROVIDER_KEY, "anthropic-sdk") as started:
        yield started


def make_client(gateway: Gateway, api_key: str | None = None) -> Anthropic:
    return Anthropic(
        base_url=gateway.base_url,
        api_key=api_key if api_key is not None else gateway.token,
        max_retries=0,
        timeout=10,
    )


@pytest.fixture(scope="module")
def client(anthropic_gateway: Gateway) -> Anthropic:
    return make_client(anthropic_gateway)


def assert_no_client_token_upstream(fake: FakeAnthropic, token: str) -> None:
    for seen in fake.requests():
        assert seen.headers.get("x-api-key") == PROVIDER_KEY
        assert "authorization" not in seen.headers
        assert all(token not in value for value in seen.headers.values()), seen.headers


def test_messages_create(client: Anthropic, fake: FakeAnthropic, anthropic_gateway: Gateway) -> None:
    message = client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)

    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == MODEL
    assert message.id.startswith("msg_")
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == EXPECTED
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens == count_tokens({"messages": MESSAGES})
    assert message.usage.output_tokens == len(EXPECTED.split())
    assert message._request_id and message._request_id.startswith("req_"), "Anthropic's request-id is relayed"

    sent = fake.requests()[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["anthropic-version"] == client.default_headers["anthropic-version"], "the SDK's version wins"
    assert_no_client_token_upstream(fake, anthropic_gateway.token)


def test_messages_stream_helper(client: Anthropic, fake: FakeAnthropic, anthropic_gateway: Gateway) -> None:
    with client.messages.stream(model=MODEL, max_tokens=64, messages=MESSAGES) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()

    assert text == EXPECTED
    assert final.content[0].text == EXPECTED
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == len(EXPECTED.split())
    assert_no_client_token_upstream(fake, anthropic_gateway.token)


def test_messages_create_stream_true(client: Anthropic) -> None:
    events = list(client.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES, stream=True))

    kinds = [event.type for event in events]
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert "content_block_delta" in kinds
    deltas = [e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"]
    assert len(deltas) > 1, "the reply arrives in several deltas"
    assert "".join(deltas) == EXPECTED
    (message_delta,) = [e for e in events if e.type == "message_delta"]
    assert message_delta.delta.stop_reason == "end_turn"


def test_count_tokens(client: Anthropic, fake: FakeAnthropic) -> None:
    result = client.messages.count_tokens(model=MODEL, messages=MESSAGES)

    assert result.input_tokens == count_tokens({"messages": MESSAGES})
    assert fake.requests()[-1].path == "/v1/messages/count_tokens"


def test_bad_token_raises_authentication_error(anthropic_gateway: Gateway) -> None:
    bad = make_client(anthropic_gateway, api_key="uprox_live_" + "A" * 43)
    with pytest.raises(anthropic.AuthenticationError) as info:
        bad.messages.create(model=MODEL, max_tokens=64, messages=MESSAGES)

    assert info.value.status_code == 401
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == "authentication_error"
    assert info.value.response.headers.get("x-request-id")


def test_upstream_rate_limit_raises_rate_limit_error(client: Anthropic) -> None:
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model=RATE_LIMITED_MODEL, max_tokens=64, messages=MESSAGES)

    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.body["error"]["type"] == "rate_limit_error"


def test_model_of_another_provider_type_raises_bad_request(client: Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model="mock-1", max_tokens=64, messages=MESSAGES)

    assert info.value.status_code == 400
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert "/v1/chat/completions" in info.value.body["error"]["message"]


def test_unknown_model_raises_not_found(client: Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(model="no-such-model", max_tokens=64, messages=MESSAGES)

    assert info.value.body["error"]["type"] == "not_found_error"
