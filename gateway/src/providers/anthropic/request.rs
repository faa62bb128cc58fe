//! OpenAI `chat.completions` request → Anthropic `messages` request. The client's body is read
//! as loose JSON and a new body is built from the fields this module knows: unknown fields are
//! ignored and never forwarded, and every known parameter Anthropic cannot honour is refused
//! with a 400 that names it. It does not validate what Anthropic validates itself (model names,
//! image media types, schema shapes): Anthropic's own 400 is relayed for those.
//!
//! Anthropic's shape differs in ways that need rewriting, not renaming: system prompts are a
//! top-level field, turns must alternate user/assistant (consecutive same-role turns are merged;
//! tool results are user content), tool calls and results are content blocks, and `max_tokens`
//! is required. The messages themselves are rewritten in [`super::messages`].

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::messages::translate_messages;
use super::tools::{disable_parallel_tool_use, function_tool, tool_choice_mode};
use super::{DEFAULT_MAX_TOKENS, Translated};
use crate::error::GatewayError;

pub(super) fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::InvalidRequest(message.into())
}

pub(super) fn unsupported(param: &str, why: &str) -> GatewayError {
    invalid(format!("`{param}` {why} for Anthropic models through uprox"))
}

/// Whether a parameter is present with a meaningful value (`null` counts as absent).
fn set(req: &Map<String, Value>, name: &str) -> Option<Value> {
    req.get(name).filter(|v| !v.is_null()).cloned()
}

/// Translates an OpenAI chat completion request into an Anthropic messages request.
pub fn translate_request(openai_body: &[u8]) -> Result<Translated, GatewayError> {
    let body: Value =
        serde_json::from_slice(openai_body).map_err(|e| invalid(format!("The request body is not valid JSON: {e}")))?;
    let Value::Object(req) = body else {
        return Err(invalid("The request body must be a JSON object"));
    };
    let model = match req.get("model") {
        None | Some(Value::Null) => return Err(GatewayError::MissingField("model")),
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(invalid("`model` must be a non-empty string")),
    };
    refuse_unsupported(&req)?;

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.clone()));
    let (system, messages) = translate_messages(&req)?;
    if let Some(system) = system {
        out.insert("system".into(), system);
    }
    out.insert("messages".into(), Value::Array(messages));
    out.insert("max_tokens".into(), json!(max_tokens(&req)?));

    if let Some(t) = set(&req, "temperature") {
        out.insert("temperature".into(), json!(temperature(&t).map_err(invalid)?));
    }
    if let Some(p) = set(&req, "top_p") {
        let p = p.as_f64().ok_or_else(|| invalid("`top_p` must be a number"))?;
        out.insert("top_p".into(), json!(p));
    }
    if let Some(stop) = stop_sequences(&req)? {
        out.insert("stop_sequences".into(), stop);
    }
    let stream = match set(&req, "stream") {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(invalid("`stream` must be a boolean")),
    };
    if stream {
        out.insert("stream".into(), Value::Bool(true));
    }
    let include_usage = match set(&req, "stream_options").as_ref().and_then(|o| o.get("include_usage")) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("`stream_options.include_usage` must be a boolean")),
    };
    if let Some(user) = set(&req, "user") {
        let user = user.as_str().ok_or_else(|| invalid("`user` must be a string"))?;
        out.insert("metadata".into(), json!({ "user_id": user }));
    }
    translate_tools(&req, &mut out)?;
    if let Some(config) = output_config(&req)? {
        out.insert("output_config".into(), config);
    }

    let body = serde_json::to_vec(&Value::Object(out))
        .map_err(|e| invalid(format!("The request could not be translated: {e}")))?;
    Ok(Translated { body: Bytes::from(body), stream, include_usage: stream && include_usage, model })
}

/// A client's `temperature`, checked against Anthropic's range (shared with the Responses
/// translation); the error is the message to send.
pub(super) fn temperature(value: &Value) -> Result<f64, String> {
    let t = value.as_f64().ok_or("`temperature` must be a number")?;
    if !(0.0..=1.0).contains(&t) {
        return Err(format!(
            "`temperature` must be between 0 and 1 for Anthropic models (got {t}); OpenAI's range is 0 to 2, Anthropic's is 0 to 1"
        ));
    }
    Ok(t)
}

