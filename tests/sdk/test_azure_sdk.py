"""The gateway as the official OpenAI SDK's `AzureOpenAI` client sees it.

Azure clients address a deployment in the URL (`/openai/deployments/{deployment}/...`), send
`api-version` in the query and the key in an `api-key` header. Against the samples the
deployment name is a model of the offline `mock` provider.
"""

from __future__ import annotations

import openai
import pytest
from openai import AzureOpenAI

from conftest import Gateway

DEPLOYMENT = "mock-1"
MESSAGES = [{"role": "user", "content": "Name three primary colours."}]


def make_client(gateway: Gateway, api_key: str | None = None) -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=gateway.base_url,
        api_key=api_key if api_key is not None else gateway.token,
        api_version="2024-10-21",
        max_retries=0,
        timeout=10,
    )


def test_chat_completion_on_a_deployment(gateway: Gateway) -> None:
    completion = make_client(gateway).chat.completions.create(model=DEPLOYMENT, messages=MESSAGES)
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_streaming_on_a_deployment_matches_the_plain_answer(gateway: Gateway) -> None:
    client = make_client(gateway)
    plain = client.chat.completions.create(model=DEPLOYMENT, messages=MESSAGES).choices[0].message.content
    streamed = "".join(
        choice.delta.content or ""
        for chunk in client.chat.completions.create(model=DEPLOYMENT, messages=MESSAGES, stream=True)
        for choice in chunk.choices
    )
    assert streamed == plain


def test_models_are_listed_under_openai(gateway: Gateway) -> None:
    ids = [m.id for m in make_client(gateway).models.list()]
    assert DEPLOYMENT in ids


def test_a_bad_key_is_an_authentication_error(gateway: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        make_client(gateway, api_key="uprox_live_" + "B" * 43).chat.completions.create(
            model=DEPLOYMENT, messages=MESSAGES
        )
    assert caught.value.status_code == 401


def test_the_azure_v1_surface_works_with_the_plain_openai_client(gateway: Gateway) -> None:
    # Azure's newer v1 API is addressed with the plain client at {endpoint}/openai/v1.
    client = openai.OpenAI(base_url=f"{gateway.base_url}/openai/v1", api_key=gateway.token, max_retries=0, timeout=10)
    completion = client.chat.completions.create(model=DEPLOYMENT, messages=MESSAGES)
    assert completion.choices[0].message.content
    assert DEPLOYMENT in [m.id for m in client.models.list()]


def test_embeddings_on_a_deployment_in_both_encodings(gateway: Gateway) -> None:
    client = make_client(gateway)
    floats = client.embeddings.create(model=DEPLOYMENT, input="hello", encoding_format="float")
    # Without encoding_format the SDK asks for base64 and decodes it.
    decoded = client.embeddings.create(model=DEPLOYMENT, input="hello")
    assert len(floats.data[0].embedding) == len(decoded.data[0].embedding) > 0
    assert floats.data[0].embedding == pytest.approx(decoded.data[0].embedding, abs=1e-6)


def test_files_through_the_azure_client(gateway: Gateway) -> None:
    client = make_client(gateway)
    body = b'{"custom_id": "1", "body": {"prompt": "hello"}}\n'
    created = client.files.create(file=("batch.jsonl", body), purpose="batch")
    try:
        assert client.files.retrieve(created.id).filename == "batch.jsonl"
        assert client.files.content(created.id).read() == body
        assert created.id in [f.id for f in client.files.list()]
    finally:
        assert client.files.delete(created.id).deleted
