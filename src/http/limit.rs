//! Rate limits at the door of each limited route (`/graphql`, its websockets, `/files/{id}`,
//! `/jobs/{id}...`): who the client is, and the 429 that refuses it, with `Retry-After` and
//! `extensions.code: RATE_LIMITED`. What is counted and how is `crate::limits`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::graphql::{MediaType, authenticate};
use crate::access::Viewer;
use crate::app::AppState;
use crate::error::ErrorCode;
use crate::limits::{Client, Limited, Operation};

/// The address of a request's client: the connection's peer, or, behind a trusted proxy, the
/// client it names.
pub(super) struct ClientAddress(pub IpAddr);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(ClientAddress(client_address(state, parts)))
    }
}

/// The client address of a request (`ClientAddress`), from its parts.
pub(super) fn client_address(state: &AppState, parts: &Parts) -> IpAddr {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
    state.limits.client_address(peer, &parts.headers)
}

/// A request let in: who asks, whom it is counted against, and what it has paid so far.
pub(super) struct Caller {
    pub viewer: Viewer,
    client: Client,
    paid: u32,
}

impl Caller {
    /// Pays what `operation` costs beyond what the request paid at the door; refused when the
    /// client's bucket holds too little (then nothing is taken).
    pub fn pay_for(&mut self, state: &AppState, operation: Operation) -> Result<(), Limited> {
        let cost = state.limits.cost(operation);
        state
            .limits
            .take(self.client, cost.saturating_sub(self.paid))?;
        self.paid = self.paid.max(cost);
        Ok(())
    }
}

/// Authenticates a request and takes what `operation` costs from its client's bucket: 401 for
/// a bad token (counted against the address it came from, so guessing is limited too), 429
/// over the limit.
pub(super) async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    address: IpAddr,
    media: MediaType,
    operation: Operation,
) -> Result<Caller, Response> {
    let viewer = match authenticate(state, headers, media).await {
        Ok(viewer) => viewer,
        Err(unauthorized) => {
            state
                .limits
                .take(Client::anonymous(address), 1)
                .map_err(|limited| too_many_requests(media, limited))?;
            return Err(unauthorized);
        }
    };
    let mut caller = Caller {
        client: Client::of(&viewer, address),
        viewer,
        paid: 0,
    };
    caller
        .pay_for(state, operation)
        .map_err(|limited| too_many_requests(media, limited))?;
    Ok(caller)
}

/// The GraphQL error of a request over the limit: `RATE_LIMITED`, with `retryAfter` in seconds.
pub(super) fn rate_limited_error(limited: Limited) -> serde_json::Value {
    json!({
        "message": limited.message(),
        "extensions": {
            "code": ErrorCode::RateLimited.as_str(),
            "retryAfter": limited.retry_after_seconds(),
        },
    })
}

/// 429, with `Retry-After` in whole seconds.
pub(super) fn too_many_requests(media: MediaType, limited: Limited) -> Response {
    let body = json!({ "errors": [rate_limited_error(limited)] });
    let status = ErrorCode::RateLimited.http_status();
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, media.content_type());
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(limited.retry_after_seconds()),
    );
    response
}
