//! OpenAI Responses request → Anthropic `messages` request. The client's body is read as loose
//! JSON and a new body is built from the fields this module knows; unknown fields are ignored
//! and never forwarded. Every known parameter Anthropic cannot honour is refused with a 400
//! whose `param` names it (the message names the exact place, `input[2].content[0]`).
//!
//! `instructions` and `system`/`developer` messages become Anthropic's `system`; `input` (a
//! string, or message, `function_call` and `function_call_output` items) becomes alternating
//! user/assistant turns (same-role neighbours merged, tool results first in their user turn);
//! function tools, `tool_choice` and `parallel_tool_calls` map as for chat completions.
//!
//! `store` is accepted and ignored: Anthropic keeps nothing, so nothing can be retrieved later
//! and the answer says `"store": false`. What needs stored state (`previous_response_id`,
//! `conversation`, stored `prompt`s, `item_reference` items, `background`) is refused.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::Translated;
use crate::error::GatewayError;
use crate::providers::anthropic::DEFAULT_MAX_TOKENS;
use crate::providers::anthropic::request::{schema_output, temperature};
use crate::providers::anthropic::tools::{disable_parallel_tool_use, function_tool, tool_choice_mode};
use crate::providers::anthropic::turns::{self, Turns};
use crate::providers::responses::echo_of;

pub(super) fn invalid(param: &'static str, message: impl Into<String>) -> GatewayError {
    GatewayError::InvalidParam { param, message: message.into() }
}

fn unsupported(param: &'static str, why: &str) -> GatewayError {
    invalid(param, format!("`{param}` {why} for Anthropic models through uprox"))
}

/// A parameter present with a meaningful value (`null` counts as absent).
fn set<'a>(req: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    req.get(name).filter(|v| !v.is_null())
}

/// Translates a Responses request into an Anthropic messages request.
pub fn translate_request(body: &[u8]) -> Result<Translated, GatewayError> {
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| GatewayError::InvalidRequest(format!("The request body is not valid JSON: {e}")))?;
    let Value::Object(req) = body else {
        return Err(GatewayError::InvalidRequest("The request body must be a JSON object".into()));
    };
    let model = match req.get("model") {
        None | Some(Value::Null) => return Err(GatewayError::MissingField("model")),
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(invalid("model", "`model` must be a non-empty string")),
    };
    refuse_unsupported(&req)?;

    let mut system = Vec::new();
    match set(&req, "instructions") {
        None => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(s)) => system.push(s.clone()),
        Some(_) => return Err(invalid("instructions", "`instructions` must be a string")),
    }
    let messages = translate_input(&req, &mut system)?;

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.clone()));
    if !system.is_empty() {
        out.insert("system".into(), Value::String(system.join("\n\n")));
    }
    out.insert("messages".into(), Value::Array(messages));
    let max_tokens = match set(&req, "max_output_tokens") {
        None => u64::from(DEFAULT_MAX_TOKENS),
        Some(v) => v
            .as_u64()
            .filter(|n| *n > 0)
            .ok_or_else(|| invalid("max_output_tokens", "`max_output_tokens` must be a positive integer"))?,
    };
    out.insert("max_tokens".into(), json!(max_tokens));
    if let Some(t) = set(&req, "temperature") {
        let t = temperature(t).map_err(|message| invalid("temperature", message))?;
        out.insert("temperature".into(), json!(t));
    }
    if let Some(p) = set(&req, "top_p") {
        let p = p.as_f64().ok_or_else(|| invalid("top_p", "`top_p` must be a number"))?;
        out.insert("top_p".into(), json!(p));
    }
    let stream = match set(&req, "stream") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("stream", "`stream` must be a boolean")),
    };
    if stream {
        out.insert("stream".into(), Value::Bool(true));
    }
    // `user` is deprecated in favour of `safety_identifier`; either identifies the end user.
    for name in ["user", "safety_identifier"] {
        if let Some(user) = set(&req, name) {
            let user = user.as_str().ok_or_else(|| invalid(name, format!("`{name}` must be a string")))?;
            out.insert("metadata".into(), json!({ "user_id": user }));
            break;
        }
    }
    translate_tools(&req, &mut out)?;
    if let Some(config) = output_config(&req)? {
        out.insert("output_config".into(), config);
    }

    let body = serde_json::to_vec(&Value::Object(out))
        .map_err(|e| GatewayError::InvalidRequest(format!("The request could not be translated: {e}")))?;
    Ok(Translated { body: Bytes::from(body), stream, model, echo: echo_of(&req) })
}

