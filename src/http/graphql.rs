//! GraphQL over HTTP, following the GraphQL-over-HTTP specification, and GraphQL over
//! websockets on the same path.
//!
//! - The response media type is negotiated from `Accept`: `application/graphql-response+json`
//!   answers request errors (unparsable or invalid documents) with 400 and no `data`;
//!   `application/json` answers them with 200, as the specification asks.
//! - POST bodies must be `application/json`: browsers cannot send that cross-site without a
//!   preflight, so form and `text/plain` posts (the CSRF vectors) are refused.
//! - File uploads follow the GraphQL multipart request specification (`multipart/form-data`
//!   with `operations`, `map` and the files). A browser may send such a form cross-site
//!   without a preflight, so it is accepted only with a header no form can set:
//!   `Authorization`, `Apollo-Require-Preflight` or `X-Apollo-Operation-Name`. Files go to
//!   temporary files as they arrive, within `--max-upload-bytes` each.
//! - GET runs queries only: a mutation over GET is 405 with `Allow: POST`.
//! - A browser's GET without a query gets GraphiQL (`graphiql.rs`).

use std::str::FromStr as _;
use std::sync::Arc;

use async_graphql::parser::types::OperationType;
use async_graphql::{ServerError, Variables};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::access::Viewer;
use crate::app::AppState;
use crate::error::{Error, ErrorCode};
use crate::graphql;
use crate::graphql::persisted::{Persisted, Refusal};
use crate::limits::Operation;

use super::limit::{self, Caller, ClientAddress};

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

/// Documents up to this size are parsed once and kept (`AppState::documents`).
const MAX_CACHED_DOCUMENT: usize = 16 * 1024;

/// The media type of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MediaType {
    GraphqlResponse,
    Json,
}

impl MediaType {
    pub(super) fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            MediaType::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
            MediaType::Json => "application/json; charset=utf-8",
        })
    }
}

/// Picks the response media type from `Accept`, honouring q-values; `None` when the client
/// accepts neither. No `Accept` means `application/json`.
fn negotiate(headers: &HeaderMap) -> Option<MediaType> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Some(MediaType::Json);
    };
    if accept.trim().is_empty() {
        return Some(MediaType::Json);
    }
    let mut ranges: Vec<(f32, usize, MediaType)> = Vec::new();
    for (position, range) in accept.split(',').enumerate() {
        let mut params = range.split(';');
        let essence = params.next().unwrap_or("").trim().to_ascii_lowercase();
        let quality = params
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let media = match essence.as_str() {
            GRAPHQL_RESPONSE_JSON => MediaType::GraphqlResponse,
            "application/json" | "application/*" | "*/*" => MediaType::Json,
            _ => continue,
        };
        if quality > 0.0 {
            ranges.push((quality, position, media));
        }
    }
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    ranges.first().map(|(_, _, media)| *media)
}

/// A GraphQL-shaped error response with one error.
pub(super) fn error_response(
    status: StatusCode,
    media: MediaType,
    code: ErrorCode,
    message: impl Into<String>,
) -> Response {
    let body = json!({
        "errors": [{ "message": message.into(), "extensions": { "code": code.as_str() } }]
    });
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, media.content_type());
    response
}

fn bad_request(media: MediaType, message: impl Into<String>) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        media,
        ErrorCode::BadRequest,
        message,
    )
}

fn not_acceptable() -> Response {
    error_response(
        StatusCode::NOT_ACCEPTABLE,
        MediaType::Json,
        ErrorCode::BadRequest,
        format!(
            "cannot answer in any media type this client accepts: accept {GRAPHQL_RESPONSE_JSON} or application/json"
        ),
    )
}

/// The viewer behind the `Authorization` header. A header that is present but wrong is 401:
/// a revoked token must fail loudly, not quietly turn into an anonymous request.
pub(super) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    media: MediaType,
) -> Result<Viewer, Response> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Viewer::Anonymous);
    };
    let secret = value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let result = match secret {
        Some(secret) => {
            let tokens = Some(&*state.tokens);
            crate::users::authenticate(&state.db, tokens, state.oidc.as_deref(), secret).await
        }
        None => Err(Error::InvalidToken),
    };
    result.map_err(|err| {
        let code = err.code();
        if code == ErrorCode::InternalServerError {
            tracing::error!(error = %err, "authenticating a request failed");
        }
        let message = match (&err, secret) {
            (Error::InvalidToken, None) => {
                "the Authorization header must be `Bearer <token>`".to_owned()
            }
            _ => err.public_message(),
        };
        let mut response = error_response(code.http_status(), media, code, message);
        if code == ErrorCode::Unauthenticated {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    })
}

