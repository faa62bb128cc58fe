//! The Files API: `POST /v1/files` (multipart upload, streamed), `GET /v1/files` (list),
//! `GET /v1/files/{id}`, `DELETE /v1/files/{id}` and `GET /v1/files/{id}/content` (streamed),
//! also under `/openai/files…` and `/openai/v1/files…` for Azure OpenAI clients (their
//! `api-version` is accepted and not needed). Scope `files`.
//!
//! **Routing.** Files are not per model: they go to the Service's first Provider (in routing
//! order) of type `openai`, `openai-compatible`, `azure` or `mock` that its Policies' provider
//! allowlists admit — `{base}/files…`, or `{endpoint}/openai/files…?api-version=…` for Azure;
//! the mock answers from memory. A Service without one gets a 400.
//!
//! **Ownership.** An upload records which Service it came from (the id is read from the
//! upstream's answer) in the gateway's [`FileOwners`](crate::files::FileOwners) before the
//! answer is returned. A file id the caller's Service does not own is answered 404 ("No such
//! File object"), exactly as if it did not exist, without calling upstream; a listing is the
//! upstream's filtered to the caller's files. A successful delete forgets the id.
//!
//! **Limits.** Uploads are relayed as they arrive (see [`crate::files::upload`]) under
//! `Settings::max_file_bytes`, never collected whole; content downloads are relayed as they
//! arrive. A listing reads at most [`MAX_LIST_PAGES`] upstream pages per request.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};
use uprox_crds::provider::ProviderType;

use crate::body::{Body, full};
use crate::error::GatewayError;
use crate::files::FileRecord;
use crate::files::upload::{Upload, UploadBody, upload_headers};
use crate::policy;
use crate::providers::azure::DEFAULT_API_VERSION;
use crate::providers::mock::files::{MAX_TOTAL_BYTES, boundary};
use crate::relay::Relay;
use crate::router::Context;
use crate::snapshot::ProviderEntry;
use crate::upstream::Call;

/// Upstream listing pages read for one `GET /v1/files` before answering with what was found
/// (and `has_more`).
pub const MAX_LIST_PAGES: usize = 10;
/// Largest upstream listing page read.
const MAX_LISTING_BYTES: usize = 32 * 1024 * 1024;
/// Largest upstream answer to an upload (a file object) read.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// The page size asked of the upstream (OpenAI's largest).
const UPSTREAM_PAGE: usize = 10_000;

const PREFIXES: [&str; 3] = ["/v1/files", "/openai/v1/files", "/openai/files"];

/// Client headers forwarded upstream.
const FORWARDED: &[&str] = &["accept", "openai-beta", "user-agent"];
/// Upstream headers relayed to the client.
const RELAYED: &[&str] = &["content-type", "content-disposition", "cache-control", "retry-after"];
static UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");

/// What a Files API path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target<'p> {
    Collection,
    File(&'p str),
    Content(&'p str),
}

fn target(path: &str) -> Option<Target<'_>> {
    let rest = PREFIXES.iter().find_map(|p| path.strip_prefix(p))?;
    if rest.is_empty() {
        return Some(Target::Collection);
    }
    let rest = rest.strip_prefix('/')?;
    let (id, target) = match rest.strip_suffix("/content") {
        Some(id) => (id, Target::Content(id)),
        None => (rest, Target::File(rest)),
    };
    (!id.is_empty() && !id.contains('/')).then_some(target)
}

/// The kind of Files API route, for the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/v1/files`: `GET` lists, `POST` uploads.
    Collection,
    /// `/v1/files/{id}`: `GET` retrieves, `DELETE` deletes.
    File,
    /// `/v1/files/{id}/content`: `GET` downloads.
    Content,
}

/// The Files API route of `path`, if it is one.
pub fn route(path: &str) -> Option<Route> {
    target(path).map(|t| match t {
        Target::Collection => Route::Collection,
        Target::File(_) => Route::File,
        Target::Content(_) => Route::Content,
    })
}

/// Whether `id` can be a file id (and so a URL path segment as is).
fn valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Handles one Files API request (method already checked by the router).
pub async fn handle(ctx: &Context<'_>, request: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    if !ctx.gateway.files.owners().ready() {
        return Err(GatewayError::NotReady);
    }
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    match target(&path) {
        Some(Target::Collection) if request.method() == Method::POST => upload(ctx, request).await,
        Some(Target::Collection) => list(ctx, query.as_deref(), request.headers()).await,
        Some(Target::File(id)) if request.method() == Method::DELETE => delete(ctx, id, request.headers()).await,
        Some(Target::File(id)) => {
            owned(ctx, id)?;
            let up = upstream(ctx)?;
            match up.mock() {
                true => ctx.gateway.files.mock.retrieve(id),
                false => up.exchange(ctx, Method::GET, &format!("/{id}"), None, request.headers()).await,
            }
        }
        Some(Target::Content(id)) => {
            owned(ctx, id)?;
            let up = upstream(ctx)?;
            match up.mock() {
                true => ctx.gateway.files.mock.content(id),
                false => up.exchange(ctx, Method::GET, &format!("/{id}/content"), None, request.headers()).await,
            }
        }
        None => Err(GatewayError::NotFound { method: request.method().to_string(), path }),
    }
}

