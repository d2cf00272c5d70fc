//! The `builtin` executor: functions compiled into jobgraph, so the default tools do real work
//! with no external programs. A tool names its function (`function = "kmer_count"`, or its own
//! name when it gives none), looked up in [`FUNCTIONS`] once, when the tools file loads.

pub mod fasta;
pub mod lists;

use std::time::Duration;

use entity::job;
use serde_json::{Value, json};

use super::{Attempt, Executor, Failure, Output};
use crate::files::{self, Files, NewFile};
use crate::tools::Prepared;
pub use fasta::Analysis;

/// A built-in function: what a `builtin` tool runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// Completes at once with an empty result.
    Noop,
    /// Waits `seconds`, walking through the named `stages`.
    Sleep,
    /// A FASTA analysis of the input `sequences`, with its output file.
    Fasta(Analysis),
    /// Cuts the FASTA input `sequences` into chunk files (a list output).
    SplitFasta,
    /// Joins the FASTA files of the list input `sequences` into one.
    ConcatFasta,
}

/// The built-in functions, by the name a tools file gives them.
pub const FUNCTIONS: [(&str, Function); 7] = [
    ("sequence_stats", Function::Fasta(Analysis::SequenceStats)),
    ("kmer_count", Function::Fasta(Analysis::KmerCount)),
    ("translate_dna", Function::Fasta(Analysis::TranslateDna)),
    ("split_fasta", Function::SplitFasta),
    ("concat_fasta", Function::ConcatFasta),
    ("sleep", Function::Sleep),
    ("noop", Function::Noop),
];

impl Function {
    /// The function called `name`, or why there is none.
    pub fn named(name: &str) -> Result<Function, String> {
        FUNCTIONS
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, function)| *function)
            .ok_or_else(|| {
                let names: Vec<_> = FUNCTIONS.iter().map(|(known, _)| *known).collect();
                format!(
                    "no built-in function `{name}`; the functions are: {}",
                    names.join(", ")
                )
            })
    }
}

#[async_trait::async_trait]
impl Executor for Function {
    async fn run(&self, attempt: &Attempt<'_>) -> Result<Output, Failure> {
        match *self {
            Function::Noop => Ok(Output::of(json!({}))),
            Function::Sleep => sleep(attempt).await.map(Output::of),
            Function::Fasta(analysis) => analyse(analysis, attempt).await,
            Function::SplitFasta => lists::split(attempt).await,
            Function::ConcatFasta => lists::concat(attempt).await,
        }
    }
}

/// Waits `seconds`, walking through the named stages and reporting progress.
async fn sleep(attempt: &Attempt<'_>) -> Result<Value, Failure> {
    let settings = &attempt.job.settings;
    let seconds = settings
        .get("seconds")
        .and_then(Value::as_f64)
        .unwrap_or(5.0)
        .max(0.0);
    let stages: Vec<String> = settings
        .get("stages")
        .and_then(Value::as_array)
        .map(|stages| {
            stages
                .iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .filter(|stages: &Vec<String>| !stages.is_empty())
        .unwrap_or_else(|| vec!["Working".to_owned()]);
    let per_stage = Duration::from_secs_f64(seconds / stages.len() as f64);
    let note = attempt
        .job
        .inputs
        .get("note")
        .and_then(|n| n.get("text"))
        .cloned();
    for (i, stage) in stages.iter().enumerate() {
        attempt
            .progress
            .report(i as f64 / stages.len() as f64, Some(stage))
            .await?;
        tokio::time::sleep(per_stage).await;
    }
    Ok(json!({ "slept": seconds, "stages": stages, "note": note }))
}

/// Runs a FASTA analysis off the async threads and stores its output file.
async fn analyse(analysis: Analysis, attempt: &Attempt<'_>) -> Result<Output, Failure> {
    let Attempt {
        job,
        progress,
        files,
        ..
    } = *attempt;
    let fasta = text_input(files, job, "sequences").await?;
    progress.report(0.1, Some("Analysing")).await?;
    let settings = job.settings.clone();
    let result = tokio::task::spawn_blocking(move || analysis.compute(&fasta, &settings))
        .await
        .map_err(|err| Failure::Transient(format!("the analysis crashed: {err}")))?;
    progress.report(0.9, Some("Writing outputs")).await?;
    let (name, content_type, bytes) = analysis.output_file(&result);
    let file = store_output(files, job, name, content_type, bytes).await?;
    Ok(Output {
        result,
        files: vec![file],
    })
}

/// An input's content as text: pasted, or read from its stored file.
async fn text_input(files: &Files, job: &job::Model, name: &str) -> Result<String, Failure> {
    let input = Prepared::from_stored(&job.inputs, &job.settings)
        .inputs
        .remove(name)
        .ok_or_else(|| Failure::Permanent(format!("the input `{name}` is missing")))?;
    let key = input.storage_key(job.workspace_id, job.id);
    match (input.text, key) {
        (Some(text), _) => Ok(text),
        (None, Some(key)) => files
            .read_text(&key)
            .await
            .map_err(|err| Failure::Transient(format!("reading the input `{name}`: {err:#}"))),
        (None, None) => Err(Failure::Permanent(format!("the input `{name}` is missing"))),
    }
}

/// Stores one output file under the attempt's output folder.
async fn store_output(
    files: &Files,
    job: &job::Model,
    name: &str,
    content_type: &str,
    bytes: Vec<u8>,
) -> Result<NewFile, Failure> {
    let key = format!(
        "{}/{}",
        files::output_prefix(job.workspace_id, job.id, job.attempt),
        uuid::Uuid::now_v7().simple()
    );
    files
        .store_bytes(key, name, content_type, bytes)
        .await
        .map_err(|err| Failure::Transient(format!("storing the output {name}: {}", err.describe())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_are_found_by_name() {
        assert_eq!(
            Function::named("kmer_count"),
            Ok(Function::Fasta(Analysis::KmerCount))
        );
        assert_eq!(Function::named("noop"), Ok(Function::Noop));
        let err = Function::named("flaky").unwrap_err();
        assert_eq!(
            err,
            "no built-in function `flaky`; the functions are: sequence_stats, kmer_count, \
             translate_dna, split_fasta, concat_fasta, sleep, noop"
        );
    }
}
