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
