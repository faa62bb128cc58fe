"""The response cache as the official OpenAI Python SDK sees it.

The sample Service caches for 300 seconds. A deterministic request (temperature 0) is answered
upstream once and then from the cache, marked by `x-uprox-cache`; the SDK parses a hit exactly
like the original answer, streamed or not, whichever shape the entry was recorded in. Each test
asks something of its own (a random word in the prompt), so tests do not share entries.
"""

from __future__ import annotations

import time
import uuid

from openai import OpenAI

from conftest import Gateway

MODEL = "mock-1"


def make_client(gateway: Gateway) -> OpenAI:
    return OpenAI(base_url=f"{gateway.base_url}/v1", api_key=gateway.token, max_retries=0, timeout=10)


def messages() -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Name a colour ({uuid.uuid4().hex})."}]


def create(client: OpenAI, asked: list[dict[str, str]], **extra):
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=asked, temperature=0, **extra)
    return raw.headers.get("x-uprox-cache"), raw.parse()


def streamed_text(client: OpenAI, asked: list[dict[str, str]], **extra) -> tuple[str | None, str, list]:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=asked, temperature=0, stream=True, **extra
    )
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return raw.headers.get("x-uprox-cache"), text, chunks


def wait_for_hit(client: OpenAI, asked: list[dict[str, str]]):
    """The answer is stored as its body ends, a moment after the SDK has read it."""
    for _ in range(50):
        header, completion = create(client, asked)
        if header == "HIT":
            return completion
        time.sleep(0.05)
    raise AssertionError("the answer was never served from the cache")


def test_a_repeated_request_is_a_hit_with_the_same_answer(gateway: Gateway) -> None:
    client = make_client(gateway)
    asked = messages()
    header, first = create(client, asked)
    assert header == "MISS"
    second = wait_for_hit(client, asked)
    assert second.id == first.id
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.usage.total_tokens == first.usage.total_tokens


def test_a_streamed_request_is_answered_from_a_json_entry_and_back(gateway: Gateway) -> None:
    client = make_client(gateway)
    asked = messages()
    _, completion = create(client, asked)
    wait_for_hit(client, asked)
    header, text, chunks = streamed_text(client, asked)
    assert header == "HIT"
    assert text == completion.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == completion.choices[0].finish_reason
    assert all(c.usage is None for c in chunks), "no usage chunk unless asked"

    header, _, chunks = streamed_text(client, asked, stream_options={"include_usage": True})
    assert header == "HIT"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == completion.usage.total_tokens


def test_no_cache_goes_upstream(gateway: Gateway) -> None:
    client = make_client(gateway)
    asked = messages()
    create(client, asked)
    wait_for_hit(client, asked)
    header, _ = create(client, asked, extra_headers={"Cache-Control": "no-cache"})
    assert header == "MISS"


def test_sampled_requests_are_not_cached(gateway: Gateway) -> None:
    client = make_client(gateway)
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=messages(), temperature=0.7)
    assert raw.headers.get("x-uprox-cache") is None
