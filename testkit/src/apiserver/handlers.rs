//! What each HTTP verb does to a route: the Kubernetes REST semantics on top of the store.
//!
//! `GET` reads or lists (or watches with `watch=true`), `POST` creates, `PUT` replaces, `PATCH`
//! patches or server-side applies, `DELETE` deletes one object or a selection. Writes to the
//! main resource keep `.status`; writes to `/status` change only `.status`. Creates drop
//! `.status` (every kind is treated as having a status subresource). Responses honour
//! `Accept: ...;as=PartialObjectMetadata[List]` (metadata-only requests).

use std::{sync::Arc, time::Duration};

use http::{HeaderMap, Method, header};
use serde::Serialize;
use serde_json::{Value, json};

use super::{
    managed::{self, Writer},
    meta::{ObjectKey, ResourceKey, guess_kind, meta_str, now, set_meta},
    patch::{PatchKind, apply_patch},
    routes::{self, Query, Route, Subresource},
    selector::{FieldSelector, Filter, LabelSelector},
    status::ApiError,
    store::{DeleteOptions, Store},
    watch::{Start, WatchSpec},
};

/// The default `timeoutSeconds` of a watch (kube-rs always sends one).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(290);

/// One HTTP request, body already read.
pub(crate) struct Incoming<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: &'a Query,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

impl Incoming<'_> {
    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    fn metadata_only(&self) -> bool {
        self.header(header::ACCEPT).is_some_and(|accept| accept.contains("as=PartialObjectMetadata"))
    }

    fn dry_run(&self) -> bool {
        self.query.get("dryRun").is_some_and(|value| !value.is_empty())
    }

    /// `fieldManager`, else the User-Agent's product (as the real server defaults it).
    fn manager(&self) -> String {
        if let Some(manager) = self.query.get("fieldManager").filter(|m| !m.is_empty()) {
            return manager.to_owned();
        }
        self.header(header::USER_AGENT)
            .and_then(|agent| agent.split('/').next())
            .filter(|product| !product.is_empty())
            .unwrap_or("unknown")
            .to_owned()
    }
}

/// What to answer: a JSON body, or a watch stream.
pub(crate) enum Reply {
    Json(u16, Vec<u8>),
    Watch(WatchSpec),
}

pub(crate) fn handle(store: &Store, request: &Incoming<'_>) -> Result<Reply, ApiError> {
    let route = routes::parse(request.path)?;
    let metadata_only = request.metadata_only();
    match (request.method, route) {
        (&Method::GET, Route::Version) => Ok(version()),
        (&Method::GET, Route::Object { resource, namespace, name, .. }) => {
            let key = object_key(namespace, name);
            let object = store.get(&resource, &key).ok_or_else(|| ApiError::not_found(&resource, &key.name))?;
            Ok(object_reply(200, &object, metadata_only))
        }
        (&Method::GET, Route::Collection { resource, namespace }) => {
            let filter = filter(namespace, request.query)?;
            if request.query.flag("watch") {
                return watch_spec(store, resource, filter, request.query, metadata_only).map(Reply::Watch);
            }
            let (items, rv, kind) = store.list(&resource, &filter);
            Ok(Reply::Json(200, list_body(&resource, kind, rv, &items, metadata_only)))
        }
        (&Method::POST, Route::Collection { resource, namespace }) => create(store, &resource, namespace, request),
        (&Method::PUT, Route::Object { resource, namespace, name, sub }) => {
            replace(store, &resource, &object_key(namespace, name), sub, request)
        }
        (&Method::PATCH, Route::Object { resource, namespace, name, sub }) => {
            patch(store, &resource, &object_key(namespace, name), sub, request)
        }
        (&Method::DELETE, Route::Object { resource, namespace, name, sub: Subresource::Main }) => {
            let key = object_key(namespace, name);
            let last = store.delete(&resource, &key, &delete_options(request)?)?;
            Ok(object_reply(200, &last, metadata_only))
        }
        (&Method::DELETE, Route::Collection { resource, namespace }) => {
            delete_collection(store, &resource, filter(namespace, request.query)?, request)
        }
        (method, _) => Err(ApiError::method_not_allowed(format!("{method} is not supported on {}", request.path))),
    }
}

