//! GraphiQL, served from the binary: the page a browser gets at `GET /graphql` and the files it
//! loads from `/graphiql/{file}`, all embedded at build time (`assets/graphiql/`, whose README
//! names each package and version). Nothing is fetched from anywhere else, so it works offline,
//! and the page's Content-Security-Policy lets it reach nothing but this server.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

/// A file the page loads.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            bytes: include_bytes!(concat!("../../assets/graphiql/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The page's files, then the licences of the packages they come from, served so that the
/// notices go wherever the binary goes.
static ASSETS: [Asset; 11] = [
    asset!("react.production.min.js", JS),
    asset!("react-dom.production.min.js", JS),
    asset!("graphiql.min.js", JS),
    asset!("graphiql.min.css", CSS),
    asset!("graphql-ws.min.js", JS),
    asset!("jobgraph.js", JS),
    asset!("jobgraph.css", CSS),
    asset!("LICENSE.graphiql", TEXT),
    asset!("LICENSE.react", TEXT),
    asset!("LICENSE.react-dom", TEXT),
    asset!("LICENSE.graphql-ws", TEXT),
];

const TEMPLATE: &str = include_str!("../../assets/graphiql/index.html");

/// The assets never change under a URL: each is referenced with a digest of its content, so a
/// new build's files get new URLs and browsers may keep the old ones for a year.
const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");

/// The page, its asset references carrying their digests (`/graphiql/{file}?v={digest}`).
static PAGE: LazyLock<String> = LazyLock::new(|| {
    ASSETS.iter().fold(TEMPLATE.to_owned(), |page, asset| {
        let digest = hex::encode(&Sha256::digest(asset.bytes)[..8]);
        page.replace(
            &format!("\"/graphiql/{}\"", asset.name),
            &format!("\"/graphiql/{}?v={digest}\"", asset.name),
        )
    })
});

/// GraphiQL's page. The policy allows scripts, styles and connections to this server only
/// (the stylesheet's fonts and icons are `data:` URLs); no inline script runs.
pub(super) fn page(headers: &HeaderMap) -> Response {
    let mut connect = String::from("'self'");
    // The websocket's origin, spelled out for browsers whose 'self' does not cover ws:.
    if let Some(host) = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|host| host.parse::<axum::http::uri::Authority>().is_ok())
    {
        connect.push_str(&format!(" ws://{host} wss://{host}"));
    }
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         font-src 'self' data:; connect-src {connect}; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'"
    );
    let mut response = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        PAGE.as_str(),
    )
        .into_response();
    if let Ok(policy) = HeaderValue::from_str(&policy) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, policy);
    }
    response
}

/// `GET /graphiql/{file}`: one of the page's files.
pub async fn asset(Path(file): Path<String>) -> Response {
    let Some(asset) = ASSETS.iter().find(|asset| asset.name == file) else {
        return (StatusCode::NOT_FOUND, "no such GraphiQL file").into_response();
    };
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::CACHE_CONTROL, IMMUTABLE),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        asset.bytes,
    )
        .into_response()
}
