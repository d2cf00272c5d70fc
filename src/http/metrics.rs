//! `/metrics`, in the Prometheus text format; behind a bearer secret with `--metrics-token`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest as _, Sha256};

use crate::app::AppState;

pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(secret) = &state.config.metrics_token
        && !presents(&headers, secret)
    {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"metrics\"")],
            "send the metrics token as `Authorization: Bearer <token>`\n",
        )
            .into_response();
    }
    match state.metrics.render(&state.db).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "rendering metrics failed");
            (StatusCode::SERVICE_UNAVAILABLE, "metrics are unavailable\n").into_response()
        }
    }
}

/// Whether the request carries `secret` as its bearer token. The digests are compared, so the
/// time taken tells nothing of how much of the secret was right.
fn presents(headers: &HeaderMap, secret: &str) -> bool {
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or("");
    Sha256::digest(sent.trim().as_bytes()) == Sha256::digest(secret.as_bytes())
}