/// The parameters of a GraphQL request, however it arrived.
struct Params {
    /// Absent when the extensions name a persisted document instead.
    query: Option<String>,
    operation_name: Option<String>,
    variables: Option<Map<String, Value>>,
    extensions: Option<Map<String, Value>>,
}

impl Params {
    /// Reads the parameters from a JSON object; the message says what is wrong.
    fn from_json(body: Value) -> Result<Self, String> {
        let mut object = match body {
            Value::Object(object) => object,
            Value::Array(_) => {
                return Err(
                    "batched requests are not supported: send one operation per request".into(),
                );
            }
            _ => return Err("the body must be a JSON object with a `query`".into()),
        };
        let query = match object.remove("query") {
            Some(Value::String(query)) => Some(query),
            None | Some(Value::Null) => None,
            Some(_) => return Err("the `query` parameter must be a string".into()),
        };
        let operation_name = match object.remove("operationName") {
            None | Some(Value::Null) => None,
            Some(Value::String(name)) => Some(name),
            Some(_) => return Err("the `operationName` parameter must be a string".into()),
        };
        let variables = object_param(object.remove("variables"), "variables")?;
        let extensions = object_param(object.remove("extensions"), "extensions")?;
        Ok(Params {
            query,
            operation_name,
            variables,
            extensions,
        })
    }

    /// Reads the parameters from a URL query string, where maps are JSON-encoded strings.
    fn from_query_string(query: &str) -> Result<Option<Self>, String> {
        if !decodes_to_utf8(query) {
            return Err("the query string does not decode to UTF-8 text".into());
        }
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|err| format!("the query string is malformed: {err}"))?;
        let mut object = Map::new();
        for (key, value) in pairs {
            let value = match key.as_str() {
                "variables" | "extensions" => serde_json::from_str(&value)
                    .map_err(|err| format!("the `{key}` parameter is not JSON: {err}"))?,
                _ => Value::String(value),
            };
            object.insert(key, value);
        }
        if !object.contains_key("query") && !object.contains_key("extensions") {
            return Ok(None);
        }
        Self::from_json(Value::Object(object)).map(Some)
    }

    /// The request to run: with its own document, or the persisted one its extensions name.
    fn into_request(self, persisted: &Persisted) -> Result<async_graphql::Request, Refusal> {
        let query = persisted.resolve(self.query, self.extensions.as_ref())?;
        let mut request = async_graphql::Request::new(query);
        if let Some(name) = self.operation_name {
            request = request.operation_name(name);
        }
        if let Some(variables) = self.variables {
            request = request.variables(Variables::from_json(Value::Object(variables)));
        }
        if let Some(extensions) = self.extensions {
            for (key, value) in extensions {
                if let Ok(value) = async_graphql::Value::from_json(value) {
                    request.extensions.insert(key, value);
                }
            }
        }
        Ok(request)
    }
}

/// Whether a query string's percent-decoded bytes are UTF-8. The form decoder would quietly
/// replace what is not with U+FFFD, so a name sent that way would be stored altered. The
/// separators are ASCII, so checking the whole string checks each name and value.
fn decodes_to_utf8(query: &str) -> bool {
    let bytes = query.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                i += 3;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    std::str::from_utf8(&decoded).is_ok()
}

fn object_param(value: Option<Value>, name: &str) -> Result<Option<Map<String, Value>>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(format!("the `{name}` parameter must be a map")),
    }
}

/// The type of the operation a request will run, once its document parses. `None` when the
/// operation cannot be picked (execution reports why).
fn operation_type(
    request: &mut async_graphql::Request,
) -> Result<Option<OperationType>, ServerError> {
    let name = request.operation_name.clone();
    let document = request.parsed_query()?;
    Ok(graphql::guard::operation(document, name.as_deref()).map(|op| op.node.ty))
}

