"""The gateway as the official OpenAI Python SDK sees it.

These tests use the real `openai` client against the standalone gateway on the sample manifests
(`config/samples`), whose `mock` provider answers offline with deterministic text and realistic
usage. They check what an application depends on: replies, streaming, usage in streams, model
listing, the error classes the SDK raises, and the request id header.
"""

from __future__ import annotations

import openai
import pytest
from openai import OpenAI

from conftest import Gateway, sample_gateway

MODEL = "mock-1"
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Name three primary colours."},
]


def make_client(gateway: Gateway, api_key: str | None = None) -> OpenAI:
    return OpenAI(
        base_url=f"{gateway.base_url}/v1",
        api_key=api_key if api_key is not None else gateway.token,
        max_retries=0,
        timeout=10,
    )


@pytest.fixture(scope="session")
def client(gateway: Gateway) -> OpenAI:
    return make_client(gateway)


@pytest.fixture(scope="session")
def reference_text(client: OpenAI) -> str:
    """The non-streamed reply to MESSAGES, which the streaming tests compare against."""
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    return completion.choices[0].message.content


def test_chat_completion(client: OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)

    assert completion.object == "chat.completion"
    assert completion.id
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.message.content.strip() != ""
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_chat_completion_is_deterministic(client: OpenAI, reference_text: str) -> None:
    again = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert again.choices[0].message.content == reference_text


def test_chat_completion_stream(client: OpenAI, reference_text: str) -> None:
    deltas: list[str] = []
    finish_reasons: list[str] = []
    chunks = 0
    with client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True) as stream:
        for chunk in stream:
            chunks += 1
            assert chunk.object == "chat.completion.chunk"
            for choice in chunk.choices:
                if choice.delta.content:
                    deltas.append(choice.delta.content)
                if choice.finish_reason is not None:
                    finish_reasons.append(choice.finish_reason)
            # Without stream_options.include_usage no chunk carries usage.
            assert chunk.usage is None

    # The loop ended on its own: the stream closed cleanly with `data: [DONE]`.
    assert chunks >= 2, "expected the reply in more than one chunk"
    assert "".join(deltas) == reference_text
    assert finish_reasons == ["stop"]


def test_chat_completion_stream_include_usage(client: OpenAI, reference_text: str) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert chunks, "the stream was empty"
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens > 0
    assert last.usage.completion_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    # Only the final chunk carries usage, and the text is the same as without it.
    assert all(chunk.usage is None for chunk in chunks[:-1])
    text = "".join(choice.delta.content or "" for chunk in chunks for choice in chunk.choices)
    assert text == reference_text


def test_models_list(client: OpenAI) -> None:
    models = list(client.models.list())
    ids = [model.id for model in models]
    assert any(model_id.startswith("mock-") for model_id in ids), ids
    assert all(model.object == "model" for model in models)


def test_request_id_header(client: OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=MESSAGES)
    assert raw.status_code == 200
    assert raw.headers.get("x-request-id"), dict(raw.headers)
    assert raw.parse().choices[0].message.content


@pytest.mark.parametrize(
    "bad_token",
    [
        pytest.param("uprox_live_" + "A" * 43, id="unknown-token"),
        pytest.param("sk-not-a-uprox-token", id="malformed-token"),
    ],
)
def test_bad_token_is_rejected(gateway: Gateway, bad_token: str) -> None:
    client = make_client(gateway, api_key=bad_token)
    with pytest.raises(openai.AuthenticationError) as excinfo:
        client.chat.completions.create(model=MODEL, messages=MESSAGES)

    err = excinfo.value
    assert err.status_code == 401
    body = err.response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}, body
    assert body["error"]["type"] == "authentication_error"
    assert body["error"]["message"]
    # The presented credential is never echoed back.
    assert bad_token not in err.response.text


def test_unknown_model_is_not_found(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as excinfo:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)

    err = excinfo.value
    assert err.status_code == 404
    body = err.response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}, body
    assert body["error"]["message"]


def test_a_spent_budget_refuses_with_insufficient_quota() -> None:
    """A Block Budget at its ceiling: the SDK raises APIStatusError 402 `insufficient_quota`."""
    tiny = """apiVersion: uprox.dev/v1alpha1
kind: Budget
metadata: {name: tiny, namespace: default}
spec: {services: [demo-app], dailyUSD: "0.000001"}
"""
    with sample_gateway({"zz-tiny-budget.yaml": tiny}) as started:
        client = make_client(started)
        # Nothing spent yet: served, and it costs more than the ceiling.
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
        refused = None
        for _ in range(20):
            try:
                client.chat.completions.create(model=MODEL, messages=MESSAGES)
            except openai.APIStatusError as e:
                refused = e
                break
        assert refused is not None, "the Budget never refused"
        assert refused.status_code == 402
        assert refused.code == "insufficient_quota"
        assert "default/tiny" in refused.message and "daily" in refused.message


def test_every_call_leaves_one_audit_line_on_stdout(gateway: Gateway, client: OpenAI) -> None:
    """The binary writes the audit log (docs/audit-log.md) to stdout through its writer thread."""
    import json
    import time
    import uuid

    request_id = f"req-sdk-{uuid.uuid4().hex}"
    client.chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers={"x-request-id": request_id})
    lines: list[dict] = []
    for _ in range(100):
        lines = [json.loads(l) for l in gateway.stdout.snapshot() if request_id in l]
        if lines:
            break
        time.sleep(0.05)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line["target"] == "uprox::audit" and line["status"] == 200 and line["completed"] is True
    assert line["service"] == "demo-app" and line["requested_model"] == MODEL
    assert line["prompt_tokens"] > 0 and line["user_agent"].startswith("OpenAI/Python")
    audit = [l for l in gateway.stdout.snapshot() if '"target":"uprox::audit"' in l]
    assert audit and not any(gateway.token in l for l in audit), "no token in the audit log"
