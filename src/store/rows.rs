//! Job rows (and the users joined to them) as this crate reads them from its own statements: the columns of `returning`, or
//! those a history page selected, by position.
//!
//! A worker reads each job it runs twice (claimed and completed), a thousand at a time; a
//! history page reads only the columns its fields need. Both read by position (`read`), not by
//! name as sea-orm's generic decoding does, which looks each column up and formats an error
//! message for every NULL column that it then drops.

use chrono::{DateTime, Utc};
use entity::ids::{JobId, UserId, WorkspaceId};
use entity::job::{self, JobStatus};
use entity::user;
use sea_orm::sqlx;
use sea_orm::{DbErr, Iterable as _, QueryResult, TryGetable};
use serde_json::Value;
use uuid::Uuid;

/// The columns a statement returns for `decode`, in the entity's order.
pub fn returning() -> impl Iterator<Item = job::Column> {
    job::Column::iter()
}

/// `returned` for a writer that wants the changed jobs whole.
pub const ALL: &str = "*";

/// The jobs of `rows`, which hold the columns of `returning`.
pub fn decode(rows: Vec<QueryResult>) -> Result<Vec<job::Model>, DbErr> {
    let columns: Vec<job::Column> = returning().collect();
    // Sized once: collected through `Result`, the vector would start empty and grow by
    // doubling, copying the jobs already read at each step (a claim's thousand jobs are about
    // a megabyte).
    let mut jobs = Vec::with_capacity(rows.len());
    for row in &rows {
        jobs.push(read(row, &columns)?);
    }
    Ok(jobs)
}

/// `update` as a statement that returns the columns of `returning`.
pub fn returning_statement(
    backend: sea_orm::DatabaseBackend,
    update: sea_orm::UpdateMany<job::Entity>,
) -> sea_orm::Statement {
    use sea_orm::QueryTrait as _;
    let mut query = update.into_query();
    query.returning(sea_orm::sea_query::Query::returning().columns(returning()));
    backend.build(&query)
}

/// `RETURNING` with the columns of `returning`, of the table named `table` in the statement
/// (unqualified when `table` is empty).
pub fn returning_sql(table: &str) -> String {
    use sea_orm::IdenStatic as _;
    let columns: Vec<String> = returning()
        .map(|column| match table {
            "" => column.as_str().to_owned(),
            table => format!("{table}.{}", column.as_str()),
        })
        .collect();
    format!("RETURNING {}", columns.join(", "))
}

/// The jobs an UPDATE changed: decoded where its transaction needed them, or as the database
/// sent them, to be decoded once the transaction has committed (so that it holds its locks, and
/// the numbering of live entries, for no client-side work).
#[derive(Debug)]
pub enum Changed {
    Jobs(Vec<job::Model>),
    Rows(Vec<QueryResult>),
}

impl Changed {
    /// The ids of the changed jobs, in order; only the `id` column is read.
    pub fn ids(&self) -> Result<Vec<JobId>, DbErr> {
        match self {
            Changed::Jobs(jobs) => Ok(jobs.iter().map(|job| job.id).collect()),
            Changed::Rows(rows) => rows.iter().map(|row| row.try_get("", "id")).collect(),
        }
    }

    /// The changed jobs as they now are.
    pub fn into_jobs(self) -> Result<Vec<job::Model>, DbErr> {
        match self {
            Changed::Jobs(jobs) => Ok(jobs),
            Changed::Rows(rows) => decode(rows),
        }
    }
}