/// Refuses parameters that would change the answer and that Anthropic cannot honour.
fn refuse_unsupported(req: &Map<String, Value>) -> Result<(), GatewayError> {
    const STATELESS: &str =
        "is not supported: Anthropic responses are not stored, so send the whole conversation in `input`";
    if set(req, "previous_response_id").is_some() {
        return Err(unsupported("previous_response_id", STATELESS));
    }
    if set(req, "conversation").is_some() {
        return Err(unsupported("conversation", STATELESS));
    }
    if set(req, "prompt").is_some() {
        return Err(unsupported("prompt", "(a stored prompt template) is not supported"));
    }
    if set(req, "background").is_some_and(|b| b != &Value::Bool(false)) {
        return Err(unsupported("background", "is not supported"));
    }
    if set(req, "include").is_some_and(|i| i.as_array().is_none_or(|a| !a.is_empty())) {
        return Err(unsupported("include", "is not supported"));
    }
    if set(req, "top_logprobs").is_some_and(|v| v.as_u64() != Some(0)) {
        return Err(unsupported("top_logprobs", "is not supported"));
    }
    if set(req, "truncation").is_some_and(|v| v != "disabled") {
        return Err(unsupported("truncation", "other than `disabled` is not supported"));
    }
    if let Some(reasoning) = set(req, "reasoning") {
        let effort = reasoning.get("effort").filter(|e| !e.is_null());
        let summary = reasoning.get("summary").or_else(|| reasoning.get("generate_summary")).filter(|s| !s.is_null());
        if effort.is_some_and(|e| e != "none") || summary.is_some() {
            return Err(unsupported("reasoning", "is not supported"));
        }
    }
    if let Some(text) = set(req, "text")
        && text.get("verbosity").filter(|v| !v.is_null()).is_some_and(|v| v != "medium")
    {
        return Err(unsupported("text.verbosity", "other than `medium` is not supported"));
    }
    Ok(())
}

/// `text.format` as Anthropic's `output_config` (structured outputs), as for chat completions'
/// `response_format`: a `json_schema` (its `schema` beside `type` here) is followed by the
/// answer's text; `json_object` has no Anthropic equivalent.
fn output_config(req: &Map<String, Value>) -> Result<Option<Value>, GatewayError> {
    let Some(format) = set(req, "text").and_then(|t| t.get("format")).filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_schema") => {
            let schema = format.get("schema").filter(|s| s.is_object());
            let schema =
                schema.ok_or_else(|| invalid("text.format", "`text.format.schema` must be a JSON Schema object"))?;
            Ok(Some(schema_output(schema)))
        }
        Some("json_object") => Err(unsupported(
            "text.format",
            "of type `json_object` is not supported (Anthropic has no JSON mode without a schema: use `json_schema`)",
        )),
        _ => Err(unsupported("text.format", "must be of type `text` or `json_schema`")),
    }
}

/// `input` → Anthropic `messages`; system and developer text goes to `system`.
fn translate_input(req: &Map<String, Value>, system: &mut Vec<String>) -> Result<Vec<Value>, GatewayError> {
    let mut turns = Turns::default();
    match req.get("input") {
        None | Some(Value::Null) => return Err(GatewayError::MissingField("input")),
        Some(Value::String(s)) => turns.push("user", text_block(s).into_iter().collect()),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                translate_item(item, i, system, &mut turns)?;
            }
        }
        Some(_) => return Err(invalid("input", "`input` must be a string or an array of input items")),
    }
    if turns.is_empty() {
        return Err(invalid("input", "`input` must contain at least one non-empty user or assistant message"));
    }
    Ok(turns.into_messages())
}

