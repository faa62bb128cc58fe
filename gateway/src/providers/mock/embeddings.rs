//! The `mock` provider's embeddings: deterministic unit vectors derived from the model and each
//! input (OpenAI's four input forms), `dimensions`, and `encoding_format` float or base64 exactly
//! as OpenAI encodes it, with usage counted roughly as OpenAI counts it.

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Response, header};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::body::Body;
use crate::error::GatewayError;

/// Length of a mock embedding when the request names no `dimensions`.
pub const DEFAULT_DIMENSIONS: usize = 8;
/// Largest `dimensions` the mock accepts (that of OpenAI's largest embedding model).
pub const MAX_DIMENSIONS: usize = 3072;
/// Most inputs one embeddings request may carry, as OpenAI limits it.
pub const MAX_EMBEDDING_INPUTS: usize = 2048;

/// The fields of an embeddings request the mock reads; everything else is ignored.
#[derive(Debug, Deserialize)]
struct EmbeddingRequest {
    model: Option<String>,
    input: Option<Value>,
    dimensions: Option<Value>,
    encoding_format: Option<Value>,
}

/// One input to embed: text, or token ids.
#[derive(Debug, Clone, PartialEq)]
enum EmbeddingInput {
    Text(String),
    Tokens(Vec<u64>),
}

impl EmbeddingInput {
    /// Tokens counted roughly as OpenAI does: a token id is one, text is a token per 4 chars.
    fn tokens(&self) -> u32 {
        match self {
            EmbeddingInput::Text(t) => (t.chars().count() as u32).div_ceil(4),
            EmbeddingInput::Tokens(ids) => ids.len() as u32,
        }
    }
}

fn invalid_input(message: &str) -> GatewayError {
    GatewayError::InvalidParam { param: "input", message: message.to_owned() }
}

fn token_ids(items: &[Value]) -> Result<Vec<u64>, GatewayError> {
    if items.is_empty() {
        return Err(invalid_input("input must not contain an empty array of token ids"));
    }
    items.iter().map(|v| v.as_u64().ok_or_else(|| invalid_input("token ids must be non-negative integers"))).collect()
}

