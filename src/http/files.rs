//! File downloads: `GET /files/{id}` streams a stored file under its job's access rules (a
//! PUBLIC job's files need no token; a remote worker adds `?attempt=` to read the inputs of the
//! job it runs), with its content type, an attachment disposition and
//! single byte ranges (`Range: bytes=...`). The bytes go from storage to the client in chunks,
//! never whole in memory.

use entity::ids::FileId;
use std::ops::Range;

use super::graphql::{MediaType, error_response};
use super::limit::{self, ClientAddress};
use crate::access::{self, Viewer};
use crate::app::AppState;
use crate::error::{Error, ErrorCode};
use crate::files::storage::Read;
use crate::ids::{self};
use crate::limits::Operation;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use entity::file;

/// A `Range` request, read against the file's size.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    Whole,
    Part(Range<u64>),
    Unsatisfiable,
}

/// Reads a `Range` header. Other units, several ranges and malformed values are answered
/// with the whole file, as the HTTP specification allows.
fn wanted(header: Option<&str>, size: u64) -> Wanted {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return Wanted::Whole;
    };
    let (start, end) = (start.trim(), end.trim());
    let range = match (start.parse::<u64>(), end.parse::<u64>()) {
        (Ok(start), Ok(end)) if start <= end => start..end.saturating_add(1).min(size),
        (Ok(_), Ok(_)) => return Wanted::Whole,
        (Ok(start), Err(_)) if end.is_empty() => start..size,
        (Err(_), Ok(suffix)) if start.is_empty() => {
            if suffix == 0 {
                return Wanted::Unsatisfiable;
            }
            size.saturating_sub(suffix)..size
        }
        _ => return Wanted::Whole,
    };
    if range.start >= size {
        Wanted::Unsatisfiable
    } else {
        Wanted::Part(range)
    }
}

/// `attachment` with the name as ASCII and, for other characters, RFC 8187 UTF-8.
fn disposition(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

fn failure(err: Error) -> Response {
    let code = err.code();
    if code == ErrorCode::InternalServerError {
        tracing::error!(error = %err, "serving a file failed");
    }
    error_response(
        code.http_status(),
        MediaType::Json,
        code,
        err.public_message(),
    )
}

/// `GET /files/{id}`.
pub async fn download(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let viewer =
        match limit::admit(&state, &headers, address, MediaType::Json, Operation::Read).await {
            Ok(caller) => caller.viewer,
            Err(response) => return response,
        };
    let file = match readable(&state, &viewer, &id, query.as_deref()).await {
        Ok(file) => file,
        Err(err) => return failure(err),
    };
    let size = file.size as u64;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = match wanted(range, size) {
        Wanted::Whole => None,
        Wanted::Part(range) => Some(range),
        Wanted::Unsatisfiable => return unsatisfiable(size),
    };
    let partial = range.is_some();
    match state.files.storage.read(&file.storage_key, range).await {
        Ok(read) => send(&file, read, partial),
        Err(err) => failure(Error::Internal(err)),
    }
}

/// The file `id` if the viewer may read it. A remote worker names the attempt it runs in the
/// query (`?attempt=`), whose job's inputs it may read.
async fn readable(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
    query: Option<&str>,
) -> Result<file::Model, Error> {
    let id = ids::decode::<FileId>("id", id)?;
    match viewer.worker() {
        Some(worker) => {
            let attempt = serde_urlencoded::from_str::<Vec<(String, String)>>(query.unwrap_or(""))
                .unwrap_or_default()
                .into_iter()
                .find_map(|(name, value)| (name == "attempt").then_some(value));
            let running =
                crate::queue::remote::running_for_download(&state.db, worker, attempt.as_deref())
                    .await?;
            access::worker_readable_file(&state.db, running.as_ref(), id).await
        }
        None => access::readable_file(&state.db, viewer, id).await,
    }
}

/// 416: the range is outside the file's `size` bytes.
fn unsatisfiable(size: u64) -> Response {
    let mut response = error_response(
        StatusCode::RANGE_NOT_SATISFIABLE,
        MediaType::Json,
        ErrorCode::BadRequest,
        format!("the range is outside the file's {size} bytes"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
        response.headers_mut().insert(header::CONTENT_RANGE, value);
    }
    response
}

/// Streams the bytes being read, the whole file or (`partial`) the range asked for, with the
/// file's headers.
fn send(file: &file::Model, read: Read, partial: bool) -> Response {
    let status = if partial {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let Read { stream, range, .. } = read;
    let length = range.end - range.start;
    let mut response = (status, Body::from_stream(stream)).into_response();
    let out = response.headers_mut();
    let mut set = |name, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            out.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, file.content_type.clone());
    set(header::CONTENT_LENGTH, length.to_string());
    set(header::CONTENT_DISPOSITION, disposition(&file.name));
    set(header::ACCEPT_RANGES, "bytes".to_owned());
    set(header::ETAG, format!("\"{}\"", file.sha256));
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned());
    set(header::CACHE_CONTROL, "private".to_owned());
    if partial {
        set(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{}", range.start, range.end - 1, file.size),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_read_against_the_size() {
        assert_eq!(wanted(None, 10), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=0-3"), 10), Wanted::Part(0..4));
        assert_eq!(wanted(Some("bytes=4-"), 10), Wanted::Part(4..10));
        assert_eq!(wanted(Some("bytes=-3"), 10), Wanted::Part(7..10));
        assert_eq!(wanted(Some("bytes=5-100"), 10), Wanted::Part(5..10));
        assert_eq!(wanted(Some("bytes=10-"), 10), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=-0"), 10), Wanted::Unsatisfiable);
        assert_eq!(wanted(Some("bytes=0-1,4-5"), 10), Wanted::Whole);
        assert_eq!(wanted(Some("items=0-1"), 10), Wanted::Whole);
        assert_eq!(wanted(Some("bytes=x"), 10), Wanted::Whole);
    }

    #[test]
    fn names_are_safe_in_the_disposition() {
        assert_eq!(
            disposition("a b.tsv"),
            "attachment; filename=\"a b.tsv\"; filename*=UTF-8''a%20b.tsv"
        );
        assert_eq!(
            disposition("é\".fa"),
            "attachment; filename=\"__.fa\"; filename*=UTF-8''%C3%A9%22.fa"
        );
    }
}
