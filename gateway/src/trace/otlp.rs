//! Spans encoded for OTLP/HTTP, in its two encodings: binary protobuf (`application/x-protobuf`,
//! the default of OpenTelemetry exporters) and protobuf's JSON mapping (`application/json`: ids
//! in hex, 64-bit integers as strings, enums as numbers). Written by hand for the few messages
//! a trace export uses, so no protobuf toolchain is needed to build.
//!
//! A span is encoded once, on the thread that finished its request, straight into one buffer
//! ([`SpanWriter`]: no attribute list, no intermediate strings); the exporter frames the
//! encoded spans into an `ExportTraceServiceRequest` ([`request`]) without re-encoding them.

use std::io::Write as _;

use super::Protocol;
use super::ids::write_hex;

/// The kind of a span (OTLP `SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The gateway answering a request.
    Server = 2,
    /// The gateway calling a provider.
    Client = 3,
}

/// What every span has.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    /// Its trace.
    pub trace: &'a [u8; 16],
    /// Its id.
    pub id: &'a [u8; 8],
    /// Its parent, if any.
    pub parent: Option<&'a [u8; 8]>,
    /// Whether the parent is another process's (the caller's).
    pub remote_parent: bool,
    /// Its name.
    pub name: &'a str,
    /// Server or client.
    pub kind: Kind,
    /// Start, Unix nanoseconds.
    pub start_ns: u64,
    /// End, Unix nanoseconds.
    pub end_ns: u64,
}

/// Who exports: the resource's attributes (`service.name`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Resource attributes.
    pub attributes: Vec<(String, String)>,
}

/// The instrumentation scope's name and version.
const SCOPE: (&str, &str) = ("uprox-gateway", env!("CARGO_PKG_VERSION"));

/// The span's `flags`: the W3C trace flags (sampled), and whether its parent is remote.
fn flags(remote_parent: bool) -> u32 {
    const SAMPLED: u32 = 0x1;
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    SAMPLED | HAS_IS_REMOTE | if remote_parent { IS_REMOTE } else { 0 }
}

/// One span being encoded: its head, then attributes, then [`SpanWriter::finish`]. Protobuf
/// gets the `Span` message's fields; JSON gets the span's object.
pub struct SpanWriter {
    out: Vec<u8>,
    protocol: Protocol,
    attributes: usize,
}

impl SpanWriter {
    /// Starts a span.
    pub fn new(protocol: Protocol, head: &Head<'_>) -> Self {
        let mut w = SpanWriter { out: Vec::with_capacity(1024), protocol, attributes: 0 };
        let out = &mut w.out;
        match protocol {
            Protocol::Protobuf => {
                bytes(out, 1, head.trace);
                bytes(out, 2, head.id);
                if let Some(parent) = head.parent {
                    bytes(out, 4, parent);
                }
                bytes(out, 5, head.name.as_bytes());
                tag(out, 6, 0);
                varint(out, head.kind as u64);
                fixed64(out, 7, head.start_ns);
                fixed64(out, 8, head.end_ns);
                tag(out, 16, 5);
                out.extend_from_slice(&flags(head.remote_parent).to_le_bytes());
            }
            Protocol::Json => {
                out.extend_from_slice(b"{\"traceId\":\"");
                hex(out, head.trace);
                out.extend_from_slice(b"\",\"spanId\":\"");
                hex(out, head.id);
                if let Some(parent) = head.parent {
                    out.extend_from_slice(b"\",\"parentSpanId\":\"");
                    hex(out, parent);
                }
                out.extend_from_slice(b"\",\"name\":");
                json_string(out, head.name);
                let _ = write!(
                    out,
                    ",\"kind\":{},\"startTimeUnixNano\":\"{}\",\"endTimeUnixNano\":\"{}\",\"flags\":{},\"attributes\":[",
                    head.kind as u8,
                    head.start_ns,
                    head.end_ns,
                    flags(head.remote_parent)
                );
            }
        }
        w
    }

