//! Stored files: a job's uploaded or fetched inputs and the outputs its run produced.
//!
//! Bytes go to `storage` (local folder or S3) as a stream, checked on the way (size cap,
//! FASTA, SHA-256); the `files` table records name, size, content type, digest, role and job.
//! Objects are written before their rows: a submission or run that fails afterwards deletes
//! what it wrote, so nothing is left behind. Keys group a job's files under
//! `<workspace>/<job>/`, so deleting a job or workspace deletes one prefix.

pub mod fetch;
pub mod storage;

use entity::ids::{FileId, JobId, WorkspaceId};
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use entity::file::{self, FileRole};
use futures_util::{Stream, StreamExt};
use sea_orm::{ActiveModelTrait, ConnectionTrait, Set};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::tools::pricing::FastaStream;
pub use fetch::FetchPolicy;
pub use storage::Storage;

/// The file layer: storage, its limits, and the queue of downloads to run.
pub struct Files {
    pub storage: Storage,
    pub fetch: FetchPolicy,
    /// Largest uploaded file.
    pub max_upload_bytes: u64,
    downloads: tokio::sync::mpsc::UnboundedSender<JobId>,
    /// Taken by the download task when the server starts.
    requests: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<JobId>>>,
}

/// An uploaded file, still in the request's temporary file.
#[derive(Debug, Clone)]
pub struct Upload {
    pub filename: String,
    pub content_type: Option<String>,
    pub content: Arc<std::fs::File>,
}

/// A file written to storage, whose row is written with the job (or discarded).
#[derive(Debug, Clone, PartialEq)]
pub struct NewFile {
    pub id: FileId,
    pub name: String,
    pub size: u64,
    pub content_type: String,
    pub sha256: String,
    pub key: String,
    /// For FASTA inputs: the residues, for pricing.
    pub residues: Option<u64>,
}

impl NewFile {
    /// The row recording this file.
    pub async fn insert(
        &self,
        db: &impl ConnectionTrait,
        workspace_id: WorkspaceId,
        job_id: JobId,
        role: FileRole,
    ) -> Result<file::Model> {
        Ok(file::ActiveModel {
            id: Set(self.id),
            workspace_id: Set(workspace_id),
            job_id: Set(Some(job_id)),
            role: Set(role),
            name: Set(self.name.clone()),
            size: Set(self.size as i64),
            content_type: Set(self.content_type.clone()),
            sha256: Set(self.sha256.clone()),
            storage_key: Set(self.key.clone()),
            residues: Set(self.residues.map(|r| r as i64)),
            created_at: Set(Utc::now()),
        }
        .insert(db)
        .await?)
    }
}

/// What a written file must satisfy.
#[derive(Debug, Clone, Copy)]
pub struct Checks {
    pub max_bytes: u64,
    /// Refuse content that is not FASTA; count its residues.
    pub fasta: bool,
    /// Count the residues of FASTA content, without refusing other content (a run's outputs).
    pub count_residues: bool,
}

/// Why writing a file failed.
#[derive(Debug)]
pub enum WriteError {
    /// Over `Checks::max_bytes`.
    TooLarge(u64),
    /// Not of the declared format.
    Invalid(String),
    /// The source failed (a broken download, an unreadable upload).
    Source(String),
    /// Storage failed.
    Storage(anyhow::Error),
}

impl WriteError {
    /// As a submission error on input `field`.
    pub fn into_input_error(self, field: &str) -> Error {
        match self {
            WriteError::TooLarge(max) => {
                Error::bad_input(field, format!("is larger than the limit of {max} bytes"))
            }
            WriteError::Invalid(message) | WriteError::Source(message) => {
                Error::bad_input(field, message)
            }
            WriteError::Storage(err) => Error::Internal(err),
        }
    }

    /// In words, for a job's error message.
    pub fn describe(&self) -> String {
        match self {
            WriteError::TooLarge(max) => fetch::too_large(*max),
            WriteError::Invalid(message) => format!("the file {message}"),
            WriteError::Source(message) => message.clone(),
            WriteError::Storage(_) => "storing the file failed".to_owned(),
        }
    }
}

/// Size, digest and residues of written bytes.
struct Written {
    size: u64,
    sha256: String,
    residues: Option<u64>,
}

/// The key of a job's input file.
pub fn input_key(workspace_id: WorkspaceId, job_id: JobId, file_id: FileId) -> String {
    format!(
        "{}/{}/inputs/{}",
        workspace_id.simple(),
        job_id.simple(),
        file_id.simple()
    )
}

/// The folder of one attempt's output files.
pub fn output_prefix(workspace_id: WorkspaceId, job_id: JobId, attempt: i32) -> String {
    format!(
        "{}/{}/outputs/{attempt}",
        workspace_id.simple(),
        job_id.simple()
    )
}

/// The folder of all of a job's files.
pub fn job_prefix(workspace_id: WorkspaceId, job_id: JobId) -> String {
    format!("{}/{}", workspace_id.simple(), job_id.simple())
}

