//! Jobs: submission and charging, the lifecycle, every user action, history and export.
//!
//! `state` decides which status may follow which; `lifecycle` is the only writer of status;
//! `service` submits jobs and `actions` holds what users do with them then; `history` the read side; `export` the documents.

pub mod actions;
pub mod export;
pub mod history;
mod idempotency;
pub mod lifecycle;
pub mod rows;
pub mod service;
pub mod state;
