//! The GraphQL schema: per-domain query and mutation roots merged into one, with its limits.
//!
//! Resolvers stay thin: they read the viewer and the database from the context, call one
//! service function and wrap the result in a view type.

pub(crate) mod codes;
mod credits;
pub mod documents;
mod expansion;
mod files;
pub mod guard;
pub(crate) mod inline;
mod job_actions;
pub mod jobs;
pub mod json;
mod live;
mod loaders;
mod node;
pub mod persisted;
mod scalars;
mod traces;
mod users;
mod webhooks;
pub mod worker;
mod workflow_actions;
mod workflows;
mod workspaces;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::dataloader::{DataLoader, HashMapCache};
use async_graphql::{Context, Data, MergedObject, MergedSubscription, Schema, SchemaBuilder};
use sea_orm::DatabaseConnection;

use crate::access::Viewer;
use crate::config::ServerConfig;
use crate::tools::Catalog;

pub use live::{Position, ResumeAfter, shared_from_start};
pub use loaders::{UserLoader, WorkspaceAccessLoader};

/// The query root.
#[derive(MergedObject, Default)]
pub struct Query(
    node::NodeQuery,
    users::UsersQuery,
    workspaces::WorkspacesQuery,
    job_actions::JobsQuery,
    workflows::WorkflowsQuery,
);

/// The mutation root.
#[derive(MergedObject, Default)]
pub struct Mutation(
    workspaces::WorkspacesMutation,
    credits::CreditsMutation,
    job_actions::JobsMutation,
    users::UsersMutation,
    worker::WorkerMutation,
    webhooks::WebhooksMutation,
    workflows::WorkflowsMutation,
    workflow_actions::WorkflowActionsMutation,
);

/// The subscription root.
#[derive(MergedSubscription, Default)]
pub struct Subscription(live::LiveSubscription);

pub type AppSchema = Schema<Query, Mutation, Subscription>;

/// Builds the schema with the server's limits. `db` is shared by every request. The caller
/// adds the remaining shared data (the file layer) and finishes it.
pub fn build(
    db: DatabaseConnection,
    config: Arc<ServerConfig>,
    catalog: Arc<Catalog>,
    tokens: Arc<crate::users::tokens::TokenCache>,
    standings: Arc<crate::access::StandingCache>,
    bus: crate::live::Bus,
) -> SchemaBuilder<Query, Mutation, Subscription> {
    let mut schema = Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .limit_depth(config.max_query_depth)
    .limit_complexity(config.max_query_complexity)
    .extension(expansion::Expansion {
        max_complexity: config.max_query_complexity,
    });
    if crate::telemetry::enabled() {
        schema = schema.extension(traces::Traces);
    }
    schema
        .data(db)
        .data(config)
        .data(catalog)
        .data(tokens)
        .data(standings)
        .data(bus)
}

/// The schema's types, as [`documents`] checks variables against them.
pub fn registry() -> async_graphql::registry::Registry {
    use async_graphql::{OutputType, SubscriptionType};
    let mut registry = async_graphql::registry::Registry {
        types: Default::default(),
        directives: Default::default(),
        implements: Default::default(),
        query_type: "Query".to_owned(),
        mutation_type: Some("Mutation".to_owned()),
        subscription_type: Some("Subscription".to_owned()),
        introspection_mode: Default::default(),
        enable_federation: false,
        federation_subscription: false,
        ignore_name_conflicts: Default::default(),
        enable_suggestions: false,
    };
    <Query as OutputType>::create_type_info(&mut registry);
    <Mutation as OutputType>::create_type_info(&mut registry);
    <Subscription as SubscriptionType>::create_type_info(&mut registry);
    registry
}

/// The schema in SDL, as `schema.graphql` holds it.
pub fn sdl() -> String {
    Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .finish()
    .sdl()
}

/// A request's user loader.
pub(crate) type Users = DataLoader<UserLoader, HashMapCache>;
/// A request's workspace loader.
pub(crate) type Workspaces = DataLoader<WorkspaceAccessLoader, HashMapCache>;
/// A request's loader of where waiting jobs stand.
pub(crate) type Waits = DataLoader<loaders::WaitLoader, HashMapCache>;

/// The per-request data: who is asking, and the request's batch loaders, whose caches live as
/// long as the request.
pub fn request_data(
    db: &DatabaseConnection,
    queue: &Arc<crate::queue::waiting::Queue>,
    viewer: Viewer,
) -> Data {
    let mut data = Data::default();
    data.insert(
        DataLoader::with_cache(
            loaders::WaitLoader::new(queue.clone()),
            tokio::spawn,
            HashMapCache::default(),
        )
        .delay(Duration::ZERO),
    );
    // No batching window: the keys of sibling fields are registered in the same poll, and a
    // page primes its loaders up front, so waiting would only add latency.
    data.insert(
        DataLoader::with_cache(
            WorkspaceAccessLoader::new(db.clone(), viewer.clone()),
            tokio::spawn,
            HashMapCache::default(),
        )
        .delay(Duration::ZERO),
    );
    data.insert(viewer);
    data.insert(
        DataLoader::with_cache(
            UserLoader::new(db.clone()),
            tokio::spawn,
            HashMapCache::default(),
        )
        .delay(Duration::ZERO),
    );
    data
}

/// Whether a response is a request error: nothing ran, no field failed, and there is no data.
pub fn is_request_error(response: &async_graphql::Response) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|error| error.path.is_empty())
}

pub(crate) fn catalog<'a>(ctx: &Context<'a>) -> &'a Catalog {
    ctx.data_unchecked::<Arc<Catalog>>()
}

pub(crate) fn files<'a>(ctx: &Context<'a>) -> &'a crate::files::Files {
    ctx.data_unchecked::<Arc<crate::files::Files>>()
}

pub(crate) fn viewer<'a>(ctx: &Context<'a>) -> &'a Viewer {
    ctx.data_unchecked::<Viewer>()
}

pub(crate) fn db<'a>(ctx: &Context<'a>) -> &'a DatabaseConnection {
    ctx.data_unchecked::<DatabaseConnection>()
}

/// The complexity of a connection field: its page size times its children's.
pub(crate) fn page_complexity(first: Option<i32>, child: usize) -> usize {
    let size = first.unwrap_or(crate::pagination::DEFAULT_PAGE_SIZE as i32);
    size.clamp(1, crate::pagination::MAX_PAGE_SIZE as i32) as usize * child.max(1)
}
