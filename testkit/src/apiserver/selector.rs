//! Label and field selectors, and the namespace filter of list and watch requests.
//!
//! Label selectors support everything kube-rs' `Selector` prints: `k=v`, `k==v`, `k!=v`, `k`,
//! `!k`, `k in (a,b)` and `k notin (a,b)`, comma-separated (AND). Field selectors support
//! `path=v`, `path==v` and `path!=v` on any dotted path of the object (the real server only
//! allows a few fields per kind, such as `metadata.name` and `metadata.namespace`; this one is
//! more lenient).

use serde_json::Value;

/// The objects a list or watch request asks for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    /// `None`: every namespace (and cluster-scoped objects).
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn matches(&self, object: &Value) -> bool {
        let metadata = object.get("metadata");
        if let Some(namespace) = &self.namespace {
            let actual = metadata.and_then(|m| m.get("namespace")).and_then(Value::as_str).unwrap_or("");
            if actual != namespace {
                return false;
            }
        }
        self.labels.matches(metadata.and_then(|m| m.get("labels"))) && self.fields.matches(object)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A parsed `labelSelector`; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in split_top_level(raw) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(term)?);
        }
        Ok(Self(requirements))
    }

    /// `labels` is the object's `metadata.labels` (absent or not a map: no labels).
    pub fn matches(&self, labels: Option<&Value>) -> bool {
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            Requirement::Equals(key, value) => label(key) == Some(value),
            Requirement::NotEquals(key, value) => label(key) != Some(value),
            Requirement::In(key, values) => label(key).is_some_and(|l| values.iter().any(|v| v == l)),
            Requirement::NotIn(key, values) => !label(key).is_some_and(|l| values.iter().any(|v| v == l)),
            Requirement::Exists(key) => label(key).is_some(),
            Requirement::DoesNotExist(key) => label(key).is_none(),
        })
    }
}

/// Splits on commas that are not inside `(...)`.
fn split_top_level(raw: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (index, character) in raw.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&raw[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    terms.push(&raw[start..]);
    terms
}

fn parse_requirement(term: &str) -> Result<Requirement, String> {
    let key = |key: &str| {
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            Err(format!("invalid label selector term {term:?}"))
        } else {
            Ok(key.to_owned())
        }
    };
    if let Some(open) = term.find('(') {
        let close = term.rfind(')').filter(|close| *close > open);
        let Some(close) = close else {
            return Err(format!("unbalanced parentheses in label selector term {term:?}"));
        };
        let values: Vec<String> =
            term[open + 1..close].split(',').map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect();
        let head: Vec<&str> = term[..open].split_whitespace().collect();
        return match head.as_slice() {
            [name, "in"] => Ok(Requirement::In(key(name)?, values)),
            [name, "notin"] => Ok(Requirement::NotIn(key(name)?, values)),
            _ => Err(format!("invalid set-based label selector term {term:?}")),
        };
    }
    if let Some(name) = term.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(key(name)?));
    }
    if let Some((name, value)) = term.split_once("!=") {
        return Ok(Requirement::NotEquals(key(name)?, value.trim().to_owned()));
    }
    if let Some((name, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Requirement::Equals(key(name)?, value.trim().to_owned()));
    }
    Ok(Requirement::Exists(key(term)?))
}

/// A parsed `fieldSelector`; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector(Vec<(Vec<String>, bool, String)>);

impl FieldSelector {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in raw.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (path, equal, value) = if let Some((path, value)) = term.split_once("!=") {
                (path, false, value)
            } else if let Some((path, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (path, true, value)
            } else {
                return Err(format!("invalid field selector term {term:?}"));
            };
            let path: Vec<String> = path.trim().split('.').map(str::to_owned).collect();
            if path.iter().any(String::is_empty) {
                return Err(format!("invalid field selector term {term:?}"));
            }
            terms.push((path, equal, value.trim().to_owned()));
        }
        Ok(Self(terms))
    }

    /// Missing fields compare as the empty string, as the API server's field sets do.
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, equal, expected)| {
            let actual = path.iter().try_fold(object, |value, segment| value.get(segment));
            let actual = match actual {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(text)) => text.clone(),
                Some(other) => other.to_string(),
            };
            (actual == *expected) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labels(selector: &str, labels: Value) -> bool {
        match LabelSelector::parse(selector) {
            Ok(parsed) => parsed.matches(Some(&labels)),
            Err(error) => panic!("{selector}: {error}"),
        }
    }

    #[test]
    fn label_equality_existence_and_sets() {
        let l = json!({"app": "gw", "tier": "edge"});
        assert!(labels("", l.clone()));
        assert!(labels("app=gw", l.clone()));
        assert!(labels("app==gw,tier", l.clone()));
        assert!(!labels("app!=gw", l.clone()));
        assert!(labels("other!=x", l.clone()));
        assert!(labels("!other", l.clone()));
        assert!(!labels("!app", l.clone()));
        assert!(labels("tier in (core, edge),app notin (x)", l.clone()));
        assert!(!labels("tier in (core),app", l.clone()));
        assert!(labels("missing notin (a,b)", l));
        assert!(!LabelSelector::parse("a=b").is_ok_and(|s| s.matches(None)));
        assert!(LabelSelector::parse("tier in (a").is_err());
        assert!(LabelSelector::parse("a b").is_err());
    }

    #[test]
    fn field_selectors_on_any_path() {
        let object = json!({"metadata": {"name": "a", "namespace": "ns"}, "type": "Opaque", "n": 3});
        let matches = |raw: &str| FieldSelector::parse(raw).is_ok_and(|s| s.matches(&object));
        assert!(matches("metadata.name=a"));
        assert!(matches("metadata.namespace==ns,type=Opaque"));
        assert!(matches("metadata.name!=b"));
        assert!(matches("n=3"));
        assert!(matches("spec.missing="));
        assert!(!matches("metadata.name=b"));
        assert!(FieldSelector::parse("nonsense").is_err());
    }

    #[test]
    fn filter_checks_namespace() {
        let filter = Filter { namespace: Some("ns".into()), ..Filter::default() };
        assert!(filter.matches(&json!({"metadata": {"namespace": "ns"}})));
        assert!(!filter.matches(&json!({"metadata": {"namespace": "other"}})));
        assert!(!filter.matches(&json!({"metadata": {}})));
    }
}
