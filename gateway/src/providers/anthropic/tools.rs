//! Anthropic `tools` and `tool_choice` as both OpenAI surfaces map them: the chat translation
//! ([`super::request`]) and the Responses one ([`super::responses::request`]) read their own
//! shapes (a chat tool nests its function, a Responses tool is flat) and word their own errors;
//! this module owns what they map to.

use serde_json::{Map, Value, json};

/// A function tool → an Anthropic tool named `name`, with the `description` and `parameters`
/// (as `input_schema`, an empty object schema when absent) of `function`.
pub(super) fn function_tool(name: &str, function: &Value) -> Map<String, Value> {
    let mut t = Map::new();
    t.insert("name".into(), json!(name));
    if let Some(d) = function.get("description").filter(|d| !d.is_null()) {
        t.insert("description".into(), d.clone());
    }
    let schema = function.get("parameters").filter(|p| !p.is_null()).cloned();
    t.insert("input_schema".into(), schema.unwrap_or_else(|| json!({"type": "object", "properties": {}})));
    t
}

/// A `tool_choice` mode → Anthropic's `tool_choice`; `None` for a mode not one of auto, none,
/// required.
pub(super) fn tool_choice_mode(mode: &str) -> Option<Value> {
    match mode {
        "auto" => Some(json!({"type": "auto"})),
        "none" => Some(json!({"type": "none"})),
        "required" => Some(json!({"type": "any"})),
        _ => None,
    }
}

/// `parallel_tool_calls: false`. Anthropic says this inside `tool_choice` (`auto` when the
/// client set tools but no choice); `none` takes no options and needs none.
pub(super) fn disable_parallel_tool_use(choice: &mut Option<Value>, has_tools: bool) {
    if choice.is_none() && has_tools {
        *choice = Some(json!({"type": "auto"}));
    }
    if let Some(Value::Object(c)) = choice.as_mut()
        && c.get("type").and_then(Value::as_str) != Some("none")
    {
        c.insert("disable_parallel_tool_use".into(), Value::Bool(true));
    }
}
