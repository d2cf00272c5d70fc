//! Integration tests: the real server, over HTTP, on SQLite or PostgreSQL.

mod cli;
mod credits;
mod database;
mod execution;
mod files;
mod graphiql;
mod hostile;
mod http_spec;
mod job_actions;
mod job_history;
mod jobs;
mod live;
mod members;
mod money;
mod persisted;
mod processes;
mod races;
mod remote;
mod schema;
mod sharing;
mod store;
mod support;
mod tokens;
mod waiting;
mod websocket;
mod workspaces;
