//! Spans as OTLP `ExportTraceServiceRequest` messages, in the two encodings of OTLP/HTTP:
//! binary protobuf (`application/x-protobuf`, the default of OpenTelemetry exporters) and
//! protobuf's JSON mapping (`application/json`: ids in hex, 64-bit integers as strings, enums
//! as numbers). Written by hand for the few messages a trace export uses, so no protobuf
//! toolchain is needed to build.

use serde_json::{Value as Json, json};

/// One finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Its trace.
    pub trace: [u8; 16],
    /// Its id.
    pub id: [u8; 8],
    /// Its parent, if any.
    pub parent: Option<[u8; 8]>,
    /// Whether the parent is another process's (the caller's).
    pub remote_parent: bool,
    /// Its name.
    pub name: String,
    /// Server or client.
    pub kind: Kind,
    /// Start, Unix nanoseconds.
    pub start_ns: u64,
    /// End, Unix nanoseconds.
    pub end_ns: u64,
    /// Attributes.
    pub attributes: Vec<(&'static str, Value)>,
    /// Set when the span failed: the status description.
    pub error: Option<String>,
}

/// The kind of a span (OTLP `SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The gateway answering a request.
    Server = 2,
    /// The gateway calling a provider.
    Client = 3,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Double(f64),
    /// A boolean.
    Bool(bool),
}

/// Who exports: the resource's attributes (`service.name`, …) and the instrumentation scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Resource attributes.
    pub attributes: Vec<(String, String)>,
}

/// The instrumentation scope's name and version.
const SCOPE: (&str, &str) = ("uprox-gateway", env!("CARGO_PKG_VERSION"));

/// The span's `flags`: the W3C trace flags (sampled), and whether its parent is remote.
fn flags(span: &Span) -> u32 {
    const SAMPLED: u32 = 0x1;
    const HAS_IS_REMOTE: u32 = 0x100;
    const IS_REMOTE: u32 = 0x200;
    SAMPLED | HAS_IS_REMOTE | if span.remote_parent { IS_REMOTE } else { 0 }
}

/// The request, protobuf-encoded.
pub fn protobuf(resource: &Resource, spans: &[Span]) -> Vec<u8> {
    let mut out = Vec::with_capacity(512 * spans.len() + 256);
    message(&mut out, 1, |rs| {
        message(rs, 1, |r| {
            for (key, value) in &resource.attributes {
                key_value(r, 1, key, &Value::Str(value.clone()));
            }
        });
        message(rs, 2, |ss| {
            message(ss, 1, |scope| {
                string(scope, 1, SCOPE.0);
                string(scope, 2, SCOPE.1);
            });
            for span in spans {
                message(ss, 2, |s| span_message(s, span));
            }
        });
    });
    out
}

fn span_message(out: &mut Vec<u8>, span: &Span) {
    bytes(out, 1, &span.trace);
    bytes(out, 2, &span.id);
    if let Some(parent) = &span.parent {
        bytes(out, 4, parent);
    }
    string(out, 5, &span.name);
    tag(out, 6, 0);
    varint(out, span.kind as u64);
    fixed64(out, 7, span.start_ns);
    fixed64(out, 8, span.end_ns);
    for (key, value) in &span.attributes {
        key_value(out, 9, key, value);
    }
    if let Some(description) = &span.error {
        message(out, 15, |status| {
            string(status, 2, description);
            tag(status, 3, 0);
            varint(status, 2);
        });
    }
    tag(out, 16, 5);
    out.extend_from_slice(&flags(span).to_le_bytes());
}

