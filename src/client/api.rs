//! The server as the job commands see it: GraphQL over HTTP (JSON, or multipart with uploads)
//! and file downloads, with the caller's token, and the errors they end in.

use std::path::{Path, PathBuf};

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};
use url::Url;

/// Why a command could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// What was typed cannot be used (a file that cannot be read, an unreadable URL).
    #[error("{0}")]
    Usage(String),
    /// The server could not be reached, or the connection broke.
    #[error("cannot reach {url}: {reason}")]
    Connection { url: String, reason: String },
    /// The server refused: its GraphQL error, with `extensions.code` when it sent one.
    #[error("{message}{}", code.as_ref().map(|code| format!(" [{code}]")).unwrap_or_default())]
    Server {
        message: String,
        code: Option<String>,
    },
    /// An answer that is not what a jobgraph server sends.
    #[error("unexpected answer from {url}: {what}")]
    Unexpected { url: String, what: String },
    /// Writing a download.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The first of a GraphQL response's `errors`, or of the list a websocket's `error` carries.
    pub fn from_graphql(errors: &Value) -> Error {
        let first = errors
            .as_array()
            .and_then(|all| all.first())
            .unwrap_or(errors);
        Error::Server {
            message: first["message"]
                .as_str()
                .unwrap_or("the server refused the request")
                .to_owned(),
            code: first["extensions"]["code"].as_str().map(str::to_owned),
        }
    }
}

/// A connection to one server for one caller.
pub struct Api {
    http: reqwest::Client,
    /// The server's base URL, without a trailing slash or `/graphql`.
    base: Url,
    token: Option<String>,
}

impl Api {
    /// `url` is the server's address (`http://127.0.0.1:8000`), with or without `/graphql`.
    pub fn new(url: &str, token: Option<String>) -> Result<Api> {
        let mut base = Url::parse(url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https"))
            .ok_or_else(|| {
                Error::Usage(format!(
                    "--url `{url}` is not an http or https URL such as http://127.0.0.1:8000"
                ))
            })?;
        let path = base.path().trim_end_matches('/');
        let path = path.strip_suffix("/graphql").unwrap_or(path).to_owned();
        base.set_path(&path);
        base.set_query(None);
        base.set_fragment(None);
        let http = reqwest::Client::builder()
            .user_agent(concat!("jobgraph/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| Error::Usage(format!("setting up HTTP: {err}")))?;
        Ok(Api {
            http,
            base,
            token: token.filter(|token| !token.trim().is_empty()),
        })
    }

    /// `/graphql` on the server.
    pub fn graphql_url(&self) -> Url {
        self.at("graphql")
    }

    /// The websocket URL of `/graphql` (`ws://` or `wss://`).
    pub fn websocket_url(&self) -> Url {
        let mut url = self.graphql_url();
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme).expect("ws and wss replace http(s)");
        url
    }

    fn at(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!(
            "{}/{path}",
            self.base.path().trim_end_matches('/')
        ));
        url
    }

    /// The `Authorization` header's value, when there is a token.
    pub fn authorization(&self) -> Option<HeaderValue> {
        let token = self.token.as_deref()?;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
        value.set_sensitive(true);
        Some(value)
    }

    /// Runs a query or mutation: its `data`, or the first error.
    pub async fn graphql(&self, query: &str, variables: Value) -> Result<Value> {
        let body = json!({ "query": query, "variables": variables }).to_string();
        let request = self
            .http
            .post(self.graphql_url())
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        self.send(request).await
    }

    /// Runs a mutation with files, by the GraphQL multipart request specification: each upload
    /// replaces the `null` at its place in `variables` (`variables.input.inputs.0.file`).
    pub async fn graphql_with_files(
        &self,
        query: &str,
        variables: Value,
        files: Vec<(String, PathBuf)>,
    ) -> Result<Value> {
        let map: serde_json::Map<String, Value> = files
            .iter()
            .enumerate()
            .map(|(index, (path, _))| (index.to_string(), json!([path])))
            .collect();
        let mut form = reqwest::multipart::Form::new()
            .text(
                "operations",
                json!({ "query": query, "variables": variables }).to_string(),
            )
            .text("map", Value::Object(map).to_string());
        for (index, (_, path)) in files.iter().enumerate() {
            form = form.part(index.to_string(), file_part(path).await?);
        }
        // A multipart POST must carry a header no HTML form can set (CSRF); the token is one,
        // and this one says so without a token too.
        let request = self
            .http
            .post(self.graphql_url())
            .header("apollo-require-preflight", "true")
            .multipart(form);
        self.send(request).await
    }

    async fn send(&self, mut request: reqwest::RequestBuilder) -> Result<Value> {
        request = request.header(
            ACCEPT,
            "application/graphql-response+json, application/json",
        );
        if let Some(authorization) = self.authorization() {
            request = request.header(AUTHORIZATION, authorization);
        }
        let url = self.graphql_url().to_string();
        let response = request.send().await.map_err(|err| Error::Connection {
            url: url.clone(),
            reason: reason(&err),
        })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|err| Error::Connection {
            url: url.clone(),
            reason: reason(&err),
        })?;
        let body: Value = serde_json::from_slice(&bytes).map_err(|_| Error::Unexpected {
            url: url.clone(),
            what: format!("HTTP {status}, not a GraphQL response"),
        })?;
        if let Some(errors) = body.get("errors").filter(|errors| !errors.is_null()) {
            return Err(Error::from_graphql(errors));
        }
        match body.get("data") {
            Some(data) if !data.is_null() => Ok(data.clone()),
            _ => Err(Error::Unexpected {
                url,
                what: format!("HTTP {status} without data"),
            }),
        }
    }

