//! Integration tests: the real server, over HTTP, on SQLite or PostgreSQL.

mod cli;
mod credits;
mod http_spec;
mod members;
mod schema;
mod support;
mod tokens;
mod websocket;
mod workspaces;
