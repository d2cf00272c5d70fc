//! Job downloads: `/jobs/{id}` and `/jobs/{id}/export.json` (the record as JSON) and
//! `/jobs/{id}/export.csv` (a tabular result), under the same access rules as GraphQL.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use entity::ids::JobId;

use super::graphql::{MediaType, error_response};
use super::limit::{self, ClientAddress};
use crate::access::JobAccess;
use crate::app::AppState;
use crate::error::ErrorCode;
use crate::ids::{self};
use crate::jobs::{export, history};
use crate::limits::Operation;

async fn load(
    state: &AppState,
    address: std::net::IpAddr,
    headers: &HeaderMap,
    id: &str,
) -> Result<JobAccess, Response> {
    let caller = limit::admit(state, headers, address, MediaType::Json, Operation::Read).await?;
    let viewer = caller.viewer;
    let fail = |err: crate::error::Error| {
        let code = err.code();
        if code == ErrorCode::InternalServerError {
            tracing::error!(error = %err, "exporting a job failed");
        }
        error_response(
            code.http_status(),
            MediaType::Json,
            code,
            err.public_message(),
        )
    };
    if viewer.worker().is_some() {
        return Err(fail(crate::access::worker_token_refused("export")));
    }
    let id = ids::decode::<JobId>("id", id).map_err(fail)?;
    JobAccess::load(&state.db, &viewer, id).await.map_err(fail)
}

fn attachment(content_type: &'static str, filename: String, body: String) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// The job record, result and timeline as a JSON download.
pub async fn json(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let access = match load(&state, address, &headers, &id).await {
        Ok(access) => access,
        Err(response) => return response,
    };
    let events = match history::timeline(&state.db, access.job.id).await {
        Ok(events) => events,
        Err(err) => {
            tracing::error!(error = %err, "loading a job timeline failed");
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                MediaType::Json,
                ErrorCode::InternalServerError,
                "internal server error; it has been logged",
            );
        }
    };
    let gid = ids::encode(access.job.id);
    let url = state.config.job_url(access.job.id);
    let document = export::to_json(&access.job, access.standing, &events, &url);
    let body = serde_json::to_string_pretty(&document).unwrap_or_default();
    attachment(
        "application/json; charset=utf-8",
        format!("{}.json", gid.as_str()),
        body,
    )
}

/// A tabular result as a CSV download; 404 when the result is not a table.
pub async fn csv(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let access = match load(&state, address, &headers, &id).await {
        Ok(access) => access,
        Err(response) => return response,
    };
    match export::to_csv(access.job.result.as_ref()) {
        Some(body) => {
            let gid = ids::encode(access.job.id);
            attachment(
                "text/csv; charset=utf-8",
                format!("{}.csv", gid.as_str()),
                body,
            )
        }
        None => error_response(
            StatusCode::NOT_FOUND,
            MediaType::Json,
            ErrorCode::NotFound,
            "this job has no tabular result to export as CSV",
        ),
    }
}
