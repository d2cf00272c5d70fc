//! GraphQL for tools, prices, jobs, their timeline and lineage, and batches.

use entity::ids::{BatchId, JobId, UserId, WorkspaceId};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use async_graphql::connection::PageInfo;
use async_graphql::{
    Context, Enum, ID, InputObject, Json, Object, SimpleObject, Upload as UploadScalar,
};
use chrono::{DateTime, Utc};
use entity::job::{self, JobStatus, ParentKind, Visibility};
use entity::job_event;
use entity::user;
use serde_json::Value;

use super::files::{FileRoleView, FileView};
use super::inline::{self, Inline, InlineFields, InlineList, Plan, camel_case, inline_fields};
use super::users::{UserView, load_user};
use super::workspaces::WorkspaceView;
use super::{catalog, db, page_complexity, viewer};
use crate::access::{JobAccess, JobAction, JobStanding, WorkspaceAccess, WorkspaceRef};
use crate::config::ServerConfig;
use crate::error::{ApiResult, Error};
use crate::files::Upload;
use crate::ids::{self};
use crate::jobs::export;
use crate::jobs::history::{self, BatchSummary, Difference, DifferenceKind};
use crate::pagination::{PageArgs, encode_cursor};
use crate::queue::waiting::{Wait, WaitReason, Waiter};
use crate::tools::{Estimate, InputKind, InputValue, Prepared, StoredInputKind, Tool};

/// A GraphQL enum named `$name` mirroring the model's enum variant for variant.
macro_rules! mirror_enum {
    ($view:ident, $name:literal, $model:path, [$($variant:ident),+ $(,)?]) => {
        #[derive(Enum, Clone, Copy, PartialEq, Eq)]
        #[graphql(name = $name)]
        pub enum $view { $($variant),+ }

        impl From<$model> for $view {
            fn from(value: $model) -> Self {
                match value { $(<$model>::$variant => $view::$variant),+ }
            }
        }

        impl From<$view> for $model {
            fn from(value: $view) -> Self {
                match value { $($view::$variant => <$model>::$variant),+ }
            }
        }

        $crate::graphql::inline::write_json_of_enums!($view);
    };
}
pub(crate) use mirror_enum;

mirror_enum!(
    JobStatusView,
    "JobStatus",
    JobStatus,
    [
        Pending, Queued, Processing, Completed, Failed, Timeout, Cancelled, Retry,
    ]
);
mirror_enum!(
    VisibilityView,
    "Visibility",
    Visibility,
    [Private, Public, LoggedIn, Invited]
);
mirror_enum!(ParentKindView, "ParentKind", ParentKind, [Retry, Duplicate]);

/// Why a job has not started yet.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "WaitReason")]
pub enum WaitReasonView {
    /// Jobs ahead of it in the queue will be claimed first.
    QueuedBehindOthers,
    /// It is next in the queue: the next free worker takes it.
    WaitingForWorker,
    /// Its workspace runs as many jobs at once as it may.
    WorkspaceLimit,
    /// Its tool runs as many jobs at once as it may.
    ToolLimit,
    /// No worker present runs its tool.
    NoWorkerForTool,
    /// A workflow step whose upstream steps have not all completed (`WorkflowStep.waitingFor`
    /// names them); it has no job yet.
    WaitingForUpstream,
    /// A failed attempt waits out its backoff; `eligibleAt` says until when.
    RetryBackoff,
}

impl From<WaitReason> for WaitReasonView {
    fn from(reason: WaitReason) -> Self {
        match reason {
            WaitReason::QueuedBehindOthers => WaitReasonView::QueuedBehindOthers,
            WaitReason::WaitingForWorker => WaitReasonView::WaitingForWorker,
            WaitReason::WorkspaceLimit => WaitReasonView::WorkspaceLimit,
            WaitReason::ToolLimit => WaitReasonView::ToolLimit,
            WaitReason::NoWorkerForTool => WaitReasonView::NoWorkerForTool,
            WaitReason::RetryBackoff => WaitReasonView::RetryBackoff,
        }
    }
}

/// A tool users can run.
pub struct ToolView(pub Arc<Tool>);

#[Object(name = "Tool")]
impl ToolView {
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn title(&self) -> &str {
        &self.0.title
    }
    async fn description(&self) -> &str {
        &self.0.description
    }
    async fn version(&self) -> &str {
        &self.0.version
    }
    /// What its runs produce, by name: what workflow steps bind to.
    async fn outputs(&self) -> Vec<ToolOutput> {
        self.0
            .outputs
            .iter()
            .map(|spec| ToolOutput {
                name: spec.name.clone(),
                kind: match spec.kind {
                    crate::tools::OutputKind::File => "FILE".to_owned(),
                    crate::tools::OutputKind::Field => "FIELD".to_owned(),
                    crate::tools::OutputKind::Files => "FILES".to_owned(),
                },
                path: spec.path.clone(),
                field: spec.field.clone(),
                format: spec.format.map(|_| "FASTA".to_owned()),
                description: spec.description.clone(),
            })
            .collect()
    }
    async fn inputs(&self) -> Vec<ToolInput> {
        self.0
            .inputs
            .iter()
            .map(|spec| ToolInput {
                name: spec.name.clone(),
                kind: match spec.kind {
                    InputKind::Text => "TEXT".to_owned(),
                    InputKind::File => "FILE".to_owned(),
                },
                required: spec.required,
                list: spec.list,
                max_items: spec.list.then_some(spec.max_items as i32),
                max_bytes: super::scalars::ByteCount(spec.max_bytes),
                format: spec.format.map(|_| "FASTA".to_owned()),
                description: spec.description.clone(),
            })
            .collect()
    }
    /// The JSON Schema that `settings` must satisfy.
    async fn settings_schema(&self) -> Json<Value> {
        Json(self.0.settings_schema.clone())
    }
    async fn price(&self) -> ToolPrice {
        let price = &self.0.price;
        ToolPrice {
            base: price.base.get(),
            per_kilobyte: price.per_kilobyte.get(),
            per_1k_residues: price.per_1k_residues.get(),
            settings: price
                .settings
                .iter()
                .map(|s| SettingPriceView {
                    name: s.name.clone(),
                    per_unit: s.per_unit.get(),
                })
                .collect(),
        }
    }
    /// The execution limit: a run taking longer ends as TIMEOUT and is refunded.
    async fn timeout_seconds(&self) -> i64 {
        self.0.timeout_seconds as i64
    }
    async fn max_attempts(&self) -> i32 {
        self.0.max_attempts as i32
    }
}