/// Answers a request error: 400 without `data` for graphql-response+json, 200 for json.
fn request_error_response(media: MediaType, errors: Vec<ServerError>, code: ErrorCode) -> Response {
    let errors: Vec<ServerError> = errors
        .into_iter()
        .map(|mut error| {
            let extensions = error.extensions.get_or_insert_with(Default::default);
            if extensions.get("code").is_none() {
                extensions.set("code", code.as_str());
            }
            error
        })
        .collect();
    let status = match media {
        MediaType::GraphqlResponse => StatusCode::BAD_REQUEST,
        MediaType::Json => StatusCode::OK,
    };
    json_response(status, media, &json!({ "errors": errors }))
}

fn json_response(status: StatusCode, media: MediaType, body: &impl serde::Serialize) -> Response {
    written_response(status, media, |bytes| serde_json::to_writer(bytes, body))
}

/// A response whose body `write` writes as JSON.
fn written_response(
    status: StatusCode,
    media: MediaType,
    write: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>,
) -> Response {
    // Most responses fit; a larger one grows from here instead of from a few bytes.
    let mut bytes = Vec::with_capacity(16 * 1024);
    match write(&mut bytes) {
        Ok(()) => {
            let mut response = (status, bytes).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, media.content_type());
            response
        }
        Err(err) => {
            tracing::error!(error = %err, "serializing a GraphQL response failed");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                media,
                ErrorCode::InternalServerError,
                "internal server error; it has been logged",
            )
        }
    }
}