fn object_key(namespace: Option<String>, name: String) -> ObjectKey {
    ObjectKey { namespace: namespace.unwrap_or_default(), name }
}

fn version() -> Reply {
    let info = json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-uprox-testkit",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24",
        "compiler": "gc",
        "platform": "linux/amd64",
    });
    json_reply(200, &info)
}

fn filter(namespace: Option<String>, query: &Query) -> Result<Filter, ApiError> {
    let labels = query.get("labelSelector").map(LabelSelector::parse).transpose();
    let fields = query.get("fieldSelector").map(FieldSelector::parse).transpose();
    Ok(Filter {
        namespace,
        labels: labels.map_err(ApiError::bad_request)?.unwrap_or_default(),
        fields: fields.map_err(ApiError::bad_request)?.unwrap_or_default(),
    })
}

fn watch_spec(
    store: &Store,
    resource: ResourceKey,
    filter: Filter,
    query: &Query,
    metadata_only: bool,
) -> Result<WatchSpec, ApiError> {
    let timeout = match query.get("timeoutSeconds") {
        Some(raw) => Duration::from_secs(
            raw.parse().map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {raw:?}")))?,
        ),
        None => DEFAULT_WATCH_TIMEOUT,
    };
    let start = match query.get("resourceVersion") {
        _ if query.flag("sendInitialEvents") => Start::Snapshot { initial_events_end: true },
        None | Some("" | "0") => Start::Snapshot { initial_events_end: false },
        Some(raw) => {
            Start::From(raw.parse().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {raw:?}")))?)
        }
    };
    let kind = store.kind_of(&resource).unwrap_or_else(|| guess_kind(&resource.plural));
    Ok(WatchSpec {
        resource,
        filter,
        metadata_only,
        bookmarks: query.flag("allowWatchBookmarks"),
        timeout,
        start,
        kind,
    })
}

fn create(
    store: &Store,
    resource: &ResourceKey,
    namespace: Option<String>,
    request: &Incoming<'_>,
) -> Result<Reply, ApiError> {
    let mut object = parse_object(request.body)?;
    check_namespace(&object, namespace.as_deref())?;
    let name = match (meta_str(&object, "name"), meta_str(&object, "generateName")) {
        (Some(name), _) if !name.is_empty() => name.to_owned(),
        (_, Some(prefix)) if !prefix.is_empty() => format!("{prefix}{}", store.name_suffix()),
        _ => return Err(ApiError::invalid("metadata.name: Required value: name or generateName is required")),
    };
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
    let key = object_key(namespace, name);
    let manager = request.manager();
    let api_version =
        object.get("apiVersion").and_then(Value::as_str).map_or_else(|| resource.api_version(), str::to_owned);
    let now = now();
    let writer = Writer { manager: &manager, sub: Subresource::Main, api_version: &api_version, now: &now };
    let written = store.write(resource, &key, request.dry_run(), |current| {
        if current.is_some() {
            return Err(ApiError::already_exists(resource, &key.name));
        }
        managed::record_update(None, &mut object, &writer);
        Ok(object)
    })?;
    Ok(object_reply(201, &written.object, request.metadata_only()))
}

fn replace(
    store: &Store,
    resource: &ResourceKey,
    key: &ObjectKey,
    sub: Subresource,
    request: &Incoming<'_>,
) -> Result<Reply, ApiError> {
    let body = parse_object(request.body)?;
    check_identity(&body, key)?;
    let manager = request.manager();
    let api_version = resource.api_version();
    let now = now();
    let writer = Writer { manager: &manager, sub, api_version: &api_version, now: &now };
    let written = store.write(resource, key, request.dry_run(), |current| {
        let current = current.ok_or_else(|| ApiError::not_found(resource, &key.name))?;
        check_resource_version(&body, current, resource, &key.name)?;
        let mut next = confine(current, body, sub);
        managed::record_update(Some(current), &mut next, &writer);
        Ok(next)
    })?;
    Ok(object_reply(200, &written.object, request.metadata_only()))
}

fn patch(
    store: &Store,
    resource: &ResourceKey,
    key: &ObjectKey,
    sub: Subresource,
    request: &Incoming<'_>,
) -> Result<Reply, ApiError> {
    let content_type = request.header(header::CONTENT_TYPE).unwrap_or_default();
    let kind =
        PatchKind::from_content_type(content_type).ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
    let body: Value = serde_json::from_slice(request.body)
        .map_err(|error| ApiError::bad_request(format!("the patch body is not valid JSON: {error}")))?;
    let force = request.query.flag("force");
    if kind == PatchKind::Apply {
        if request.query.get("fieldManager").is_none_or(str::is_empty) {
            return Err(ApiError::invalid(
                "PatchOptions.meta.k8s.io is invalid: fieldManager: Required value: is required for apply patch",
            ));
        }
        check_apply_body(&body, key)?;
    } else if force {
        return Err(ApiError::invalid(
            "PatchOptions.meta.k8s.io is invalid: force: Forbidden: may not be specified for non-apply patch",
        ));
    }
    let manager = request.manager();
    let api_version =
        body.get("apiVersion").and_then(Value::as_str).map_or_else(|| resource.api_version(), str::to_owned);
    let now = now();
    let writer = Writer { manager: &manager, sub, api_version: &api_version, now: &now };
    let written = store.write(resource, key, request.dry_run(), |current| match (current, kind) {
        (None, PatchKind::Apply) if sub == Subresource::Main => {
            let mut skeleton = json!({
                "apiVersion": api_version,
                "kind": body.get("kind").cloned().unwrap_or(Value::Null),
                "metadata": { "name": key.name },
            });
            if !key.namespace.is_empty() {
                set_meta(&mut skeleton, "namespace", Value::String(key.namespace.clone()));
            }
            managed::apply(&skeleton, &body, &writer, force)
        }
        (None, _) => Err(ApiError::not_found(resource, &key.name)),
        (Some(current), PatchKind::Apply) => {
            check_resource_version(&body, current, resource, &key.name)?;
            managed::apply(current, &body, &writer, force)
        }
        (Some(current), kind) => {
            let mut next = current.clone();
            apply_patch(kind, &mut next, &body)?;
            check_resource_version(&next, current, resource, &key.name)?;
            let mut next = confine(current, next, sub);
            managed::record_update(Some(current), &mut next, &writer);
            Ok(next)
        }
    })?;
    let code = if written.created { 201 } else { 200 };
    Ok(object_reply(code, &written.object, request.metadata_only()))
}

fn delete_collection(
    store: &Store,
    resource: &ResourceKey,
    filter: Filter,
    request: &Incoming<'_>,
) -> Result<Reply, ApiError> {
    let options = delete_options(request)?;
    let (items, _, kind) = store.list(resource, &filter);
    let mut deleted = Vec::with_capacity(items.len());
    for item in items {
        let key = ObjectKey {
            namespace: meta_str(&item, "namespace").unwrap_or_default().to_owned(),
            name: meta_str(&item, "name").unwrap_or_default().to_owned(),
        };
        // Garbage collection may already have taken it with an earlier item.
        if let Ok(last) = store.delete(resource, &key, &options) {
            deleted.push(last);
        }
    }
    let rv = store.resource_version();
    Ok(Reply::Json(200, list_body(resource, kind, rv, &deleted, request.metadata_only())))
}

/// The main resource keeps `current`'s `.status`; `/status` takes only `next`'s `.status`.
fn confine(current: &Value, next: Value, sub: Subresource) -> Value {
    let (mut out, source) = match sub {
        Subresource::Main => (next, current),
        Subresource::Status => (current.clone(), &next),
    };
    if let Some(map) = out.as_object_mut() {
        match source.get("status") {
            Some(status) => map.insert("status".to_owned(), status.clone()),
            None => map.remove("status"),
        };
    }
    out
}

fn check_resource_version(
    candidate: &Value,
    current: &Value,
    resource: &ResourceKey,
    name: &str,
) -> Result<(), ApiError> {
    match meta_str(candidate, "resourceVersion") {
        Some(rv) if !rv.is_empty() && Some(rv) != meta_str(current, "resourceVersion") => {
            Err(ApiError::conflict(resource, name))
        }
        _ => Ok(()),
    }
}

fn check_namespace(object: &Value, namespace: Option<&str>) -> Result<(), ApiError> {
    match (meta_str(object, "namespace"), namespace) {
        (Some(body), Some(path)) if !body.is_empty() && body != path => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => Ok(()),
    }
}

fn check_identity(object: &Value, key: &ObjectKey) -> Result<(), ApiError> {
    let namespace = (!key.namespace.is_empty()).then_some(key.namespace.as_str());
    check_namespace(object, namespace)?;
    match meta_str(object, "name") {
        Some(name) if !name.is_empty() && name != key.name => Err(ApiError::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({})",
            key.name
        ))),
        _ => Ok(()),
    }
}

