//! Job rows as the queue reads them back: every column, in the entity's order, from the
//! `RETURNING` of a claim or a completion group.
//!
//! A worker reads each job it runs twice (claimed and completed), a thousand at a time, while
//! the writing transaction waits for it. sea-orm's generic decoding finds each column by name
//! and, for every NULL column, formats an error message that it then drops; on PostgreSQL the
//! rows are instead read by position, once the first row's columns are seen to be the expected
//! ones. Anything else (SQLite, or columns in an unexpected order) goes through sea-orm.

use entity::job::{self, JobStatus, ParentKind, Visibility};
use sea_orm::sqlx::postgres::PgRow;
use sea_orm::sqlx::{Column as _, Row as _};
use sea_orm::{ActiveEnum, DbErr, FromQueryResult, Iterable as _, QueryResult};

/// The columns a statement returns for `decode`, in the entity's order.
pub fn returning() -> impl Iterator<Item = job::Column> {
    job::Column::iter()
}

/// The jobs of `rows`, which hold the columns of `returning`.
pub fn decode(rows: Vec<QueryResult>) -> Result<Vec<job::Model>, DbErr> {
    let by_position = rows
        .first()
        .and_then(QueryResult::try_as_pg_row)
        .is_some_and(in_entity_order);
    rows.iter()
        .map(|row| match row.try_as_pg_row() {
            Some(pg) if by_position => from_pg_row(pg).map_err(|err| DbErr::Type(err.to_string())),
            _ => job::Model::from_query_result(row, ""),
        })
        .collect()
}

fn in_entity_order(row: &PgRow) -> bool {
    use sea_orm::IdenStatic as _;
    let columns = row.columns();
    columns.len() == returning().count()
        && columns
            .iter()
            .zip(returning())
            .all(|(column, expected)| column.name() == expected.as_str())
}

/// One job from a PostgreSQL row whose columns are in the entity's order.
fn from_pg_row(row: &PgRow) -> Result<job::Model, sea_orm::sqlx::Error> {
    let mut positions = 0..;
    let mut at = || positions.next().unwrap_or_default();
    // Fields in declaration order: a struct expression evaluates its fields as written.
    Ok(job::Model {
        id: row.try_get(at())?,
        workspace_id: row.try_get(at())?,
        submitter_id: row.try_get(at())?,
        tool: row.try_get(at())?,
        tool_version: row.try_get(at())?,
        name: row.try_get(at())?,
        status: enum_value::<JobStatus>(row.try_get(at())?)?,
        stage: row.try_get(at())?,
        progress: row.try_get(at())?,
        inputs: row.try_get(at())?,
        settings: row.try_get(at())?,
        result: row.try_get(at())?,
        error_message: row.try_get(at())?,
        error_code: row.try_get(at())?,
        attempt: row.try_get(at())?,
        max_attempts: row.try_get(at())?,
        credit_cost: row.try_get(at())?,
        refunded: row.try_get(at())?,
        visibility: enum_value::<Visibility>(row.try_get(at())?)?,
        priority: row.try_get(at())?,
        parent_id: row.try_get(at())?,
        parent_kind: row
            .try_get::<Option<String>, _>(at())?
            .map(enum_value::<ParentKind>)
            .transpose()?,
        batch_id: row.try_get(at())?,
        idempotency_key: row.try_get(at())?,
        request_fingerprint: row.try_get(at())?,
        resources: row.try_get(at())?,
        created_at: row.try_get(at())?,
        updated_at: row.try_get(at())?,
        queued_at: row.try_get(at())?,
        started_at: row.try_get(at())?,
        finished_at: row.try_get(at())?,
        run_after: row.try_get(at())?,
        worker_id: row.try_get(at())?,
        lease_expires_at: row.try_get(at())?,
        heartbeat_at: row.try_get(at())?,
    })
}

fn enum_value<E: ActiveEnum<Value = String>>(value: String) -> Result<E, sea_orm::sqlx::Error> {
    E::try_from_value(&value).map_err(|err| sea_orm::sqlx::Error::Decode(err.to_string().into()))
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

/// `RETURNING` with the columns of `returning`, of the table named `table` in the statement.
pub fn returning_sql(table: &str) -> String {
    use sea_orm::IdenStatic as _;
    let columns: Vec<String> = returning()
        .map(|column| format!("{table}.{}", column.as_str()))
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
    pub fn ids(&self) -> Result<Vec<uuid::Uuid>, DbErr> {
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