/// 404, as if absent, unless the caller's Service uploaded `id`.
fn owned(ctx: &Context<'_>, id: &str) -> Result<(), GatewayError> {
    let owner = valid_id(id).then(|| ctx.gateway.files.owners().owner(id)).flatten();
    if owner.as_ref() == Some(&ctx.caller.service.id) { Ok(()) } else { Err(GatewayError::FileNotFound(id.to_owned())) }
}

/// The provider and key the caller's files go to.
struct Upstream<'a> {
    provider: &'a ProviderEntry,
    key: Option<usize>,
}

fn upstream<'a>(ctx: &Context<'a>) -> Result<Upstream<'a>, GatewayError> {
    let snapshot = ctx.snapshot;
    let mut refused = None;
    for &p in ctx.caller.service.providers.iter() {
        let provider = &snapshot.providers[p];
        if !matches!(
            provider.kind(),
            ProviderType::Openai | ProviderType::OpenaiCompatible | ProviderType::Azure | ProviderType::Mock
        ) {
            continue;
        }
        if let Err(e) = policy::allows_provider(snapshot, &ctx.caller, provider) {
            refused.get_or_insert(e);
            continue;
        }
        let key = match ctx.caller.service.pinned {
            Some((pp, k)) if pp == p => Some(k),
            _ if provider.keys.is_empty() => None,
            _ => Some(0),
        };
        return Ok(Upstream { provider, key });
    }
    Err(refused.unwrap_or_else(|| {
        GatewayError::InvalidRequest(
            "No provider serving the Files API (type openai, openai-compatible, azure or mock) is available to this Service"
                .to_owned(),
        )
    }))
}

impl Upstream<'_> {
    fn mock(&self) -> bool {
        self.provider.kind() == ProviderType::Mock
    }

    /// `{base}/files{suffix}?{query}`, or Azure's `{endpoint}/openai/files{suffix}?api-version=…&{query}`.
    fn uri(&self, suffix: &str, query: Option<&str>) -> Result<Uri, GatewayError> {
        let config = &self.provider.config;
        let base = config.base_url.trim_end_matches('/');
        let text = match self.provider.kind() {
            ProviderType::Azure => {
                let base = base.strip_suffix("/openai").unwrap_or(base);
                let version = config.api_version.as_deref().unwrap_or(DEFAULT_API_VERSION);
                let extra = query.map(|q| format!("&{q}")).unwrap_or_default();
                format!("{base}/openai/files{suffix}?api-version={version}{extra}")
            }
            _ => format!("{base}/files{suffix}{}", query.map(|q| format!("?{q}")).unwrap_or_default()),
        };
        text.parse().map_err(|_| GatewayError::UpstreamUnavailable("the provider's base URL is not valid".to_owned()))
    }

    /// A bodiless request upstream (keys fail over as on every endpoint), its answer relayed
    /// as it arrives.
    async fn exchange(
        &self,
        ctx: &Context<'_>,
        method: Method,
        suffix: &str,
        query: Option<&str>,
        client_headers: &HeaderMap,
    ) -> Result<Response<Body>, GatewayError> {
        let uri = self.uri(suffix, query)?;
        let call = Call {
            client: ctx.gateway.client(),
            provider: self.provider,
            key: self.key,
            uri: &uri,
            request_id: ctx.request_id,
            idle_timeout: ctx.gateway.settings.read_timeout,
            meter: None,
            strip_usage: false,
            audit: Some(ctx.audit),
        };
        let mut request = call.request(method, Bytes::new());
        request.headers_mut().remove(header::CONTENT_TYPE);
        for name in FORWARDED {
            if let Some(v) = client_headers.get(*name) {
                request.headers_mut().insert(*name, v.clone());
            }
        }
        let response = call.send(request).await?;
        Ok(relay(response, ctx.gateway.settings.read_timeout))
    }
}

