//! The `mock` provider's Files API, in memory: upload (multipart `file` and `purpose`), list,
//! retrieve, content, delete, answered as OpenAI answers them. One store per gateway, shared by
//! every `mock` Provider; bounded to [`MAX_TOTAL_BYTES`] of file content (413 beyond) and lost
//! on restart. Ownership (which Service sees which file) is the gateway's, as for any upstream.
//!
//! The multipart parser here is the mock's only: it reads a body already collected under the
//! bound. The proxy path never parses uploads.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use serde_json::{Value, json};

use crate::body::{Body, full};
use crate::error::GatewayError;

/// Most file content the mock keeps, all files together.
pub const MAX_TOTAL_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
struct StoredFile {
    id: String,
    filename: String,
    purpose: String,
    created_at: i64,
    /// Upload order, to sort files created in the same second.
    seq: u64,
    data: Bytes,
}

impl StoredFile {
    fn object(&self) -> Value {
        json!({
            "id": self.id,
            "object": "file",
            "bytes": self.data.len(),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": null,
            "status_details": null,
        })
    }
}

#[derive(Debug, Default)]
struct Store {
    files: BTreeMap<String, StoredFile>,
    total: usize,
    seq: u64,
}

/// See the module documentation. The lock is held for map operations only, never across IO.
#[derive(Debug, Default)]
pub struct MockFiles {
    store: Mutex<Store>,
}

fn json_response(status: http::StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn poisoned() -> GatewayError {
    GatewayError::UpstreamUnavailable("the mock file store is unavailable".to_owned())
}

impl MockFiles {
    /// Stores an uploaded multipart `body` (already read under the bound) and answers with the
    /// file object.
    pub fn upload(&self, content_type: &str, body: &[u8]) -> Result<Response<Body>, GatewayError> {
        let boundary = boundary(content_type).ok_or_else(|| {
            GatewayError::InvalidRequest("Content-Type must be multipart/form-data with a boundary".into())
        })?;
        let parts = parse_multipart(body, &boundary).map_err(GatewayError::InvalidRequest)?;
        let mut file = None;
        let mut purpose = None;
        for part in parts {
            match part.name.as_str() {
                "file" => file = Some((part.filename.unwrap_or_else(|| "file".to_owned()), part.data)),
                "purpose" => purpose = Some(String::from_utf8_lossy(part.data).trim().to_owned()),
                _ => {}
            }
        }
        let (filename, data) = file.ok_or(GatewayError::MissingField("file"))?;
        let purpose = purpose.filter(|p| !p.is_empty()).ok_or(GatewayError::MissingField("purpose"))?;
        let mut random = [0u8; 12];
        getrandom::fill(&mut random).map_err(|_| poisoned())?;
        let mut store = self.store.lock().map_err(|_| poisoned())?;
        if store.total + data.len() > MAX_TOTAL_BYTES {
            return Err(GatewayError::PayloadTooLarge(MAX_TOTAL_BYTES - store.total));
        }
        store.seq += 1;
        let stored = StoredFile {
            id: format!("file-{}", hex::encode(random)),
            filename,
            purpose,
            created_at: crate::files::unix_now(),
            seq: store.seq,
            data: Bytes::copy_from_slice(data),
        };
        store.total += stored.data.len();
        let object = stored.object();
        store.files.insert(stored.id.clone(), stored);
        Ok(json_response(http::StatusCode::OK, &object))
    }

    /// `GET /files` with OpenAI's `purpose`, `limit`, `after` and `order` (default `desc`).
    pub fn list(&self, query: Option<&str>) -> Result<Response<Body>, GatewayError> {
        let mut purpose = None;
        let mut limit = 10_000usize;
        let mut after = None;
        let mut ascending = false;
        for (key, value) in query.unwrap_or_default().split('&').filter_map(|p| p.split_once('=')) {
            match key {
                "purpose" => purpose = Some(value.to_owned()),
                "limit" => limit = value.parse().unwrap_or(limit).clamp(1, 10_000),
                "after" => after = Some(value.to_owned()),
                "order" => ascending = value == "asc",
                _ => {}
            }
        }
        let store = self.store.lock().map_err(|_| poisoned())?;
        let mut files: Vec<&StoredFile> =
            store.files.values().filter(|f| purpose.as_deref().is_none_or(|p| f.purpose == p)).collect();
        files.sort_by_key(|f| (f.created_at, f.seq));
        if !ascending {
            files.reverse();
        }
        if let Some(after) = after {
            let start = files.iter().position(|f| f.id == after).map_or(0, |i| i + 1);
            files.drain(..start);
        }
        let has_more = files.len() > limit;
        files.truncate(limit);
        let data: Vec<Value> = files.iter().map(|f| f.object()).collect();
        let body = json!({
            "object": "list",
            "data": data,
            "has_more": has_more,
            "first_id": files.first().map(|f| f.id.clone()),
            "last_id": files.last().map(|f| f.id.clone()),
        });
        Ok(json_response(http::StatusCode::OK, &body))
    }

    /// `GET /files/{id}`.
    pub fn retrieve(&self, id: &str) -> Result<Response<Body>, GatewayError> {
        let store = self.store.lock().map_err(|_| poisoned())?;
        let file = store.files.get(id).ok_or_else(|| GatewayError::FileNotFound(id.to_owned()))?;
        Ok(json_response(http::StatusCode::OK, &file.object()))
    }

    /// `GET /files/{id}/content`.
    pub fn content(&self, id: &str) -> Result<Response<Body>, GatewayError> {
        let store = self.store.lock().map_err(|_| poisoned())?;
        let file = store.files.get(id).ok_or_else(|| GatewayError::FileNotFound(id.to_owned()))?;
        let mut response = Response::new(full(file.data.clone()));
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        Ok(response)
    }

    /// `DELETE /files/{id}`.
    pub fn delete(&self, id: &str) -> Result<Response<Body>, GatewayError> {
        let mut store = self.store.lock().map_err(|_| poisoned())?;
        let file = store.files.remove(id).ok_or_else(|| GatewayError::FileNotFound(id.to_owned()))?;
        store.total -= file.data.len();
        Ok(json_response(http::StatusCode::OK, &json!({"id": id, "object": "file", "deleted": true})))
    }
}

/// The `boundary` parameter of a `multipart/form-data` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim();
    if !kind.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params
        .find_map(|p| {
            let (key, value) = p.trim().split_once('=')?;
            key.trim().eq_ignore_ascii_case("boundary").then(|| value.trim().trim_matches('"').to_owned())
        })
        .filter(|b| !b.is_empty() && b.len() <= 200)
}

