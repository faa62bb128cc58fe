"""A tiny fake of Anthropic's Messages API on 127.0.0.1:0, for the SDK tests.

It answers `POST /v1/messages` with a whole message, or with a server-sent event stream when the
body says `"stream": true`, and `POST /v1/messages/count_tokens` with a token count — in the
wire format of the real API. Like the real one it refuses a request without the expected
`x-api-key`, without `anthropic-version`, or carrying an `Authorization` header, with an
Anthropic-shaped error. The model `claude-limited` is always rate limited (429, `retry-after`).

The reply text is deterministic: "Echo: " and the last user message's text — or, when the
request asks for structured output (`output_config.format` of type `json_schema`), a JSON object
following the schema: every property, strings holding that echo, numbers 42, booleans true.
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
from typing import Any

RATE_LIMITED_MODEL = "claude-limited"


@dataclasses.dataclass
class SeenRequest:
    path: str
    headers: dict[str, str]
    body: bytes


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return " ".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def reply_text(body: dict[str, Any]) -> str:
    echo = f"Echo: {last_user_text(body)}"
    fmt = (body.get("output_config") or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        return json.dumps(sample_of(fmt["schema"], echo))
    return echo


def sample_of(schema: dict[str, Any], text: str) -> Any:
    """A value following `schema` (the subset structured outputs use)."""
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object":
        return {name: sample_of(sub, text) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [sample_of(schema.get("items") or {"type": "string"}, text)]
    if kind == "integer" or kind == "number":
        return 42
    if kind == "boolean":
        return True
    return text


def count_tokens(body: dict[str, Any]) -> int:
    """A stand-in tokenizer: words in the system prompt and messages, plus a fixed overhead."""
    words = 0
    system = body.get("system")
    if isinstance(system, str):
        words += len(system.split())
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            words += len(content.split())
        elif isinstance(content, list):
            words += sum(len(str(b.get("text", "")).split()) for b in content if isinstance(b, dict))
    return words + 3


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class FakeAnthropic:
    """The fake server; `start()` binds it and serves it from a daemon thread."""

    def __init__(self, api_key: str, version: str = "2023-06-01") -> None:
        self.api_key = api_key
        self.version = version
        self.seen: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ids = 0

    @property
    def base_url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeAnthropic:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base signature
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                fake._record(SeenRequest(self.path, {k.lower(): v for k, v in self.headers.items()}, raw))
                fake._answer(self, raw)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-anthropic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def requests(self) -> list[SeenRequest]:
        with self._lock:
            return list(self.seen)

    def _record(self, seen: SeenRequest) -> None:
        with self._lock:
            self.seen.append(seen)

    def _next_id(self) -> str:
        with self._lock:
            self._ids += 1
            return f"{self._ids:024d}"

    # Answers.

    def _answer(self, h: http.server.BaseHTTPRequestHandler, raw: bytes) -> None:
        if h.headers.get("x-api-key") != self.api_key or h.headers.get("authorization") is not None:
            return self._error(h, 401, "authentication_error", "invalid x-api-key")
        if not h.headers.get("anthropic-version"):
            return self._error(h, 400, "invalid_request_error", "anthropic-version: header is required")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._error(h, 400, "invalid_request_error", "The request body is not valid JSON.")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return self._error(h, 400, "invalid_request_error", "model: Field required")
        if h.path == "/v1/messages/count_tokens":
            return self._json(h, 200, {"input_tokens": count_tokens(body)})
        if h.path != "/v1/messages":
            return self._error(h, 404, "not_found_error", f"Not found: {h.path}")
        if not isinstance(body.get("max_tokens"), int):
            return self._error(h, 400, "invalid_request_error", "max_tokens: Field required")
        if body["model"] == RATE_LIMITED_MODEL:
            message = "Number of requests has exceeded your rate limit"
            return self._error(h, 429, "rate_limit_error", message, {"retry-after": "7"})
        if body.get("stream") is True:
            return self._stream(h, body)
        text = reply_text(body)
        return self._json(
            h,
            200,
            {
                "id": f"msg_{self._next_id()}",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {"input_tokens": count_tokens(body), "output_tokens": len(text.split())},
            },
        )

    def _headers(self, h: http.server.BaseHTTPRequestHandler, status: int, content_type: str) -> None:
        h.send_response(status)
        h.send_header("content-type", content_type)
        h.send_header("request-id", f"req_{self._next_id()}")
        h.send_header("anthropic-ratelimit-requests-remaining", "99")

    def _json(
        self, h: http.server.BaseHTTPRequestHandler, status: int, value: Any, extra: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(value).encode()
        self._headers(h, status, "application/json")
        for name, v in (extra or {}).items():
            h.send_header(name, v)
        h.send_header("content-length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _error(
        self,
        h: http.server.BaseHTTPRequestHandler,
        status: int,
        kind: str,
        message: str,
        extra: dict[str, str] | None = None,
    ) -> None:
        self._json(h, status, {"type": "error", "error": {"type": kind, "message": message}}, extra)

    def _stream(self, h: http.server.BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        text = reply_text(body)
        words = text.split(" ")
        deltas = [w if i == 0 else f" {w}" for i, w in enumerate(words)]
        message = {
            "id": f"msg_{self._next_id()}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": count_tokens(body), "output_tokens": 1},
        }
        events = [
            sse("message_start", {"type": "message_start", "message": message}),
            sse(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
            sse("ping", {"type": "ping"}),
            *(
                sse(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": d}},
                )
                for d in deltas
            ),
            sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": len(words)},
                },
            ),
            sse("message_stop", {"type": "message_stop"}),
        ]
        self._headers(h, 200, "text/event-stream; charset=utf-8")
        h.send_header("cache-control", "no-cache")
        h.send_header("transfer-encoding", "chunked")
        h.end_headers()
        for event in events:
            h.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            h.wfile.flush()
        h.wfile.write(b"0\r\n\r\n")
        h.wfile.flush()