/// The upstream's answer with the relayed headers, its body relayed frame by frame.
fn relay(response: Response<Incoming>, idle: std::time::Duration) -> Response<Body> {
    let (parts, incoming) = response.into_parts();
    let mut headers = HeaderMap::with_capacity(4);
    for name in RELAYED {
        if let Some(v) = parts.headers.get(*name) {
            headers.insert(*name, v.clone());
        }
    }
    if let Some(v) = parts.headers.get("x-request-id") {
        headers.insert(&UPSTREAM_REQUEST_ID, v.clone());
    }
    let mut relayed = Response::new(Relay::new(incoming, idle).boxed_unsync());
    *relayed.status_mut() = parts.status;
    *relayed.headers_mut() = headers;
    relayed
}

/// A whole (small) body, `None` when it fails or passes `limit` bytes.
async fn read_bounded(mut body: Body, limit: usize) -> Option<Bytes> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            if out.len() + data.len() > limit {
                return None;
            }
            out.extend_from_slice(&data);
        }
    }
    Some(out.freeze())
}

fn json_response(value: &Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The fields of an upstream file object the gateway reads.
#[derive(Deserialize)]
struct FileHead {
    id: String,
    purpose: Option<String>,
    created_at: Option<i64>,
}

async fn upload(ctx: &Context<'_>, request: Request<Incoming>) -> Result<Response<Body>, GatewayError> {
    let (parts, body) = request.into_parts();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .filter(|v| v.to_str().ok().and_then(boundary).is_some())
        .cloned()
        .ok_or_else(|| {
            GatewayError::InvalidRequest(
                "A file upload must be multipart/form-data (with a boundary) carrying `file` and `purpose`".to_owned(),
            )
        })?;
    let limit = ctx.gateway.settings.max_file_bytes;
    let declared: Option<u64> =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(GatewayError::PayloadTooLarge(limit));
    }
    let up = upstream(ctx)?;

    let answer = if up.mock() {
        let limit = limit.min(MAX_TOTAL_BYTES);
        let (body, outcome) = UploadBody::new(body, limit);
        let bytes = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) if outcome.too_large() => return Err(GatewayError::PayloadTooLarge(limit)),
            Err(_) => return Err(GatewayError::InvalidRequest("Could not read the request body".to_owned())),
        };
        ctx.gateway.files.mock.upload(content_type.to_str().unwrap_or_default(), &bytes)?
    } else {
        let uri = up.uri("", None)?;
        let upload = Upload {
            client: ctx.gateway.files.client(ctx.gateway.settings.connect_timeout),
            provider: up.provider,
            key: up.key,
            uri: &uri,
            headers: upload_headers(&parts.headers, &content_type, ctx.request_id),
        };
        let (body, outcome) = UploadBody::new(body, limit);
        relay(upload.send(body, &outcome).await?, ctx.gateway.settings.read_timeout)
    };

    // The answer is one small file object: read it to learn the id.
    let (head, body) = answer.into_parts();
    let bytes = read_bounded(body, MAX_ANSWER_BYTES)
        .await
        .ok_or_else(|| GatewayError::UpstreamUnavailable("the answer to the upload could not be read".to_owned()))?;
    if head.status.is_success() {
        let file: FileHead =
            serde_json::from_slice(&bytes).ok().filter(|f: &FileHead| valid_id(&f.id)).ok_or_else(|| {
                GatewayError::UpstreamUnavailable("the upstream answered the upload without a file id".to_owned())
            })?;
        let record = FileRecord {
            uploaded_at: file.created_at.unwrap_or_else(crate::files::unix_now),
            purpose: file.purpose.unwrap_or_default(),
        };
        let service = &ctx.caller.service.id;
        if let Err(e) = ctx.gateway.files.owners().record(service, &file.id, record).await {
            tracing::error!(service = %service, file = %file.id, "recording a file's owner failed: {e}; deleting the file upstream");
            // Best effort: leave no file behind that nobody could reach through uprox.
            let removed = match up.mock() {
                true => ctx.gateway.files.mock.delete(&file.id).map(|r| r.status()),
                false => up
                    .exchange(ctx, Method::DELETE, &format!("/{}", file.id), None, &HeaderMap::new())
                    .await
                    .map(|r| r.status()),
            };
            if !removed.is_ok_and(|s| s.is_success()) {
                tracing::error!(service = %service, file = %file.id, "the file could not be deleted upstream; it stays unreachable through uprox");
            }
            return Err(GatewayError::OwnershipUnavailable(e.to_string()));
        }
    }
    Ok(Response::from_parts(head, full(bytes)))
}

async fn delete(ctx: &Context<'_>, id: &str, headers: &HeaderMap) -> Result<Response<Body>, GatewayError> {
    owned(ctx, id)?;
    let up = upstream(ctx)?;
    let answer = match up.mock() {
        true => ctx.gateway.files.mock.delete(id),
        false => up.exchange(ctx, Method::DELETE, &format!("/{id}"), None, headers).await,
    };
    let gone = match &answer {
        Ok(r) => r.status().is_success() || r.status() == StatusCode::NOT_FOUND,
        Err(e) => matches!(e, GatewayError::FileNotFound(_)),
    };
    if gone {
        let service = &ctx.caller.service.id;
        if let Err(e) = ctx.gateway.files.owners().forget(service, id).await {
            // The file is gone upstream; a stale record only keeps an id that answers 404.
            tracing::warn!(service = %service, file = %id, "forgetting a deleted file failed: {e}");
        }
    }
    answer
}