/// Refuses parameters that would change the answer and that Anthropic cannot honour.
fn refuse_unsupported(req: &Map<String, Value>) -> Result<(), GatewayError> {
    if set(req, "n").is_some_and(|n| n.as_u64() != Some(1)) {
        return Err(unsupported("n", "other than 1 is not supported (Anthropic returns one choice)"));
    }
    if set(req, "logprobs").is_some_and(|v| v != Value::Bool(false)) {
        return Err(unsupported("logprobs", "is not supported"));
    }
    if set(req, "top_logprobs").is_some_and(|v| v.as_u64() != Some(0)) {
        return Err(unsupported("top_logprobs", "is not supported"));
    }
    for penalty in ["frequency_penalty", "presence_penalty"] {
        if set(req, penalty).is_some_and(|v| v.as_f64() != Some(0.0)) {
            return Err(unsupported(penalty, "other than 0 is not supported"));
        }
    }
    if set(req, "logit_bias").is_some_and(|v| v.as_object().is_none_or(|m| !m.is_empty())) {
        return Err(unsupported("logit_bias", "is not supported"));
    }
    for param in ["seed", "audio", "prediction", "reasoning_effort", "functions", "function_call"] {
        if set(req, param).is_some() {
            let why = match param {
                "functions" | "function_call" => {
                    "(deprecated by OpenAI) is not supported; use `tools` and `tool_choice`"
                }
                _ => "is not supported",
            };
            return Err(unsupported(param, why));
        }
    }
    if let Some(modalities) = set(req, "modalities") {
        let text_only = modalities.as_array().is_some_and(|m| m.iter().all(|v| v == "text"));
        if !text_only {
            return Err(unsupported("modalities", "other than [\"text\"] are not supported"));
        }
    }
    Ok(())
}

/// `response_format` as Anthropic's `output_config` (structured outputs): a `json_schema` becomes
/// `{"format": {"type": "json_schema", "schema": …}}` and the answer's text is JSON following
/// it; `text` needs nothing. `json_object` (JSON of any shape) has no Anthropic equivalent.
fn output_config(req: &Map<String, Value>) -> Result<Option<Value>, GatewayError> {
    let Some(format) = set(req, "response_format") else { return Ok(None) };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_schema") => {
            let schema = format.get("json_schema").and_then(|s| s.get("schema")).filter(|s| s.is_object());
            let schema =
                schema.ok_or_else(|| invalid("`response_format.json_schema.schema` must be a JSON Schema object"))?;
            Ok(Some(schema_output(schema)))
        }
        Some("json_object") => Err(unsupported(
            "response_format",
            "of type `json_object` is not supported (Anthropic has no JSON mode without a schema: use `json_schema`)",
        )),
        _ => Err(unsupported("response_format", "must be of type `text` or `json_schema`")),
    }
}

/// Anthropic's `output_config` asking the answer to follow `schema`.
pub(super) fn schema_output(schema: &Value) -> Value {
    json!({"format": {"type": "json_schema", "schema": schema}})
}

fn max_tokens(req: &Map<String, Value>) -> Result<u64, GatewayError> {
    for name in ["max_completion_tokens", "max_tokens"] {
        if let Some(v) = set(req, name) {
            return match v.as_u64() {
                Some(n) if n > 0 => Ok(n),
                _ => Err(invalid(format!("`{name}` must be a positive integer"))),
            };
        }
    }
    Ok(u64::from(DEFAULT_MAX_TOKENS))
}

fn stop_sequences(req: &Map<String, Value>) -> Result<Option<Value>, GatewayError> {
    match set(req, "stop") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(json!([s]))),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => {
            Ok((!items.is_empty()).then_some(Value::Array(items)))
        }
        Some(_) => Err(invalid("`stop` must be a string or an array of strings")),
    }
}

