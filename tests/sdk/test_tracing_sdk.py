"""Request spans as an OpenTelemetry collector receives them.

The gateway binary exports to a small OTLP/HTTP receiver on 127.0.0.1 in its default encoding
(binary protobuf), and the receiver decodes each export with the official OpenTelemetry protobuf
classes (`opentelemetry-proto`): a request made with the OpenAI SDK while carrying a W3C
`traceparent` arrives as a SERVER span of the caller's trace, with the GenAI attributes.
"""

from __future__ import annotations

import http.server
import threading
import time
from typing import Iterator

import pytest
from openai import OpenAI
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from conftest import Gateway, sample_gateway

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class Receiver(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.exports: list[tuple[dict[str, str], ExportTraceServiceRequest]] = []
        self.lock = threading.Lock()

    def spans(self) -> list[tuple[dict[str, str], Span]]:
        with self.lock:
            return [
                ({a.key: a.value.string_value for a in rs.resource.attributes}, span)
                for _, request in self.exports
                for rs in request.resource_spans
                for ss in rs.scope_spans
                for span in ss.spans
            ]


class ReceiverHandler(http.server.BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
        body = self.rfile.read(int(self.headers["content-length"]))
        assert self.path == "/v1/traces"
        request = ExportTraceServiceRequest.FromString(body)
        with self.server.lock:
            self.server.exports.append(({k.lower(): v for k, v in self.headers.items()}, request))
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def traced_gateway(receiver: Receiver) -> Iterator[Gateway]:
    endpoint = f"http://127.0.0.1:{receiver.server_address[1]}"
    with sample_gateway(args=("--otlp-endpoint", endpoint)) as started:
        yield started


def attributes(span: Span) -> dict[str, object]:
    out: dict[str, object] = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        out[a.key] = getattr(a.value, kind)
    return out


def test_a_request_arrives_as_a_server_span_of_the_callers_trace(receiver: Receiver, traced_gateway: Gateway) -> None:
    client = OpenAI(base_url=f"{traced_gateway.base_url}/v1", api_key=traced_gateway.token, max_retries=0, timeout=10)
    completion = client.chat.completions.create(
        model="mock-1",
        messages=[{"role": "user", "content": "Say hello."}],
        extra_headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01", "user-agent": "tracing-test/1.0"},
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not receiver.spans():
        time.sleep(0.1)
    spans = receiver.spans()
    assert len(spans) == 1, spans
    (resource, span), = spans
    with receiver.lock:
        headers = receiver.exports[0][0]
    assert headers["content-type"] == "application/x-protobuf"
    assert resource["service.name"] == "uprox-gateway"
    assert span.trace_id.hex() == TRACE_ID
    assert span.parent_span_id.hex() == PARENT_ID
    assert len(span.span_id) == 8 and span.span_id != bytes(8)
    assert span.kind == Span.SpanKind.SPAN_KIND_SERVER
    assert span.name == "chat mock-1"
    assert span.flags & 0x301 == 0x301, "sampled, with a remote parent"
    assert 0 < span.start_time_unix_nano <= span.end_time_unix_nano
    found = attributes(span)
    assert found["gen_ai.operation.name"] == "chat"
    assert found["gen_ai.provider.name"] == "mock"
    assert found["gen_ai.request.model"] == "mock-1"
    assert found["gen_ai.response.model"] == completion.model
    assert found["gen_ai.usage.input_tokens"] == completion.usage.prompt_tokens
    assert found["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens
    assert found["http.response.status_code"] == 200
    assert found["user_agent.original"] == "tracing-test/1.0"
    assert found["uprox.namespace"] == "default"
    assert found["uprox.token"] == "demo-app"
    assert isinstance(found["uprox.cost_usd"], float)
    assert span.status.code == 0, "unset: the request succeeded"