    /// A string attribute.
    pub fn str(&mut self, key: &str, value: &str) {
        match self.protocol {
            Protocol::Protobuf => {
                // AnyValue { string_value = 1 }
                let any = field_len(value.len());
                key_value_head(&mut self.out, key, any);
                bytes(&mut self.out, 1, value.as_bytes());
            }
            Protocol::Json => {
                self.json_key(key);
                self.out.extend_from_slice(b"{\"stringValue\":");
                json_string(&mut self.out, value);
                self.out.extend_from_slice(b"}}");
            }
        }
    }

    /// An integer attribute.
    pub fn int(&mut self, key: &str, value: i64) {
        match self.protocol {
            Protocol::Protobuf => {
                // AnyValue { int_value = 3 }, two's complement as protobuf encodes an int64.
                let any = 1 + varint_len(value as u64);
                key_value_head(&mut self.out, key, any);
                tag(&mut self.out, 3, 0);
                varint(&mut self.out, value as u64);
            }
            Protocol::Json => {
                self.json_key(key);
                let _ = write!(self.out, "{{\"intValue\":\"{value}\"}}}}");
            }
        }
    }

    /// A float attribute (finite: JSON has no NaN).
    pub fn double(&mut self, key: &str, value: f64) {
        match self.protocol {
            Protocol::Protobuf => {
                // AnyValue { double_value = 4 }
                key_value_head(&mut self.out, key, 9);
                fixed64(&mut self.out, 4, value.to_bits());
            }
            Protocol::Json => {
                self.json_key(key);
                let value = if value.is_finite() { value } else { 0.0 };
                let _ = write!(self.out, "{{\"doubleValue\":{value}}}}}");
            }
        }
    }

    /// A boolean attribute.
    pub fn bool(&mut self, key: &str, value: bool) {
        match self.protocol {
            Protocol::Protobuf => {
                // AnyValue { bool_value = 2 }
                key_value_head(&mut self.out, key, 2);
                tag(&mut self.out, 2, 0);
                varint(&mut self.out, u64::from(value));
            }
            Protocol::Json => {
                self.json_key(key);
                let _ = write!(self.out, "{{\"boolValue\":{value}}}}}");
            }
        }
    }

    /// `,{"key":…,"value":` (JSON).
    fn json_key(&mut self, key: &str) {
        if self.attributes > 0 {
            self.out.push(b',');
        }
        self.attributes += 1;
        self.out.extend_from_slice(b"{\"key\":");
        json_string(&mut self.out, key);
        self.out.extend_from_slice(b",\"value\":");
    }

    /// The encoded span; `error` sets its status to ERROR with that description.
    pub fn finish(mut self, error: Option<&str>) -> Vec<u8> {
        match self.protocol {
            Protocol::Protobuf => {
                if let Some(description) = error {
                    // Status { message = 2, code = 3 (2: ERROR) }
                    tag(&mut self.out, 15, 2);
                    varint(&mut self.out, (field_len(description.len()) + 2) as u64);
                    bytes(&mut self.out, 2, description.as_bytes());
                    tag(&mut self.out, 3, 0);
                    varint(&mut self.out, 2);
                }
            }
            Protocol::Json => {
                self.out.push(b']');
                if let Some(description) = error {
                    self.out.extend_from_slice(b",\"status\":{\"code\":2,\"message\":");
                    json_string(&mut self.out, description);
                    self.out.push(b'}');
                }
                self.out.push(b'}');
            }
        }
        self.out
    }
}

