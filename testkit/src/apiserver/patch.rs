//! Patch formats and JSON document surgery.
//!
//! JSON merge patch is RFC 7386 (`null` deletes a key). Strategic merge patch is treated as a
//! merge patch with its `$`-directives dropped: lists are replaced whole instead of merged by
//! key. JSON patch is RFC 6902 (all six operations, through the `json-patch` crate). Server-side
//! apply lives in `managed`, which uses the path helpers here.

use serde_json::{Map, Value};

use super::status::ApiError;

/// The patch format named by a request's `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PatchKind {
    Apply,
    Merge,
    Strategic,
    Json,
}

impl PatchKind {
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let media_type = content_type.split(';').next().unwrap_or_default().trim();
        match media_type.to_ascii_lowercase().as_str() {
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/json-patch+json" => Some(Self::Json),
            _ => None,
        }
    }
}

/// Applies a merge, strategic-merge or JSON patch to `target` (apply patches go to `managed`).
pub(crate) fn apply_patch(kind: PatchKind, target: &mut Value, body: &Value) -> Result<(), ApiError> {
    match kind {
        PatchKind::Merge | PatchKind::Apply => json_patch::merge(target, body),
        PatchKind::Strategic => json_patch::merge(target, &without_directives(body)),
        PatchKind::Json => {
            let operations: json_patch::Patch = serde_json::from_value(body.clone())
                .map_err(|error| ApiError::bad_request(format!("invalid JSON patch: {error}")))?;
            // One operation at a time: the caller patches a copy and drops it on error.
            for operation in &operations.0 {
                if let json_patch::PatchOperation::Test(test) = operation
                    && test.value.is_null()
                    && target.pointer(test.path.as_str()).is_none()
                {
                    // As on the real server (evanphx/json-patch), a missing path tests equal to
                    // null; kube's `finalizer` helper relies on it to add the first finalizer.
                    continue;
                }
                json_patch::patch(target, std::slice::from_ref(operation))
                    .map_err(|error| ApiError::invalid(format!("the JSON patch could not be applied: {error}")))?;
            }
        }
    }
    Ok(())
}

/// Drops strategic-merge directives (`$patch`, `$retainKeys`, `$setElementOrder/...`).
fn without_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(key, _)| !key.starts_with('$'))
                .map(|(key, value)| (key.clone(), without_directives(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_directives).collect()),
        other => other.clone(),
    }
}

/// The value at `path` (object keys only).
pub(crate) fn lookup<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |value, segment| value.get(segment))
}

/// Sets `path` to `new`, creating (or replacing non-object) parents on the way.
pub(crate) fn set_path(value: &mut Value, path: &[String], new: Value) {
    let Some((last, parents)) = path.split_last() else {
        *value = new;
        return;
    };
    let mut node = value;
    for segment in parents {
        node = object_entry(node, segment);
    }
    if let Value::Object(map) = ensure_object(node) {
        map.insert(last.clone(), new);
    }
}

/// Removes the value at `path`; returns whether there was one.
pub(crate) fn remove_path(value: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = value;
    for segment in parents {
        match node.get_mut(segment) {
            Some(child) => node = child,
            None => return false,
        }
    }
    node.as_object_mut().is_some_and(|map| map.remove(last).is_some())
}

fn ensure_object(value: &mut Value) -> &mut Value {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    value
}

fn object_entry<'a>(value: &'a mut Value, key: &str) -> &'a mut Value {
    match ensure_object(value) {
        Value::Object(map) => map.entry(key.to_owned()).or_insert_with(|| Value::Object(Map::new())),
        // `ensure_object` just made it an object; this arm is never taken.
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn patched(kind: PatchKind, mut target: Value, body: Value) -> Result<Value, ApiError> {
        apply_patch(kind, &mut target, &body).map(|()| target)
    }

    #[test]
    fn content_types() {
        assert_eq!(PatchKind::from_content_type("application/apply-patch+yaml"), Some(PatchKind::Apply));
        assert_eq!(PatchKind::from_content_type("application/merge-patch+json; charset=utf-8"), Some(PatchKind::Merge));
        assert_eq!(PatchKind::from_content_type("application/json"), None);
    }

    #[test]
    fn merge_patch_deletes_with_null_and_replaces_lists() {
        let target = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        let out = patched(PatchKind::Merge, target, json!({"a": {"b": null, "d": 3}, "l": [3]}));
        assert_eq!(out.ok(), Some(json!({"a": {"c": 2, "d": 3}, "l": [3]})));
    }

    #[test]
    fn strategic_merge_drops_directives() {
        let out = patched(
            PatchKind::Strategic,
            json!({"a": 1}),
            json!({"$patch": "merge", "b": {"$retainKeys": ["x"], "x": 1}}),
        );
        assert_eq!(out.ok(), Some(json!({"a": 1, "b": {"x": 1}})));
    }

    #[test]
    fn json_patch_operations_and_failed_tests() {
        let target = json!({"metadata": {"finalizers": ["a"]}});
        let ok = patched(
            PatchKind::Json,
            target.clone(),
            json!([{"op": "test", "path": "/metadata/finalizers", "value": ["a"]}, {"op": "add", "path": "/metadata/finalizers/-", "value": "b"}]),
        );
        assert_eq!(ok.ok(), Some(json!({"metadata": {"finalizers": ["a", "b"]}})));
        let failed =
            patched(PatchKind::Json, target, json!([{"op": "test", "path": "/metadata/finalizers", "value": []}]));
        assert_eq!(failed.err().map(|e| e.code), Some(422));
        assert_eq!(patched(PatchKind::Json, json!({}), json!({"op": "x"})).err().map(|e| e.code), Some(400));
        let first = json!([{"op": "test", "path": "/metadata/finalizers", "value": null}, {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}]);
        assert_eq!(
            patched(PatchKind::Json, json!({"metadata": {}}), first).ok(),
            Some(json!({"metadata": {"finalizers": ["f"]}}))
        );
        let missing = json!([{"op": "test", "path": "/metadata/finalizers", "value": ["f"]}]);
        assert_eq!(patched(PatchKind::Json, json!({"metadata": {}}), missing).err().map(|e| e.code), Some(422));
    }

    #[test]
    fn path_helpers() {
        let mut doc = json!({"a": 1});
        let path = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        set_path(&mut doc, &path(&["a", "b", "c"]), json!(2));
        assert_eq!(doc, json!({"a": {"b": {"c": 2}}}));
        assert_eq!(lookup(&doc, &path(&["a", "b", "c"])), Some(&json!(2)));
        assert!(remove_path(&mut doc, &path(&["a", "b", "c"])));
        assert!(!remove_path(&mut doc, &path(&["a", "x", "c"])));
        assert_eq!(doc, json!({"a": {"b": {}}}));
    }
}
