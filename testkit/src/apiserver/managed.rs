//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! Every write records which manager set which fields, in the real `FieldsV1` shape, so that
//! server-side apply behaves like the real thing where callers can tell:
//!
//! - applying a field that another manager owns with a different value fails with a 409
//!   `Conflict` (causes `FieldManagerConflict`) unless `force=true`, which takes the field over;
//!   equal values are shared without conflict (kube-lease-manager's locking relies on this);
//! - a field a manager applied before and no longer applies is removed, unless another manager
//!   still owns it;
//! - updates (`PUT`, merge/strategic/JSON patches, creates) never conflict: they take the fields
//!   they change from whoever owned them.
//!
//! Approximations: lists are atomic (the real server merges lists such as `ownerReferences` or
//! `conditions` by key when the schema says `listType: map`), and an applied empty object owns
//! nothing. Tracked fields are everything but `apiVersion`, `kind` and the server-owned metadata;
//! in `metadata` only `labels` and `annotations` (per key), `ownerReferences` and `finalizers`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::{
    patch::{lookup, remove_path, set_path},
    routes::Subresource,
    status::ApiError,
};

type FieldPath = Vec<String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Apply,
    Update,
}

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: Operation,
    subresource: String,
    api_version: String,
    time: String,
    fields: BTreeSet<FieldPath>,
}

impl Entry {
    fn is(&self, manager: &str, operation: Operation, subresource: &str) -> bool {
        self.manager == manager && self.operation == operation && self.subresource == subresource
    }
}

/// Who is writing, to which part of the object, and when.
pub(crate) struct Writer<'a> {
    pub manager: &'a str,
    pub sub: Subresource,
    pub api_version: &'a str,
    pub now: &'a str,
}

impl Writer<'_> {
    fn entry(&self, operation: Operation, fields: BTreeSet<FieldPath>) -> Entry {
        Entry {
            manager: self.manager.to_owned(),
            operation,
            subresource: self.sub.as_field().to_owned(),
            api_version: self.api_version.to_owned(),
            time: self.now.to_owned(),
            fields,
        }
    }
}