/// `GET /v1/files` query parameters.
struct ListQuery<'q> {
    purpose: Option<&'q str>,
    order: Option<&'q str>,
    after: Option<String>,
    limit: usize,
}

fn list_query(query: Option<&str>) -> Result<ListQuery<'_>, GatewayError> {
    let mut q = ListQuery { purpose: None, order: None, after: None, limit: UPSTREAM_PAGE };
    for (key, value) in query.unwrap_or_default().split('&').filter_map(|p| p.split_once('=')) {
        match key {
            "purpose" => q.purpose = Some(value),
            "order" => q.order = Some(value),
            "after" => q.after = Some(value.to_owned()),
            "limit" => {
                q.limit = value.parse().ok().filter(|l| (1..=UPSTREAM_PAGE).contains(l)).ok_or_else(|| {
                    GatewayError::InvalidParam { param: "limit", message: "limit must be between 1 and 10000".into() }
                })?;
            }
            _ => {}
        }
    }
    Ok(q)
}

#[derive(Deserialize)]
struct Page {
    data: Vec<Value>,
    has_more: Option<bool>,
}

async fn list(ctx: &Context<'_>, query: Option<&str>, headers: &HeaderMap) -> Result<Response<Body>, GatewayError> {
    let params = list_query(query)?;
    let owned = ctx.gateway.files.owners().owned_by(&ctx.caller.service.id);
    let mut data: Vec<Value> = Vec::new();
    let mut has_more = false;
    if !owned.is_empty() {
        let up = upstream(ctx)?;
        let mut after = params.after.clone();
        for _ in 0..MAX_LIST_PAGES {
            let mut upstream_query = format!("limit={UPSTREAM_PAGE}");
            for (key, value) in [("purpose", params.purpose), ("order", params.order), ("after", after.as_deref())] {
                if let Some(value) = value {
                    upstream_query.push_str(&format!("&{key}={value}"));
                }
            }
            let answer = match up.mock() {
                true => ctx.gateway.files.mock.list(Some(&upstream_query))?,
                false => up.exchange(ctx, Method::GET, "", Some(&upstream_query), headers).await?,
            };
            if !answer.status().is_success() {
                return Ok(answer);
            }
            let bytes = read_bounded(answer.into_body(), MAX_LISTING_BYTES)
                .await
                .ok_or_else(|| GatewayError::UpstreamUnavailable("the file listing could not be read".to_owned()))?;
            let page: Page = serde_json::from_slice(&bytes)
                .map_err(|_| GatewayError::UpstreamUnavailable("the file listing is not a list".to_owned()))?;
            let last = page.data.last().and_then(|f| f["id"].as_str()).map(str::to_owned);
            let mut filled = false;
            for file in page.data {
                if file["id"].as_str().is_some_and(|id| owned.contains(id)) {
                    if data.len() == params.limit {
                        filled = true;
                        break;
                    }
                    data.push(file);
                }
            }
            has_more = filled || page.has_more.unwrap_or(false);
            if filled || !has_more || last.is_none() {
                break;
            }
            after = last;
        }
    }
    let first_id = data.first().map(|f| f["id"].clone()).unwrap_or(Value::Null);
    let last_id = data.last().map(|f| f["id"].clone()).unwrap_or(Value::Null);
    Ok(json_response(&json!({
        "object": "list",
        "data": data,
        "has_more": has_more,
        "first_id": first_id,
        "last_id": last_id,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_target() {
        assert_eq!(target("/v1/files"), Some(Target::Collection));
        assert_eq!(target("/openai/files"), Some(Target::Collection));
        assert_eq!(target("/openai/v1/files/file-1"), Some(Target::File("file-1")));
        assert_eq!(target("/v1/files/file-1/content"), Some(Target::Content("file-1")));
        assert_eq!(target("/v1/files/"), None);
        assert_eq!(target("/v1/files//content"), None);
        assert_eq!(target("/v1/files/a/b"), None);
        assert_eq!(target("/v1/filesx"), None);
        assert_eq!(route("/openai/files/f/content"), Some(Route::Content));
    }

    #[test]
    fn ids_are_path_safe() {
        assert!(valid_id("file-abc_1.x"));
        assert!(!valid_id("../x"));
        assert!(!valid_id("a%2Fb"));
        assert!(!valid_id(""));
    }
}