// A job's tool written in place on a page of jobs (`JobView::write_tool`), when only these
// fields of it are selected; its lists and its price are resolved.
inline_fields!(ToolView {
    name(&self),
    title(&self),
    description(&self),
    version(&self),
    settings_schema(&self),
    timeout_seconds(&self),
    max_attempts(&self),
});

/// A named output of a tool's runs, which workflow steps bind to.
#[derive(SimpleObject)]
struct ToolOutput {
    name: String,
    /// FILE (a stored output file), FILES (every file stored under a folder: a list) or FIELD
    /// (a value of the result).
    kind: String,
    /// FILE: the name of the file; FILES: the pattern of their names, with one `*`.
    path: Option<String>,
    /// FIELD: the key of the result.
    field: Option<String>,
    /// FASTA for sequence files.
    format: Option<String>,
    description: String,
}

/// An input a tool takes.
#[derive(SimpleObject)]
struct ToolInput {
    name: String,
    /// TEXT or FILE.
    kind: String,
    required: bool,
    /// Takes a list: give the input's name once per item (at most `maxItems`); a job stores
    /// item `i` as `<name>/<i>`, zero-padded to four digits.
    list: bool,
    max_items: Option<i32>,
    max_bytes: super::scalars::ByteCount,
    /// FASTA for sequence inputs.
    format: Option<String>,
    description: String,
}

/// How a tool is priced, in credits: each rate 0 to 2,000,000,000; a priced tool's base is at
/// least 1.
#[derive(SimpleObject)]
struct ToolPrice {
    base: i64,
    per_kilobyte: i64,
    #[graphql(name = "per1kResidues")]
    per_1k_residues: i64,
    settings: Vec<SettingPriceView>,
}

#[derive(SimpleObject)]
#[graphql(name = "SettingPrice")]
struct SettingPriceView {
    name: String,
    per_unit: i64,
}

/// A price and its breakdown. No price, nor any figure of it, is above 2,000,000,000 credits:
/// a submission that would cost more is refused, naming the field that makes it so.
#[derive(SimpleObject)]
pub struct CostEstimate {
    total: i64,
    breakdown: Vec<CostLine>,
}

#[derive(SimpleObject)]
struct CostLine {
    label: String,
    quantity: i64,
    unit_price: i64,
    amount: i64,
}

impl From<Estimate> for CostEstimate {
    fn from(estimate: Estimate) -> Self {
        CostEstimate {
            total: estimate.total.get(),
            breakdown: estimate
                .lines
                .into_iter()
                .map(|l| CostLine {
                    label: l.label,
                    quantity: l.quantity,
                    unit_price: l.unit_price.get(),
                    amount: l.amount.get(),
                })
                .collect(),
        }
    }
}

/// An input value of a submission: exactly one of `text`, `file` and `url`.
#[derive(InputObject)]
pub struct JobInputValue {
    /// The tool's input name.
    name: String,
    /// The content, pasted inline.
    text: Option<String>,
    /// The content, uploaded (GraphQL multipart request); for file inputs.
    file: Option<UploadScalar>,
    /// An http or https URL the content is fetched from after submission; for file inputs.
    url: Option<String>,
}

pub fn input_values(
    ctx: &Context<'_>,
    values: Vec<JobInputValue>,
) -> Result<Vec<(String, InputValue)>, Error> {
    values
        .into_iter()
        .map(|value| {
            let field = format!("inputs.{}", value.name);
            let input = match (value.text, value.file, value.url) {
                (Some(text), None, None) => InputValue::Text(text),
                (None, Some(upload), None) => {
                    let upload = upload.value(ctx).map_err(|err| {
                        Error::bad_input(&field, format!("the upload cannot be read: {err}"))
                    })?;
                    InputValue::Upload(Upload {
                        filename: upload.filename,
                        content_type: upload.content_type,
                        content: Arc::new(upload.content),
                    })
                }
                (None, None, Some(url)) => InputValue::Url(url),
                _ => {
                    return Err(Error::bad_input(
                        field,
                        "give exactly one of `text`, `file` and `url`",
                    ));
                }
            };
            Ok((value.name, input))
        })
        .collect()
}

/// An input as stored on a job.
#[derive(SimpleObject)]
struct JobInput {
    name: String,
    /// TEXT, FILE or URL.
    kind: String,
    text: Option<String>,
    bytes: super::scalars::ByteCount,
    /// The URL a URL input is fetched from.
    url: Option<String>,
    /// The stored file of a FILE input, or of a URL input once fetched.
    file: Option<FileView>,
}

