//! OpenAI `messages` → Anthropic `system` and `messages`, for [`super::request`]. Anthropic keeps
//! the system prompt in a top-level field, requires user/assistant turns to alternate
//! (consecutive same-role turns are merged; tool results are user content), and carries tool
//! calls, tool results and images as content blocks. `cache_control` on a part or a message is
//! passed on to the corresponding block; it does not decide caching policy itself.

use serde_json::{Map, Value, json};

use super::request::{invalid, unsupported};
use super::turns::{self, Turns};
use crate::error::GatewayError;

/// `messages` → (`system`, Anthropic `messages`).
pub(super) fn translate_messages(req: &Map<String, Value>) -> Result<(Option<Value>, Vec<Value>), GatewayError> {
    let messages = match req.get("messages") {
        None | Some(Value::Null) => return Err(GatewayError::MissingField("messages")),
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => return Err(invalid("`messages` must contain at least one message")),
        Some(_) => return Err(invalid("`messages` must be an array")),
    };
    let mut system: Vec<Value> = Vec::new();
    let mut turns = Turns::default();
    for (i, message) in messages.iter().enumerate() {
        let at = |field: &str| format!("messages[{i}].{field}");
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("`{}` is required", at("role"))))?;
        let content = message.get("content").unwrap_or(&Value::Null);
        let (role, mut blocks) = match role {
            // Anthropic has one system prompt; system messages anywhere in the conversation join it.
            "system" | "developer" => {
                let mut blocks = content_blocks(content, &at("content"), false)?;
                attach_cache_control(message, &mut blocks);
                system.extend(blocks);
                continue;
            }
            "user" => ("user", content_blocks(content, &at("content"), true)?),
            "assistant" => ("assistant", assistant_blocks(message, content, &at)?),
            "tool" => ("user", vec![tool_result(message, content, &at)?]),
            other => {
                return Err(invalid(format!(
                    "`{}` `{other}` is not supported for Anthropic models through uprox; use system, developer, user, assistant or tool",
                    at("role")
                )));
            }
        };
        attach_cache_control(message, &mut blocks);
        turns.push(role, blocks);
    }
    if turns.is_empty() {
        return Err(invalid("`messages` must contain at least one non-empty user or assistant message"));
    }
    Ok((system_json(system), turns.into_messages()))
}

/// A message-level `cache_control` marks the end of the message: it goes on its last block.
fn attach_cache_control(message: &Value, blocks: &mut [Value]) {
    if let (Some(cache), Some(Value::Object(last))) =
        (message.get("cache_control").filter(|c| !c.is_null()), blocks.last_mut())
    {
        last.insert("cache_control".into(), cache.clone());
    }
}

/// Joined text when no block is marked for caching; the blocks themselves otherwise.
fn system_json(blocks: Vec<Value>) -> Option<Value> {
    if blocks.is_empty() {
        return None;
    }
    if blocks.iter().any(|b| b.get("cache_control").is_some()) {
        return Some(Value::Array(blocks));
    }
    let texts: Vec<&str> = blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect();
    Some(Value::String(texts.join("\n\n")))
}

/// A text block, carrying the part's `cache_control` if any.
fn text_block(text: &str, part: Option<&Value>) -> Value {
    let mut block = json!({"type": "text", "text": text});
    if let (Some(cache), Value::Object(b)) =
        (part.and_then(|p| p.get("cache_control")).filter(|c| !c.is_null()), &mut block)
    {
        b.insert("cache_control".into(), cache.clone());
    }
    block
}

/// Message `content` (a string, an array of parts, or null) → Anthropic content blocks. Empty
/// text is dropped: Anthropic rejects empty text blocks and they carry nothing.
fn content_blocks(content: &Value, at: &str, images: bool) -> Result<Vec<Value>, GatewayError> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![text_block(s, None)]),
        Value::Array(parts) => {
            let mut blocks = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                let kind = part.get("type").and_then(Value::as_str).unwrap_or_default();
                let mut block = match kind {
                    "text" | "refusal" => {
                        let text = part
                            .get(kind)
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid(format!("`{at}[{j}].{kind}` must be a string")))?;
                        if text.is_empty() {
                            continue;
                        }
                        text_block(text, None)
                    }
                    "image_url" if images => image_block(part, &format!("{at}[{j}]"))?,
                    other => {
                        return Err(invalid(format!(
                            "content part type `{other}` at `{at}[{j}]` is not supported for Anthropic models through uprox"
                        )));
                    }
                };
                if let (Some(cache), Value::Object(b)) =
                    (part.get("cache_control").filter(|c| !c.is_null()), &mut block)
                {
                    b.insert("cache_control".into(), cache.clone());
                }
                blocks.push(block);
            }
            Ok(blocks)
        }
        _ => Err(invalid(format!("`{at}` must be a string or an array of content parts"))),
    }
}

/// An `image_url` part → an Anthropic image block (base64 for data URLs, url otherwise).
fn image_block(part: &Value, at: &str) -> Result<Value, GatewayError> {
    let url = part.get("image_url").and_then(|u| u.get("url").or(Some(u))).and_then(Value::as_str);
    let url = url.ok_or_else(|| invalid(format!("`{at}.image_url.url` must be a string")))?;
    turns::image_block(url)
        .ok_or_else(|| invalid(format!("`{at}.image_url.url` must be a base64 data URL or an http(s) URL")))
}

/// An assistant message: its text, then its `tool_calls` as `tool_use` blocks.
fn assistant_blocks(message: &Value, content: &Value, at: &dyn Fn(&str) -> String) -> Result<Vec<Value>, GatewayError> {
    if message.get("function_call").is_some_and(|f| !f.is_null()) {
        return Err(unsupported(&at("function_call"), "(deprecated by OpenAI) is not supported; use `tool_calls`"));
    }
    let mut blocks = content_blocks(content, &at("content"), false)?;
    let calls = match message.get("tool_calls") {
        None | Some(Value::Null) => return Ok(blocks),
        Some(Value::Array(calls)) => calls,
        Some(_) => return Err(invalid(format!("`{}` must be an array", at("tool_calls")))),
    };
    for (j, call) in calls.iter().enumerate() {
        let field = |f: &str| at(&format!("tool_calls[{j}].{f}"));
        let id =
            call.get("id").and_then(Value::as_str).ok_or_else(|| invalid(format!("`{}` is required", field("id"))))?;
        let function = call.get("function").unwrap_or(&Value::Null);
        let name = function
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("`{}` is required", field("function.name"))))?;
        let arguments = function.get("arguments").and_then(Value::as_str).unwrap_or_default();
        blocks.push(turns::tool_use_block(id, name, arguments, &field("function.arguments")).map_err(invalid)?);
    }
    Ok(blocks)
}

/// A `tool` message → a `tool_result` block.
fn tool_result(message: &Value, content: &Value, at: &dyn Fn(&str) -> String) -> Result<Value, GatewayError> {
    let id = message
        .get("tool_call_id")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid(format!("`{}` is required", at("tool_call_id"))))?;
    let content = match content {
        Value::String(s) => Value::String(s.clone()),
        Value::Null => Value::String(String::new()),
        Value::Array(_) => Value::Array(content_blocks(content, &at("content"), false)?),
        _ => return Err(invalid(format!("`{}` must be a string or an array of text parts", at("content")))),
    };
    Ok(json!({"type": "tool_result", "tool_use_id": id, "content": content}))
}