/// Runs a request whose transport checks passed, from a caller let in.
async fn execute(
    state: &AppState,
    media: MediaType,
    mut caller: Caller,
    mut request: async_graphql::Request,
    queries_only: bool,
) -> Response {
    let started = std::time::Instant::now();
    // Clients send the same few documents over and over: parse each once.
    let cacheable = request.query.len() <= MAX_CACHED_DOCUMENT;
    let mut cached = cacheable
        .then(|| state.documents.get(&request.query))
        .flatten();
    let parsed_here = cached.is_none();
    let parsed = cached.as_ref().map(|document| document.parsed.clone());
    if let Err(error) = graphql::guard::admit(&mut request, parsed) {
        return request_error_response(media, vec![error], ErrorCode::GraphqlParseFailed);
    }
    let ty = match operation_type(&mut request) {
        Err(error) => {
            return request_error_response(media, vec![error], ErrorCode::GraphqlParseFailed);
        }
        Ok(Some(ty)) if queries_only && ty != OperationType::Query => {
            let mut response = error_response(
                StatusCode::METHOD_NOT_ALLOWED,
                media,
                ErrorCode::BadRequest,
                "only queries run over GET: send mutations and subscriptions by POST or websocket",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        Ok(ty) => ty,
    };
    let kind = ty.map(graphql::guard::kind_label);
    if cacheable
        && parsed_here
        && let Ok(document) = request.parsed_query()
    {
        let document = Arc::new(graphql::documents::Document::new(document.clone()));
        state
            .documents
            .insert(request.query.clone(), document.clone());
        cached = Some(document);
    }
    // A submission costs more than the request paid at the door.
    let operation = Operation::of_request(&mut request);
    if let Err(limited) = caller.pay_for(state, operation) {
        return limit::too_many_requests(media, limited);
    }
    let viewer = caller.viewer;
    // A worker token asks for the worker API or nothing.
    let refused = match request.parsed_query() {
        _ if viewer.worker().is_none() => None,
        Ok(document) => graphql::worker::other_than_worker_fields(document),
        Err(_) => Some("this document".to_owned()),
    };
    if let Some(field) = refused {
        let err = crate::access::worker_token_refused(&field);
        return error_response(
            err.code().http_status(),
            media,
            err.code(),
            err.public_message(),
        );
    }
    request.data = graphql::request_data(&state.db, &state.queue, viewer);
    let (_, name) = graphql::guard::operation_labels(&mut request);
    // An operation that passed validation runs with only what its variables change checked.
    let operation_name = request.operation_name.clone();
    let validated = cached.as_ref().is_some_and(|document| {
        document.validated(
            &state.registry,
            operation_name.as_deref(),
            &request.variables,
        )
    });
    let schema = match validated {
        true => &state.validated_schema,
        false => &state.schema,
    };
    // Its objects may be written as JSON as they are resolved when no two values of one key
    // are ever merged (the HTTP response is written by `graphql::json`, which copies them).
    if validated
        && cached
            .as_ref()
            .is_some_and(|document| document.keys_unique())
    {
        request.data.insert(graphql::inline::WrittenInPlace);
    }
    let mut response = schema.execute(request).await;
    if !validated
        && !graphql::is_request_error(&response)
        && let Some(document) = &cached
    {
        document.passed(operation_name.as_deref());
    }
    // HTTP runs no subscription: async-graphql refuses one with an error of no path.
    graphql::codes::fill(&mut response, ty == Some(OperationType::Subscription));
    let seconds = started.elapsed().as_secs_f64();
    let outcome = crate::metrics::outcome(&response);
    state
        .metrics
        .operation(kind, name.as_deref(), outcome, Some(seconds));
    if graphql::is_request_error(&response) {
        return request_error_response(media, response.errors, ErrorCode::GraphqlValidationFailed);
    }
    written_response(StatusCode::OK, media, |bytes| {
        graphql::json::write_response(bytes, &response)
    })
}

/// `GET /graphql`: a query in the URL, a websocket upgrade, or GraphiQL for a browser.
pub async fn get_handler(State(state): State<AppState>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    if parts.headers.contains_key(header::UPGRADE) {
        return super::websocket::upgrade(state, &mut parts).await;
    }
    let wants_html = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    let params = Params::from_query_string(parts.uri.query().unwrap_or(""));
    let Some(media) = negotiate(&parts.headers) else {
        if wants_html {
            return super::graphiql::page(&parts.headers);
        }
        return not_acceptable();
    };
    match params {
        Err(message) => bad_request(media, message),
        Ok(None) if wants_html => super::graphiql::page(&parts.headers),
        Ok(None) => bad_request(media, "the `query` parameter is missing"),
        Ok(Some(params)) => {
            let address = limit::client_address(&state, &parts);
            match limit::admit(&state, &parts.headers, address, media, Operation::Read).await {
                Ok(caller) => match params.into_request(&state.persisted) {
                    Ok(request) => execute(&state, media, caller, request, true).await,
                    Err(refusal) => refused(media, &refusal),
                },
                Err(response) => response,
            }
        }
    }
}

/// `POST /graphql`: a JSON body.
pub async fn post_handler(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| mime::Mime::from_str(v).ok());
    let is_json = content_type
        .as_ref()
        .is_some_and(|m| m.essence_str() == "application/json");
    if content_type
        .as_ref()
        .is_some_and(|m| m.essence_str() == "multipart/form-data")
    {
        return multipart(&state, media, &headers, address, body).await;
    }
    if !is_json {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            media,
            ErrorCode::BadRequest,
            "send the request as `Content-Type: application/json`; other content types are \
             refused to protect against cross-site request forgery",
        );
    }
    let bytes = match axum::body::to_bytes(body, state.config.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                media,
                ErrorCode::PayloadTooLarge,
                format!(
                    "the request body is larger than {} bytes",
                    state.config.max_body_bytes
                ),
            );
        }
    };
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(body) => body,
        Err(err) => return bad_request(media, format!("the body is not valid JSON: {err}")),
    };
    let params = match Params::from_json(body) {
        Ok(params) => params,
        Err(message) => return bad_request(media, message),
    };
    match limit::admit(&state, &headers, address, media, Operation::Read).await {
        Ok(caller) => match params.into_request(&state.persisted) {
            Ok(request) => execute(&state, media, caller, request, false).await,
            Err(refusal) => refused(media, &refusal),
        },
        Err(response) => response,
    }
}

/// Headers a cross-site form cannot send, one of which a multipart request must carry.
pub(super) const PREFLIGHT_HEADERS: [&str; 3] = [
    "authorization",
    "apollo-require-preflight",
    "x-apollo-operation-name",
];

