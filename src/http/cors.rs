//! Cross-origin access: which web pages served from other origins may call the API from a
//! browser (`--cors-origins`). Over HTTP, CORS headers on `/graphql`, `/jobs/{id}` (and its
//! exports) and `/files/{id}`; over websockets, the upgrade's `Origin` checked against the same
//! list, since a browser opens a websocket to any site without asking it first (cross-site
//! websocket hijacking).
//!
//! Without a list, responses carry no CORS headers and a browser may open a websocket only from
//! the server's own origin. Programs (no `Origin` header) are not concerned.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowCredentials, AllowOrigin, CorsLayer};

use super::graphql::PREFLIGHT_HEADERS;
use crate::config::ServerConfig;

/// The pages allowed to call the API from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// None besides the server's own.
    None,
    /// Any origin (`*`), without credentials: for APIs authenticated by tokens only.
    Any,
    /// These origins, as browsers send them in `Origin` (`https://app.lab.org`).
    List(Vec<String>),
}

/// The cross-origin policy, read once at start.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Origins,
    credentials: bool,
    max_age: Duration,
    /// The origin of `--public-url`, where the server's own pages are behind a proxy that
    /// changes `Host`.
    own: Option<String>,
}

/// Request headers a page may send besides the safelisted ones: those the API reads, and the
/// headers one of which a multipart upload must carry (`Authorization`, or those GraphQL
/// clients add to force a preflight).
fn allow_headers() -> Vec<HeaderName> {
    [header::CONTENT_TYPE, header::ACCEPT, header::RANGE]
        .into_iter()
        .chain(PREFLIGHT_HEADERS.map(HeaderName::from_static))
        .collect()
}

/// Response headers a page may read besides the safelisted ones: a download's name, ranges
/// and version, why a token was refused, and the request's id (to report a failure with).
const EXPOSE_HEADERS: [HeaderName; 7] = [
    header::CONTENT_DISPOSITION,
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::ACCEPT_RANGES,
    header::ETAG,
    header::WWW_AUTHENTICATE,
    HeaderName::from_static("x-request-id"),
];

impl Cors {
    /// Reads `--cors-origins`, `--cors-allow-credentials` and `--cors-max-age`; fails with what
    /// to fix.
    pub fn from_config(config: &ServerConfig) -> anyhow::Result<Cors> {
        let entries: Vec<&str> = config
            .cors_origins
            .iter()
            .map(|entry| entry.trim())
            .filter(|entry| !entry.is_empty())
            .collect();
        let origins = if entries.is_empty() {
            Origins::None
        } else if entries.contains(&"*") {
            if entries.len() > 1 {
                bail!("--cors-origins: `*` allows every origin and cannot be listed with others");
            }
            if config.cors_allow_credentials {
                bail!(
                    "--cors-origins `*` cannot be combined with --cors-allow-credentials: \
                     browsers refuse credentials from a server that allows every origin; list \
                     the origins instead"
                );
            }
            Origins::Any
        } else {
            let mut list = Vec::with_capacity(entries.len());
            for entry in entries {
                let origin = parse_origin(entry)
                    .map_err(|err| anyhow!("--cors-origins `{entry}`: {err}"))?;
                if !list.contains(&origin) {
                    list.push(origin);
                }
            }
            Origins::List(list)
        };
        if config.cors_allow_credentials && origins == Origins::None {
            bail!("--cors-allow-credentials needs --cors-origins");
        }
        let own = url::Url::parse(&config.public_url())
            .ok()
            .map(|url| url.origin().ascii_serialization());
        Ok(Cors {
            origins,
            credentials: config.cors_allow_credentials,
            max_age: Duration::from_secs(config.cors_max_age),
            own,
        })
    }

    /// Whether a page of `origin` (an `Origin` header) is on the list.
    pub fn allows(&self, origin: &HeaderValue) -> bool {
        match &self.origins {
            Origins::None => false,
            Origins::Any => true,
            Origins::List(list) => list.iter().any(|o| o.as_bytes() == origin.as_bytes()),
        }
    }