fn check_apply_body(body: &Value, key: &ObjectKey) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request("an apply patch must be a JSON object"));
    }
    check_identity(body, key)?;
    if body.get("kind").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err(ApiError::bad_request("Object 'Kind' is missing in the apply patch"));
    }
    if body.pointer("/metadata/managedFields").is_some_and(|fields| !fields.is_null()) {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    Ok(())
}

fn parse_object(body: &[u8]) -> Result<Value, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(object @ Value::Object(_)) => Ok(object),
        Ok(_) => Err(ApiError::bad_request("the request body must be a JSON object")),
        Err(error) => Err(ApiError::bad_request(format!("the request body is not valid JSON: {error}"))),
    }
}

/// `DeleteOptions` from the body (kube sends them there) and the query.
fn delete_options(request: &Incoming<'_>) -> Result<DeleteOptions, ApiError> {
    let body: Value = if request.body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(request.body)
            .map_err(|error| ApiError::bad_request(format!("invalid DeleteOptions: {error}")))?
    };
    let text = |pointer: &str| body.pointer(pointer).and_then(Value::as_str).map(str::to_owned);
    let policy = text("/propagationPolicy").or_else(|| request.query.get("propagationPolicy").map(str::to_owned));
    let dry_run_in_body = body.get("dryRun").and_then(Value::as_array).is_some_and(|items| !items.is_empty());
    Ok(DeleteOptions {
        uid: text("/preconditions/uid"),
        resource_version: text("/preconditions/resourceVersion"),
        orphan: policy.as_deref() == Some("Orphan"),
        dry_run: dry_run_in_body || request.dry_run(),
    })
}

