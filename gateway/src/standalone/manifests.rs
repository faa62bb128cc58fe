//! Reads a folder of Kubernetes manifests — the very YAML you would `kubectl apply` — into typed
//! resources: the five uprox kinds and `v1/Secret`. Multi-document files are allowed; other
//! kinds are skipped with a note; a document without a namespace lands in `default`.
//!
//! Mistakes are reported with the file, the object and the field: a YAML syntax error, a value
//! of the wrong type, or an unknown field (a typo such as `modles:` would otherwise be dropped
//! silently, as `kubectl apply` warns about but a plain deserializer ignores).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uprox_crds::compile::Resources;
use uprox_crds::{Budget, MachineToken, Policy, Provider, Service};

/// The namespace given to documents that name none.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Everything read from one or more folders.
#[derive(Debug, Default, Clone)]
pub struct Manifests {
    /// The resources and Secrets, ready for `compile()`.
    pub resources: Resources,
    /// Documents skipped (other kinds), as `file: document N: apiVersion kind`.
    pub skipped: Vec<String>,
}

/// The YAML files under `dir` (recursively), sorted, so results do not depend on the file system.
pub fn yaml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            let hidden = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// A cheap fingerprint of the folders' YAML: names and contents. Changes when any file does.
pub fn fingerprint(dirs: &[&Path]) -> u64 {
    let mut h = DefaultHasher::new();
    for dir in dirs {
        match yaml_files(dir) {
            Ok(files) => {
                for f in files {
                    f.hash(&mut h);
                    std::fs::read(&f).unwrap_or_default().hash(&mut h);
                }
            }
            Err(e) => e.kind().hash(&mut h),
        }
    }
    h.finish()
}

/// Reads every YAML file under `dir` into `into`. Returns one message per problem; on any
/// problem the caller must not use the result.
pub fn load_dir(dir: &Path, into: &mut Manifests) -> Vec<String> {
    let files = match yaml_files(dir) {
        Ok(f) => f,
        Err(e) => return vec![format!("{}: cannot read the folder: {e}", dir.display())],
    };
    let mut errors = Vec::new();
    for file in files {
        match std::fs::read_to_string(&file) {
            Ok(text) => load_text(&file.display().to_string(), &text, into, &mut errors),
            Err(e) => errors.push(format!("{}: cannot read: {e}", file.display())),
        }
    }
    errors
}

/// Parses the documents of one file.
pub fn load_text(origin: &str, text: &str, into: &mut Manifests, errors: &mut Vec<String>) {
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = match Value::deserialize(document) {
            Ok(Value::Null) => continue,
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("{origin}: document {}: not valid YAML: {e}", index + 1));
                // A syntax error leaves the rest of the stream unreadable.
                return;
            }
        };
        let api_version = value.get("apiVersion").and_then(Value::as_str).unwrap_or_default().to_owned();
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
        let here = format!("{origin}: document {}", index + 1);
        match (api_version.as_str(), kind.as_str()) {
            (uprox_crds::API_VERSION, "Provider") => push(&here, value, &mut into.resources.providers, errors),
            (uprox_crds::API_VERSION, "Service") => push(&here, value, &mut into.resources.services, errors),
            (uprox_crds::API_VERSION, "MachineToken") => push(&here, value, &mut into.resources.tokens, errors),
            (uprox_crds::API_VERSION, "Policy") => push(&here, value, &mut into.resources.policies, errors),
            (uprox_crds::API_VERSION, "Budget") => push(&here, value, &mut into.resources.budgets, errors),
            ("v1", "Secret") => push(&here, value, &mut into.resources.secrets, errors),
            (api, k) if api.starts_with("uprox.dev/") => {
                errors.push(format!("{here}: unknown uprox kind {k:?} in {api:?}; this gateway reads {} Provider, Service, MachineToken, Policy and Budget", uprox_crds::API_VERSION));
            }
            ("", _) | (_, "") => errors.push(format!("{here}: a manifest needs apiVersion and kind")),
            (api, k) => into.skipped.push(format!("{here}: {api} {k}")),
        }
    }
}

/// Objects that carry Kubernetes metadata.
trait HasMeta {
    fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
}

