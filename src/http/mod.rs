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
mod websocket;

use axum::Router;
use axum::routing::get;
use tower_http::trace::TraceLayer;

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
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