/// An `ExportTraceServiceRequest` of encoded `spans` (from [`SpanWriter`]s of `protocol`).
pub fn request(protocol: Protocol, resource: &Resource, spans: &[Vec<u8>]) -> Vec<u8> {
    let size: usize = spans.iter().map(|s| s.len() + 8).sum();
    let mut out = Vec::with_capacity(size + 512);
    match protocol {
        Protocol::Protobuf => {
            // ResourceSpans { resource = 1, scope_spans = 2 }
            let mut head = Vec::with_capacity(256);
            let mut r = Vec::new();
            for (key, value) in &resource.attributes {
                // Resource { attributes = 1 }
                let any = field_len(value.len());
                tag(&mut r, 1, 2);
                varint(&mut r, key_value_len(key, any) as u64);
                key_value_body_head(&mut r, key, any);
                bytes(&mut r, 1, value.as_bytes());
            }
            bytes(&mut head, 1, &r);
            // ScopeSpans { scope = 1, spans = 2 }
            let mut scope = Vec::new();
            bytes(&mut scope, 1, SCOPE.0.as_bytes());
            bytes(&mut scope, 2, SCOPE.1.as_bytes());
            let mut scope_field = Vec::new();
            bytes(&mut scope_field, 1, &scope);
            let spans_len: usize = spans.iter().map(|s| field_len(s.len())).sum();
            let scope_spans_len = scope_field.len() + spans_len;
            // ExportTraceServiceRequest { resource_spans = 1 }
            let resource_spans_len = head.len() + field_len(scope_spans_len);
            tag(&mut out, 1, 2);
            varint(&mut out, resource_spans_len as u64);
            out.extend_from_slice(&head);
            tag(&mut out, 2, 2);
            varint(&mut out, scope_spans_len as u64);
            out.extend_from_slice(&scope_field);
            for span in spans {
                bytes(&mut out, 2, span);
            }
        }
        Protocol::Json => {
            out.extend_from_slice(b"{\"resourceSpans\":[{\"resource\":{\"attributes\":[");
            for (i, (key, value)) in resource.attributes.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(b"{\"key\":");
                json_string(&mut out, key);
                out.extend_from_slice(b",\"value\":{\"stringValue\":");
                json_string(&mut out, value);
                out.extend_from_slice(b"}}");
            }
            out.extend_from_slice(b"]},\"scopeSpans\":[{\"scope\":{\"name\":");
            json_string(&mut out, SCOPE.0);
            out.extend_from_slice(b",\"version\":");
            json_string(&mut out, SCOPE.1);
            out.extend_from_slice(b"},\"spans\":[");
            for (i, span) in spans.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(span);
            }
            out.extend_from_slice(b"]}]}]}");
        }
    }
    out
}

/// A `KeyValue` as a repeated field (9 of `Span`), up to its value's own content: tag, length,
/// key, and the value's tag and length. `any` is the `AnyValue`'s encoded length.
fn key_value_head(out: &mut Vec<u8>, key: &str, any: usize) {
    tag(out, 9, 2);
    varint(out, key_value_len(key, any) as u64);
    key_value_body_head(out, key, any);
}

/// A `KeyValue`'s content up to its value's content.
fn key_value_body_head(out: &mut Vec<u8>, key: &str, any: usize) {
    bytes(out, 1, key.as_bytes());
    tag(out, 2, 2);
    varint(out, any as u64);
}

/// The encoded length of a `KeyValue`'s content.
fn key_value_len(key: &str, any: usize) -> usize {
    field_len(key.len()) + field_len(any)
}

/// The length of a length-delimited field (tag below 16) with `len` bytes of content.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn varint_len(mut value: u64) -> usize {
    let mut n = 1;
    while value >= 0x80 {
        value >>= 7;
        n += 1;
    }
    n
}

