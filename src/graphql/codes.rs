//! Every error a client receives carries `extensions.code`, over HTTP and websockets alike.
//!
//! Resolvers' errors carry theirs (`ApiError`). async-graphql raises some without one: limits
//! checked on the parsed document, validation, picking the operation, an operation the
//! transport does not run, and arguments that do not coerce to their type during execution
//! (`createdAfter: "yesterday"`). The transports give each the code of where it was raised,
//! with [`fill`], as they take the response.
//!
//! This is not a schema extension on purpose: with any extension installed, async-graphql
//! resolves every field of every response through the extension chain (a boxed future, a
//! lookup of the field's type and a formatted type name per field and per list item), which
//! was most of the server's CPU on a page of 50 jobs.

use async_graphql::Response;

use crate::error::ErrorCode;

/// Gives the errors of `response` that have no code the code of where they were raised.
/// `unrunnable` says the transport cannot run the request's operation (a subscription over
/// HTTP): its error without a path is that refusal.
pub fn fill(response: &mut Response, unrunnable: bool) {
    for error in &mut response.errors {
        let code = if !error.path.is_empty() {
            // Raised by a field: an argument that did not coerce.
            ErrorCode::BadUserInput
        } else if unrunnable {
            ErrorCode::BadRequest
        } else {
            // Raised before anything ran: the document's limits, validation, the operation.
            ErrorCode::GraphqlValidationFailed
        };
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", code.as_str());
        }
    }
}
