//! Errors of jobgraph, and the one table mapping each to its public code and HTTP status.
//!
//! `ErrorCode` is the contract with clients: its string is `extensions.code` in GraphQL errors.

use async_graphql::ErrorExtensions as _;
use axum::http::StatusCode;
use sea_orm::{DbErr, SqlErr};

/// The stable codes clients match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthenticated,
    Forbidden,
    NotFound,
    BadUserInput,
    InsufficientCredits,
    Conflict,
    /// An idempotency key sent again with a different request.
    IdempotencyKeyReused,
    StaleAttempt,
    PayloadTooLarge,
    /// A client over its rate limit; `Retry-After` says when to come back.
    RateLimited,
    BadRequest,
    GraphqlParseFailed,
    GraphqlValidationFailed,
    /// A request named a persisted document by a hash the server does not know.
    PersistedQueryNotFound,
    /// Only trusted documents run, and the request's is not one of them.
    DocumentNotTrusted,
    /// A service the request needs (the identity provider) does not answer; try again later.
    ServiceUnavailable,
    InternalServerError,
}

impl ErrorCode {
    /// The code's `extensions.code` string and HTTP status.
    const fn table(self) -> (&'static str, StatusCode) {
        match self {
            ErrorCode::Unauthenticated => ("UNAUTHENTICATED", StatusCode::UNAUTHORIZED),
            ErrorCode::Forbidden => ("FORBIDDEN", StatusCode::FORBIDDEN),
            ErrorCode::NotFound => ("NOT_FOUND", StatusCode::NOT_FOUND),
            ErrorCode::BadUserInput => ("BAD_USER_INPUT", StatusCode::BAD_REQUEST),
            ErrorCode::InsufficientCredits => {
                ("INSUFFICIENT_CREDITS", StatusCode::PAYMENT_REQUIRED)
            }
            ErrorCode::Conflict => ("CONFLICT", StatusCode::CONFLICT),
            ErrorCode::IdempotencyKeyReused => ("IDEMPOTENCY_KEY_REUSED", StatusCode::CONFLICT),
            ErrorCode::StaleAttempt => ("STALE_ATTEMPT", StatusCode::CONFLICT),
            ErrorCode::PayloadTooLarge => ("PAYLOAD_TOO_LARGE", StatusCode::PAYLOAD_TOO_LARGE),
            ErrorCode::RateLimited => ("RATE_LIMITED", StatusCode::TOO_MANY_REQUESTS),
            ErrorCode::BadRequest => ("BAD_REQUEST", StatusCode::BAD_REQUEST),
            ErrorCode::GraphqlParseFailed => ("GRAPHQL_PARSE_FAILED", StatusCode::BAD_REQUEST),
            ErrorCode::GraphqlValidationFailed => {
                ("GRAPHQL_VALIDATION_FAILED", StatusCode::BAD_REQUEST)
            }
            ErrorCode::PersistedQueryNotFound => {
                ("PERSISTED_QUERY_NOT_FOUND", StatusCode::BAD_REQUEST)
            }
            ErrorCode::DocumentNotTrusted => ("DOCUMENT_NOT_TRUSTED", StatusCode::FORBIDDEN),
            ErrorCode::ServiceUnavailable => {
                ("SERVICE_UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE)
            }
            ErrorCode::InternalServerError => {
                ("INTERNAL_SERVER_ERROR", StatusCode::INTERNAL_SERVER_ERROR)
            }
        }
    }

    pub const fn as_str(self) -> &'static str {
        self.table().0
    }

    pub const fn http_status(self) -> StatusCode {
        self.table().1
    }
}

/// Everything that can go wrong in a service function.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("authentication required: send an API token as `Authorization: Bearer <token>`")]
    Unauthenticated,
    #[error("the API token is invalid, expired or revoked")]
    InvalidToken,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{field}: {message}")]
    BadInput { field: String, message: String },
    #[error("insufficient credits: this costs {needed} credits and the workspace has {balance}")]
    InsufficientCredits { needed: i64, balance: i64 },
    /// An administrator's adjustment that would take the balance below zero.
    #[error(
        "insufficient credits: an adjustment of {amount} credits would take the balance below \
         zero; the workspace has {balance}"
    )]
    InsufficientForAdjustment { amount: i64, balance: i64 },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    IdempotencyKeyReused(String),
    /// A remote worker spoke for an attempt that is no longer the job's running one.
    #[error("{0}")]
    StaleAttempt(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A service the request needs does not answer; the message names it, not the details.
    #[error("{0} is unavailable: try again shortly")]
    Unavailable(&'static str),
    #[error("database error: {0}")]
    Database(#[from] DbErr),
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

/// The result of a service function.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A bad value for one named input field.
    pub fn bad_input(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::BadInput {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Error::Forbidden(message.into())
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Error::Conflict(message.into())
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Unauthenticated | Error::InvalidToken => ErrorCode::Unauthenticated,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::BadInput { .. } => ErrorCode::BadUserInput,
            Error::InsufficientCredits { .. } | Error::InsufficientForAdjustment { .. } => {
                ErrorCode::InsufficientCredits
            }
            Error::Conflict(_) => ErrorCode::Conflict,
            Error::IdempotencyKeyReused(_) => ErrorCode::IdempotencyKeyReused,
            Error::StaleAttempt(_) => ErrorCode::StaleAttempt,
            Error::PayloadTooLarge(_) => ErrorCode::PayloadTooLarge,
            Error::Unavailable(_) => ErrorCode::ServiceUnavailable,
            Error::Database(err) if is_unique_violation(err) => ErrorCode::Conflict,
            Error::Database(_) | Error::Internal(_) => ErrorCode::InternalServerError,
        }
    }

    /// The message a client sees. Internal details are logged, never sent.
    pub fn public_message(&self) -> String {
        match self.code() {
            ErrorCode::InternalServerError => {
                "internal server error; it has been logged".to_owned()
            }
            ErrorCode::Conflict if matches!(self, Error::Database(_)) => {
                "this conflicts with an existing record".to_owned()
            }
            _ => self.to_string(),
        }
    }
}

/// Whether a database error is a unique-constraint violation.
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// The error type of every GraphQL resolver: an error already reduced to what the client sees.
///
/// It deliberately has no `Display`: async-graphql converts any `Display` type into its error
/// and would drop our code on the way. Without it, `?` in a resolver only compiles through the
/// `From` impls below, so every error reaches the client with its `extensions.code`.
#[derive(Debug, Clone)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    field: Option<String>,
}

/// The result of a GraphQL resolver.
pub type ApiResult<T> = std::result::Result<T, ApiError>;

impl ApiError {
    pub fn code(&self) -> ErrorCode {
        self.code
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let code = err.code();
        if code == ErrorCode::InternalServerError {
            tracing::error!(error = %err, "request failed");
        }
        let field = match &err {
            Error::BadInput { field, .. } => Some(field.clone()),
            _ => None,
        };
        ApiError {
            code,
            message: err.public_message(),
            field,
        }
    }
}

impl From<DbErr> for ApiError {
    fn from(err: DbErr) -> Self {
        Error::Database(err).into()
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(err: ApiError) -> Self {
        async_graphql::Error::new(err.message).extend_with(|_, ext| {
            ext.set("code", err.code.as_str());
            if let Some(field) = &err.field {
                ext.set("field", field.as_str());
            }
        })
    }
}
