//! Every error a client receives carries `extensions.code`, over HTTP and websockets alike.
//!
//! Resolvers' errors carry theirs (`ApiError`). async-graphql raises some without one: limits
//! checked after parsing, validation, picking the operation, and arguments that do not coerce
//! to their type during execution (`createdAfter: "yesterday"`). This extension gives each the
//! code of the phase it failed in.

use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextRequest,
    NextSubscribe, NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Response, ServerError, ServerResult, ValidationResult, Variables};
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;

use crate::error::ErrorCode;

/// Installs the codes on the schema.
pub struct Codes;

impl ExtensionFactory for Codes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Codes)
    }
}

/// Gives `code` to the errors that have none.
fn fill(errors: &mut [ServerError], code: impl Fn(&ServerError) -> ErrorCode) {
    for error in errors {
        let fallback = code(error);
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", fallback.as_str());
        }
    }
}

/// What an error without a code raised around execution is: the request as a whole, or an
/// argument of the field at its path that did not coerce.
fn of_execution(error: &ServerError) -> ErrorCode {
    if error.path.is_empty() {
        ErrorCode::GraphqlValidationFailed
    } else {
        ErrorCode::BadUserInput
    }
}

#[async_trait::async_trait]
impl Extension for Codes {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        fill(&mut response.errors, of_execution);
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream)
            .map(|mut response| {
                fill(&mut response.errors, of_execution);
                response
            })
            .boxed()
    }

    /// The transports hand the document over parsed (`guard::admit`), so what fails here are
    /// the limits checked on the parsed document (fragment recursion, directives).
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables).await.map_err(|mut error| {
            fill(std::slice::from_mut(&mut error), |_| {
                ErrorCode::GraphqlValidationFailed
            });
            error
        })
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|mut errors| {
            fill(&mut errors, |_| ErrorCode::GraphqlValidationFailed);
            errors
        })
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let mut response = next.run(ctx, operation_name).await;
        // An operation the transport does not run ("subscriptions are not supported") is a
        // bad request; a field's error without a code is an argument that did not coerce.
        fill(&mut response.errors, |error| {
            if error.path.is_empty() {
                ErrorCode::BadRequest
            } else {
                ErrorCode::BadUserInput
            }
        });
        response
    }
}