/// Server-side apply of `body` onto `current` (for a create, a skeleton with only the identity).
pub(crate) fn apply(current: &Value, body: &Value, writer: &Writer<'_>, force: bool) -> Result<Value, ApiError> {
    let mut entries = read_entries(current);
    let sub = writer.sub.as_field();
    let mine = |entry: &Entry| entry.is(writer.manager, Operation::Apply, sub);
    let applied = tracked_leaves(body, writer.sub);
    let owned: BTreeSet<FieldPath> = applied
        .iter()
        .filter(|(_, value)| !value.is_null() && !is_empty_object(value))
        .map(|(path, _)| path.clone())
        .collect();

    let mut conflicts = Vec::new();
    let mut contested = Vec::new();
    for (path, value) in &applied {
        if value.is_null() || is_empty_object(value) || lookup(current, path) == Some(*value) {
            continue;
        }
        let before = conflicts.len();
        for entry in entries.iter().filter(|entry| !mine(entry)) {
            if entry.fields.iter().any(|field| overlaps(field, path)) {
                conflicts.push((entry.manager.clone(), display(path)));
            }
        }
        if conflicts.len() > before {
            contested.push(path.clone());
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(ApiError::apply_conflict(writer.api_version, &conflicts));
    }
    for entry in entries.iter_mut().filter(|entry| !mine(entry)) {
        entry.fields.retain(|field| !contested.iter().any(|path| overlaps(path, field)));
    }

    let mut target = current.clone();
    let previous = entries.iter().find(|entry| mine(entry)).map(|entry| entry.fields.clone()).unwrap_or_default();
    for stale in previous.difference(&owned) {
        let still_applied = owned.iter().any(|path| overlaps(path, stale));
        let owned_elsewhere = entries
            .iter()
            .filter(|entry| !mine(entry))
            .any(|entry| entry.fields.iter().any(|field| overlaps(field, stale)));
        if !still_applied && !owned_elsewhere {
            remove_path(&mut target, stale);
        }
    }
    for (path, value) in &applied {
        if value.is_null() {
            remove_path(&mut target, path);
            for entry in &mut entries {
                entry.fields.retain(|field| !is_prefix(path, field));
            }
        } else if is_empty_object(value) {
            if lookup(&target, path).is_none() {
                set_path(&mut target, path, json!({}));
            }
        } else {
            set_path(&mut target, path, (*value).clone());
        }
    }
    prune_empty_metadata_maps(&mut target);

    match entries.iter_mut().find(|entry| mine(entry)) {
        Some(entry) => entry.fields = owned,
        None => entries.push(writer.entry(Operation::Apply, owned)),
    }
    entries.retain(|entry| !entry.fields.is_empty());
    write_entries(&mut target, &entries);
    if target == *current {
        // A no-op apply changes nothing, not even the manager's timestamp.
        return Ok(target);
    }
    if let Some(entry) = entries.iter_mut().find(|entry| mine(entry)) {
        entry.time = writer.now.to_owned();
        entry.api_version = writer.api_version.to_owned();
    }
    write_entries(&mut target, &entries);
    Ok(target)
}

/// Records an update (`old` is `None` for a create): the writer now owns what it changed.
///
/// Also resets `new`'s `managedFields` to the server's, whatever the request body carried.
pub(crate) fn record_update(old: Option<&Value>, new: &mut Value, writer: &Writer<'_>) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let (changed, removed) = {
        let before: BTreeMap<FieldPath, &Value> =
            old.map(|old| tracked_leaves(old, writer.sub)).unwrap_or_default().into_iter().collect();
        let after: BTreeMap<FieldPath, &Value> = tracked_leaves(new, writer.sub).into_iter().collect();
        let changed: Vec<FieldPath> = after
            .iter()
            .filter(|(path, value)| before.get(*path) != Some(*value))
            .map(|(path, _)| path.clone())
            .collect();
        let removed: Vec<FieldPath> = before.keys().filter(|path| !after.contains_key(*path)).cloned().collect();
        (changed, removed)
    };
    if !changed.is_empty() || !removed.is_empty() {
        let sub = writer.sub.as_field();
        let mine = |entry: &Entry| entry.is(writer.manager, Operation::Update, sub);
        for path in &removed {
            for entry in &mut entries {
                entry.fields.retain(|field| !is_prefix(path, field));
            }
        }
        for path in &changed {
            for entry in entries.iter_mut().filter(|entry| !mine(entry)) {
                entry.fields.retain(|field| !overlaps(field, path));
            }
        }
        match entries.iter_mut().find(|entry| mine(entry)) {
            Some(entry) => {
                entry.fields.retain(|field| !changed.iter().any(|path| path != field && overlaps(path, field)));
                entry.fields.extend(changed);
                entry.time = writer.now.to_owned();
                entry.api_version = writer.api_version.to_owned();
            }
            None => entries.push(writer.entry(Operation::Update, changed.into_iter().collect())),
        }
        entries.retain(|entry| !entry.fields.is_empty());
    }
    write_entries(new, &entries);
}

/// Copies `from`'s `managedFields` onto `to` (direct store writes keep the server's record).
pub(crate) fn keep_entries(from: Option<&Value>, to: &mut Value) {
    let entries = from.map(read_entries).unwrap_or_default();
    write_entries(to, &entries);
}

/// The tracked leaves of `object` for writes to `sub`, with their values.
fn tracked_leaves(object: &Value, sub: Subresource) -> Vec<(FieldPath, &Value)> {
    let mut out = Vec::new();
    let Some(map) = object.as_object() else {
        return out;
    };
    for (key, value) in map {
        match (key.as_str(), sub) {
            ("apiVersion" | "kind", _) | ("metadata", Subresource::Status) => {}
            ("metadata", Subresource::Main) => metadata_leaves(value, &mut out),
            ("status", Subresource::Status) => collect_leaves(value, vec![key.clone()], &mut out),
            ("status", Subresource::Main) | (_, Subresource::Status) => {}
            (_, Subresource::Main) => collect_leaves(value, vec![key.clone()], &mut out),
        }
    }
    out
}