/// `tools`, `tool_choice` and `parallel_tool_calls`.
fn translate_tools(req: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), GatewayError> {
    let tools = match set(req, "tools") {
        None => Vec::new(),
        Some(Value::Array(tools)) => tools,
        Some(_) => return Err(invalid("`tools` must be an array")),
    };
    let mut translated = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(invalid(format!("`tools[{i}].type` must be `function` for Anthropic models through uprox")));
        }
        let function = tool.get("function").ok_or_else(|| invalid(format!("`tools[{i}].function` is required")))?;
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("`tools[{i}].function.name` is required")))?;
        let mut t = function_tool(name, function);
        if let Some(cache) = tool.get("cache_control").filter(|c| !c.is_null()) {
            t.insert("cache_control".into(), cache.clone());
        }
        translated.push(Value::Object(t));
    }
    let has_tools = !translated.is_empty();
    if has_tools {
        out.insert("tools".into(), Value::Array(translated));
    }

    let mut choice = match set(req, "tool_choice") {
        None => None,
        Some(Value::String(s)) => Some(
            tool_choice_mode(&s)
                .ok_or_else(|| invalid(format!("`tool_choice` `{s}` is not one of auto, none, required")))?,
        ),
        Some(obj) => {
            let name = obj
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .filter(|_| obj.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(|| {
                    invalid("`tool_choice` must be a string or {\"type\": \"function\", \"function\": {\"name\": …}}")
                })?;
            Some(json!({"type": "tool", "name": name}))
        }
    };
    match set(req, "parallel_tool_calls") {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => disable_parallel_tool_use(&mut choice, has_tools),
        Some(_) => return Err(invalid("`parallel_tool_calls` must be a boolean")),
    }
    if let Some(choice) = choice {
        out.insert("tool_choice".into(), choice);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn translate(body: Value) -> Result<Value, GatewayError> {
        let t = translate_request(body.to_string().as_bytes())?;
        Ok(serde_json::from_slice(&t.body).unwrap())
    }

    fn base() -> Map<String, Value> {
        let Value::Object(m) = json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]})
        else {
            unreachable!()
        };
        m
    }

    fn with(field: &str, value: Value) -> Value {
        let mut m = base();
        m.insert(field.into(), value);
        Value::Object(m)
    }

    /// The request is a 400 whose message names `param`.
    fn refused(body: Value, param: &str) {
        match translate(body.clone()) {
            Err(e @ GatewayError::InvalidRequest(_)) => {
                assert_eq!(e.status(), 400);
                assert!(e.to_string().contains(param), "{e} does not name {param}");
            }
            other => panic!("{body} should be refused naming {param}, got {other:?}"),
        }
    }

    #[test]
    fn unsupported_parameters_are_refused_by_name() {
        refused(with("n", json!(2)), "`n`");
        refused(with("logprobs", json!(true)), "`logprobs`");
        refused(with("top_logprobs", json!(3)), "`top_logprobs`");
        refused(with("frequency_penalty", json!(0.5)), "`frequency_penalty`");
        refused(with("presence_penalty", json!(-1)), "`presence_penalty`");
        refused(with("logit_bias", json!({"50256": -100})), "`logit_bias`");
        refused(with("seed", json!(42)), "`seed`");
        refused(with("audio", json!({"voice": "alloy", "format": "mp3"})), "`audio`");
        refused(with("modalities", json!(["text", "audio"])), "`modalities`");
        refused(with("prediction", json!({"type": "content", "content": "x"})), "`prediction`");
        refused(with("reasoning_effort", json!("low")), "`reasoning_effort`");
        refused(with("functions", json!([{"name": "f"}])), "`functions`");
        refused(with("function_call", json!("auto")), "`function_call`");
    }

    #[test]
    fn harmless_values_of_unsupported_parameters_pass() {
        for (field, value) in [
            ("n", json!(1)),
            ("logprobs", json!(false)),
            ("top_logprobs", json!(0)),
            ("frequency_penalty", json!(0)),
            ("presence_penalty", json!(0.0)),
            ("logit_bias", json!({})),
            ("seed", Value::Null),
            ("modalities", json!(["text"])),
            ("response_format", json!({"type": "text"})),
        ] {
            translate(with(field, value.clone())).unwrap_or_else(|e| panic!("{field}={value}: {e}"));
        }
    }

    #[test]
    fn a_json_schema_becomes_anthropic_structured_output() {
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": false});
        let format = json!({"type": "json_schema", "json_schema": {"name": "place", "strict": true, "schema": schema}});
        let out = translate(with("response_format", format)).unwrap();
        assert_eq!(out["output_config"], json!({"format": {"type": "json_schema", "schema": schema}}));
        assert!(out.get("response_format").is_none());
        assert!(translate(with("response_format", json!({"type": "text"}))).unwrap().get("output_config").is_none());
    }

    #[test]
    fn other_response_formats_are_refused_clearly() {
        let message = translate(with("response_format", json!({"type": "json_object"}))).unwrap_err().to_string();
        assert!(message.contains("`response_format`") && message.contains("json_object"), "{message}");
        assert!(message.contains("use `json_schema`"), "{message}");
        refused(with("response_format", json!({"type": "json_schema", "json_schema": {"name": "x"}})), "schema");
        refused(with("response_format", json!({"type": "xml"})), "`response_format`");
    }

    #[test]
    fn temperature_above_one_is_refused_with_the_range() {
        refused(with("temperature", json!(1.5)), "`temperature`");
        let message = translate(with("temperature", json!(1.5))).unwrap_err().to_string();
        assert!(message.contains("between 0 and 1"), "{message}");
        assert_eq!(translate(with("temperature", json!(1))).unwrap()["temperature"], 1.0);
    }

    #[test]
    fn invalid_tool_arguments_are_refused() {
        let body = with(
            "messages",
            json!([
                {"role": "user", "content": "hi"},
                {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "x"}
            ]),
        );
        refused(body, "messages[1].tool_calls[0].function.arguments");
    }

    #[test]
    fn empty_tool_arguments_mean_no_arguments() {
        let body = with(
            "messages",
            json!([
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
            ]),
        );
        assert_eq!(translate(body).unwrap()["messages"][1]["content"][0]["input"], json!({}));
    }

    #[test]
    fn model_and_messages_are_required() {
        let mut no_model = base();
        no_model.remove("model");
        assert!(matches!(translate(Value::Object(no_model)), Err(GatewayError::MissingField("model"))));
        let mut no_messages = base();
        no_messages.remove("messages");
        assert_eq!(translate(Value::Object(no_messages)).unwrap_err().status(), 400);
        refused(with("messages", json!([])), "`messages`");
        refused(with("messages", json!([{"role": "system", "content": "only a system prompt"}])), "`messages`");
        assert_eq!(translate_request(b"not json").unwrap_err().status(), 400);
    }

    #[test]
    fn unknown_and_ignored_fields_are_not_forwarded() {
        let mut m = base();
        for (k, v) in [
            ("store", json!(true)),
            ("metadata", json!({"team": "a"})),
            ("service_tier", json!("auto")),
            ("some_future_field", json!({"x": 1})),
            ("stream_options", json!({"include_usage": true})),
        ] {
            m.insert(k.into(), v);
        }
        let out = translate(Value::Object(m)).unwrap();
        let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["max_tokens", "messages", "model"]);
    }

    #[test]
    fn include_usage_is_read_only_for_streams() {
        let mut m = base();
        m.insert("stream".into(), json!(true));
        m.insert("stream_options".into(), json!({"include_usage": true}));
        let t = translate_request(Value::Object(m).to_string().as_bytes()).unwrap();
        assert!(t.stream && t.include_usage);
        assert_eq!(t.model, "claude-sonnet-4-5");
        assert_eq!(DEFAULT_MAX_TOKENS, 4096);
        let t =
            translate_request(with("stream_options", json!({"include_usage": true})).to_string().as_bytes()).unwrap();
        assert!(!t.stream && !t.include_usage);
    }

    #[test]
    fn bad_shapes_are_refused_by_name() {
        refused(with("max_tokens", json!(0)), "`max_tokens`");
        refused(with("max_completion_tokens", json!("many")), "`max_completion_tokens`");
        refused(with("stop", json!(3)), "`stop`");
        refused(with("tool_choice", json!("sometimes")), "`tool_choice`");
        refused(with("tools", json!([{"type": "code_interpreter"}])), "`tools[0].type`");
        refused(with("messages", json!([{"role": "function", "content": "x"}])), "`messages[0].role`");
        refused(
            with("messages", json!([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}])),
            "`messages[0].content[0]`",
        );
        refused(
            with(
                "messages",
                json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}]),
            ),
            "`messages[0].content[0].image_url.url`",
        );
        refused(with("messages", json!([{"role": "tool", "content": "x"}])), "`messages[0].tool_call_id`");
    }

    #[test]
    fn max_completion_tokens_wins_over_max_tokens() {
        let mut m = base();
        m.insert("max_tokens".into(), json!(10));
        m.insert("max_completion_tokens".into(), json!(20));
        assert_eq!(translate(Value::Object(m)).unwrap()["max_tokens"], 20);
        assert_eq!(translate(with("max_tokens", json!(10))).unwrap()["max_tokens"], 10);
    }

    #[test]
    fn parallel_tool_calls_false_without_tools_adds_nothing() {
        let out = translate(with("parallel_tool_calls", json!(false))).unwrap();
        assert!(out.get("tool_choice").is_none());
    }
}