macro_rules! has_meta {
    ($($t:ty),*) => {$(impl HasMeta for $t {
        fn meta_mut(&mut self) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta { &mut self.metadata }
    })*};
}
has_meta!(Provider, Service, MachineToken, Policy, Budget, Secret);

fn push<T: DeserializeOwned + Serialize + HasMeta>(
    here: &str,
    value: Value,
    into: &mut Vec<T>,
    errors: &mut Vec<String>,
) {
    let name = value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("<unnamed>").to_owned();
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or_default().to_owned();
    let mut object: T = match serde_json::from_value(value.clone()) {
        Ok(o) => o,
        Err(e) => {
            errors.push(format!("{here}: {kind} {name}: {e}"));
            return;
        }
    };
    let typed = serde_json::to_value(&object).unwrap_or(Value::Null);
    let unknown = unknown_fields(&value, &typed, "");
    if !unknown.is_empty() {
        errors.push(format!("{here}: {kind} {name}: unknown field(s) {}; check the spelling (`kubectl explain {}.spec` lists the fields)", unknown.join(", "), kind.to_lowercase()));
        return;
    }
    let meta = object.meta_mut();
    if meta.name.as_deref().is_none_or(str::is_empty) {
        errors.push(format!("{here}: {kind} has no metadata.name"));
        return;
    }
    if meta.namespace.is_none() {
        meta.namespace = Some(DEFAULT_NAMESPACE.to_owned());
    }
    into.push(object);
}

/// Paths present (and not null) in `original` but absent from `typed`.
fn unknown_fields(original: &Value, typed: &Value, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    match (original, typed) {
        (Value::Object(o), Value::Object(t)) => {
            for (key, value) in o {
                let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                match t.get(key) {
                    None if !value.is_null() => out.push(here),
                    None => {}
                    Some(tv) => out.extend(unknown_fields(value, tv, &here)),
                }
            }
        }
        (Value::Array(o), Value::Array(t)) => {
            for (i, (ov, tv)) in o.iter().zip(t).enumerate() {
                out.extend(unknown_fields(ov, tv, &format!("{path}[{i}]")));
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn load(text: &str) -> (Manifests, Vec<String>) {
        let mut r = Manifests::default();
        let mut errors = Vec::new();
        load_text("test.yaml", text, &mut r, &mut errors);
        (r, errors)
    }

    #[test]
    fn reads_multi_document_files_and_defaults_the_namespace() {
        let (r, errors) = load(
            "apiVersion: uprox.dev/v1alpha1\nkind: Provider\nmetadata: {name: m}\nspec: {type: mock}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: team}\nstringData: {k: v}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(r.resources.providers.len(), 1);
        assert_eq!(r.resources.providers[0].metadata.namespace.as_deref(), Some("default"));
        assert_eq!(r.resources.secrets[0].metadata.namespace.as_deref(), Some("team"));
        assert_eq!(r.skipped.len(), 1);
    }

    #[test]
    fn unknown_fields_are_errors() {
        let (_, errors) = load(
            "apiVersion: uprox.dev/v1alpha1\nkind: Provider\nmetadata: {name: m}\nspec: {type: mock, modles: [x]}\n",
        );
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("spec.modles"), "{errors:?}");
    }

    #[test]
    fn wrong_types_and_syntax_are_errors() {
        let (_, errors) =
            load("apiVersion: uprox.dev/v1alpha1\nkind: Provider\nmetadata: {name: m}\nspec: {type: nope}\n");
        assert!(errors[0].contains("Provider m"), "{errors:?}");
        let (_, errors) = load("apiVersion: v1\nkind: Secret\nmetadata: {name: [\n");
        assert!(errors[0].contains("not valid YAML"), "{errors:?}");
        let (_, errors) = load("kind: Provider\nmetadata: {name: m}\n");
        assert!(errors[0].contains("apiVersion and kind"));
        let (_, errors) = load("apiVersion: uprox.dev/v1alpha1\nkind: Gateway\nmetadata: {name: m}\n");
        assert!(errors[0].contains("unknown uprox kind"));
    }
}