/// One part of a multipart body.
#[derive(Debug)]
struct Part<'a> {
    name: String,
    filename: Option<String>,
    data: &'a [u8],
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= haystack.len() {
        let offset = haystack[i..=haystack.len() - needle.len()].iter().position(|&b| b == first)?;
        i += offset;
        if haystack[i..].starts_with(needle) {
            return Some(i);
        }
        i += 1;
    }
    None
}

/// The parts of a `multipart/form-data` body (RFC 7578), enough for the mock.
fn parse_multipart<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<Part<'a>>, String> {
    let delimiter = format!("--{boundary}");
    let next_delimiter = format!("\r\n--{boundary}");
    let malformed = || "The multipart body is malformed".to_owned();
    let mut at = find(body, delimiter.as_bytes(), 0).ok_or_else(malformed)? + delimiter.len();
    let mut parts = Vec::new();
    loop {
        if body[at..].starts_with(b"--") {
            return Ok(parts);
        }
        let headers_start = at + body[at..].iter().position(|&b| b == b'\n').ok_or_else(malformed)? + 1;
        let headers_end = find(body, b"\r\n\r\n", headers_start).ok_or_else(malformed)?;
        let headers = std::str::from_utf8(&body[headers_start..headers_end]).map_err(|_| malformed())?;
        let data_start = headers_end + 4;
        let data_end = find(body, next_delimiter.as_bytes(), data_start).ok_or_else(malformed)?;
        let mut name = None;
        let mut filename = None;
        for line in headers.split("\r\n") {
            let Some((key, value)) = line.split_once(':') else { continue };
            if !key.trim().eq_ignore_ascii_case("content-disposition") {
                continue;
            }
            for param in value.split(';').skip(1) {
                let Some((k, v)) = param.trim().split_once('=') else { continue };
                let v = v.trim().trim_matches('"').to_owned();
                match k.trim() {
                    "name" => name = Some(v),
                    "filename" => filename = Some(v),
                    _ => {}
                }
            }
        }
        parts.push(Part { name: name.unwrap_or_default(), filename, data: &body[data_start..data_end] });
        at = data_end + next_delimiter.len();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body_util::BodyExt as _;

    const CT: &str = "multipart/form-data; boundary=XyZ";

    fn multipart(content: &[u8], purpose: &str) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(b"--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n");
        body.extend_from_slice(purpose.as_bytes());
        body.extend_from_slice(
            b"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\nContent-Type: application/octet-stream\r\n\r\n",
        );
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n--XyZ--\r\n");
        body
    }

    async fn json(r: Response<Body>) -> Value {
        serde_json::from_slice(&r.into_body().collect().await.unwrap().to_bytes()).unwrap()
    }

    #[tokio::test]
    async fn upload_list_content_delete() {
        let files = MockFiles::default();
        let content = b"line one\r\n--Xy-not-the-boundary\r\nline two";
        let object = json(files.upload(CT, &multipart(content, "batch")).unwrap()).await;
        let id = object["id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("file-"));
        assert_eq!(object["bytes"], content.len());
        assert_eq!(object["filename"], "a.jsonl");
        assert_eq!(object["purpose"], "batch");

        let listed = json(files.list(Some("purpose=batch&limit=5")).unwrap()).await;
        assert_eq!(listed["data"][0]["id"], id.as_str());
        assert_eq!(json(files.list(Some("purpose=assistants")).unwrap()).await["data"].as_array().unwrap().len(), 0);

        let body = files.content(&id).unwrap().into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], content);
        assert_eq!(json(files.delete(&id).unwrap()).await["deleted"], true);
        assert!(matches!(files.retrieve(&id), Err(GatewayError::FileNotFound(_))));
    }

    #[test]
    fn malformed_uploads_are_refused() {
        let files = MockFiles::default();
        assert!(files.upload("application/json", b"{}").is_err());
        assert!(files.upload(CT, b"garbage").is_err());
        let no_file = b"--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XyZ--\r\n";
        assert!(matches!(files.upload(CT, no_file), Err(GatewayError::MissingField("file"))));
        assert_eq!(boundary("multipart/form-data; boundary=\"a b\"").as_deref(), Some("a b"));
    }
}
