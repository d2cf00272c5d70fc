//! One span per GraphQL operation, named as OpenTelemetry names them (`query JobsPage`,
//! `mutation`), installed only when traces are exported. Fields get no spans of their own: the
//! database work under them has its spans.

use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery,
};
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{Response, ServerResult, Variables};
use tracing::Instrument as _;

/// Installs the operation spans on the schema.
pub struct Traces;

impl ExtensionFactory for Traces {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Operation::default())
    }
}

/// One request's operations, by name, as its document declares them.
#[derive(Default)]
struct Operation {
    declared: Mutex<Vec<(Option<String>, OperationType)>>,
}

impl Operation {
    /// The type of the operation `name` picks (the only one when `None`).
    fn kind(&self, name: Option<&str>) -> Option<OperationType> {
        let declared = self
            .declared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match name {
            Some(name) => declared
                .iter()
                .find(|(declared, _)| declared.as_deref() == Some(name))
                .map(|(_, kind)| *kind),
            None => match declared.as_slice() {
                [(_, kind)] => Some(*kind),
                _ => None,
            },
        }
    }
}

fn kind_name(kind: OperationType) -> &'static str {
    match kind {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    }
}

#[async_trait::async_trait]
impl Extension for Operation {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        *self
            .declared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = document
            .operations
            .iter()
            .map(|(name, operation)| (name.map(|name| name.to_string()), operation.node.ty))
            .collect();
        Ok(document)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let kind = self.kind(operation_name).map_or("operation", kind_name);
        let span_name = match operation_name {
            Some(name) => format!("{kind} {name}"),
            None => kind.to_owned(),
        };
        let span = tracing::debug_span!(
            target: crate::telemetry::SPANS,
            "graphql",
            otel.name = %span_name,
            graphql.operation.type = kind,
            graphql.operation.name = operation_name,
            otel.status_code = tracing::field::Empty,
            graphql.errors = tracing::field::Empty,
        );
        let response = next.run(ctx, operation_name).instrument(span.clone()).await;
        if !response.errors.is_empty() {
            span.record("otel.status_code", "ERROR");
            span.record("graphql.errors", response.errors.len() as i64);
        }
        response
    }
}
