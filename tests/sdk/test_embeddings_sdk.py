"""Embeddings as the official OpenAI Python SDK sees them, against the sample `mock` provider.

The mock answers with deterministic unit vectors (8 numbers unless `dimensions` says otherwise),
as JSON floats or, as OpenAI does, base64 of little-endian float32 bytes. The SDK asks for base64
when the caller names no `encoding_format` and decodes it itself, so the default call exercises
that path.
"""

from __future__ import annotations

import base64
import math
import struct

import pytest
from openai import OpenAI

from conftest import Gateway

MODEL = "mock-1"


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> OpenAI:
    return OpenAI(base_url=f"{gateway.base_url}/v1", api_key=gateway.token, max_retries=0, timeout=10)


def test_embedding_of_a_string(client: OpenAI) -> None:
    result = client.embeddings.create(model=MODEL, input="hello")

    assert result.object == "list"
    assert result.model == MODEL
    assert len(result.data) == 1
    item = result.data[0]
    assert item.object == "embedding"
    assert item.index == 0
    assert len(item.embedding) == 8
    assert math.isclose(math.sqrt(sum(x * x for x in item.embedding)), 1.0, rel_tol=1e-5)
    assert result.usage.prompt_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens


def test_embeddings_are_deterministic_and_float_matches_the_default(client: OpenAI) -> None:
    default = client.embeddings.create(model=MODEL, input="hello").data[0].embedding
    floats = client.embeddings.create(model=MODEL, input="hello", encoding_format="float").data[0].embedding
    assert len(floats) == 8
    assert [struct.unpack("<f", struct.pack("<f", x))[0] for x in floats] == default


def test_dimensions(client: OpenAI) -> None:
    result = client.embeddings.create(model=MODEL, input="hello", dimensions=16)
    assert len(result.data[0].embedding) == 16


def test_a_list_of_inputs_keeps_its_order(client: OpenAI) -> None:
    inputs = ["first", "second", "third"]
    result = client.embeddings.create(model=MODEL, input=inputs)
    assert [item.index for item in result.data] == [0, 1, 2]
    for text, item in zip(inputs, result.data):
        alone = client.embeddings.create(model=MODEL, input=text).data[0].embedding
        assert item.embedding == alone


def test_base64_encoding(client: OpenAI) -> None:
    encoded = client.embeddings.create(model=MODEL, input="hello", encoding_format="base64").data[0].embedding
    assert isinstance(encoded, str)
    raw = base64.b64decode(encoded)
    assert len(raw) == 8 * 4
    decoded = list(struct.unpack("<8f", raw))
    floats = client.embeddings.create(model=MODEL, input="hello", encoding_format="float").data[0].embedding
    assert decoded == [struct.unpack("<f", struct.pack("<f", x))[0] for x in floats]


def test_invalid_dimensions_is_a_bad_request(client: OpenAI) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MODEL, input="hello", dimensions=0)
    assert info.value.status_code == 400
