"""The gateway's Responses API (`POST /v1/responses`) as the official OpenAI Python SDK sees it.

A gateway of its own (the real binary, standalone) serves a config written here: a `mock` Provider
for `mock-*` (which answers the Responses API itself, offline) and an `anthropic` Provider for
`claude-*` pointing at a fake Anthropic on loopback (`fake_anthropic.py`), to which the gateway
translates. The SDK parses every object and stream event, so these tests check the wire format as
clients depend on it: `response` objects, `output_text`, streamed deltas, the final usage, the
SDK's own stream accumulator, errors with their `param`, and the Azure client's URLs.
"""

from __future__ import annotations

import json
from typing import Iterator

import openai
import pydantic
import pytest
from openai import AzureOpenAI, OpenAI

from conftest import Gateway, anthropic_gateway_on
from fake_anthropic import FakeAnthropic, count_tokens

MOCK = "mock-1"
CLAUDE = "claude-sonnet-test"
PROVIDER_KEY = "sk-ant-fake-provider-key-for-responses"
INPUT = "Name three primary colours."
INSTRUCTIONS = "You are a terse assistant."


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic(PROVIDER_KEY).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def responses_gateway(fake: FakeAnthropic) -> Iterator[Gateway]:
    with anthropic_gateway_on(fake.base_url, PROVIDER_KEY, "responses-sdk") as started:
        yield started


def make_client(gateway: Gateway, api_key: str | None = None) -> OpenAI:
    return OpenAI(
        base_url=f"{gateway.base_url}/v1",
        api_key=api_key if api_key is not None else gateway.token,
        max_retries=0,
        timeout=10,
    )


@pytest.fixture(scope="module")
def client(responses_gateway: Gateway) -> OpenAI:
    return make_client(responses_gateway)


def assert_usage(usage) -> None:
    assert usage is not None
    assert usage.input_tokens > 0
    assert usage.output_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0


# The mock provider.


@pytest.fixture(scope="module")
def reference_text(client: OpenAI) -> str:
    return client.responses.create(model=MOCK, input=INPUT, instructions=INSTRUCTIONS).output_text


def test_create_with_the_mock(client: OpenAI, reference_text: str) -> None:
    response = client.responses.create(model=MOCK, input=INPUT, instructions=INSTRUCTIONS)

    assert response.object == "response"
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.model == MOCK
    assert response.instructions == INSTRUCTIONS
    assert response.error is None and response.incomplete_details is None
    (message,) = response.output
    assert message.type == "message" and message.role == "assistant" and message.status == "completed"
    assert message.content[0].type == "output_text"
    assert INPUT in response.output_text
    assert response.output_text == reference_text, "the mock is deterministic"
    assert_usage(response.usage)
    assert response.usage.output_tokens == len(response.output_text.split())


def test_stream_with_the_mock(client: OpenAI, reference_text: str) -> None:
    events = list(client.responses.create(model=MOCK, input=INPUT, instructions=INSTRUCTIONS, stream=True))

    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert len(deltas) > 1, "the reply arrives in several deltas"
    assert "".join(deltas) == reference_text
    completed = events[-1]
    assert completed.response.status == "completed"
    assert completed.response.output_text == reference_text
    assert_usage(completed.response.usage)
    assert len({event.response.id for event in events if hasattr(event, "response")}) == 1


def test_stream_helper_with_the_mock(client: OpenAI, reference_text: str) -> None:
    with client.responses.stream(model=MOCK, input=INPUT, instructions=INSTRUCTIONS) as stream:
        text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        final = stream.get_final_response()

    assert text == reference_text
    assert final.output_text == reference_text
    assert_usage(final.usage)


def test_max_output_tokens_makes_an_incomplete_response(client: OpenAI) -> None:
    response = client.responses.create(model=MOCK, input=INPUT, max_output_tokens=16)

    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 16


def test_input_items_with_the_mock(client: OpenAI) -> None:
    response = client.responses.create(
        model=MOCK,
        input=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "input_text", "text": "First question"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "First answer"}]},
            {"role": "user", "content": "Second question"},
        ],
    )
    assert "Second question" in response.output_text


def test_the_azure_client_reaches_the_responses_api(responses_gateway: Gateway, reference_text: str) -> None:
    azure = AzureOpenAI(
        azure_endpoint=responses_gateway.base_url,
        api_key=responses_gateway.token,
        api_version="2025-03-01-preview",
        max_retries=0,
        timeout=10,
    )
    response = azure.responses.create(model=MOCK, input=INPUT, instructions=INSTRUCTIONS)
    assert response.output_text == reference_text

    v1 = OpenAI(base_url=f"{responses_gateway.base_url}/openai/v1", api_key=responses_gateway.token, max_retries=0)
    assert v1.responses.create(model=MOCK, input=INPUT, instructions=INSTRUCTIONS).output_text == reference_text