/// Where a workflow's uploaded input `file_id` is stored: under the workflow's folder, which
/// the steps it feeds refer to.
pub fn workflow_input_key(
    workspace_id: WorkspaceId,
    workflow_id: entity::ids::WorkflowId,
    file_id: FileId,
) -> String {
    format!(
        "{}/{}/inputs/{}",
        workspace_id.simple(),
        workflow_id.simple(),
        file_id.simple()
    )
}

/// The folder of a workflow's own files (its inputs).
pub fn workflow_prefix(workspace_id: WorkspaceId, workflow_id: entity::ids::WorkflowId) -> String {
    format!("{}/{}", workspace_id.simple(), workflow_id.simple())
}

/// The folder of all of a workspace's files.
pub fn workspace_prefix(workspace_id: WorkspaceId) -> String {
    workspace_id.simple().to_string()
}

/// The content type of a file name, by its extension.
pub fn guess_content_type(name: &str) -> &'static str {
    let extension = name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "fa" | "fasta" | "fna" | "faa" | "ffn" | "fas" => "text/x-fasta",
        "tsv" | "tab" => "text/tab-separated-values",
        "csv" => "text/csv",
        "json" => "application/json",
        "txt" | "log" => "text/plain",
        "vcf" => "text/x-vcf",
        "gff" | "gff3" | "gtf" => "text/x-gff3",
        "pdb" | "ent" => "chemical/x-pdb",
        "cif" | "mmcif" => "chemical/x-cif",
        "html" | "htm" => "text/html",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "gz" => "application/gzip",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

/// A file name safe to store and send back: its last path component, without control
/// characters, at most 200 characters; `file` when nothing is left.
pub fn clean_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last.chars().filter(|c| !c.is_control()).take(200).collect();
    let cleaned = cleaned.trim().to_owned();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        "file".to_owned()
    } else {
        cleaned
    }
}

