"""The Files API as the official OpenAI Python SDK sees it.

The sample gateway (`config/samples`) routes files to its `mock` Provider, which keeps them in
memory. To check that one Service cannot reach another's files, this module starts its own
gateway on the samples plus a second Service (`files-other`) with its own MachineToken, using the
session helpers of conftest.py.
"""

from __future__ import annotations

from typing import Iterator

import openai
import pytest
from openai import OpenAI

from conftest import sample_gateway

# The second Service's token, supplied in its own Secret (so nothing needs to be issued).
OTHER_TOKEN = "uprox_live_" + "F" * 43

OTHER_SERVICE = f"""
apiVersion: uprox.dev/v1alpha1
kind: Policy
metadata: {{name: files-other, namespace: default}}
spec:
  providers: ["mock"]
  scopes: [files]
---
apiVersion: uprox.dev/v1alpha1
kind: Service
metadata: {{name: files-other, namespace: default}}
spec:
  policies: [files-other]
---
apiVersion: uprox.dev/v1alpha1
kind: MachineToken
metadata: {{name: files-other, namespace: default}}
spec: {{service: files-other, secretName: files-other-token}}
---
apiVersion: v1
kind: Secret
metadata:
  name: files-other-token
  namespace: default
  labels: {{uprox.dev/machine-token: files-other}}
  annotations: {{uprox.dev/rotation: "0"}}
stringData: {{token: "{OTHER_TOKEN}"}}
"""

CONTENT = b'{"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions"}\n' * 3


@pytest.fixture(scope="module")
def files_gateway() -> Iterator[tuple[str, str]]:
    """(base URL, sample token) of a gateway serving the samples and the second Service."""
    with sample_gateway({"files-other.yaml": OTHER_SERVICE}) as started:
        yield started.base_url, started.token


def client_for(base_url: str, token: str) -> OpenAI:
    return OpenAI(base_url=f"{base_url}/v1", api_key=token, max_retries=0, timeout=10)


@pytest.fixture(scope="module")
def client(files_gateway: tuple[str, str]) -> OpenAI:
    return client_for(*files_gateway)


@pytest.fixture(scope="module")
def other(files_gateway: tuple[str, str]) -> OpenAI:
    return client_for(files_gateway[0], OTHER_TOKEN)


def test_create_retrieve_content_delete(client: OpenAI) -> None:
    created = client.files.create(file=("requests.jsonl", CONTENT), purpose="batch")
    assert created.object == "file"
    assert created.id.startswith("file-")
    assert created.bytes == len(CONTENT)
    assert created.filename == "requests.jsonl"
    assert created.purpose == "batch"

    retrieved = client.files.retrieve(created.id)
    assert retrieved.id == created.id
    assert retrieved.bytes == len(CONTENT)

    assert created.id in [f.id for f in client.files.list()]
    assert created.id in [f.id for f in client.files.list(purpose="batch")]
    assert created.id not in [f.id for f in client.files.list(purpose="assistants")]

    assert client.files.content(created.id).read() == CONTENT

    deleted = client.files.delete(created.id)
    assert deleted.deleted is True
    assert deleted.id == created.id
    assert created.id not in [f.id for f in client.files.list()]
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)


def test_list_pages_with_the_sdk(client: OpenAI) -> None:
    ids = {client.files.create(file=(f"f{i}.txt", b"x" * (i + 1)), purpose="assistants").id for i in range(3)}
    page = client.files.list(purpose="assistants", limit=2)
    assert len(page.data) == 2
    # Auto-pagination follows `after` through the gateway's filtered listing.
    seen = {f.id for f in client.files.list(purpose="assistants", limit=2)}
    assert ids <= seen
    for file_id in ids:
        client.files.delete(file_id)


def test_another_service_cannot_reach_the_file(client: OpenAI, other: OpenAI) -> None:
    mine = client.files.create(file=("secret.jsonl", CONTENT), purpose="batch")
    theirs = other.files.create(file=("theirs.txt", b"theirs"), purpose="assistants")

    assert mine.id not in [f.id for f in other.files.list()]
    assert [f.id for f in other.files.list()] == [theirs.id]
    assert theirs.id not in [f.id for f in client.files.list()]
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.files.content(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.files.delete(mine.id)

    # Still there for its owner.
    assert client.files.content(mine.id).read() == CONTENT
    client.files.delete(mine.id)
    other.files.delete(theirs.id)


def test_files_need_the_files_scope(files_gateway: tuple[str, str]) -> None:
    # The second Service's token holds only `files`: chat is refused, so scopes are enforced.
    with pytest.raises(openai.PermissionDeniedError):
        client_for(files_gateway[0], OTHER_TOKEN).chat.completions.create(
            model="mock-1", messages=[{"role": "user", "content": "hi"}]
        )
