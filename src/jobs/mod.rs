//! Jobs: submission and charging, the lifecycle, every user action, history and export.
//!
//! `state` decides which status may follow which; `lifecycle` decides every status change and
//! its refund, which the store (`crate::store`) writes; `service` submits jobs and `actions`
//! holds what users do with them then; `reuse` finds an earlier job whose results a new one
//! takes instead of running; `downloads` fetches URL inputs before a job is queued;
//! `history` is the read side; `export` the documents.

pub mod actions;
pub mod downloads;
pub mod export;
pub mod history;
pub(crate) mod idempotency;
pub mod lifecycle;
pub mod reuse;
pub mod service;
pub mod state;

pub use service::ToolVersion;