impl Files {
    /// The file layer the configuration describes.
    pub fn from_config(
        config: &crate::config::ServerConfig,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let allow = config
            .fetch_allow
            .iter()
            .map(|entry| fetch::Cidr::parse(entry))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self::new(
            Storage::from_config(config, data_dir)?,
            FetchPolicy {
                max_bytes: config.max_fetch_bytes,
                timeout: std::time::Duration::from_secs(config.fetch_timeout_seconds),
                allow,
            },
            config.max_upload_bytes,
        ))
    }

    pub fn new(storage: Storage, fetch: FetchPolicy, max_upload_bytes: u64) -> Self {
        let (downloads, requests) = tokio::sync::mpsc::unbounded_channel();
        Files {
            storage,
            fetch,
            max_upload_bytes,
            downloads,
            requests: std::sync::Mutex::new(Some(requests)),
        }
    }

    /// Asks this process's download task to fetch a job's URL inputs.
    pub fn request_download(&self, job_id: JobId) {
        // Without a serving process (a command-line submission) the job waits for the next
        // start, which resumes unfinished downloads.
        let _ = self.downloads.send(job_id);
    }

    /// The download requests, for the one task that serves them.
    pub fn take_download_requests(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<JobId>> {
        self.requests.lock().ok()?.take()
    }

    /// Writes a stream to `key`, enforcing `checks`. On any failure nothing is left under
    /// `key`.
    async fn write<S, E>(&self, key: &str, stream: S, checks: Checks) -> Result<Written, WriteError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let mut writer = self.storage.writer(key);
        let result = async {
            let mut stream = std::pin::pin!(stream);
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut fasta = (checks.fasta || checks.count_residues).then(FastaStream::default);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|err| WriteError::Source(err.to_string()))?;
                size += chunk.len() as u64;
                if size > checks.max_bytes {
                    return Err(WriteError::TooLarge(checks.max_bytes));
                }
                hasher.update(&chunk);
                if let Some(fasta) = fasta.as_mut() {
                    fasta.feed(&chunk);
                }
                writer.write(chunk).await.map_err(WriteError::Storage)?;
            }
            let residues = match fasta {
                Some(fasta) if checks.fasta => Some(fasta.finish().map_err(WriteError::Invalid)?),
                Some(fasta) => fasta.finish().ok(),
                None => None,
            };
            Ok(Written {
                size,
                sha256: hex::encode(hasher.finalize()),
                residues,
            })
        }
        .await;
        match result {
            Ok(written) => {
                writer.finish().await.map_err(WriteError::Storage)?;
                Ok(written)
            }
            Err(err) => {
                writer.abort().await;
                Err(err)
            }
        }
    }

    /// Stores an uploaded file as `key`.
    pub async fn store_upload(
        &self,
        upload: &Upload,
        key: String,
        checks: Checks,
    ) -> Result<NewFile, WriteError> {
        let file = upload
            .content
            .try_clone()
            .map_err(|err| WriteError::Storage(err.into()))?;
        let mut file = tokio::fs::File::from_std(file);
        use tokio::io::AsyncSeekExt as _;
        file.rewind()
            .await
            .map_err(|err| WriteError::Storage(err.into()))?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
        let checks = Checks {
            max_bytes: checks.max_bytes.min(self.max_upload_bytes),
            ..checks
        };
        let written = self.write(&key, stream, checks).await?;
        let name = clean_name(&upload.filename);
        let content_type = upload
            .content_type
            .clone()
            .filter(|t| t.parse::<mime::Mime>().is_ok() && t != "application/octet-stream")
            .unwrap_or_else(|| guess_content_type(&name).to_owned());
        Ok(self.new_file(key, name, content_type, written))
    }

    /// Stores bytes made in memory (a built-in analysis's output) as `key`.
    pub async fn store_bytes(
        &self,
        key: String,
        name: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<NewFile, WriteError> {
        let checks = Checks {
            max_bytes: u64::MAX,
            fasta: false,
            count_residues: content_type == "text/x-fasta",
        };
        let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(bytes))]);
        let written = self.write(&key, stream, checks).await?;
        Ok(self.new_file(key, clean_name(name), content_type.to_owned(), written))
    }

    /// Stores a file of the local filesystem (a program's output) as `key`.
    pub async fn store_path(
        &self,
        key: String,
        path: &std::path::Path,
    ) -> Result<NewFile, WriteError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|err| WriteError::Source(format!("reading {}: {err}", path.display())))?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
        let name = clean_name(&path.file_name().unwrap_or_default().to_string_lossy());
        let content_type = guess_content_type(&name).to_owned();
        let checks = Checks {
            max_bytes: u64::MAX,
            fasta: false,
            count_residues: content_type == "text/x-fasta",
        };
        let written = self.write(&key, stream, checks).await?;
        Ok(self.new_file(key, name, content_type, written))
    }

    /// Stores a download's body as `key`.
    pub async fn store_response(
        &self,
        key: String,
        name: String,
        response: reqwest::Response,
        checks: Checks,
    ) -> Result<NewFile, WriteError> {
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<mime::Mime>().ok())
            .map(|m| m.essence_str().to_owned())
            .filter(|t| t != "application/octet-stream")
            .unwrap_or_else(|| guess_content_type(&name).to_owned());
        let policy = self.fetch.clone();
        let stream = response
            .bytes_stream()
            .map(move |chunk| chunk.map_err(|err| fetch::describe(&policy, &err)));
        let checks = Checks {
            max_bytes: checks.max_bytes.min(self.fetch.max_bytes),
            ..checks
        };
        let written = self.write(&key, stream, checks).await?;
        Ok(self.new_file(key, clean_name(&name), content_type, written))
    }

    /// Copies stored content from `from_key` as `key` (a retried workflow's inputs); NOT_FOUND
    /// if it is no longer stored.
    pub async fn copy_key(&self, from_key: &str, key: &str) -> Result<()> {
        self.storage.copy(from_key, key).await.map_err(|err| {
            match err.downcast_ref::<object_store::Error>() {
                Some(object_store::Error::NotFound { .. }) => Error::NotFound("input file"),
                _ => err.into(),
            }
        })
    }

    /// Copies another job's stored file (for a retry or a duplicate) as `key`.
    /// NOT_FOUND if the original is no longer stored: its job, or workspace, was deleted
    /// while the copy was being made.
    pub async fn copy(&self, from: &file::Model, id: FileId, key: String) -> Result<NewFile> {
        self.storage
            .copy(&from.storage_key, &key)
            .await
            .map_err(|err| match err.downcast_ref::<object_store::Error>() {
                Some(object_store::Error::NotFound { .. }) => Error::NotFound("input file"),
                _ => err.into(),
            })?;
        Ok(NewFile {
            id,
            name: from.name.clone(),
            size: from.size as u64,
            content_type: from.content_type.clone(),
            sha256: from.sha256.clone(),
            key,
            // The same bytes: the same residues, when they were counted.
            residues: from.residues.map(|r| r as u64),
        })
    }

    fn new_file(
        &self,
        key: String,
        name: String,
        content_type: String,
        written: Written,
    ) -> NewFile {
        NewFile {
            id: key
                .rsplit('/')
                .next()
                .and_then(|id| Uuid::try_parse(id).ok())
                .map_or_else(FileId::new, FileId),
            name,
            size: written.size,
            content_type,
            sha256: written.sha256,
            key,
            residues: written.residues,
        }
    }

    /// Deletes stored objects whose rows were never written.
    pub async fn discard(&self, files: &[NewFile]) {
        for file in files {
            if let Err(err) = self.storage.delete(&file.key).await {
                tracing::error!(error = %err, key = %file.key, "deleting a discarded file failed");
            }
        }
    }

    /// Deletes everything under a prefix, logging a failure (the rows are already gone).
    pub async fn delete_prefix(&self, prefix: &str) {
        if let Err(err) = self.storage.delete_prefix(prefix).await {
            tracing::error!(error = %err, prefix, "deleting stored files failed");
        }
    }

    /// Reads a whole stored file as text (a built-in analysis's input, within its size limit).
    pub async fn read_text(&self, key: &str) -> anyhow::Result<String> {
        let mut read = self.storage.read(key, None).await?;
        let mut bytes = Vec::with_capacity(read.size as usize);
        while let Some(chunk) = read.stream.next().await {
            bytes.extend_from_slice(&chunk?);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}
