//! HTTP: the router, GraphQL over HTTP and websockets, GraphiQL, cross-origin access, and
//! health checks.

pub mod cors;
mod export;
mod files;
mod graphiql;
mod graphql;
mod health;
mod limit;
mod metrics;
pub mod websocket;

use axum::Router;
use axum::http::Request;
use axum::routing::get;
use std::time::Duration;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnResponse, TraceLayer};

use crate::app::AppState;

/// Every route of the server.
pub fn router(state: AppState) -> Router {
    // What pages of other origins call, under the CORS policy.
    let mut cross_origin = Router::new()
        .route(
            "/graphql",
            get(graphql::get_handler).post(graphql::post_handler),
        )
        .route("/graphiql/{file}", get(graphiql::asset))
        .route("/jobs/{id}", get(export::json))
        .route("/jobs/{id}/export.json", get(export::json))
        .route("/jobs/{id}/export.csv", get(export::csv))
        .route("/files/{id}", get(files::download));
    if let Some(cors) = state.cors.layer() {
        cross_origin = cross_origin.layer(cors);
    }
    cross_origin
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .fallback(health::not_found)
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(on_response),
        )
        .layer(SetRequestIdLayer::x_request_id(NewRequestId))
        .with_state(state)
}

/// A request's id, unless the client (or a proxy) sent one in `x-request-id`: every log line of
/// the request carries it, and the response returns it.
#[derive(Clone, Copy)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        axum::http::HeaderValue::from_str(&id)
            .ok()
            .map(RequestId::new)
    }
}

/// The span of a request: its id, method and path (never its query string, which may hold a
/// document and its variables).
fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|id| id.to_str().ok())
        .map(|id| id.chars().take(64).collect::<String>())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        request.id = %id,
        method = %request.method(),
        path = %request.uri().path(),
        otel.name = tracing::field::Empty,
        otel.kind = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    if crate::telemetry::enabled() {
        // Named by its route, not its path, which may hold ids.
        let route = request
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map_or("", |route| route.as_str());
        span.record(
            "otel.name",
            format!("{} {route}", request.method()).trim_end(),
        );
        span.record("otel.kind", "server");
        crate::telemetry::continue_request(&span, request.headers());
    }
    span
}

/// Logs a response as tower-http does, and gives its status to the request's span when traces
/// are exported.
fn on_response<B>(response: &axum::http::Response<B>, latency: Duration, span: &tracing::Span) {
    if crate::telemetry::enabled() {
        span.record(
            "http.response.status_code",
            i64::from(response.status().as_u16()),
        );
        if response.status().is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
    }
    tower_http::trace::OnResponse::on_response(DefaultOnResponse::new(), response, latency, span);
}
