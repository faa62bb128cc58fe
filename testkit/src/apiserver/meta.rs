//! Object identity and the metadata helpers every module shares.
//!
//! [`ResourceKey`] and [`ObjectKey`] name what the store holds; the functions read and write the
//! `metadata` fields of objects kept as `serde_json::Value` without assuming any kind.

use serde_json::{Map, Value};

/// A resource type: API group (empty for core), version and plural name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ResourceKey {
    pub group: String,
    pub version: String,
    pub plural: String,
}

impl ResourceKey {
    pub fn new(group: &str, version: &str, plural: &str) -> Self {
        Self { group: group.to_owned(), version: version.to_owned(), plural: plural.to_owned() }
    }

    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `plural` or `plural.group`, as the API server names resources in messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }
}

/// An object's namespace (empty for cluster-scoped objects) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

/// RFC 3339 with second precision, as `metav1.Time` is written.
pub(crate) fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `ConfigMapList`-style kinds need a kind; without any stored object, guess from the plural.
pub(crate) fn guess_kind(plural: &str) -> String {
    let singular = plural
        .strip_suffix("ies")
        .map(|stem| format!("{stem}y"))
        .or_else(|| plural.strip_suffix("sses").map(|stem| format!("{stem}ss")))
        .or_else(|| plural.strip_suffix('s').map(str::to_owned))
        .unwrap_or_else(|| plural.to_owned());
    let mut characters = singular.chars();
    characters.next().map(|first| first.to_uppercase().chain(characters).collect()).unwrap_or_default()
}

/// Whether anything outside `metadata` and `status` differs (that bumps `generation`).
pub(crate) fn spec_changed(before: &Value, after: &Value) -> bool {
    let (Some(before), Some(after)) = (before.as_object(), after.as_object()) else {
        return true;
    };
    let outside = |map: &Map<String, Value>| -> Vec<(String, Value)> {
        map.iter()
            .filter(|(key, _)| !matches!(key.as_str(), "metadata" | "status"))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    };
    let mut a = outside(before);
    let mut b = outside(after);
    a.sort_by(|x, y| x.0.cmp(&y.0));
    b.sort_by(|x, y| x.0.cmp(&y.0));
    a != b
}

pub(crate) fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str)
}

pub(crate) fn has_meta(object: &Value, field: &str) -> bool {
    object.get("metadata").and_then(|m| m.get(field)).is_some_and(|v| !v.is_null())
}

pub(crate) fn finalizers(object: &Value) -> Vec<&str> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

pub(crate) fn owner_uids(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| refs.iter().filter_map(|r| r.get("uid").and_then(Value::as_str)).map(str::to_owned).collect())
        .unwrap_or_default()
}

pub(crate) fn set_meta(object: &mut Value, field: &str, value: Value) {
    if let Some(map) = object.as_object_mut() {
        let metadata = map.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
        if !metadata.is_object() {
            *metadata = Value::Object(Map::new());
        }
        if let Some(metadata) = metadata.as_object_mut() {
            metadata.insert(field.to_owned(), value);
        }
    }
}

pub(crate) fn remove_meta(object: &mut Value, field: &str) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove(field);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn kinds_from_plurals() {
        assert_eq!(guess_kind("policies"), "Policy");
        assert_eq!(guess_kind("machinetokens"), "Machinetoken");
        assert_eq!(guess_kind("classes"), "Class");
    }

    #[test]
    fn generation_ignores_metadata_and_status() {
        let base = json!({"metadata": {"name": "a"}, "spec": {"x": 1}, "status": {"ok": true}});
        let relabelled = json!({"metadata": {"name": "a", "labels": {"l": "v"}}, "spec": {"x": 1}});
        let changed = json!({"metadata": {"name": "a"}, "spec": {"x": 2}, "status": {"ok": true}});
        assert!(!spec_changed(&base, &relabelled));
        assert!(spec_changed(&base, &changed));
        assert!(spec_changed(&base, &json!({"metadata": {}, "spec": {"x": 1}, "extra": 1})));
    }

    #[test]
    fn metadata_accessors() {
        let mut object = json!({"metadata": {"ownerReferences": [{"uid": "u1"}, {"uid": "u2"}], "finalizers": ["f"]}});
        assert_eq!(owner_uids(&object), ["u1", "u2"]);
        assert_eq!(finalizers(&object), ["f"]);
        set_meta(&mut object, "name", json!("n"));
        assert_eq!(meta_str(&object, "name"), Some("n"));
        remove_meta(&mut object, "name");
        assert!(!has_meta(&object, "name"));
        let mut bare = json!({});
        set_meta(&mut bare, "uid", json!("x"));
        assert_eq!(bare, json!({"metadata": {"uid": "x"}}));
    }
}