/// A GraphQL multipart request: operations, a map, and files. Its client pays for the upload
/// before any file is read.
async fn multipart(
    state: &AppState,
    media: MediaType,
    headers: &HeaderMap,
    address: std::net::IpAddr,
    body: Body,
) -> Response {
    if !PREFLIGHT_HEADERS
        .iter()
        .any(|name| headers.contains_key(*name))
    {
        return bad_request(
            media,
            "a multipart request must carry `Authorization`, `Apollo-Require-Preflight` or \
             `X-Apollo-Operation-Name`, which cross-site forms cannot send",
        );
    }
    let caller = match limit::admit(state, headers, address, media, Operation::Upload).await {
        Ok(caller) => caller,
        Err(response) => return response,
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let options = async_graphql::http::MultipartOptions::default()
        .max_file_size(usize::try_from(state.config.max_upload_bytes).unwrap_or(usize::MAX))
        .max_num_files(state.config.max_upload_files);
    let stream =
        futures_util::TryStreamExt::map_err(body.into_data_stream(), std::io::Error::other);
    let reader = futures_util::TryStreamExt::into_async_read(stream);
    match async_graphql::http::receive_body(content_type, reader, options).await {
        Ok(request) if request.uploads.len() > state.config.max_upload_files => error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            media,
            ErrorCode::PayloadTooLarge,
            format!(
                "the request holds {} files; the limit is {}",
                request.uploads.len(),
                state.config.max_upload_files
            ),
        ),
        Ok(request) => match trusted_upload(&state.persisted, request) {
            Ok(request) => execute(state, media, caller, request, false).await,
            Err(refusal) => refused(media, &refusal),
        },
        Err(async_graphql::ParseRequestError::PayloadTooLarge) => error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            media,
            ErrorCode::PayloadTooLarge,
            format!(
                "an uploaded file is larger than {} bytes, or the request holds more than {} files' worth",
                state.config.max_upload_bytes, state.config.max_upload_files
            ),
        ),
        Err(err) => bad_request(media, format!("the multipart request is malformed: {err}")),
    }
}

/// The answer to a request whose document could not be had: a request error, answered as
/// parse failures are (`PERSISTED_QUERY_NOT_FOUND` with 200 for `application/json`, which is
/// what Apollo's and urql's links expect before sending the document).
fn refused(media: MediaType, refusal: &Refusal) -> Response {
    let code = refusal.code();
    match refusal {
        Refusal::NotFound | Refusal::NotTrusted => {
            let error = ServerError::new(refusal.message(), None);
            request_error_response(media, vec![error], code)
        }
        Refusal::Invalid(_) | Refusal::Missing => bad_request(media, refusal.message()),
    }
}

/// The document of a multipart request, resolved as any other request's.
fn trusted_upload(
    persisted: &Persisted,
    mut request: async_graphql::Request,
) -> Result<async_graphql::Request, Refusal> {
    let query = std::mem::take(&mut request.query);
    let extensions = match request.extensions.is_empty() {
        true => None,
        false => serde_json::to_value(&request.extensions)
            .ok()
            .and_then(|value| value.as_object().cloned()),
    };
    request.query = persisted.resolve((!query.is_empty()).then_some(query), extensions.as_ref())?;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> Option<MediaType> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        negotiate(&headers)
    }

    #[test]
    fn accept_headers_pick_the_response_media_type() {
        assert_eq!(negotiate(&HeaderMap::new()), Some(MediaType::Json));
        assert_eq!(accept("*/*"), Some(MediaType::Json));
        assert_eq!(accept("application/json"), Some(MediaType::Json));
        assert_eq!(
            accept(GRAPHQL_RESPONSE_JSON),
            Some(MediaType::GraphqlResponse)
        );
        assert_eq!(
            accept("application/graphql-response+json, application/json;q=0.9"),
            Some(MediaType::GraphqlResponse)
        );
        assert_eq!(
            accept("application/json;q=0.5, application/graphql-response+json;q=0.9"),
            Some(MediaType::GraphqlResponse)
        );
        assert_eq!(accept("text/html"), None);
        assert_eq!(accept("application/json;q=0"), None);
    }

    #[test]
    fn parameters_of_the_wrong_type_are_refused() {
        for body in [
            json!([]),
            json!({"query": 1}),
            json!({"query": "{a}", "operationName": 0}),
            json!({"query": "{a}", "variables": "x"}),
            json!({"query": "{a}", "extensions": []}),
        ] {
            assert!(Params::from_json(body.clone()).is_err(), "{body} accepted");
        }
        assert!(Params::from_json(json!({"query": "{a}", "variables": null})).is_ok());
    }
}