fn translate_item(item: &Value, i: usize, system: &mut Vec<String>, turns: &mut Turns) -> Result<(), GatewayError> {
    let role = item.get("role").and_then(Value::as_str);
    let kind = item.get("type").and_then(Value::as_str).or(role.map(|_| "message"));
    match kind {
        Some("message") => {
            let at = format!("input[{i}].content");
            let content = item.get("content").unwrap_or(&Value::Null);
            match role {
                Some("system" | "developer") => {
                    for block in content_blocks(content, &at, false)? {
                        if let Some(text) = block.get("text").and_then(Value::as_str) {
                            system.push(text.to_owned());
                        }
                    }
                }
                Some("user") => turns.push("user", content_blocks(content, &at, true)?),
                Some("assistant") => turns.push("assistant", content_blocks(content, &at, false)?),
                other => {
                    return Err(invalid(
                        "input",
                        format!(
                            "`input[{i}].role` {} is not supported; use user, assistant, system or developer",
                            other.map_or_else(|| "(missing)".to_owned(), |r| format!("`{r}`"))
                        ),
                    ));
                }
            }
        }
        Some("function_call") => {
            let field = |name: &str| {
                item.get(name)
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("input", format!("`input[{i}].{name}` is required and must be a string")))
            };
            let (call_id, name) = (field("call_id")?, field("name")?);
            let arguments = item.get("arguments").and_then(Value::as_str).unwrap_or_default();
            let block = turns::tool_use_block(call_id, name, arguments, &format!("input[{i}].arguments"))
                .map_err(|message| invalid("input", message))?;
            turns.push("assistant", vec![block]);
        }
        Some("function_call_output") => {
            let call_id = item
                .get("call_id")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("input", format!("`input[{i}].call_id` is required and must be a string")))?;
            let content = match item.get("output").unwrap_or(&Value::Null) {
                Value::String(s) => Value::String(s.clone()),
                Value::Null => Value::String(String::new()),
                parts @ Value::Array(_) => Value::Array(content_blocks(parts, &format!("input[{i}].output"), true)?),
                _ => {
                    return Err(invalid(
                        "input",
                        format!("`input[{i}].output` must be a string or an array of content parts"),
                    ));
                }
            };
            turns.push("user", vec![json!({"type": "tool_result", "tool_use_id": call_id, "content": content})]);
        }
        Some(other) => {
            return Err(invalid(
                "input",
                format!(
                    "input item type `{other}` at `input[{i}]` is not supported for Anthropic models through uprox; use messages, function_call and function_call_output items"
                ),
            ));
        }
        None => return Err(invalid("input", format!("`input[{i}]` must have a `type` or a `role`"))),
    }
    Ok(())
}

/// A text block; none for empty text, which Anthropic rejects and which carries nothing.
fn text_block(text: &str) -> Option<Value> {
    (!text.is_empty()).then(|| json!({"type": "text", "text": text}))
}

/// Message `content` (a string or an array of parts) → Anthropic content blocks.
fn content_blocks(content: &Value, at: &str, images: bool) -> Result<Vec<Value>, GatewayError> {
    let parts = match content {
        Value::Null => return Ok(Vec::new()),
        Value::String(s) => return Ok(text_block(s).into_iter().collect()),
        Value::Array(parts) => parts,
        _ => return Err(invalid("input", format!("`{at}` must be a string or an array of content parts"))),
    };
    let mut blocks = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
        match kind {
            "input_text" | "output_text" | "text" | "refusal" => {
                let key = if kind == "refusal" { "refusal" } else { "text" };
                let text = part
                    .get(key)
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("input", format!("`{at}[{j}].{key}` must be a string")))?;
                blocks.extend(text_block(text));
            }
            "input_image" if images => blocks.push(image_block(part, &format!("{at}[{j}]"))?),
            other => {
                return Err(invalid(
                    "input",
                    format!(
                        "content part type `{other}` at `{at}[{j}]` is not supported for Anthropic models through uprox"
                    ),
                ));
            }
        }
    }
    Ok(blocks)
}