def test_a_bad_token_is_an_authentication_error(responses_gateway: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        make_client(responses_gateway, api_key="uprox_live_" + "A" * 43).responses.create(model=MOCK, input=INPUT)
    assert info.value.status_code == 401


def test_stored_responses_need_a_stateful_provider(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.retrieve("resp_123")
    assert info.value.body["param"] == "response_id"


# An Anthropic provider, translated.

EXPECTED = f"Echo: {INPUT}"


def test_create_through_anthropic(client: OpenAI, fake: FakeAnthropic, responses_gateway: Gateway) -> None:
    response = client.responses.create(model=CLAUDE, input=INPUT, instructions=INSTRUCTIONS, max_output_tokens=64)

    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == CLAUDE
    assert response.output_text == EXPECTED
    assert response.usage.input_tokens == count_tokens({"system": INSTRUCTIONS, "messages": [{"content": INPUT}]})
    assert response.usage.output_tokens == len(EXPECTED.split())
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens

    sent = fake.requests()[-1]
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == PROVIDER_KEY
    assert "authorization" not in sent.headers
    body = json.loads(sent.body)
    assert body["system"] == INSTRUCTIONS
    assert body["max_tokens"] == 64
    assert body["messages"] == [{"role": "user", "content": INPUT}]
    assert all(responses_gateway.token not in v for v in sent.headers.values())


def test_stream_through_anthropic(client: OpenAI) -> None:
    events = list(client.responses.create(model=CLAUDE, input=INPUT, stream=True))

    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    deltas = [event.delta for event in events if event.type == "response.output_text.delta"]
    assert len(deltas) > 1
    assert "".join(deltas) == EXPECTED
    final = events[-1].response
    assert final.output_text == EXPECTED
    assert final.usage.output_tokens == len(EXPECTED.split())
    assert final.usage.input_tokens == count_tokens({"messages": [{"content": INPUT}]})


def test_stream_helper_through_anthropic(client: OpenAI) -> None:
    with client.responses.stream(model=CLAUDE, input=INPUT) as stream:
        text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text == EXPECTED
    assert final.output_text == EXPECTED
    assert final.status == "completed"


def test_function_call_round_trip_through_anthropic(client: OpenAI, fake: FakeAnthropic) -> None:
    response = client.responses.create(
        model=CLAUDE,
        tools=[
            {
                "type": "function",
                "name": "get_weather",
                "description": "Current weather.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                "strict": True,
            }
        ],
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
        ],
    )
    assert response.status == "completed"
    assert response.tools[0].name == "get_weather"
    body = json.loads(fake.requests()[-1].body)
    assert body["tools"][0]["name"] == "get_weather"
    assert body["tools"][0]["input_schema"]["required"] == ["city"]
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}],
    }
    assert body["messages"][2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "18C"}],
    }


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        pytest.param({"previous_response_id": "resp_1"}, "previous_response_id", id="previous_response_id"),
        pytest.param({"tools": [{"type": "web_search"}]}, "tools", id="built-in-tool"),
        pytest.param({"text": {"format": {"type": "json_object"}}}, "text.format", id="json_object"),
        pytest.param({"reasoning": {"effort": "high"}}, "reasoning", id="reasoning"),
    ],
)
def test_what_anthropic_cannot_do_is_a_bad_request_naming_the_parameter(
    client: OpenAI, fake: FakeAnthropic, extra: dict, param: str
) -> None:
    before = len(fake.requests())
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=CLAUDE, input=INPUT, **extra)
    assert info.value.status_code == 400
    assert info.value.body["param"] == param
    assert info.value.body["type"] == "invalid_request_error"
    assert len(fake.requests()) == before, "refused before any upstream call"


class Colours(pydantic.BaseModel):
    answer: str
    count: int
    primary: bool


def test_structured_output_through_anthropic(client: OpenAI, fake: FakeAnthropic) -> None:
    """The SDK's parse helpers send a JSON schema; Anthropic gets it as `output_config` and the
    JSON text it answers is parsed by the SDK, for the Responses API and chat completions."""
    response = client.responses.parse(model=CLAUDE, input=INPUT, text_format=Colours)
    assert response.output_parsed == Colours(answer=f"Echo: {INPUT}", count=42, primary=True)
    sent = json.loads(fake.requests()[-1].body)
    schema = sent["output_config"]["format"]
    assert schema["type"] == "json_schema"
    assert schema["schema"]["required"] == ["answer", "count", "primary"]
    assert "text" not in sent

    completion = client.chat.completions.parse(
        model=CLAUDE, messages=[{"role": "user", "content": INPUT}], response_format=Colours
    )
    assert completion.choices[0].message.parsed == Colours(answer=f"Echo: {INPUT}", count=42, primary=True)
    sent = json.loads(fake.requests()[-1].body)
    assert sent["output_config"]["format"]["schema"]["properties"]["count"]["type"] == "integer"
    assert "response_format" not in sent
