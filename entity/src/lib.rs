//! Database entities of jobgraph: one module per table, plus the enums stored in them.
//!
//! Entities hold data and finders only; every business rule lives in the `jobgraph` crate.

pub mod api_token;
pub mod batch;
pub mod credit_transaction;
pub mod file;
pub mod ids;
pub mod job;
pub mod job_event;
pub mod job_key;
pub mod job_share;
pub mod live_event;
pub mod membership;
pub mod user;
pub mod webhook;
pub mod webhook_attempt;
pub mod webhook_delivery;
pub mod worker;
pub mod workflow;
pub mod workflow_share;
pub mod workflow_step;
pub mod workspace;

pub mod prelude;