    /// Whether a websocket upgrade may proceed: from a program (no `Origin`), from the server's
    /// own pages (the origin's host is the request's `Host`, or the origin of `--public-url`),
    /// or from a listed origin. The error says why not.
    pub fn admits_websocket(&self, headers: &HeaderMap) -> Result<(), String> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        if self.allows(origin) || self.is_own(origin, headers.get(header::HOST)) {
            return Ok(());
        }
        Err(format!(
            "a page of origin `{}` may not open a websocket to this server: its origin is not \
             in --cors-origins",
            String::from_utf8_lossy(origin.as_bytes())
        ))
    }

    fn is_own(&self, origin: &HeaderValue, host: Option<&HeaderValue>) -> bool {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        if self.own.as_deref() == Some(origin) {
            return true;
        }
        let authority = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        match (authority, host.and_then(|h| h.to_str().ok())) {
            (Some(authority), Some(host)) => authority.eq_ignore_ascii_case(host),
            _ => false,
        }
    }

    /// The CORS layer of the routes pages call; none without `--cors-origins`, so that
    /// responses carry no CORS headers.
    pub fn layer(self: &Arc<Self>) -> Option<CorsLayer> {
        let allow_origin = match &self.origins {
            Origins::None => return None,
            Origins::Any => AllowOrigin::any(),
            Origins::List(_) => {
                let cors = self.clone();
                AllowOrigin::predicate(move |origin, _| cors.allows(origin))
            }
        };
        let mut layer = CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::HEAD, Method::POST])
            .allow_headers(allow_headers())
            .expose_headers(EXPOSE_HEADERS)
            .max_age(self.max_age);
        if self.credentials {
            // Only to listed origins: a refused page gets no `Access-Control-*` of consequence.
            let cors = self.clone();
            layer = layer.allow_credentials(AllowCredentials::predicate(move |origin, _| {
                cors.allows(origin)
            }));
        }
        Some(layer)
    }
}

/// Reads an origin as browsers send it: `scheme://host[:port]`, http or https, with no path;
/// returns it as browsers serialize it (host in lower case, no default port).
fn parse_origin(text: &str) -> anyhow::Result<String> {
    const SHAPE: &str = "write an origin as scheme://host[:port], such as https://app.lab.org";
    if text.contains('*') {
        bail!("patterns are not supported; list each origin, or give `*` alone");
    }
    let url = url::Url::parse(text).map_err(|err| anyhow!("{err}; {SHAPE}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("only http and https pages have an origin; {SHAPE}");
    }
    if !url.username().is_empty()
        || url.password().is_some()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
    {
        bail!("an origin has no path, query or user; {SHAPE}");
    }
    Ok(url.origin().ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_read_as_browsers_send_them() {
        for (text, origin) in [
            ("https://app.lab.org", "https://app.lab.org"),
            ("https://App.Lab.ORG/", "https://app.lab.org"),
            ("https://app.lab.org:443", "https://app.lab.org"),
            ("http://localhost:5173", "http://localhost:5173"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ] {
            assert_eq!(parse_origin(text).unwrap(), origin, "{text}");
        }
    }

    #[test]
    fn what_is_not_an_origin_is_refused() {
        for text in [
            "app.lab.org",
            "https://app.lab.org/jobs",
            "https://app.lab.org?x=1",
            "https://user@app.lab.org",
            "https://*.lab.org",
            "ftp://files.lab.org",
            "null",
            "file:///home/page.html",
        ] {
            assert!(parse_origin(text).is_err(), "{text} was accepted");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| (HeaderName::from_static(name), value.parse().unwrap()))
            .collect()
    }

    #[test]
    fn a_websocket_from_the_public_urls_origin_is_the_servers_own() {
        let mut config = crate::Config::defaults().server;
        config.public_url = Some("https://jobs.lab.org/api/".to_owned());
        let cors = Cors::from_config(&config).unwrap();
        // Behind a proxy that sends its own `Host`.
        let own = headers(&[
            ("origin", "https://jobs.lab.org"),
            ("host", "10.0.0.5:8000"),
        ]);
        assert!(cors.admits_websocket(&own).is_ok());
        let other = headers(&[("origin", "https://app.lab.org"), ("host", "jobs.lab.org")]);
        assert!(cors.admits_websocket(&other).is_err());
        assert!(
            cors.admits_websocket(&headers(&[("host", "jobs.lab.org")]))
                .is_ok()
        );
    }
}
