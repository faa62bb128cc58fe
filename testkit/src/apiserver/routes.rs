//! Request paths and query strings.
//!
//! Turns `/api/v1/...` and `/apis/{group}/{version}/...` paths into a [`Route`] without knowing
//! any kind: every plural is served the same way, namespaced under `namespaces/{ns}/` or
//! cluster-wide. What a route means per HTTP method is decided in `handlers`.

use super::{meta::ResourceKey, status::ApiError};

/// Which part of an object a request addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subresource {
    /// The object itself: writes keep `.status`.
    Main,
    /// `/status`: writes change only `.status`.
    Status,
}

impl Subresource {
    /// The `subresource` field of a `managedFields` entry.
    pub fn as_field(self) -> &'static str {
        match self {
            Self::Main => "",
            Self::Status => "status",
        }
    }
}

/// What a request path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `GET /version`.
    Version,
    /// A collection: within one namespace, or across all of them (and cluster-scoped kinds).
    Collection { resource: ResourceKey, namespace: Option<String> },
    /// One object; `namespace` is `None` for cluster-scoped objects.
    Object { resource: ResourceKey, namespace: Option<String>, name: String, sub: Subresource },
}

/// Parses a request path into a [`Route`].
pub(crate) fn parse(path: &str) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::no_route(path)),
    };
    let resource = |plural: &str| ResourceKey::new(group, version, plural);
    let object = |plural: &str, namespace: Option<&str>, name: &str, sub: Option<&str>| {
        let sub = match sub {
            None => Subresource::Main,
            Some("status") => Subresource::Status,
            Some(_) => return Err(ApiError::no_route(path)),
        };
        Ok(Route::Object {
            resource: resource(plural),
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
            sub,
        })
    };
    if rest.iter().any(|segment| segment.is_empty()) {
        return Err(ApiError::no_route(path));
    }
    match rest {
        // The namespace objects themselves and their subresources.
        ["namespaces", name, sub @ ("status" | "finalize")] if group.is_empty() => {
            object("namespaces", None, name, Some(sub))
        }
        ["namespaces", namespace, plural] => {
            Ok(Route::Collection { resource: resource(plural), namespace: Some((*namespace).to_owned()) })
        }
        ["namespaces", namespace, plural, name] => object(plural, Some(namespace), name, None),
        ["namespaces", namespace, plural, name, sub] => object(plural, Some(namespace), name, Some(sub)),
        [plural] => Ok(Route::Collection { resource: resource(plural), namespace: None }),
        [plural, name] => object(plural, None, name, None),
        [plural, name, sub] => object(plural, None, name, Some(sub)),
        _ => Err(ApiError::no_route(path)),
    }
}

/// Decoded query parameters, in request order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        let pairs = raw
            .map(|raw| {
                form_urlencoded::parse(raw.as_bytes())
                    .filter(|(key, _)| !key.is_empty())
                    .map(|(key, value)| (key.into_owned(), value.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Self(pairs)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `true` for `key=true` and `key=1`, as the API server reads boolean parameters.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true" | "1"))
    }

    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(group: &str, version: &str, plural: &str) -> ResourceKey {
        ResourceKey::new(group, version, plural)
    }

    #[test]
    fn parses_core_and_group_paths() {
        assert_eq!(
            parse("/api/v1/namespaces/x/secrets/y").ok(),
            Some(Route::Object {
                resource: key("", "v1", "secrets"),
                namespace: Some("x".into()),
                name: "y".into(),
                sub: Subresource::Main,
            })
        );
        assert_eq!(
            parse("/apis/uprox.dev/v1alpha1/namespaces/x/machinetokens/t/status").ok(),
            Some(Route::Object {
                resource: key("uprox.dev", "v1alpha1", "machinetokens"),
                namespace: Some("x".into()),
                name: "t".into(),
                sub: Subresource::Status,
            })
        );
        assert_eq!(
            parse("/apis/coordination.k8s.io/v1/leases").ok(),
            Some(Route::Collection { resource: key("coordination.k8s.io", "v1", "leases"), namespace: None })
        );
        assert_eq!(
            parse("/api/v1/namespaces/x/configmaps").ok(),
            Some(Route::Collection { resource: key("", "v1", "configmaps"), namespace: Some("x".into()) })
        );
    }

    #[test]
    fn namespaces_are_cluster_scoped_objects() {
        assert_eq!(
            parse("/api/v1/namespaces/x").ok(),
            Some(Route::Object {
                resource: key("", "v1", "namespaces"),
                namespace: None,
                name: "x".into(),
                sub: Subresource::Main,
            })
        );
        assert_eq!(
            parse("/api/v1/namespaces/x/status").ok(),
            Some(Route::Object {
                resource: key("", "v1", "namespaces"),
                namespace: None,
                name: "x".into(),
                sub: Subresource::Status,
            })
        );
    }

    #[test]
    fn rejects_unknown_paths_and_subresources() {
        assert!(parse("/healthz").is_err());
        assert!(parse("/api/v1/namespaces/x/pods/p/exec").is_err());
        assert!(parse("/api/v1/namespaces//pods").is_err());
        assert!(parse("/api/v1/namespaces/x/pods/p/status/extra").is_err());
    }

    #[test]
    fn query_skips_empty_keys_and_decodes() {
        let query = Query::parse(Some("&watch=true&labelSelector=app%3Dx%2Ctier+in+%28a%29"));
        assert!(query.flag("watch"));
        assert_eq!(query.get("labelSelector"), Some("app=x,tier in (a)"));
        assert_eq!(query.get("missing"), None);
    }
}