fn metadata_leaves<'a>(metadata: &'a Value, out: &mut Vec<(FieldPath, &'a Value)>) {
    for map_name in ["labels", "annotations"] {
        if let Some(Value::Object(map)) = metadata.get(map_name) {
            for (key, value) in map {
                out.push((vec!["metadata".to_owned(), map_name.to_owned(), key.clone()], value));
            }
        }
    }
    for list_name in ["ownerReferences", "finalizers"] {
        if let Some(value) = metadata.get(list_name) {
            out.push((vec!["metadata".to_owned(), list_name.to_owned()], value));
        }
    }
}

fn collect_leaves<'a>(value: &'a Value, path: FieldPath, out: &mut Vec<(FieldPath, &'a Value)>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                let mut child_path = path.clone();
                child_path.push(key.clone());
                collect_leaves(child, child_path, out);
            }
        }
        _ => out.push((path, value)),
    }
}

/// Removing the last label or annotation removes the map, as the real server prints it.
fn prune_empty_metadata_maps(object: &mut Value) {
    if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
        for map_name in ["labels", "annotations"] {
            if metadata.get(map_name).is_some_and(is_empty_object) {
                metadata.remove(map_name);
            }
        }
    }
}

fn is_empty_object(value: &Value) -> bool {
    value.as_object().is_some_and(Map::is_empty)
}

fn is_prefix(prefix: &[String], path: &[String]) -> bool {
    path.starts_with(prefix)
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    is_prefix(a, b) || is_prefix(b, a)
}

fn display(path: &[String]) -> String {
    format!(".{}", path.join("."))
}

fn read_entries(object: &Value) -> Vec<Entry> {
    let Some(Value::Array(items)) = object.pointer("/metadata/managedFields") else {
        return Vec::new();
    };
    let text = |item: &Value, key: &str| item.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    items
        .iter()
        .map(|item| {
            let mut fields = BTreeSet::new();
            if let Some(tree) = item.get("fieldsV1") {
                parse_fields(tree, &mut Vec::new(), &mut fields);
            }
            Entry {
                manager: text(item, "manager"),
                operation: if text(item, "operation") == "Apply" { Operation::Apply } else { Operation::Update },
                subresource: text(item, "subresource"),
                api_version: text(item, "apiVersion"),
                time: text(item, "time"),
                fields,
            }
        })
        .collect()
}

fn parse_fields(tree: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    let Some(map) = tree.as_object() else {
        return;
    };
    let children: Vec<(&str, &Value)> =
        map.iter().filter_map(|(key, child)| key.strip_prefix("f:").map(|name| (name, child))).collect();
    if children.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        return;
    }
    for (name, child) in children {
        prefix.push(name.to_owned());
        parse_fields(child, prefix, out);
        prefix.pop();
    }
}

fn write_entries(object: &mut Value, entries: &[Entry]) {
    if entries.is_empty() {
        if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
            metadata.remove("managedFields");
        }
        return;
    }
    let rendered: Vec<Value> = entries
        .iter()
        .map(|entry| {
            let mut tree = Map::new();
            for path in &entry.fields {
                insert_field(&mut tree, path);
            }
            let mut item = json!({
                "manager": entry.manager,
                "operation": match entry.operation {
                    Operation::Apply => "Apply",
                    Operation::Update => "Update",
                },
                "apiVersion": entry.api_version,
                "time": entry.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": tree,
            });
            if let (false, Some(map)) = (entry.subresource.is_empty(), item.as_object_mut()) {
                map.insert("subresource".to_owned(), Value::String(entry.subresource.clone()));
            }
            item
        })
        .collect();
    set_path(object, &["metadata".to_owned(), "managedFields".to_owned()], Value::Array(rendered));
}