fn tag(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    varint(out, u64::from(field) << 3 | u64::from(wire_type));
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn bytes(out: &mut Vec<u8>, field: u32, data: &[u8]) {
    tag(out, field, 2);
    varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

fn fixed64(out: &mut Vec<u8>, field: u32, value: u64) {
    tag(out, field, 1);
    out.extend_from_slice(&value.to_le_bytes());
}

fn hex(out: &mut Vec<u8>, bytes: &[u8]) {
    let at = out.len();
    out.resize(at + bytes.len() * 2, 0);
    write_hex(&mut out[at..], bytes);
}

/// `text` as a JSON string, escaped.
fn json_string(out: &mut Vec<u8>, text: &str) {
    // Writing a string into memory cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::{Value as Json, json};

    use super::*;

    const TRACE: [u8; 16] = [0x4b; 16];
    const ID: [u8; 8] = [0x01; 8];
    const PARENT: [u8; 8] = [0x02; 8];

    fn span(protocol: Protocol, remote: bool, error: Option<&str>) -> Vec<u8> {
        let head = Head {
            trace: &TRACE,
            id: &ID,
            parent: remote.then_some(&PARENT),
            remote_parent: remote,
            name: "chat gpt-4o",
            kind: Kind::Server,
            start_ns: 1_700_000_000_000_000_000,
            end_ns: 1_700_000_000_250_000_000,
        };
        let mut w = SpanWriter::new(protocol, &head);
        w.str("gen_ai.request.model", "gpt-4o \"quoted\"");
        w.int("http.response.status_code", 502);
        w.double("uprox.cost_usd", 0.25);
        w.bool("uprox.completed", false);
        w.int("uprox.negative", -1);
        w.str("uprox.long", &"x".repeat(300));
        w.finish(error)
    }

    fn resource() -> Resource {
        Resource { attributes: vec![("service.name".to_owned(), "uprox-gateway".to_owned())] }
    }

    /// A protobuf field: number, wire type, and its payload (varint value, or bytes).
    #[derive(Debug, PartialEq)]
    enum Field {
        Varint(u32, u64),
        Fixed64(u32, u64),
        Fixed32(u32, u32),
        Bytes(u32, Vec<u8>),
    }

    /// A minimal wire-format reader, to check the encoder against the message definitions; it
    /// panics on anything malformed, lengths included.
    fn fields(mut data: &[u8]) -> Vec<Field> {
        fn varint(data: &mut &[u8]) -> u64 {
            let (mut value, mut shift) = (0u64, 0);
            loop {
                let byte = data[0];
                *data = &data[1..];
                value |= u64::from(byte & 0x7f) << shift;
                if byte < 0x80 {
                    return value;
                }
                shift += 7;
            }
        }
        let mut out = Vec::new();
        while !data.is_empty() {
            let key = varint(&mut data);
            let field = (key >> 3) as u32;
            out.push(match key & 7 {
                0 => Field::Varint(field, varint(&mut data)),
                1 => {
                    let (v, rest) = data.split_at(8);
                    data = rest;
                    Field::Fixed64(field, u64::from_le_bytes(v.try_into().unwrap()))
                }
                5 => {
                    let (v, rest) = data.split_at(4);
                    data = rest;
                    Field::Fixed32(field, u32::from_le_bytes(v.try_into().unwrap()))
                }
                2 => {
                    let len = varint(&mut data) as usize;
                    let (v, rest) = data.split_at(len);
                    data = rest;
                    Field::Bytes(field, v.to_vec())
                }
                other => panic!("wire type {other}"),
            });
        }
        out
    }

    fn only_bytes(fields: &[Field], number: u32) -> Vec<Vec<u8>> {
        fields
            .iter()
            .filter_map(|f| {
                if let Field::Bytes(n, b) = f
                    && *n == number
                {
                    Some(b.clone())
                } else {
                    None
                }
            })
            .collect()
    }

    #[test]
    fn protobuf_follows_the_trace_service_messages() {
        let spans =
            [span(Protocol::Protobuf, true, Some("upstream_unavailable")), span(Protocol::Protobuf, false, None)];
        let encoded = request(Protocol::Protobuf, &resource(), &spans);
        let request = fields(&encoded);
        let resource_spans = only_bytes(&request, 1);
        assert_eq!((request.len(), resource_spans.len()), (1, 1));
        let rs = fields(&resource_spans[0]);
        let resource = fields(&only_bytes(&rs, 1)[0]);
        let attribute = fields(&only_bytes(&resource, 1)[0]);
        assert_eq!(attribute[0], Field::Bytes(1, b"service.name".to_vec()));
        assert_eq!(fields(&only_bytes(&attribute, 2)[0]), vec![Field::Bytes(1, b"uprox-gateway".to_vec())]);
        let scope_spans = fields(&only_bytes(&rs, 2)[0]);
        let scope = fields(&only_bytes(&scope_spans, 1)[0]);
        assert_eq!(scope[0], Field::Bytes(1, b"uprox-gateway".to_vec()));
        let encoded_spans = only_bytes(&scope_spans, 2);
        assert_eq!(encoded_spans.len(), 2);
        let span = fields(&encoded_spans[0]);
        assert!(span.contains(&Field::Bytes(1, TRACE.to_vec())));
        assert!(span.contains(&Field::Bytes(2, ID.to_vec())));
        assert!(span.contains(&Field::Bytes(4, PARENT.to_vec())));
        assert!(span.contains(&Field::Bytes(5, b"chat gpt-4o".to_vec())));
        assert!(span.contains(&Field::Varint(6, 2)));
        assert!(span.contains(&Field::Fixed64(7, 1_700_000_000_000_000_000)));
        assert!(span.contains(&Field::Fixed64(8, 1_700_000_000_250_000_000)));
        assert!(span.contains(&Field::Fixed32(16, 0x301)));
        let key_values: Vec<Vec<Field>> = only_bytes(&span, 9).iter().map(|kv| fields(kv)).collect();
        assert_eq!(key_values[0][0], Field::Bytes(1, b"gen_ai.request.model".to_vec()));
        let values: Vec<Vec<Field>> = key_values.iter().map(|kv| fields(&only_bytes(kv, 2)[0])).collect();
        assert_eq!(values[0], vec![Field::Bytes(1, b"gpt-4o \"quoted\"".to_vec())]);
        assert_eq!(values[1], vec![Field::Varint(3, 502)]);
        assert_eq!(values[2], vec![Field::Fixed64(4, 0.25f64.to_bits())]);
        assert_eq!(values[3], vec![Field::Varint(2, 0)]);
        assert_eq!(values[4], vec![Field::Varint(3, u64::MAX)], "int64 -1 is ten bytes of two's complement");
        assert_eq!(values[5], vec![Field::Bytes(1, vec![b'x'; 300])], "a two-byte length");
        let status = fields(&only_bytes(&span, 15)[0]);
        assert_eq!(status, vec![Field::Bytes(2, b"upstream_unavailable".to_vec()), Field::Varint(3, 2)]);
        let local = fields(&encoded_spans[1]);
        assert!(only_bytes(&local, 4).is_empty() && only_bytes(&local, 15).is_empty());
        assert!(local.contains(&Field::Fixed32(16, 0x101)));
    }

    #[test]
    fn json_uses_the_otlp_json_mapping() {
        let spans = [span(Protocol::Json, true, Some("upstream_unavailable")), span(Protocol::Json, false, None)];
        let encoded: Json = serde_json::from_slice(&request(Protocol::Json, &resource(), &spans)).unwrap();
        let rs = &encoded["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0],
            json!({"key": "service.name", "value": {"stringValue": "uprox-gateway"}})
        );
        assert_eq!(
            rs["scopeSpans"][0]["scope"],
            json!({"name": "uprox-gateway", "version": env!("CARGO_PKG_VERSION")})
        );
        let span = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "4b".repeat(16));
        assert_eq!(span["spanId"], "01".repeat(8));
        assert_eq!(span["parentSpanId"], "02".repeat(8));
        assert_eq!(span["name"], "chat gpt-4o");
        assert_eq!(span["kind"], 2);
        assert_eq!(span["startTimeUnixNano"], "1700000000000000000");
        assert_eq!(span["flags"], 0x301);
        assert_eq!(span["attributes"][0]["value"], json!({"stringValue": "gpt-4o \"quoted\""}));
        assert_eq!(span["attributes"][1]["value"], json!({"intValue": "502"}));
        assert_eq!(span["attributes"][2]["value"], json!({"doubleValue": 0.25}));
        assert_eq!(span["attributes"][3]["value"], json!({"boolValue": false}));
        assert_eq!(span["attributes"][4]["value"], json!({"intValue": "-1"}));
        assert_eq!(span["status"], json!({"code": 2, "message": "upstream_unavailable"}));
        let local = &rs["scopeSpans"][0]["spans"][1];
        assert!(local.get("parentSpanId").is_none() && local.get("status").is_none());
        assert_eq!(local["flags"], 0x101);
        let empty: Json = serde_json::from_slice(&request(Protocol::Json, &resource(), &[])).unwrap();
        assert_eq!(empty["resourceSpans"][0]["scopeSpans"][0]["spans"], json!([]));
    }
}
