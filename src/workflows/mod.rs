//! Workflows: jobs connected as a graph of named steps, charged against one reservation, run
//! step by step.
//!
//! `definition` checks a graph against the tools before anything is written; `service`
//! estimates, submits (reserving credits) and cancels; `advance` moves a workflow on when a
//! step's job ends, in the transaction of that ending: it writes the jobs of the steps that
//! became ready, skips those that can no longer run, and gives back what is left of the
//! reservation when the last step ends. `sharing` lets others see a workflow as jobs are
//! shared; `duplicate` submits a copy of one with overrides.
//!
//! # Charging
//!
//! At submission the workflow reserves credits of its workspace: its estimate when every
//! step's price is known, or its `maxCredits` when some step's price depends on outputs not
//! known yet (a size-priced input fed by an upstream step; `maxCredits` is then required). The
//! reservation is taken only from the balance above what is already reserved, so concurrent
//! submissions can never promise the same credits twice. A step is charged (a ledger CHARGE,
//! like any job's) when its job is written, against the reservation; a step whose price is
//! above what is left of it fails without a job, unpaid. Steps that never run (skipped,
//! cancelled while waiting) are never charged. A step's job that fails or times out is refunded
//! by the rule of every job. When the workflow ends, what is left of its reservation is given
//! back. So the ledger always sums to the balance, a workflow never pays more than its
//! reservation, and the balance never goes below what workflows hold.

pub mod advance;
pub mod definition;
pub mod duplicate;
mod idempotency;
mod reuse;
mod rows;
pub mod service;
pub mod sharing;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use definition::{Checked, Definition, MAX_STEPS, Source};
pub use service::{Submitted, WorkflowEstimate, WorkflowSubmission};

/// A workflow input's value, as stored on the workflow: text, or a file kept under the
/// workflow's own folder that every step it feeds refers to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StoredValue {
    Text {
        text: String,
    },
    File(StoredFile),
    /// A list input's items (texts or files), in the order given.
    List {
        items: Vec<StoredValue>,
    },
}

/// A stored file as a workflow keeps it: enough to give a step's job its own row for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredFile {
    pub name: String,
    pub size: u64,
    pub content_type: String,
    pub sha256: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residues: Option<u64>,
}

impl StoredFile {
    /// A new row's worth of this file, for a step's job: the same bytes in storage.
    pub fn for_job(&self) -> crate::files::NewFile {
        crate::files::NewFile {
            id: entity::ids::FileId::new(),
            name: self.name.clone(),
            size: self.size,
            content_type: self.content_type.clone(),
            sha256: self.sha256.clone(),
            key: self.key.clone(),
            residues: self.residues,
        }
    }

    pub fn of_row(file: &entity::file::Model) -> Self {
        StoredFile {
            name: file.name.clone(),
            size: file.size as u64,
            content_type: file.content_type.clone(),
            sha256: file.sha256.clone(),
            key: file.storage_key.clone(),
            residues: file.residues.map(|r| r as u64),
        }
    }

    pub fn of_new(file: &crate::files::NewFile) -> Self {
        StoredFile {
            name: file.name.clone(),
            size: file.size,
            content_type: file.content_type.clone(),
            sha256: file.sha256.clone(),
            key: file.key.clone(),
            residues: file.residues,
        }
    }
}

/// The inputs of a workflow, by name.
pub type StoredInputs = BTreeMap<String, StoredValue>;

/// A step's status as clients spell it.
pub fn step_status_name(status: entity::workflow_step::StepStatus) -> &'static str {
    use entity::workflow_step::StepStatus::*;
    match status {
        Waiting => "WAITING",
        Running => "RUNNING",
        Completed => "COMPLETED",
        Failed => "FAILED",
        Cancelled => "CANCELLED",
        Skipped => "SKIPPED",
    }
}
