//! Downloading URL inputs. A job with URL inputs is created PENDING at stage DOWNLOADING and
//! charged; this task fetches each URL into storage, then queues the job, or ends it FAILED
//! (refunded by the lifecycle) with what went wrong; a queued job gets its reuse key
//! (`reuse::key`), its content now known. Downloads run in the serving process; at start it
//! resumes the downloads a previous run left unfinished.

use entity::ids::{FileId, JobId};
use std::sync::Arc;

use entity::file::FileRole;
use entity::job::{self, JobStatus};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::lifecycle::{self, Change};
use crate::db;
use crate::error::{Error, Result};
use crate::files::{Checks, Files, NewFile, fetch, input_key};
use crate::store;
use crate::tools::{Catalog, InputFormat, Prepared, StoredInputKind};

/// The stage of a job whose inputs are being downloaded.
pub const STAGE: &str = "DOWNLOADING";

/// Downloads at once in one process.
const CONCURRENCY: usize = 4;

/// What the download task needs.
pub struct Downloader {
    pub db: DatabaseConnection,
    pub files: Arc<Files>,
    pub catalog: Arc<Catalog>,
}

impl Downloader {
    /// Runs downloads as they are requested (and those left unfinished) until `shutdown`.
    pub async fn serve(
        self,
        mut requests: mpsc::UnboundedReceiver<JobId>,
        shutdown: CancellationToken,
    ) {
        let this = Arc::new(self);
        let limit = Arc::new(Semaphore::new(CONCURRENCY));
        match job::Entity::find()
            .filter(job::Column::Status.eq(JobStatus::Pending))
            .filter(job::Column::Stage.eq(STAGE))
            .all(&this.db)
            .await
        {
            Ok(jobs) => {
                for job in jobs {
                    tokio::spawn(this.clone().run(job.id, limit.clone()));
                }
            }
            Err(err) => tracing::error!(error = %err, "resuming downloads failed"),
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                request = requests.recv() => match request {
                    Some(id) => { tokio::spawn(this.clone().run(id, limit.clone())); }
                    None => return,
                },
            }
        }
    }

    async fn run(self: Arc<Self>, id: JobId, limit: Arc<Semaphore>) {
        use tracing::Instrument as _;
        let Ok(_permit) = limit.acquire().await else {
            return;
        };
        let span = tracing::info_span!("download", job.id = %id);
        match self.download(id).instrument(span).await {
            Ok(()) | Err(Error::Conflict(_)) => {}
            Err(err) => tracing::error!(job.id = %id, error = %err, "downloading inputs failed"),
        }
    }

    /// Fetches every URL input of job `id`, then queues or fails it.
    async fn download(&self, id: JobId) -> Result<()> {
        let Some(job) = job::Entity::find_by_id(id).one(&self.db).await? else {
            return Ok(());
        };
        if job.status != JobStatus::Pending {
            return Ok(());
        }
        let mut prepared = Prepared::from_stored(&job.inputs, &job.settings);
        let mut fetched: Vec<NewFile> = Vec::new();
        let mut failure = None;
        let tool = self.catalog.get(&job.tool).cloned();
        for (name, input) in prepared.inputs.iter_mut() {
            if input.kind != StoredInputKind::Url || input.file_id.is_some() {
                continue;
            }
            let url = input.url.clone().unwrap_or_default();
            let spec = tool
                .as_ref()
                .and_then(|tool| tool.inputs.iter().find(|s| &s.name == name));
            let checks = Checks {
                max_bytes: spec.map_or(self.files.fetch.max_bytes, |s| s.max_bytes),
                fasta: spec.is_some_and(|s| s.format == Some(InputFormat::Fasta)),
                count_residues: false,
            };
            let key = input_key(job.workspace_id, job.id, FileId::new());
            let stored = match fetch::open(&self.files.fetch, &url).await {
                Ok(response) => self
                    .files
                    .store_response(key, name_from_url(&url), response, checks)
                    .await
                    .map_err(|err| {
                        if let crate::files::WriteError::Storage(err) = &err {
                            tracing::error!(error = %err, "storing a download failed");
                        }
                        err.describe()
                    }),
                Err(message) => Err(message),
            };
            match stored {
                Ok(file) => {
                    input.file_id = Some(file.id);
                    input.bytes = file.size;
                    input.residues = file.residues;
                    input.sha256 = Some(file.sha256.clone());
                    fetched.push(file);
                }
                Err(message) => {
                    failure = Some(format!(
                        "downloading the input `{name}` from {url} failed: {message}"
                    ));
                    break;
                }
            }
        }
        let outcome = match failure {
            Some(message) => {
                tracing::info!(%message, "a download failed");
                self.files.discard(&fetched).await;
                fetched.clear();
                self.fail(&job, message).await
            }
            None => self.queue(&job, &prepared, &fetched).await,
        };
        if outcome.is_err() {
            self.files.discard(&fetched).await;
        }
        outcome
    }

    async fn fail(&self, job: &job::Model, message: String) -> Result<()> {
        let tx = db::begin_write(&self.db).await?;
        lifecycle::transition(
            &tx,
            job,
            JobStatus::Failed,
            Change {
                message: Some(message.clone()),
                error_message: Some(message),
                error_code: Some("DOWNLOAD_FAILED".to_owned()),
                ..Default::default()
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn queue(
        &self,
        job: &job::Model,
        prepared: &Prepared,
        fetched: &[NewFile],
    ) -> Result<()> {
        let tx = db::begin_write(&self.db).await?;
        for file in fetched {
            file.insert(&tx, job.workspace_id, job.id, FileRole::Input)
                .await?;
        }
        let details = vec![
            (
                job::Column::Inputs,
                sea_orm::sea_query::Expr::value(prepared.inputs_json()),
            ),
            (
                job::Column::Stage,
                sea_orm::sea_query::Expr::value(Option::<String>::None),
            ),
            // Its content now known, later submissions may reuse its results.
            (
                job::Column::ReuseKey,
                sea_orm::sea_query::Expr::value(super::reuse::key_of(
                    &job.tool,
                    &job.tool_version,
                    prepared,
                )),
            ),
        ];
        let Some(job) = store::update_details(&tx, job, details).await? else {
            return Err(Error::conflict("the job changed meanwhile"));
        };
        lifecycle::transition(
            &tx,
            &job,
            JobStatus::Queued,
            Change {
                message: Some("inputs downloaded".to_owned()),
                ..Default::default()
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// The file name a URL suggests: its last path segment, or `download`.
fn name_from_url(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|url| {
            url.path_segments()
                .and_then(|mut segments| segments.next_back().map(str::to_owned))
        })
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "download".to_owned())
}