/// The inputs of `input`, in OpenAI's four forms: a string, an array of strings, an array of
/// token ids, an array of arrays of token ids.
fn embedding_inputs(input: Option<&Value>) -> Result<Vec<EmbeddingInput>, GatewayError> {
    const SHAPE: &str =
        "input must be a string, an array of strings, an array of token ids or an array of arrays of token ids";
    let items = match input {
        None | Some(Value::Null) => return Err(GatewayError::MissingField("input")),
        Some(Value::String(s)) => vec![EmbeddingInput::Text(s.clone())],
        Some(Value::Array(items)) if items.is_empty() => return Err(invalid_input("input must not be empty")),
        Some(Value::Array(items)) => match &items[0] {
            Value::String(_) => items
                .iter()
                .map(|v| v.as_str().map(|s| EmbeddingInput::Text(s.to_owned())).ok_or_else(|| invalid_input(SHAPE)))
                .collect::<Result<_, _>>()?,
            Value::Number(_) => vec![EmbeddingInput::Tokens(token_ids(items)?)],
            Value::Array(_) => items
                .iter()
                .map(|v| match v {
                    Value::Array(ids) => token_ids(ids).map(EmbeddingInput::Tokens),
                    _ => Err(invalid_input(SHAPE)),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(invalid_input(SHAPE)),
        },
        Some(_) => return Err(invalid_input(SHAPE)),
    };
    if items.len() > MAX_EMBEDDING_INPUTS {
        return Err(invalid_input(&format!("input must have at most {MAX_EMBEDDING_INPUTS} items")));
    }
    if items.iter().any(|i| matches!(i, EmbeddingInput::Text(t) if t.is_empty())) {
        return Err(invalid_input("input must not contain empty strings"));
    }
    Ok(items)
}

/// The deterministic unit vector of one input under `model`.
fn embedding_vector(model: &str, input: &EmbeddingInput, dimensions: usize) -> Vec<f32> {
    let mut hasher = Sha256::new();
    hasher.update(model.as_bytes());
    hasher.update([0]);
    match input {
        EmbeddingInput::Text(t) => {
            hasher.update(b"t");
            hasher.update(t.as_bytes());
        }
        EmbeddingInput::Tokens(ids) => {
            hasher.update(b"i");
            for id in ids {
                hasher.update(id.to_le_bytes());
            }
        }
    }
    let seed: [u8; 32] = hasher.finalize().into();
    let mut values = Vec::with_capacity(dimensions);
    let mut block = 0u32;
    while values.len() < dimensions {
        let digest: [u8; 32] = Sha256::new().chain_update(seed).chain_update(block.to_le_bytes()).finalize().into();
        for word in digest.chunks_exact(4) {
            if values.len() == dimensions {
                break;
            }
            let x = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            values.push(x as f64 / u32::MAX as f64 * 2.0 - 1.0);
        }
        block += 1;
    }
    let norm = values.iter().map(|v| v * v).sum::<f64>().sqrt();
    let norm = if norm > 0.0 { norm } else { 1.0 };
    values.into_iter().map(|v| (v / norm) as f32).collect()
}

#[derive(Serialize)]
#[serde(untagged)]
enum EncodedEmbedding {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbeddingItem {
    object: &'static str,
    index: usize,
    embedding: EncodedEmbedding,
}

#[derive(Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u32,
    total_tokens: u32,
}

#[derive(Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingItem>,
    model: &'a str,
    usage: EmbeddingUsage,
}

/// The body of the answer to a raw embeddings request, as OpenAI would give it.
pub fn embeddings_json(body: &[u8]) -> Result<Bytes, GatewayError> {
    let request: EmbeddingRequest = serde_json::from_slice(body)
        .map_err(|e| GatewayError::InvalidRequest(format!("Request body is not a valid embeddings request: {e}")))?;
    let model = request.model.as_deref().filter(|m| !m.is_empty()).ok_or(GatewayError::MissingField("model"))?;
    let inputs = embedding_inputs(request.input.as_ref())?;
    let dimensions = match &request.dimensions {
        None | Some(Value::Null) => DEFAULT_DIMENSIONS,
        Some(v) => {
            v.as_u64().filter(|d| (1..=MAX_DIMENSIONS as u64).contains(d)).map(|d| d as usize).ok_or_else(|| {
                GatewayError::InvalidParam {
                    param: "dimensions",
                    message: format!("dimensions must be an integer from 1 to {MAX_DIMENSIONS}"),
                }
            })?
        }
    };
    let base64 = match &request.encoding_format {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(_) => {
            return Err(GatewayError::InvalidParam {
                param: "encoding_format",
                message: "encoding_format must be \"float\" or \"base64\"".to_owned(),
            });
        }
    };
    let tokens = inputs.iter().fold(0u32, |n, i| n.saturating_add(i.tokens()));
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, input)| {
            let vector = embedding_vector(model, input, dimensions);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
                EncodedEmbedding::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                EncodedEmbedding::Float(vector)
            };
            EmbeddingItem { object: "embedding", index, embedding }
        })
        .collect();
    let list = EmbeddingList {
        object: "list",
        data,
        model,
        usage: EmbeddingUsage { prompt_tokens: tokens, total_tokens: tokens },
    };
    serde_json::to_vec(&list)
        .map(Bytes::from)
        .map_err(|e| GatewayError::InvalidRequest(format!("Embeddings could not be encoded: {e}")))
}

