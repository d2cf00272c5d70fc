//! Built-in functions over lists of FASTA files: `split_fasta` cuts one file into chunks (a
//! list output a workflow maps over), `concat_fasta` joins the items of a list input (what a
//! workflow gathers) into one file.

use serde_json::{Value, json};

use super::fasta::parse_fasta;
use super::{Attempt, Failure, Output, store_output, text_input};
use crate::tools::{Prepared, input_of_key};

/// The most chunks `split_fasta` writes: the most items a workflow step maps over.
pub const MAX_CHUNKS: usize = crate::tools::MAX_ITEMS;

/// Writes the sequences of the input `sequences` as `chunk-0001.fasta`, ... with
/// `per_chunk` sequences each (default 1), at most [`MAX_CHUNKS`] files.
pub async fn split(attempt: &Attempt<'_>) -> Result<Output, Failure> {
    let Attempt { job, files, .. } = *attempt;
    let text = text_input(files, job, "sequences").await?;
    let per_chunk = job
        .settings
        .get("per_chunk")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .max(1) as usize;
    let records = parse_fasta(&text);
    let chunks: Vec<_> = records.chunks(per_chunk).collect();
    if chunks.len() > MAX_CHUNKS {
        return Err(Failure::Permanent(format!(
            "{} sequences in chunks of {per_chunk} make {} files; at most {MAX_CHUNKS} are written: raise `per_chunk`",
            records.len(),
            chunks.len()
        )));
    }
    let mut stored = Vec::with_capacity(chunks.len());
    for (i, chunk) in chunks.iter().enumerate() {
        let mut fasta = String::new();
        for record in *chunk {
            write_record(&mut fasta, &record.id, &record.sequence);
        }
        let name = format!("chunk-{:04}.fasta", i + 1);
        match store_output(files, job, &name, "text/x-fasta", fasta.into_bytes()).await {
            Ok(file) => stored.push(file),
            Err(failure) => {
                files.discard(&stored).await;
                return Err(failure);
            }
        }
    }
    Ok(Output {
        result: json!({ "chunks": stored.len(), "sequences": records.len() }),
        files: stored,
    })
}

/// Joins the items of the list input `sequences`, in item order, into `combined.fasta`.
pub async fn concat(attempt: &Attempt<'_>) -> Result<Output, Failure> {
    let Attempt { job, files, .. } = *attempt;
    let keys: Vec<String> = Prepared::from_stored(&job.inputs, &job.settings)
        .inputs
        .into_keys()
        .filter(|key| input_of_key(key) == "sequences")
        .collect();
    let mut fasta = String::new();
    let mut sequences = 0usize;
    for key in &keys {
        let text = text_input(files, job, key).await?;
        for record in parse_fasta(&text) {
            write_record(&mut fasta, &record.id, &record.sequence);
            sequences += 1;
        }
    }
    let file = store_output(
        files,
        job,
        "combined.fasta",
        "text/x-fasta",
        fasta.into_bytes(),
    )
    .await?;
    Ok(Output {
        result: json!({ "files": keys.len(), "sequences": sequences }),
        files: vec![file],
    })
}

fn write_record(fasta: &mut String, id: &str, sequence: &str) {
    fasta.push('>');
    fasta.push_str(id);
    fasta.push('\n');
    for line in sequence.as_bytes().chunks(60) {
        fasta.push_str(&String::from_utf8_lossy(line));
        fasta.push('\n');
    }
}