/// An `input_image` part → an Anthropic image block (base64 for data URLs, url otherwise).
fn image_block(part: &Value, at: &str) -> Result<Value, GatewayError> {
    let bad = || invalid("input", format!("`{at}.image_url` must be a base64 data URL or an http(s) URL"));
    if part.get("file_id").is_some_and(|f| !f.is_null()) {
        return Err(invalid(
            "input",
            format!("`{at}.file_id` is not supported for Anthropic models through uprox; send `image_url`"),
        ));
    }
    let url = part.get("image_url").and_then(Value::as_str).ok_or_else(bad)?;
    turns::image_block(url).ok_or_else(bad)
}

/// `tools`, `tool_choice` and `parallel_tool_calls`.
fn translate_tools(req: &Map<String, Value>, out: &mut Map<String, Value>) -> Result<(), GatewayError> {
    let tools = match set(req, "tools") {
        None => &[][..],
        Some(Value::Array(tools)) => tools.as_slice(),
        Some(_) => return Err(invalid("tools", "`tools` must be an array")),
    };
    let mut translated = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => {}
            other => {
                return Err(invalid(
                    "tools",
                    format!(
                        "`tools[{i}].type` {} is not supported for Anthropic models through uprox; only `function` tools are",
                        other.map_or_else(|| "(missing)".to_owned(), |t| format!("`{t}`"))
                    ),
                ));
            }
        }
        let name = tool
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("tools", format!("`tools[{i}].name` is required")))?;
        translated.push(Value::Object(function_tool(name, tool)));
    }
    let has_tools = !translated.is_empty();
    if has_tools {
        out.insert("tools".into(), Value::Array(translated));
    }

    let mut choice = match set(req, "tool_choice") {
        None => None,
        Some(Value::String(s)) => Some(tool_choice_mode(s).ok_or_else(|| {
            invalid("tool_choice", format!("`tool_choice` `{s}` is not one of auto, none, required"))
        })?),
        Some(obj) => {
            let name = obj
                .get("name")
                .and_then(Value::as_str)
                .filter(|_| obj.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(|| {
                    invalid(
                        "tool_choice",
                        "`tool_choice` must be auto, none, required or {\"type\": \"function\", \"name\": …} for Anthropic models through uprox",
                    )
                })?;
            Some(json!({"type": "tool", "name": name}))
        }
    };
    match set(req, "parallel_tool_calls") {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => disable_parallel_tool_use(&mut choice, has_tools),
        Some(_) => return Err(invalid("parallel_tool_calls", "`parallel_tool_calls` must be a boolean")),
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

    fn with(field: &str, value: Value) -> Value {
        let mut m = json!({"model": "claude-sonnet-4-5", "input": "hi"});
        m[field] = value;
        m
    }

    /// The request is a 400 whose `param` is `param` and whose message contains `mention`.
    fn refused(body: Value, param: &str, mention: &str) {
        match translate(body.clone()) {
            Err(e @ GatewayError::InvalidParam { .. }) => {
                assert_eq!(e.status(), 400);
                let v: Value = serde_json::from_slice(&e.body()).unwrap();
                assert_eq!(v["error"]["param"], param, "{body}");
                assert!(e.to_string().contains(mention), "{e} does not mention {mention}");
            }
            other => panic!("{body} should be refused naming {param}, got {other:?}"),
        }
    }

    #[test]
    fn unsupported_parameters_are_refused_by_name() {
        refused(with("previous_response_id", json!("resp_1")), "previous_response_id", "not stored");
        refused(with("conversation", json!("conv_1")), "conversation", "`conversation`");
        refused(with("prompt", json!({"id": "pmpt_1"})), "prompt", "`prompt`");
        refused(with("background", json!(true)), "background", "`background`");
        refused(with("include", json!(["reasoning.encrypted_content"])), "include", "`include`");
        refused(with("reasoning", json!({"effort": "high"})), "reasoning", "`reasoning`");
        refused(with("reasoning", json!({"summary": "auto"})), "reasoning", "`reasoning`");
        refused(with("top_logprobs", json!(2)), "top_logprobs", "`top_logprobs`");
        refused(with("truncation", json!("auto")), "truncation", "`truncation`");
        refused(with("text", json!({"format": {"type": "json_schema", "name": "x"}})), "text.format", "schema");
        refused(with("text", json!({"format": {"type": "json_object"}})), "text.format", "json_object");
        refused(with("text", json!({"verbosity": "low"})), "text.verbosity", "`text.verbosity`");
        refused(with("tools", json!([{"type": "web_search"}])), "tools", "`tools[0].type` `web_search`");
        refused(with("tools", json!([{"type": "file_search", "vector_store_ids": ["vs_1"]}])), "tools", "file_search");
        refused(with("tool_choice", json!({"type": "web_search_preview"})), "tool_choice", "`tool_choice`");
        refused(with("tool_choice", json!("sometimes")), "tool_choice", "sometimes");
        refused(with("temperature", json!(1.5)), "temperature", "between 0 and 1");
        refused(with("max_output_tokens", json!(0)), "max_output_tokens", "positive");
    }

    #[test]
    fn a_json_schema_text_format_becomes_anthropic_structured_output() {
        let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": false});
        let format = json!({"format": {"type": "json_schema", "name": "count", "strict": true, "schema": schema}});
        let out = translate(with("text", format)).unwrap();
        assert_eq!(out["output_config"], json!({"format": {"type": "json_schema", "schema": schema}}));
        assert!(out.get("text").is_none());
    }

    #[test]
    fn harmless_values_pass() {
        for (field, value) in [
            ("store", json!(true)),
            ("store", json!(false)),
            ("background", json!(false)),
            ("include", json!([])),
            ("reasoning", json!({"effort": null, "summary": null})),
            ("reasoning", json!({"effort": "none"})),
            ("text", json!({"format": {"type": "text"}, "verbosity": "medium"})),
            ("truncation", json!("disabled")),
            ("top_logprobs", json!(0)),
            ("previous_response_id", Value::Null),
            ("metadata", json!({"team": "a"})),
            ("service_tier", json!("auto")),
            ("prompt_cache_key", json!("k")),
            ("some_future_field", json!({"x": 1})),
        ] {
            let out = translate(with(field, value.clone())).unwrap_or_else(|e| panic!("{field}={value}: {e}"));
            let keys: Vec<&String> = out.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["max_tokens", "messages", "model"], "{field} is not forwarded");
        }
    }

    #[test]
    fn bad_input_is_refused_at_its_place() {
        assert!(matches!(translate(json!({"model": "m"})), Err(GatewayError::MissingField("input"))));
        refused(with("input", json!([])), "input", "at least one");
        refused(with("input", json!(5)), "input", "`input`");
        refused(
            with("input", json!([{"type": "reasoning", "id": "rs_1", "summary": []}])),
            "input",
            "`reasoning` at `input[0]`",
        );
        refused(with("input", json!([{"type": "item_reference", "id": "msg_1"}])), "input", "item_reference");
        refused(with("input", json!([{"role": "tool", "content": "x"}])), "input", "`input[0].role` `tool`");
        refused(
            with("input", json!([{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}])),
            "input",
            "`input[0].content[0]`",
        );
        refused(
            with("input", json!([{"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x"}]}])),
            "input",
            "`input[0].content[0].image_url`",
        );
        refused(
            with("input", json!([{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}])),
            "input",
            "file_id",
        );
        refused(
            with("input", json!([{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{nope"}])),
            "input",
            "`input[0].arguments`",
        );
        refused(with("input", json!([{"type": "function_call_output", "output": "x"}])), "input", "`input[0].call_id`");
    }

    #[test]
    fn user_or_safety_identifier_become_metadata() {
        assert_eq!(translate(with("user", json!("u-1"))).unwrap()["metadata"], json!({"user_id": "u-1"}));
        assert_eq!(translate(with("safety_identifier", json!("s-1"))).unwrap()["metadata"], json!({"user_id": "s-1"}));
    }

    #[test]
    fn echo_keeps_what_the_client_set() {
        let t = translate_request(
            json!({"model": "claude-x", "input": "hi", "instructions": "be brief", "temperature": 0.5, "metadata": {"a": "b"}})
                .to_string()
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(t.echo["instructions"], "be brief");
        assert_eq!(t.echo["temperature"], 0.5);
        assert_eq!(t.echo["metadata"], json!({"a": "b"}));
        assert_eq!(t.echo["tool_choice"], "auto");
        assert_eq!(t.model, "claude-x");
        assert!(!t.stream);
    }
}
