//! What `kubectl get` shows for each kind: the printer columns, in order, with their JSON paths,
//! and every path under `.spec.` or `.status.` must name a field of the generated schema (with
//! a type that suits the column), so renaming a field breaks this test rather than leaving an
//! empty column.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};
use kube::CustomResourceExt;
use uprox_crds::{Budget, MachineToken, Policy, Provider, Service};

const READY: &str = ".status.conditions[?(@.type==\"Ready\")].status";
const AGE: &str = ".metadata.creationTimestamp";

/// A printer column: `(name, type, JSON path)`.
type Column = (&'static str, &'static str, &'static str);

/// Each kind's CRD with its columns as `kubectl get` should show them.
fn expected() -> Vec<(CustomResourceDefinition, Vec<Column>)> {
    vec![
        (
            MachineToken::crd(),
            vec![
                ("Service", "string", ".spec.service"),
                ("Token", "string", ".status.display"),
                ("State", "string", ".status.state"),
                ("Expires", "date", ".status.expiresAt"),
                ("Ready", "string", READY),
                ("Age", "date", AGE),
            ],
        ),
        (
            Provider::crd(),
            vec![
                ("Type", "string", ".spec.type"),
                ("Keys", "integer", ".status.keys"),
                ("Models", "string", ".status.models"),
                ("Ready", "string", READY),
                ("Age", "date", AGE),
            ],
        ),
        (
            Service::crd(),
            vec![
                ("Providers", "integer", ".status.providers"),
                ("Tokens", "integer", ".status.tokens"),
                ("Cache TTL", "integer", ".spec.cacheTtlSeconds"),
                ("Ready", "string", READY),
                ("Age", "date", AGE),
            ],
        ),
        (
            Policy::crd(),
            vec![
                ("Attached", "integer", ".status.attached"),
                ("Limits", "string", ".status.limits"),
                ("Ready", "string", READY),
                ("Age", "date", AGE),
            ],
        ),
        (
            Budget::crd(),
            vec![
                ("Today", "string", ".status.dailyUsage"),
                ("This month", "string", ".status.monthlyUsage"),
                ("Action", "string", ".spec.action"),
                ("Exceeded", "string", ".status.conditions[?(@.type==\"Exceeded\")].status"),
                ("Ready", "string", READY),
            ],
        ),
    ]
}

#[test]
fn each_kind_shows_the_expected_columns() {
    for (crd, columns) in expected() {
        let kind = &crd.spec.names.kind;
        for version in &crd.spec.versions {
            let actual: Vec<(&str, &str, &str)> = version
                .additional_printer_columns
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|c| (c.name.as_str(), c.type_.as_str(), c.json_path.as_str()))
                .collect();
            assert_eq!(actual, columns, "{kind} {}: printer columns", version.name);
            assert!(actual.len() <= 7, "{kind}: at most 7 columns fit a terminal");
        }
    }
}

#[test]
fn every_column_path_names_a_field_of_the_schema() {
    for (crd, _) in expected() {
        let kind = &crd.spec.names.kind;
        for version in &crd.spec.versions {
            let Some(root) = version.schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()) else {
                panic!("{kind} {}: no schema", version.name);
            };
            for column in version.additional_printer_columns.as_deref().unwrap_or_default() {
                let path = &column.json_path;
                if path.starts_with(".metadata.") {
                    continue;
                }
                assert!(
                    path.starts_with(".spec.") || path.starts_with(".status."),
                    "{kind}: column {} reads {path}, outside spec and status",
                    column.name
                );
                let field = walk(root, path).unwrap_or_else(|missing| {
                    panic!("{kind}: column {} reads {path}, but the schema has no {missing}", column.name)
                });
                let types = match column.type_.as_str() {
                    "integer" => &["integer"][..],
                    "number" => &["integer", "number"][..],
                    "boolean" => &["boolean"][..],
                    _ => &["string"][..],
                };
                let found = field.type_.as_deref().unwrap_or_default();
                assert!(
                    types.contains(&found),
                    "{kind}: column {} is {} but {path} is {found}",
                    column.name,
                    column.type_
                );
                if column.type_ == "date" {
                    assert_eq!(field.format.as_deref(), Some("date-time"), "{kind}: column {} is a date", column.name);
                }
            }
        }
    }
}

#[test]
fn the_walk_finds_fields_and_reports_missing_ones() {
    let crd = MachineToken::crd();
    let root = crd.spec.versions[0].schema.as_ref().and_then(|s| s.open_api_v3_schema.as_ref()).unwrap();
    assert!(walk(root, ".status.state").is_ok());
    assert!(walk(root, READY).is_ok());
    assert_eq!(walk(root, ".status.revokedAt").err().as_deref(), Some(".status.revokedAt"));
    assert_eq!(walk(root, ".status.conditions[0].nope").err().as_deref(), Some(".status.conditions[].nope"));
}

/// The schema of the field a simple JSONPath (`.a.b[…].c`) reads, or the part of the path that
/// does not exist. A bracket (index or filter) steps into the array's items.
fn walk<'a>(root: &'a JSONSchemaProps, path: &str) -> Result<&'a JSONSchemaProps, String> {
    let mut schema = root;
    let mut seen = String::new();
    for segment in segments(path) {
        let (name, arrays) = match segment.find('[') {
            Some(i) => (&segment[..i], segment[i..].matches('[').count()),
            None => (segment.as_str(), 0),
        };
        seen.push('.');
        seen.push_str(name);
        schema = schema.properties.as_ref().and_then(|p| p.get(name)).ok_or_else(|| seen.clone())?;
        for _ in 0..arrays {
            seen.push_str("[]");
            schema = match schema.items.as_ref() {
                Some(JSONSchemaPropsOrArray::Schema(items)) => items,
                _ => return Err(seen),
            };
        }
    }
    Ok(schema)
}

/// `.a.b[?(@.type=="X")].c` → `a`, `b[?(@.type=="X")]`, `c`: dots inside brackets do not split.
fn segments(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth = 0usize;
    for c in path.chars() {
        match c {
            '[' => {
                depth += 1;
                current.push(c);
            }
            ']' => {
                depth = depth.saturating_sub(1);
                current.push(c);
            }
            '.' if depth == 0 => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}