/// Answers a raw embeddings request as OpenAI would.
pub fn embeddings(body: &[u8]) -> Result<Response<Body>, GatewayError> {
    let mut response = Response::new(crate::body::full(embeddings_json(body)?));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn embed(json: &str) -> Result<Value, GatewayError> {
        embeddings_json(json.as_bytes()).map(|b| serde_json::from_slice(&b).unwrap())
    }

    fn floats(v: &Value) -> Vec<f32> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
    }

    #[test]
    fn embeddings_are_deterministic_unit_vectors() {
        let a = embed(r#"{"model":"mock-1","input":"hello"}"#).unwrap();
        let b = embed(r#"{"model":"mock-1","input":"hello","user":"x"}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a["object"], "list");
        assert_eq!(a["model"], "mock-1");
        assert_eq!(a["data"][0]["object"], "embedding");
        assert_eq!(a["data"][0]["index"], 0);
        let v = floats(&a["data"][0]["embedding"]);
        assert_eq!(v.len(), DEFAULT_DIMENSIONS);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        assert_eq!(a["usage"]["prompt_tokens"], 2);
        assert_eq!(a["usage"]["total_tokens"], 2);

        let other_model = embed(r#"{"model":"mock-2","input":"hello"}"#).unwrap();
        assert_ne!(other_model["data"][0]["embedding"], a["data"][0]["embedding"]);
        let other_text = embed(r#"{"model":"mock-1","input":"hello!"}"#).unwrap();
        assert_ne!(other_text["data"][0]["embedding"], a["data"][0]["embedding"]);
    }

    #[test]
    fn embeddings_accept_the_four_input_forms() {
        let v = embed(r#"{"model":"m","input":["a","bb","hello"]}"#).unwrap();
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), 3);
        for (i, item) in data.iter().enumerate() {
            assert_eq!(item["index"], i);
        }
        let single = embed(r#"{"model":"m","input":"bb"}"#).unwrap();
        assert_eq!(data[1]["embedding"], single["data"][0]["embedding"], "each item is embedded on its own");

        let tokens = embed(r#"{"model":"m","input":[1,2,3]}"#).unwrap();
        assert_eq!(tokens["data"].as_array().unwrap().len(), 1);
        assert_eq!(tokens["usage"]["prompt_tokens"], 3);

        let nested = embed(r#"{"model":"m","input":[[1,2,3],[4]]}"#).unwrap();
        assert_eq!(nested["data"].as_array().unwrap().len(), 2);
        assert_eq!(nested["usage"]["prompt_tokens"], 4);
        assert_eq!(nested["data"][0]["embedding"], tokens["data"][0]["embedding"]);
    }

    #[test]
    fn embeddings_refuse_bad_input() {
        let param = |json: &str| match embed(json) {
            Err(GatewayError::InvalidParam { param, .. }) => param,
            Err(GatewayError::MissingField(f)) => f,
            other => panic!("{json}: {other:?}"),
        };
        for bad in [
            r#"{"model":"m","input":""}"#,
            r#"{"model":"m","input":[]}"#,
            r#"{"model":"m","input":[[]]}"#,
            r#"{"model":"m","input":["a",""]}"#,
            r#"{"model":"m","input":["a",1]}"#,
            r#"{"model":"m","input":[1,-2]}"#,
            r#"{"model":"m","input":[[1],"a"]}"#,
            r#"{"model":"m","input":{"a":1}}"#,
            r#"{"model":"m","input":5}"#,
            r#"{"model":"m"}"#,
        ] {
            assert_eq!(param(bad), "input", "{bad}");
        }
        for bad in ["0", "3073", "-1", "1.5", "\"8\""] {
            assert_eq!(param(&format!(r#"{{"model":"m","input":"x","dimensions":{bad}}}"#)), "dimensions", "{bad}");
        }
        assert_eq!(param(r#"{"model":"m","input":"x","encoding_format":"int8"}"#), "encoding_format");
        assert_eq!(param(r#"{"input":"x"}"#), "model");
        assert!(matches!(embed("[1]"), Err(GatewayError::InvalidRequest(_))));
    }

    #[test]
    fn embeddings_dimensions_and_base64() {
        let v = embed(r#"{"model":"m","input":"x","dimensions":3072}"#).unwrap();
        assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 3072);
        let float = embed(r#"{"model":"m","input":"x","dimensions":16,"encoding_format":"float"}"#).unwrap();
        let b64 = embed(r#"{"model":"m","input":"x","dimensions":16,"encoding_format":"base64"}"#).unwrap();
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(b64["data"][0]["embedding"].as_str().unwrap()).unwrap();
        let decoded: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(decoded, floats(&float["data"][0]["embedding"]));
        assert_eq!(decoded.len(), 16);
        assert_eq!(b64["usage"], float["usage"]);
    }
}