/// An attribute (`KeyValue`) as field `field`: 1 of `Resource`, 9 of `Span`.
fn key_value(out: &mut Vec<u8>, field: u32, key: &str, value: &Value) {
    message(out, field, |kv| {
        string(kv, 1, key);
        message(kv, 2, |any| match value {
            Value::Str(s) => string(any, 1, s),
            Value::Bool(b) => {
                tag(any, 2, 0);
                varint(any, u64::from(*b));
            }
            Value::Int(i) => {
                tag(any, 3, 0);
                // Two's complement, as protobuf encodes an int64.
                varint(any, *i as u64);
            }
            Value::Double(d) => fixed64(any, 4, d.to_bits()),
        });
    });
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

fn string(out: &mut Vec<u8>, field: u32, text: &str) {
    bytes(out, field, text.as_bytes());
}

fn fixed64(out: &mut Vec<u8>, field: u32, value: u64) {
    tag(out, field, 1);
    out.extend_from_slice(&value.to_le_bytes());
}

/// A nested message, written by `write`, as field `field` (length-delimited).
fn message(out: &mut Vec<u8>, field: u32, write: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    write(&mut inner);
    bytes(out, field, &inner);
}

/// The request in protobuf's JSON mapping.
pub fn json(resource: &Resource, spans: &[Span]) -> Vec<u8> {
    let resource_attributes: Vec<Json> =
        resource.attributes.iter().map(|(k, v)| attribute_json(k, &Value::Str(v.clone()))).collect();
    let spans: Vec<Json> = spans.iter().map(span_json).collect();
    let request = json!({
        "resourceSpans": [{
            "resource": {"attributes": resource_attributes},
            "scopeSpans": [{"scope": {"name": SCOPE.0, "version": SCOPE.1}, "spans": spans}],
        }],
    });
    serde_json::to_vec(&request).unwrap_or_default()
}

fn span_json(span: &Span) -> Json {
    let mut out = json!({
        "traceId": super::ids::to_hex(&span.trace),
        "spanId": super::ids::to_hex(&span.id),
        "name": span.name,
        "kind": span.kind as u8,
        "startTimeUnixNano": span.start_ns.to_string(),
        "endTimeUnixNano": span.end_ns.to_string(),
        "attributes": span.attributes.iter().map(|(k, v)| attribute_json(k, v)).collect::<Vec<_>>(),
        "flags": flags(span),
    });
    if let Some(parent) = &span.parent {
        out["parentSpanId"] = Json::from(super::ids::to_hex(parent));
    }
    if let Some(description) = &span.error {
        out["status"] = json!({"code": 2, "message": description});
    }
    out
}

fn attribute_json(key: &str, value: &Value) -> Json {
    let value = match value {
        Value::Str(s) => json!({"stringValue": s}),
        Value::Bool(b) => json!({"boolValue": b}),
        Value::Int(i) => json!({"intValue": i.to_string()}),
        // JSON has no NaN or infinities; the gateway's numbers are finite.
        Value::Double(d) => json!({"doubleValue": d}),
    };
    json!({"key": key, "value": value})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn span() -> Span {
        Span {
            trace: [0x4b; 16],
            id: [0x01; 8],
            parent: Some([0x02; 8]),
            remote_parent: true,
            name: "chat gpt-4o".to_owned(),
            kind: Kind::Server,
            start_ns: 1_700_000_000_000_000_000,
            end_ns: 1_700_000_000_250_000_000,
            attributes: vec![
                ("gen_ai.request.model", Value::Str("gpt-4o".to_owned())),
                ("http.response.status_code", Value::Int(502)),
                ("uprox.cost_usd", Value::Double(0.25)),
                ("uprox.completed", Value::Bool(false)),
                ("uprox.negative", Value::Int(-1)),
            ],
            error: Some("upstream_unavailable".to_owned()),
        }
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

    /// A minimal wire-format reader, to check the encoder against the message definitions.
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
        let encoded = protobuf(&resource(), &[span(), span()]);
        let request = fields(&encoded);
        let resource_spans = only_bytes(&request, 1);
        assert_eq!(resource_spans.len(), 1);
        let rs = fields(&resource_spans[0]);
        let resource = fields(&only_bytes(&rs, 1)[0]);
        let attribute = fields(&only_bytes(&resource, 1)[0]);
        assert_eq!(attribute[0], Field::Bytes(1, b"service.name".to_vec()));
        assert_eq!(fields(&only_bytes(&attribute, 2)[0]), vec![Field::Bytes(1, b"uprox-gateway".to_vec())]);
        let scope_spans = fields(&only_bytes(&rs, 2)[0]);
        let scope = fields(&only_bytes(&scope_spans, 1)[0]);
        assert_eq!(scope[0], Field::Bytes(1, b"uprox-gateway".to_vec()));
        let spans = only_bytes(&scope_spans, 2);
        assert_eq!(spans.len(), 2);
        let span = fields(&spans[0]);
        assert!(span.contains(&Field::Bytes(1, vec![0x4b; 16])));
        assert!(span.contains(&Field::Bytes(2, vec![0x01; 8])));
        assert!(span.contains(&Field::Bytes(4, vec![0x02; 8])));
        assert!(span.contains(&Field::Bytes(5, b"chat gpt-4o".to_vec())));
        assert!(span.contains(&Field::Varint(6, 2)));
        assert!(span.contains(&Field::Fixed64(7, 1_700_000_000_000_000_000)));
        assert!(span.contains(&Field::Fixed64(8, 1_700_000_000_250_000_000)));
        assert!(span.contains(&Field::Fixed32(16, 0x301)));
        let values: Vec<Vec<Field>> =
            only_bytes(&span, 9).iter().map(|kv| fields(&only_bytes(&fields(kv), 2)[0])).collect();
        assert_eq!(values[0], vec![Field::Bytes(1, b"gpt-4o".to_vec())]);
        assert_eq!(values[1], vec![Field::Varint(3, 502)]);
        assert_eq!(values[2], vec![Field::Fixed64(4, 0.25f64.to_bits())]);
        assert_eq!(values[3], vec![Field::Varint(2, 0)]);
        assert_eq!(values[4], vec![Field::Varint(3, u64::MAX)], "int64 -1 is ten bytes of two's complement");
        let status = fields(&only_bytes(&span, 15)[0]);
        assert_eq!(status, vec![Field::Bytes(2, b"upstream_unavailable".to_vec()), Field::Varint(3, 2)]);
    }

    #[test]
    fn json_uses_the_otlp_json_mapping() {
        let encoded: Json = serde_json::from_slice(&json(&resource(), &[span()])).unwrap();
        let rs = &encoded["resourceSpans"][0];
        assert_eq!(
            rs["resource"]["attributes"][0],
            json!({"key": "service.name", "value": {"stringValue": "uprox-gateway"}})
        );
        assert_eq!(rs["scopeSpans"][0]["scope"]["name"], "uprox-gateway");
        let span = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "4b".repeat(16));
        assert_eq!(span["spanId"], "01".repeat(8));
        assert_eq!(span["parentSpanId"], "02".repeat(8));
        assert_eq!(span["kind"], 2);
        assert_eq!(span["startTimeUnixNano"], "1700000000000000000");
        assert_eq!(span["flags"], 0x301);
        assert_eq!(span["attributes"][1]["value"], json!({"intValue": "502"}));
        assert_eq!(span["attributes"][2]["value"], json!({"doubleValue": 0.25}));
        assert_eq!(span["status"], json!({"code": 2, "message": "upstream_unavailable"}));
        let mut local = self::span();
        (local.parent, local.remote_parent, local.error) = (None, false, None);
        let encoded: Json = serde_json::from_slice(&json(&resource(), &[local])).unwrap();
        let span = &encoded["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert!(span.get("parentSpanId").is_none() && span.get("status").is_none());
        assert_eq!(span["flags"], 0x101);
    }
}