/// One entry of a job's timeline, as the viewer of its job may see it.
pub struct JobEventView(job_event::Model, JobStanding);

#[Object(name = "JobEvent")]
impl JobEventView {
    async fn status(&self) -> JobStatusView {
        self.0.status.into()
    }
    async fn stage(&self) -> Option<&str> {
        self.0.stage.as_deref()
    }
    async fn message(&self) -> Option<&str> {
        self.1.event_message(&self.0)
    }
    async fn progress(&self) -> f64 {
        self.0.progress
    }
    async fn attempt(&self) -> i32 {
        self.0.attempt
    }
    async fn at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// What differs between a job and the job it came from, or between a workflow and the
/// workflow it came from.
#[derive(SimpleObject)]
pub(super) struct JobChange {
    /// SETTING or INPUT for a job; NAME, PARAMETER, INPUT or STEP_SETTING (named
    /// `<step>.<setting>`) for a workflow.
    kind: String,
    name: String,
    old_value: Option<Json<Value>>,
    new_value: Option<Json<Value>>,
}

impl From<Difference> for JobChange {
    fn from(d: Difference) -> Self {
        JobChange {
            kind: match d.kind {
                DifferenceKind::Setting => "SETTING".to_owned(),
                DifferenceKind::Input => "INPUT".to_owned(),
                DifferenceKind::Name => "NAME".to_owned(),
                DifferenceKind::Parameter => "PARAMETER".to_owned(),
                DifferenceKind::StepSetting => "STEP_SETTING".to_owned(),
            },
            name: d.name,
            old_value: d.old.map(Json),
            new_value: d.new.map(Json),
        }
    }
}

/// What a field of `Job` reads of the job's row, besides what every read loads
/// ([`history::Detail::ALWAYS`]).
#[derive(Debug, Clone, Copy)]
enum Reads {
    /// These columns: a list that shows only such fields loads only their columns.
    Columns(&'static [job::Column]),
    /// The whole row.
    Row,
}

/// `Reads` from a field's `#[reads(...)]`: column names, `waits` for where a waiting job
/// stands, `row` for the whole row.
macro_rules! reads {
    (row) => {
        Reads::Row
    };
    (waits) => {
        Reads::Columns(&Waiter::COLUMNS)
    };
    ($($column:ident),*) => {
        Reads::Columns(&[$(job::Column::$column),*])
    };
}

/// Declares the fields of `Job`, each with what it reads of the job's row, and derives from
/// the same declarations what a list of jobs loads for the fields it is asked for: a field
/// cannot be added without saying what it reads, nor read a column its list did not load
/// unless its own declaration is wrong (which the history tests catch field by field).
macro_rules! job_fields {
    ($(
        $(#[doc = $doc:literal])*
        #[reads($($reads:tt)*)]
        $vis:vis async fn $name:ident $args:tt -> $ret:ty $body:block
    )*
    nested { $($nested:ident => $writer:expr),* $(,)? }) => {
        #[Object(name = "Job")]
        impl JobView {
            $(
                $(#[doc = $doc])*
                $vis async fn $name $args -> $ret $body
            )*
        }

        /// What the field of `Job` named `name` in the schema reads; `None` for a name that is
        /// not one of its fields.
        fn reads_of_field(name: &str) -> Option<Reads> {
            static FIELDS: LazyLock<HashMap<String, Reads>> = LazyLock::new(|| {
                HashMap::from([
                    ("__typename".to_owned(), Reads::Columns(&[])),
                    $((camel_case(stringify!($name)), reads!($($reads)*)),)*
                ])
            });
            FIELDS.get(name).copied()
        }

        // A field that takes the request's context (a loader, the database, the catalog) may
        // wait; a field of the job alone writes its value itself: the same resolver, its
        // value written as async-graphql writes it.
        // A field under `nested` is an object the job may hold already, written by its writer.
        inline_fields!(JobView { $($name $args),* } nested { $($nested => $writer),* });
    };
}

/// One run of a tool: everything it recorded.
pub struct JobView(
    pub job::Model,
    pub JobStanding,
    /// The submitter, when read with the job (a history page's): the field needs no loader.
    Option<Arc<user::Model>>,
);

impl JobView {
    pub fn new(job: job::Model, standing: JobStanding) -> Self {
        JobView(job, standing, None)
    }

    pub fn from_access(access: JobAccess) -> Self {
        JobView::new(access.job, access.standing)
    }

    /// Why the job, QUEUED or RETRY, has not started yet.
    pub(super) async fn wait_reason_of(
        &self,
        ctx: &Context<'_>,
    ) -> ApiResult<Option<WaitReasonView>> {
        Ok(self.wait(ctx).await?.reason.map(Into::into))
    }

    /// Where the job stands while it waits, loaded with the rest of its page.
    async fn wait(&self, ctx: &Context<'_>) -> ApiResult<Wait> {
        if !matches!(self.0.status, JobStatus::Queued | JobStatus::Retry) {
            return Ok(Wait::default());
        }
        let id = self.0.id;
        Ok(ctx
            .data_unchecked::<super::Waits>()
            .load_one(Waiter::from(&self.0))
            .await
            .map_err(|err| {
                Error::Internal(anyhow::anyhow!("placing job {id} in the queue: {err}"))
            })?
            .unwrap_or_default())
    }

    /// The submitter as far as the job tells it without the loader: `Some(None)` for a viewer
    /// who may not see it, `Some(Some(_))` when it was read with the job (a history page's),
    /// `None` when it must be loaded.
    fn held_submitter(&self) -> Option<Option<UserView>> {
        if !self.1.sees_workspace() {
            return Some(None);
        }
        self.2.as_ref().map(|user| Some(UserView(user.clone())))
    }

    /// The `submitter` field written in place when the job tells it without the loader
    /// (`held_submitter`); resolved otherwise.
    fn write_submitter(&self, ctx: &Context<'_>, out: &mut Vec<u8>) -> bool {
        self.held_submitter()
            .is_some_and(|held| inline::write_nested_or_null(held.as_ref(), ctx, out))
    }

    /// The job's tool as the catalog offers it; none if it is no longer offered. The `tool`
    /// resolver and its in-place writer both answer it.
    fn offered_tool(&self, ctx: &Context<'_>) -> Option<ToolView> {
        catalog(ctx).get(&self.0.tool).cloned().map(ToolView)
    }

    /// The `tool` field written in place (`offered_tool`), when every field it selects writes
    /// itself; resolved otherwise.
    fn write_tool(&self, ctx: &Context<'_>, out: &mut Vec<u8>) -> bool {
        inline::write_nested_or_null(self.offered_tool(ctx).as_ref(), ctx, out)
    }

    fn can(&self, action: JobAction) -> bool {
        self.1.check(&self.0, action).is_ok()
    }
}

pub fn job_url(ctx: &Context<'_>, id: JobId) -> String {
    ctx.data_unchecked::<Arc<ServerConfig>>().job_url(id)
}

job_fields! {
    #[reads()]
    pub async fn id(&self) -> ID {
        ids::encode(self.0.id)
    }
    #[reads(Name)]
    async fn name(&self) -> &str {
        &self.0.name
    }
    /// The tool; null if it is no longer offered.
    #[reads(Tool)]
    async fn tool(&self, ctx: &Context<'_>) -> Option<ToolView> {
        self.offered_tool(ctx)
    }
    #[reads(Tool)]
    async fn tool_name(&self) -> &str {
        &self.0.tool
    }
    #[reads(ToolVersion)]
    async fn tool_version(&self) -> &str {
        &self.0.tool_version
    }
    /// The workspace; null for viewers who see the job only through its sharing.
    #[reads()]
    async fn workspace(&self, ctx: &Context<'_>) -> ApiResult<Option<WorkspaceView>> {
        if !self.1.sees_workspace() {
            return Ok(None);
        }
        let loader = ctx.data_unchecked::<super::Workspaces>();
        let access = loader
            .load_one(self.0.workspace_id)
            .await
            .map_err(|err| Error::Internal(anyhow::anyhow!("loading a workspace: {err}")))?;
        Ok(access.map(WorkspaceView::from))
    }
    /// Who submitted it; null for viewers who see the job only through its sharing.
    #[reads()]
    async fn submitter(&self, ctx: &Context<'_>) -> ApiResult<Option<Inline<UserView>>> {
        match self.held_submitter() {
            Some(held) => Ok(held.map(Inline)),
            None => load_user(ctx, self.0.submitter_id)
                .await
                .map(|user| Some(Inline(user))),
        }
    }
    #[reads()]
    async fn status(&self) -> JobStatusView {
        self.0.status.into()
    }
    /// What the run is doing now, in words.
    #[reads(Stage)]
    async fn stage(&self) -> Option<&str> {
        self.0.stage.as_deref()
    }
    /// From 0 to 1.
    #[reads(Progress)]
    async fn progress(&self) -> f64 {
        self.0.progress
    }
    #[reads(Inputs, Settings)]
    async fn inputs(&self, ctx: &Context<'_>) -> ApiResult<Vec<JobInput>> {
        let inputs = Prepared::from_stored(&self.0.inputs, &self.0.settings).inputs;
        let mut files = std::collections::HashMap::new();
        if inputs.values().any(|input| input.file_id.is_some()) {
            for file in entity::file::Entity::find_of_job(self.0.id)
                .all(db(ctx))
                .await?
            {
                files.insert(file.id, file);
            }
        }
        Ok(inputs
            .into_iter()
            .map(|(name, input)| JobInput {
                name,
                kind: match input.kind {
                    StoredInputKind::Text => "TEXT",
                    StoredInputKind::File => "FILE",
                    StoredInputKind::Url => "URL",
                }
                .to_owned(),
                text: input.text,
                bytes: super::scalars::ByteCount(input.bytes),
                url: input.url,
                file: input.file_id.and_then(|id| files.remove(&id)).map(FileView),
            })
            .collect())
    }
    /// The stored files of the job, oldest first: its uploaded or fetched inputs and the
    /// outputs of its run.
    #[reads()]
    async fn files(
        &self,
        ctx: &Context<'_>,
        role: Option<FileRoleView>,
    ) -> ApiResult<Vec<FileView>> {
        super::files::job_files(ctx, self.0.id, role).await
    }
    #[reads(Settings)]
    async fn settings(&self) -> Json<Value> {
        Json(self.0.settings.clone())
    }
    /// The structured result of a completed run.
    #[reads(Result)]
    async fn result(&self) -> Option<Json<Value>> {
        self.0.result.clone().map(Json)
    }
    #[reads(ErrorMessage)]
    async fn error_message(&self) -> Option<&str> {
        self.0.error_message.as_deref()
    }
    #[reads(ErrorCode)]
    async fn error_code(&self) -> Option<&str> {
        self.0.error_code.as_deref()
    }
    #[reads(Attempt)]
    async fn attempt(&self) -> i32 {
        self.0.attempt
    }
    #[reads(MaxAttempts)]
    async fn max_attempts(&self) -> i32 {
        self.0.max_attempts
    }
    /// The credits charged at submission: at most 2,000,000,000.
    #[reads(CreditCost)]
    async fn credit_cost(&self) -> i64 {
        self.0.credit_cost
    }
    /// Whether the charge was given back.
    #[reads(Refunded)]
    async fn refunded(&self) -> bool {
        self.0.refunded
    }
    #[reads()]
    async fn visibility(&self) -> VisibilityView {
        self.0.visibility.into()
    }
    /// The e-mails a job shared as INVITED is shared with; null for viewers who may not
    /// change its sharing.
    #[reads()]
    async fn invited_emails(&self, ctx: &Context<'_>) -> ApiResult<Option<Vec<String>>> {
        if !self.can(JobAction::Share) {
            return Ok(None);
        }
        use sea_orm::QueryOrder;
        let shares = entity::job_share::Entity::find_of_job(self.0.id)
            .order_by_asc(entity::job_share::Column::Email)
            .all(db(ctx))
            .await?;
        Ok(Some(shares.into_iter().map(|s| s.email).collect()))
    }
    #[reads(Priority)]
    async fn priority(&self) -> i32 {
        self.0.priority
    }
    /// The key it was submitted with; null for viewers who see the job only through its
    /// sharing.
    #[reads(IdempotencyKey)]
    async fn idempotency_key(&self) -> Option<&str> {
        self.0
            .idempotency_key
            .as_deref()
            .filter(|_| self.1.sees_workspace())
    }
    /// What the last attempt used: `wallSeconds`; for a command tool run by a jobgraph worker
    /// also `cpuUserSeconds` and `cpuSystemSeconds`, of the tool's program and the descendants
    /// it waited for, and `peakMemoryBytes`, the largest resident memory of that program or of
    /// one of those descendants (the largest one's, not a sum), never the server's or the
    /// worker's; it includes the few megabytes the program's supervisor held when it started
    /// the program.
    #[reads(Resources)]
    async fn resources(&self) -> Option<Json<Value>> {
        self.0.resources.clone().map(Json)
    }
    #[reads(CreatedAt)]
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    #[reads(UpdatedAt)]
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
    /// When the job joined the queue: its place in the claim order, which it keeps when it
    /// comes back for another attempt (a retry, a run whose worker was lost or stopped).
    #[reads(QueuedAt)]
    async fn queued_at(&self) -> Option<DateTime<Utc>> {
        self.0.queued_at
    }
    #[reads(StartedAt)]
    async fn started_at(&self) -> Option<DateTime<Utc>> {
        self.0.started_at
    }
    #[reads(FinishedAt)]
    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }
    /// Seconds from start to finish (or to now while running).
    #[reads(StartedAt, FinishedAt)]
    async fn duration_seconds(&self) -> Option<f64> {
        let started = self.0.started_at?;
        let until = self.0.finished_at.unwrap_or_else(Utc::now);
        Some((until - started).num_milliseconds() as f64 / 1000.0)
    }
    /// For a QUEUED job, how many QUEUED jobs will be claimed before it: those of higher
    /// priority, then those queued earlier (0: it is next). Null for any other status.
    #[reads(waits)]
    async fn queue_position(&self, ctx: &Context<'_>) -> ApiResult<Option<i64>> {
        Ok(self.wait(ctx).await?.position.map(|n| n as i64))
    }
    /// Why a QUEUED or RETRY job has not started yet; null for any other status.
    #[reads(waits)]
    async fn wait_reason(&self, ctx: &Context<'_>) -> ApiResult<Option<WaitReasonView>> {
        Ok(self.wait(ctx).await?.reason.map(Into::into))
    }
    /// For a RETRY job, when it is queued again.
    #[reads(waits)]
    async fn eligible_at(&self, ctx: &Context<'_>) -> ApiResult<Option<DateTime<Utc>>> {
        Ok(self.wait(ctx).await?.eligible_at)
    }
    /// For a QUEUED or RETRY job, when it will likely start: from the jobs ahead of it, the
    /// capacity of the workers that run its tool and how long its tool's recent runs took.
    /// Null when no worker runs its tool.
    #[reads(waits)]
    async fn estimated_start_at(&self, ctx: &Context<'_>) -> ApiResult<Option<DateTime<Utc>>> {
        Ok(self.wait(ctx).await?.estimated_start_at)
    }
    /// Every status and stage change, oldest first.
    #[reads()]
    async fn timeline(&self, ctx: &Context<'_>) -> ApiResult<Vec<JobEventView>> {
        let events = history::timeline(db(ctx), self.0.id).await?;
        Ok(events
            .into_iter()
            .map(|event| JobEventView(event, self.1))
            .collect())
    }
    /// A stable link that opens the job: the frontend's page of it when the server has one
    /// (`--job-url-template`), else this server's `/jobs/{id}`, which serves the job's record
    /// as JSON.
    #[reads()]
    async fn url(&self, ctx: &Context<'_>) -> String {
        job_url(ctx, self.0.id)
    }
    /// The job this one was retried or duplicated from, if the viewer may see it.
    #[reads(ParentId)]
    async fn parent(&self, ctx: &Context<'_>) -> ApiResult<Option<JobView>> {
        let Some(parent_id) = self.0.parent_id else {
            return Ok(None);
        };
        match JobAccess::load(db(ctx), viewer(ctx), parent_id).await {
            Ok(access) => Ok(Some(JobView::from_access(access))),
            Err(Error::NotFound(_)) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }
    #[reads(ParentKind)]
    async fn parent_kind(&self) -> Option<ParentKindView> {
        self.0.parent_kind.map(Into::into)
    }
    /// The job whose results this one reused instead of running (`submitJob`'s `reuse`); null
    /// when it ran, or when that job is deleted or the viewer may not see it.
    #[reads(ReusedFrom)]
    async fn reused_from(&self, ctx: &Context<'_>) -> ApiResult<Option<JobView>> {
        let Some(original_id) = self.0.reused_from else {
            return Ok(None);
        };
        match JobAccess::load(db(ctx), viewer(ctx), original_id).await {
            Ok(access) => Ok(Some(JobView::from_access(access))),
            Err(Error::NotFound(_)) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }
    /// Settings and inputs that differ from the parent's; empty without a visible parent.
    #[reads(ParentId, Inputs, Settings)]
    async fn changes_from_parent(&self, ctx: &Context<'_>) -> ApiResult<Vec<JobChange>> {
        let Some(parent_id) = self.0.parent_id else {
            return Ok(Vec::new());
        };
        let parent = match JobAccess::load(db(ctx), viewer(ctx), parent_id).await {
            Ok(access) => access.job,
            Err(Error::NotFound(_)) => return Ok(Vec::new()),
            Err(err) => return Err(err.into()),
        };
        Ok(history::changes(&parent, &self.0)
            .into_iter()
            .map(Into::into)
            .collect())
    }
    /// Jobs retried or duplicated from this one that the viewer may see, oldest first.
    #[reads()]
    async fn derived_jobs(&self, ctx: &Context<'_>) -> ApiResult<Vec<JobView>> {
        let jobs = history::derived(db(ctx), viewer(ctx), self.1, &self.0).await?;
        let viewer_id = viewer(ctx).user_id();
        let mut views = Vec::with_capacity(jobs.len());
        for job in jobs {
            let standing = if job.workspace_id == self.0.workspace_id {
                self.1
            } else {
                JobStanding {
                    workspace: crate::access::standing(db(ctx), viewer(ctx), job.workspace_id)
                        .await?,
                    viewer_id,
                }
            };
            views.push(JobView::new(job, standing));
        }
        Ok(views)
    }
    /// The workflow whose step it runs; null for jobs of no workflow, and for viewers who may
    /// not read the workflow (a job shared alone does not share its workflow).
    #[reads(WorkflowId)]
    async fn workflow(&self, ctx: &Context<'_>) -> ApiResult<Option<super::workflows::WorkflowView>> {
        let Some(workflow_id) = self.0.workflow_id else {
            return Ok(None);
        };
        super::workflows::load_optional(ctx, workflow_id).await
    }
    /// The name of the workflow step it runs.
    #[reads(WorkflowStep)]
    async fn workflow_step(&self) -> Option<String> {
        if !self.1.sees_workspace() {
            return None;
        }
        self.0.workflow_step.clone()
    }
    /// For a job of a mapped workflow step: its item's place in the step's list, from 0.
    #[reads(WorkflowItem)]
    async fn workflow_item(&self) -> Option<i32> {
        if !self.1.sees_workspace() {
            return None;
        }
        self.0.workflow_item
    }
    /// The batch it was submitted in; null for viewers who see the job only through its
    /// sharing.
    #[reads(BatchId)]
    async fn batch(&self, ctx: &Context<'_>) -> ApiResult<Option<BatchView>> {
        let Some(batch_id) = self.0.batch_id else {
            return Ok(None);
        };
        if !self.1.sees_workspace() {
            return Ok(None);
        }
        let (summary, access) = history::batch(db(ctx), viewer(ctx), batch_id).await?;
        Ok(Some(BatchView(summary, access)))
    }
    /// The record, result and timeline as one JSON document; what it tells of the workspace
    /// (`workspaceId`, `submitterId`, who acted) is null or left out for viewers who see the
    /// job only through its sharing, as in the fields above.
    #[reads(row)]
    async fn export_json(&self, ctx: &Context<'_>) -> ApiResult<Json<Value>> {
        let events = history::timeline(db(ctx), self.0.id).await?;
        Ok(Json(export::to_json(
            &self.0,
            self.1,
            &events,
            &job_url(ctx, self.0.id),
        )))
    }
    /// The result as CSV when it is a table (an array of flat objects); null otherwise.
    #[reads(Result)]
    async fn export_csv(&self) -> Option<String> {
        export::to_csv(self.0.result.as_ref())
    }
    #[reads()]
    async fn viewer_can_rename(&self) -> bool {
        self.can(JobAction::Rename)
    }
    #[reads()]
    async fn viewer_can_delete(&self) -> bool {
        self.can(JobAction::Delete)
    }
    #[reads()]
    async fn viewer_can_cancel(&self) -> bool {
        self.can(JobAction::Cancel)
    }
    #[reads()]
    async fn viewer_can_retry(&self) -> bool {
        self.can(JobAction::Retry)
    }
    /// Whether the viewer may duplicate the job into workspace `into`, by default the job's
    /// own: whoever may read a job may copy it into a workspace where they may submit jobs.
    #[reads()]
    async fn viewer_can_duplicate(&self, ctx: &Context<'_>, into: Option<ID>) -> ApiResult<bool> {
        let into = match into {
            None => self.1.workspace,
            Some(id) => {
                let id = ids::decode::<WorkspaceId>("into", &id)?;
                if id == self.0.workspace_id {
                    self.1.workspace
                } else {
                    crate::access::standing(db(ctx), viewer(ctx), id).await?
                }
            }
        };
        Ok(self.can(JobAction::Duplicate { into }))
    }
    #[reads()]
    async fn viewer_can_share(&self) -> bool {
        self.can(JobAction::Share)
    }

    nested {
        submitter => JobView::write_submitter,
        tool => JobView::write_tool,
    }
}

/// Jobs submitted together.
pub struct BatchView(pub BatchSummary, pub WorkspaceAccess);

#[Object(name = "Batch")]
impl BatchView {
    pub async fn id(&self) -> ID {
        ids::encode(self.0.batch.id)
    }
    async fn name(&self) -> Option<&str> {
        self.0.batch.name.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.batch.created_at
    }
    /// While any of its jobs is active, the least advanced of them: PENDING, then QUEUED, then
    /// PROCESSING (which a job waiting to be retried counts as). Once all have ended,
    /// COMPLETED if all completed, else FAILED if any failed or timed out, else CANCELLED.
    async fn status(&self) -> JobStatusView {
        history::batch_status(&self.0.statuses).into()
    }
    /// The mean progress of its jobs.
    async fn progress(&self) -> f64 {
        self.0.progress
    }
    /// The credits its jobs were charged together: at most 2,000,000,000.
    async fn total_cost(&self) -> i64 {
        self.0.total_cost
    }
    async fn job_count(&self) -> i32 {
        self.0.statuses.len() as i32
    }
    #[graphql(complexity = "page_complexity(first, child_complexity)")]
    async fn jobs(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> ApiResult<JobConnection> {
        let filter = history::JobFilter {
            batch_id: Some(self.0.batch.id),
            ..Default::default()
        };
        job_connection(ctx, self.1.known(), Some(&self.1), &filter, first, after).await
    }
}

/// The fields of `Job` that say where a waiting job stands.
const WAIT_FIELDS: [&str; 4] = [
    "queuePosition",
    "waitReason",
    "eligibleAt",
    "estimatedStartAt",
];

/// A page of jobs, as async-graphql's `Connection` shapes one, with each edge and job resolved
/// in place ([`Inline`]) and each cursor written only when it is asked for.
pub struct JobConnection {
    jobs: Vec<JobView>,
    has_next_page: bool,
}

#[Object]
impl JobConnection {
    /// Information to aid in pagination.
    async fn page_info(&self) -> PageInfo {
        PageInfo {
            has_previous_page: false,
            has_next_page: self.has_next_page,
            start_cursor: self.jobs.first().map(|job| encode_cursor(job.0.id)),
            end_cursor: self.jobs.last().map(|job| encode_cursor(job.0.id)),
        }
    }

    /// A list of edges.
    async fn edges(&self) -> InlineList<JobEdge<'_>> {
        InlineList(self.jobs.iter().map(|job| Inline(JobEdge(job))).collect())
    }

    /// A list of nodes.
    async fn nodes(&self) -> InlineList<&JobView> {
        InlineList(self.jobs.iter().map(Inline).collect())
    }
}

/// An edge of a page of jobs.
pub struct JobEdge<'a>(&'a JobView);

/// An edge in a connection.
#[Object]
impl<'a> JobEdge<'a> {
    /// The item at the end of the edge
    async fn node(&self) -> Inline<&'a JobView> {
        Inline(self.0)
    }

    /// A cursor for use in pagination
    async fn cursor(&self) -> String {
        encode_cursor(self.0.0.id)
    }
}

impl InlineFields for JobEdge<'_> {
    fn plan(name: &str) -> Plan {
        match name {
            "node" => Plan::Nests(0),
            "cursor" => Plan::Writes(1),
            _ => Plan::Resolves,
        }
    }

    /// The node written straight into the edge's text when all it selects writes itself; the
    /// cursor as its resolver gives it.
    fn write_field(&self, ctx: &Context<'_>, at: usize, out: &mut Vec<u8>) -> bool {
        match at {
            0 => inline::write_nested(self.0, ctx, out),
            1 => inline::write_ready(self.cursor(ctx), out),
            _ => false,
        }
    }
}

/// A page of a workspace's jobs as a connection. `loaded`, the workspace with its row when the
/// caller has it, answers the jobs' `workspace` fields.
pub async fn job_connection(
    ctx: &Context<'_>,
    workspace: WorkspaceRef,
    loaded: Option<&WorkspaceAccess>,
    filter: &history::JobFilter,
    first: Option<i32>,
    after: Option<String>,
) -> ApiResult<JobConnection> {
    let page = PageArgs::new(first, after)?;
    // The job's selections, whether through `edges { node }` or `nodes`.
    let look_ahead = ctx.look_ahead();
    let nodes = [
        look_ahead.field("edges").field("node"),
        look_ahead.field("nodes"),
    ];
    let selects = |name: &str| nodes.iter().any(|node| node.field(name).exists());
    // Read only the columns the selected fields need, when each of them is known.
    let columns: Option<Vec<job::Column>> = nodes
        .iter()
        .flat_map(|node| node.selection_fields())
        .flat_map(|node| {
            node.selection_set()
                .map(|field| match reads_of_field(field.name()) {
                    Some(Reads::Columns(columns)) => Some(columns),
                    Some(Reads::Row) | None => None,
                })
                .collect::<Vec<_>>()
        })
        .try_fold(Vec::new(), |mut all, columns| {
            all.extend_from_slice(columns?);
            Some(all)
        });
    let detail = columns.map_or(history::Detail::Full, history::Detail::Columns);
    let with_submitters = selects("submitter") && workspace.standing.can_read();
    let standing = JobStanding {
        workspace: workspace.standing,
        viewer_id: viewer(ctx).user_id(),
    };
    // Each job carries its submitter; the request's loader has them too, for other fields.
    let listing = history::list(
        db(ctx),
        workspace,
        filter,
        page,
        &detail,
        with_submitters,
        |job, submitter| JobView(job, standing, submitter.cloned()),
    )
    .await?;
    ctx.data_unchecked::<super::Users>()
        .feed_many(listing.submitters.into_iter().map(|user| (user.id, user)))
        .await;
    if selects("workspace")
        && let Some(loaded) = loaded
        && loaded.standing.can_read()
    {
        ctx.data_unchecked::<super::Workspaces>()
            .feed_one(loaded.workspace.id, loaded.clone())
            .await;
    }
    if WAIT_FIELDS.iter().any(|name| selects(name)) {
        // Every waiting job of the page placed in one go.
        let waiters = listing
            .page
            .items
            .iter()
            .map(|view| &view.0)
            .filter(|job| matches!(job.status, JobStatus::Queued | JobStatus::Retry))
            .map(Waiter::from);
        ctx.data_unchecked::<super::Waits>()
            .load_many(waiters)
            .await
            .map_err(|err| Error::Internal(anyhow::anyhow!("placing jobs in the queue: {err}")))?;
    }
    Ok(JobConnection {
        has_next_page: listing.page.has_next_page,
        jobs: listing.page.items,
    })
}

/// The number of jobs in each status: the jobs indicator.
#[derive(SimpleObject)]
pub struct JobCounts {
    pending: i64,
    queued: i64,
    processing: i64,
    retry: i64,
    completed: i64,
    failed: i64,
    timeout: i64,
    cancelled: i64,
    /// PENDING, QUEUED, PROCESSING and RETRY together.
    active: i64,
    total: i64,
}

impl JobCounts {
    pub fn from_map(counts: &std::collections::HashMap<JobStatus, i64>) -> Self {
        let get = |s| counts.get(&s).copied().unwrap_or(0);
        JobCounts {
            pending: get(JobStatus::Pending),
            queued: get(JobStatus::Queued),
            processing: get(JobStatus::Processing),
            retry: get(JobStatus::Retry),
            completed: get(JobStatus::Completed),
            failed: get(JobStatus::Failed),
            timeout: get(JobStatus::Timeout),
            cancelled: get(JobStatus::Cancelled),
            active: JobStatus::ACTIVE.iter().map(|s| get(*s)).sum(),
            total: counts.values().sum(),
        }
    }
}

/// Filters of a workspace's job history.
#[derive(InputObject, Default)]
pub struct JobFilterInput {
    /// Any of these statuses.
    statuses: Option<Vec<JobStatusView>>,
    tool: Option<String>,
    submitter_id: Option<ID>,
    batch_id: Option<ID>,
    created_after: Option<DateTime<Utc>>,
    created_before: Option<DateTime<Utc>>,
    /// Part of the job name, any case.
    search: Option<String>,
    /// Only the viewer's own jobs.
    #[graphql(default = false)]
    mine: bool,
}

impl JobFilterInput {
    pub fn into_filter(self, viewer_id: Option<UserId>) -> Result<history::JobFilter, Error> {
        let mut submitter_id = self
            .submitter_id
            .map(|id| ids::decode::<UserId>("filter.submitterId", &id))
            .transpose()?;
        if self.mine {
            submitter_id = Some(viewer_id.ok_or(Error::Unauthenticated)?);
        }
        Ok(history::JobFilter {
            statuses: self
                .statuses
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            tool: self.tool,
            submitter_id,
            batch_id: self
                .batch_id
                .map(|id| ids::decode::<BatchId>("filter.batchId", &id))
                .transpose()?,
            created_after: self.created_after,
            created_before: self.created_before,
            search: self.search,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_of_job_says_what_it_reads() {
        use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};
        let schema = async_graphql::parser::parse_schema(crate::graphql::sdl()).unwrap();
        let fields: Vec<String> = schema
            .definitions
            .iter()
            .find_map(|definition| match definition {
                TypeSystemDefinition::Type(ty) if ty.node.name.node == "Job" => {
                    match &ty.node.kind {
                        TypeKind::Object(object) => Some(
                            object
                                .fields
                                .iter()
                                .map(|field| field.node.name.node.to_string())
                                .collect(),
                        ),
                        _ => None,
                    }
                }
                _ => None,
            })
            .expect("the schema has a Job type");
        assert!(fields.len() > 40, "{fields:?}");
        for field in fields {
            assert!(
                reads_of_field(&field).is_some(),
                "`{field}` reads nothing known"
            );
        }
        assert!(reads_of_field("noSuchField").is_none());
        assert!(matches!(
            reads_of_field("durationSeconds"),
            Some(Reads::Columns([
                job::Column::StartedAt,
                job::Column::FinishedAt
            ]))
        ));
    }
}