fn insert_field(tree: &mut Map<String, Value>, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let child = tree.entry(format!("f:{first}")).or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(map) = child {
        insert_field(map, rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(manager: &str) -> Writer<'_> {
        Writer { manager, sub: Subresource::Main, api_version: "v1", now: "2025-01-01T00:00:00Z" }
    }

    fn applied(current: &Value, body: Value, manager: &str, force: bool) -> Result<Value, ApiError> {
        apply(current, &body, &writer(manager), force)
    }

    #[test]
    fn apply_records_fields_in_fields_v1_shape() {
        let out = applied(
            &json!({"metadata": {"name": "x"}}),
            json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 1}}),
            "m",
            false,
        );
        let out = out.unwrap_or_default();
        assert_eq!(out.pointer("/metadata/managedFields/0/manager"), Some(&json!("m")));
        assert_eq!(out.pointer("/metadata/managedFields/0/operation"), Some(&json!("Apply")));
        assert_eq!(
            out.pointer("/metadata/managedFields/0/fieldsV1"),
            Some(&json!({"f:metadata": {"f:labels": {"f:a": {}}}, "f:spec": {"f:x": {}}}))
        );
        assert_eq!(read_entries(&out).first().map(|e| e.fields.len()), Some(2));
    }

    #[test]
    fn conflicting_apply_needs_force_and_equal_values_share() {
        let base = applied(&json!({}), json!({"spec": {"holder": "a"}}), "a", false).unwrap_or_default();
        let conflict = applied(&base, json!({"spec": {"holder": "b"}}), "b", false);
        let error = conflict.err().unwrap_or_else(|| ApiError::bad_request(""));
        assert_eq!((error.code, error.reason), (409, "Conflict"));
        assert!(error.message.contains(".spec.holder"), "{}", error.message);

        assert!(applied(&base, json!({"spec": {"holder": "a"}}), "b", false).is_ok());

        let forced = applied(&base, json!({"spec": {"holder": "b"}}), "b", true).unwrap_or_default();
        assert_eq!(forced.pointer("/spec/holder"), Some(&json!("b")));
        let entries = read_entries(&forced);
        assert_eq!(entries.len(), 1, "a lost its only field: {entries:?}");
    }

    #[test]
    fn fields_no_longer_applied_are_removed_unless_owned_elsewhere() {
        let first = applied(&json!({}), json!({"data": {"a": "1", "b": "2"}}), "m", false).unwrap_or_default();
        let mut shared = first.clone();
        let mut updated = shared.clone();
        set_path(&mut updated, &["data".to_owned(), "b".to_owned()], json!("3"));
        record_update(Some(&shared), &mut updated, &writer("editor"));
        shared = updated;

        let second = applied(&first, json!({"data": {"a": "1"}}), "m", false).unwrap_or_default();
        assert_eq!(second.get("data"), Some(&json!({"a": "1"})));
        let third = applied(&shared, json!({"data": {"a": "1"}}), "m", false).unwrap_or_default();
        assert_eq!(third.get("data"), Some(&json!({"a": "1", "b": "3"})));
    }

    #[test]
    fn noop_apply_returns_the_object_unchanged() {
        let first = applied(&json!({}), json!({"spec": {"x": 1}}), "m", false).unwrap_or_default();
        let later = Writer { now: "2030-01-01T00:00:00Z", ..writer("m") };
        assert_eq!(apply(&first, &json!({"spec": {"x": 1}}), &later, false).ok(), Some(first));
    }

    #[test]
    fn updates_take_ownership_without_conflict() {
        let applied_once = applied(&json!({}), json!({"spec": {"x": 1}}), "m", false).unwrap_or_default();
        let mut updated = applied_once.clone();
        set_path(&mut updated, &["spec".to_owned(), "x".to_owned()], json!(2));
        record_update(Some(&applied_once), &mut updated, &writer("kubectl"));
        let entries = read_entries(&updated);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries.first().map(|e| (e.manager.as_str(), e.operation)), Some(("kubectl", Operation::Update)));
        // Now the applier conflicts with the updater.
        assert!(applied(&updated, json!({"spec": {"x": 1}}), "m", false).is_err());
    }

    #[test]
    fn status_writes_track_only_status() {
        let status_writer = Writer { sub: Subresource::Status, ..writer("op") };
        let out = apply(
            &json!({"spec": {"a": 1}}),
            &json!({"spec": {"a": 2}, "status": {"ok": true}}),
            &status_writer,
            false,
        );
        let out = out.unwrap_or_default();
        assert_eq!(out.get("spec"), Some(&json!({"a": 1})));
        assert_eq!(out.pointer("/metadata/managedFields/0/subresource"), Some(&json!("status")));
    }
}
