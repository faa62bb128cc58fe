//! Anthropic `messages` as both OpenAI surfaces build them: the chat translation
//! ([`super::messages`]) and the Responses one ([`super::responses::request`]) each read their
//! own input shape and error places, then hand blocks to this module, which owns the parts of
//! Anthropic's shape they share — alternating turns (same-role neighbours merged, tool results
//! first in a user turn), image blocks from URLs, and `tool_use` inputs from JSON text. It
//! validates nothing about the client's shape; errors are messages the caller wraps.

use serde_json::{Value, json};

/// One Anthropic turn being assembled.
struct Turn {
    role: &'static str,
    blocks: Vec<Value>,
}

/// The conversation being assembled, turn by turn.
#[derive(Default)]
pub(super) struct Turns(Vec<Turn>);

impl Turns {
    /// Adds `blocks` as `role`: merged into the last turn when it has the same role, as a new
    /// turn otherwise; nothing when `blocks` is empty.
    pub(super) fn push(&mut self, role: &'static str, mut blocks: Vec<Value>) {
        if blocks.is_empty() {
            return;
        }
        match self.0.last_mut() {
            Some(turn) if turn.role == role => turn.blocks.append(&mut blocks),
            _ => self.0.push(Turn { role, blocks }),
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Anthropic's `messages`.
    pub(super) fn into_messages(self) -> Vec<Value> {
        self.0.into_iter().map(turn_json).collect()
    }
}

fn turn_json(turn: Turn) -> Value {
    let mut blocks = turn.blocks;
    // Anthropic wants a user turn's tool results before any other content; merging a tool
    // message with a following user message keeps OpenAI's order, which already satisfies that,
    // but a stable partition makes it hold for any order.
    if turn.role == "user" {
        let (mut results, rest): (Vec<Value>, Vec<Value>) =
            blocks.into_iter().partition(|b| b["type"] == "tool_result");
        results.extend(rest);
        blocks = results;
    }
    // A lone plain text block is sent as a string, the form most Anthropic examples use.
    if let [Value::Object(b)] = blocks.as_slice()
        && b.len() == 2
        && b.get("type").and_then(Value::as_str) == Some("text")
        && let Some(text) = b.get("text")
    {
        return json!({"role": turn.role, "content": text});
    }
    json!({"role": turn.role, "content": blocks})
}

/// An image URL → an Anthropic image block: base64 for a `data:…;base64,` URL, by url for an
/// http(s) one; `None` for anything else.
pub(super) fn image_block(url: &str) -> Option<Value> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (media_type, data) = rest.split_once(";base64,")?;
        return Some(json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}));
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Some(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    None
}

/// A tool call → a `tool_use` block; `arguments` is the call's JSON object as text, and `at`
/// names it in the error message.
pub(super) fn tool_use_block(id: &str, name: &str, arguments: &str, at: &str) -> Result<Value, String> {
    // Some clients send "" for a call without arguments.
    let input: Value = if arguments.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(arguments).map_err(|e| format!("`{at}` is not valid JSON: {e}"))?
    };
    if !input.is_object() {
        return Err(format!("`{at}` must be a JSON object"));
    }
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}