/// A job with `columns` read from a row that holds them in this order, by position; the other
/// fields hold placeholders. Every decoding of job rows by this crate goes through it.
pub fn read(row: &QueryResult, columns: &[job::Column]) -> std::result::Result<job::Model, DbErr> {
    use job::Column as C;
    let mut job = job::Model {
        id: JobId(Uuid::nil()),
        workspace_id: WorkspaceId(Uuid::nil()),
        submitter_id: UserId(Uuid::nil()),
        tool: String::new(),
        tool_version: String::new(),
        name: String::new(),
        status: JobStatus::Pending,
        stage: None,
        progress: 0.0,
        inputs: Value::Null,
        settings: Value::Null,
        result: None,
        error_message: None,
        error_code: None,
        attempt: 0,
        max_attempts: 0,
        credit_cost: 0,
        refunded: false,
        visibility: job::Visibility::Private,
        priority: 0,
        parent_id: None,
        parent_kind: None,
        batch_id: None,
        idempotency_key: None,
        request_fingerprint: None,
        resources: None,
        created_at: DateTime::<Utc>::default(),
        updated_at: DateTime::<Utc>::default(),
        queued_at: None,
        started_at: None,
        finished_at: None,
        run_after: None,
        worker_id: None,
        lease_expires_at: None,
        heartbeat_at: None,
        trace_parent: None,
        reuse_key: None,
        reused_from: None,
        workflow_id: None,
        workflow_step: None,
        workflow_item: None,
    };
    let mut scratch = String::new();
    for (i, column) in columns.iter().enumerate() {
        match column {
            C::Id => job.id = JobId(value(row, i)?),
            C::WorkspaceId => job.workspace_id = WorkspaceId(value(row, i)?),
            C::SubmitterId => job.submitter_id = UserId(value(row, i)?),
            C::Tool => job.tool = required(text(row, i)?, i)?,
            C::ToolVersion => job.tool_version = required(text(row, i)?, i)?,
            C::Name => job.name = required(text(row, i)?, i)?,
            C::Status => job.status = named_at(row, i, &mut scratch)?,
            C::Stage => job.stage = text(row, i)?,
            C::Progress => job.progress = value(row, i)?,
            C::Inputs => job.inputs = row.try_get_by_index(i)?,
            C::Settings => job.settings = row.try_get_by_index(i)?,
            C::Result => job.result = row.try_get_by_index(i)?,
            C::ErrorMessage => job.error_message = text(row, i)?,
            C::ErrorCode => job.error_code = text(row, i)?,
            C::Attempt => job.attempt = value(row, i)?,
            C::MaxAttempts => job.max_attempts = value(row, i)?,
            C::CreditCost => job.credit_cost = value(row, i)?,
            C::Refunded => job.refunded = value(row, i)?,
            C::Visibility => job.visibility = named_at(row, i, &mut scratch)?,
            C::Priority => job.priority = value(row, i)?,
            C::ParentId => job.parent_id = row.try_get_by_index(i)?,
            C::ParentKind => job.parent_kind = text(row, i)?.map(named).transpose()?,
            C::BatchId => job.batch_id = row.try_get_by_index(i)?,
            C::IdempotencyKey => job.idempotency_key = text(row, i)?,
            C::RequestFingerprint => job.request_fingerprint = text(row, i)?,
            C::Resources => job.resources = row.try_get_by_index(i)?,
            C::CreatedAt => job.created_at = required(time(row, i)?, i)?,
            C::UpdatedAt => job.updated_at = required(time(row, i)?, i)?,
            C::QueuedAt => job.queued_at = time(row, i)?,
            C::StartedAt => job.started_at = time(row, i)?,
            C::FinishedAt => job.finished_at = time(row, i)?,
            C::RunAfter => job.run_after = time(row, i)?,
            C::WorkerId => job.worker_id = text(row, i)?,
            C::LeaseExpiresAt => job.lease_expires_at = time(row, i)?,
            C::HeartbeatAt => job.heartbeat_at = time(row, i)?,
            C::TraceParent => job.trace_parent = text(row, i)?,
            C::ReuseKey => job.reuse_key = text(row, i)?,
            C::ReusedFrom => job.reused_from = row.try_get_by_index(i)?,
            C::WorkflowId => job.workflow_id = row.try_get_by_index(i)?,
            C::WorkflowStep => job.workflow_step = text(row, i)?,
            C::WorkflowItem => job.workflow_item = row.try_get_by_index(i)?,
        }
    }
    Ok(job)
}