/// An object reduced to what a metadata-only request gets.
pub(crate) fn partial_metadata(object: &Value) -> Value {
    json!({
        "apiVersion": "meta.k8s.io/v1",
        "kind": "PartialObjectMetadata",
        "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn object_reply(code: u16, object: &Value, metadata_only: bool) -> Reply {
    if metadata_only { json_reply(code, &partial_metadata(object)) } else { json_reply(code, object) }
}

fn json_reply(code: u16, value: &impl Serialize) -> Reply {
    let mut out = Vec::new();
    write_json(&mut out, value);
    Reply::Json(code, out)
}

/// Serializes into `out`; serializing a JSON value to memory cannot fail, but never panic.
pub(crate) fn write_json(out: &mut Vec<u8>, value: &impl Serialize) {
    if serde_json::to_writer(&mut *out, value).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// A `<Kind>List` written item by item, without copying the stored objects.
fn list_body(
    resource: &ResourceKey,
    kind: Option<String>,
    rv: u64,
    items: &[Arc<Value>],
    metadata_only: bool,
) -> Vec<u8> {
    let (api_version, kind) = if metadata_only {
        ("meta.k8s.io/v1".to_owned(), "PartialObjectMetadataList".to_owned())
    } else {
        (resource.api_version(), format!("{}List", kind.unwrap_or_else(|| guess_kind(&resource.plural))))
    };
    let mut out = Vec::with_capacity(256 + items.len() * 512);
    out.extend_from_slice(b"{\"apiVersion\":");
    write_json(&mut out, &api_version);
    out.extend_from_slice(b",\"kind\":");
    write_json(&mut out, &kind);
    out.extend_from_slice(b",\"metadata\":{\"resourceVersion\":\"");
    out.extend_from_slice(rv.to_string().as_bytes());
    out.extend_from_slice(b"\"},\"items\":[");
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        if metadata_only {
            write_json(&mut out, &partial_metadata(item));
        } else {
            write_json(&mut out, &**item);
        }
    }
    out.extend_from_slice(b"]}");
    out
}