    /// Downloads `url` into `path`, through a temporary file beside it renamed at the end;
    /// the token goes only to this server, never to another host a download URL may name.
    /// Returns the content's SHA-256, in hex.
    pub async fn download(&self, url: &str, path: &Path) -> Result<String> {
        use sha2::Digest as _;
        use tokio::io::AsyncWriteExt as _;

        let url = Url::parse(url).map_err(|_| Error::Unexpected {
            url: self.graphql_url().to_string(),
            what: format!("a download URL that is not a URL: {url}"),
        })?;
        let mut request = self.http.get(url.clone());
        if url.origin() == self.base.origin()
            && let Some(authorization) = self.authorization()
        {
            request = request.header(AUTHORIZATION, authorization);
        }
        let connection = |err: reqwest::Error| Error::Connection {
            url: url.to_string(),
            reason: reason(&err),
        };
        let mut response = request.send().await.map_err(connection)?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.bytes().await.unwrap_or_default();
            return Err(match serde_json::from_slice::<Value>(&body) {
                Ok(body) if body.get("errors").is_some() => Error::from_graphql(&body["errors"]),
                _ => Error::Unexpected {
                    url: url.to_string(),
                    what: format!("HTTP {status}"),
                },
            });
        }
        let partial = path.with_file_name(format!(
            ".{}.part",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        let io = |source| Error::Io {
            path: partial.clone(),
            source,
        };
        let mut file = tokio::fs::File::create(&partial).await.map_err(io)?;
        let mut digest = sha2::Sha256::new();
        let written = async {
            while let Some(chunk) = response.chunk().await.map_err(connection)? {
                digest.update(&chunk);
                file.write_all(&chunk).await.map_err(io)?;
            }
            file.flush().await.map_err(io)?;
            tokio::fs::rename(&partial, path).await.map_err(io)
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        written?;
        Ok(hex::encode(digest.finalize()))
    }
}

/// An upload's part, streamed from its file.
async fn file_part(path: &Path) -> Result<reqwest::multipart::Part> {
    let unreadable = |err: std::io::Error| Error::Usage(format!("{}: {err}", path.display()));
    let file = tokio::fs::File::open(path).await.map_err(unreadable)?;
    let length = file.metadata().await.map_err(unreadable)?.len();
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_owned());
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
    Ok(reqwest::multipart::Part::stream_with_length(body, length).file_name(name))
}

/// What went wrong under an HTTP error (refused, not resolved, reset): its causes, which say
/// more than the error itself, whose message is the request's URL, already in ours.
fn reason(err: &reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    if causes.is_empty() {
        err.to_string()
    } else {
        causes.join(": ")
    }
}