/// A user whose columns a row holds in the entity's order, from position `from` on (a history
/// page's submitters, joined to its jobs).
pub fn read_user(row: &QueryResult, from: usize) -> Result<user::Model, DbErr> {
    use user::Column as C;
    let mut user = user::Model {
        id: UserId(Uuid::nil()),
        email: String::new(),
        display_name: String::new(),
        is_platform_admin: false,
        is_pending: false,
        created_at: DateTime::<Utc>::default(),
        subject: None,
    };
    for (i, column) in user::Column::iter().enumerate() {
        let i = from + i;
        match column {
            C::Id => user.id = UserId(value(row, i)?),
            C::Email => user.email = required(text(row, i)?, i)?,
            C::DisplayName => user.display_name = required(text(row, i)?, i)?,
            C::IsPlatformAdmin => user.is_platform_admin = value(row, i)?,
            C::IsPending => user.is_pending = value(row, i)?,
            C::CreatedAt => user.created_at = required(time(row, i)?, i)?,
            C::Subject => user.subject = text(row, i)?,
        }
    }
    Ok(user)
}

/// The value at position `i` of `row`. sqlx checks a value's column against the types it takes
/// for the value's type: for text, it builds the list of the six types it takes anew for every
/// value, and that check cost more than all the rest of a history page's row decoding; uuids,
/// integers and times cost less, but still most of their decoding. This module reads the
/// `jobs` and `users` columns of this crate's own statements, of the types its migrations
/// create, so on PostgreSQL the value is taken as the server sent it, without the check; a
/// value of another size still fails to decode.
fn value<T>(row: &QueryResult, i: usize) -> Result<T, DbErr>
where
    T: TryGetable + for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    match row.try_as_pg_row() {
        Some(pg) => sqlx::Row::try_get_unchecked(pg, i)
            .map_err(|err| DbErr::Type(format!("column {i}: {err}"))),
        None => row.try_get_by_index(i),
    }
}

/// The text at position `i` of `row`, or NULL.
fn text(row: &QueryResult, i: usize) -> Result<Option<String>, DbErr> {
    value(row, i)
}

/// The `timestamptz` at position `i` of `row`, or NULL. PostgreSQL sends it as the microseconds
/// since 2000-01-01 UTC; sqlx turns them into a time through chrono's calendar arithmetic, which
/// cost more than the rest of a history page's row, where the count of microseconds since 1970 is
/// the time itself. A time outside chrono's range (PostgreSQL's infinities) fails to decode.
fn time(row: &QueryResult, i: usize) -> Result<Option<DateTime<Utc>>, DbErr> {
    use sea_orm::sqlx::ValueRef as _;
    use sea_orm::sqlx::postgres::PgValueFormat;
    /// 2000-01-01 less 1970-01-01, in microseconds.
    const FROM_1970: i64 = 946_684_800_000_000;
    let Some(pg) = row.try_as_pg_row() else {
        return row.try_get_by_index(i);
    };
    let raw =
        sqlx::Row::try_get_raw(pg, i).map_err(|err| DbErr::Type(format!("column {i}: {err}")))?;
    if raw.is_null() {
        return Ok(None);
    }
    if raw.format() != PgValueFormat::Binary {
        return value(row, i);
    }
    raw.as_bytes()
        .ok()
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .and_then(|bytes| i64::from_be_bytes(bytes).checked_add(FROM_1970))
        .and_then(DateTime::from_timestamp_micros)
        .map(Some)
        .ok_or_else(|| DbErr::Type(format!("column {i}: not a time chrono can hold")))
}

/// A value of a column that is never NULL.
fn required<T>(value: Option<T>, i: usize) -> Result<T, DbErr> {
    value.ok_or_else(|| DbErr::Type(format!("column {i} is NULL")))
}

/// The variant of an enumeration stored by its name at position `i` of `row`, never NULL. On
/// PostgreSQL the name is read where the row holds it and copied into `scratch` (sea-orm looks
/// names up as `String`s), so the columns of a row share one string instead of one each.
fn named_at<E: sea_orm::ActiveEnum<Value = String>>(
    row: &QueryResult,
    i: usize,
    scratch: &mut String,
) -> Result<E, DbErr> {
    let Some(pg) = row.try_as_pg_row() else {
        return named(required(text(row, i)?, i)?);
    };
    let name: &str = sqlx::Row::try_get_unchecked(pg, i)
        .map_err(|err| DbErr::Type(format!("column {i}: {err}")))?;
    scratch.clear();
    scratch.push_str(name);
    E::try_from_value(scratch)
}

/// The variant of an enumeration stored by its name.
fn named<E: sea_orm::ActiveEnum<Value = String>>(name: String) -> Result<E, DbErr> {
    E::try_from_value(&name)
}
