//! Writing a workflow's step rows: all of them when it is submitted, then those a change of the
//! workflow touched. On PostgreSQL the rows travel as arrays (`db::column`), so each statement's
//! text is the same for any number of steps and stays prepared: a 1,000-step workflow is one
//! INSERT, and each change of its progress one UPDATE, instead of multi-row VALUES lists parsed
//! anew for every count of rows.

use entity::ids::WorkflowId;
use entity::workflow_step;
use sea_orm::{
    ActiveEnum as _, ConnectionTrait as _, DatabaseBackend, EntityTrait, IntoActiveModel as _,
    Statement,
};
use uuid::Uuid;

use crate::db::{Transaction, column};
use crate::error::Result;
use crate::store::{Dialect, ROWS_PER_INSERT};

/// Stands in for a NULL `items` in an array (a step runs over no negative count of items).
const NO_ITEMS: i32 = -1;

/// Writes the rows of a new workflow's steps.
pub(super) async fn insert(tx: &Transaction, rows: Vec<workflow_step::Model>) -> Result<()> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    if Dialect::of(tx) == Dialect::Sqlite {
        for chunk in rows.chunks(ROWS_PER_INSERT / 2) {
            workflow_step::Entity::insert_many(
                chunk.iter().cloned().map(|row| row.into_active_model()),
            )
            .exec(tx)
            .await?;
        }
        return Ok(());
    }
    let workflow_id = first.workflow_id;
    debug_assert!(rows.iter().all(|row| row.workflow_id == workflow_id));
    let mut values = vec![workflow_id.uuid().into()];
    values.extend([
        column(rows.iter().map(|row| row.name.clone())),
        column(rows.iter().map(|row| row.position)),
        column(rows.iter().map(|row| row.tool.clone())),
        column(rows.iter().map(|row| row.depends_on.clone())),
        column(rows.iter().map(|row| row.estimate)),
        column(rows.iter().map(|row| row.estimate_known)),
    ]);
    values.extend(progress(&rows));
    let sql = "INSERT INTO workflow_steps (workflow_id, name, position, tool, depends_on, \
               estimate, estimate_known, status, waiting_on, job_id, reason, updated_at, items, \
               items_left) \
               SELECT $1, v.name, v.position, v.tool, v.depends_on, v.estimate, v.estimate_known, \
               v.status, v.waiting_on, NULLIF(v.job_id, '00000000-0000-0000-0000-000000000000'), \
               CASE WHEN v.has_reason THEN v.reason END, v.updated_at, NULLIF(v.items, -1), \
               v.items_left \
               FROM unnest($2::text[], $3::int4[], $4::text[], $5::jsonb[], $6::int8[], \
               $7::bool[], $8::text[], $9::int4[], $10::uuid[], $11::bool[], $12::text[], \
               $13::timestamptz[], $14::int4[], $15::int4[]) AS v (name, position, tool, \
               depends_on, estimate, estimate_known, status, waiting_on, job_id, has_reason, \
               reason, updated_at, items, items_left)";
    run(tx, sql, values).await
}

/// Writes what a change of the workflow `workflow_id` set on the steps `rows`: their status,
/// counts, job, reason and time (their definition never changes).
pub(super) async fn update(
    tx: &Transaction,
    workflow_id: WorkflowId,
    rows: Vec<workflow_step::Model>,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    if Dialect::of(tx) == Dialect::Sqlite {
        use workflow_step::Column as S;
        for chunk in rows.chunks(ROWS_PER_INSERT / 2) {
            // Each row replaces the progress of the one of its name; the columns of its
            // definition stay (a step read without its dependencies carries them as JSON null).
            workflow_step::Entity::insert_many(
                chunk.iter().cloned().map(|row| row.into_active_model()),
            )
            .on_conflict(
                sea_orm::sea_query::OnConflict::columns([S::WorkflowId, S::Name])
                    .update_columns([
                        S::Status,
                        S::WaitingOn,
                        S::JobId,
                        S::Reason,
                        S::UpdatedAt,
                        S::Items,
                        S::ItemsLeft,
                    ])
                    .to_owned(),
            )
            .exec(tx)
            .await?;
        }
        return Ok(());
    }
    let mut values = vec![
        workflow_id.uuid().into(),
        column(rows.iter().map(|row| row.name.clone())),
    ];
    values.extend(progress(&rows));
    let sql = "UPDATE workflow_steps AS s SET status = v.status, waiting_on = v.waiting_on, \
               job_id = NULLIF(v.job_id, '00000000-0000-0000-0000-000000000000'), \
               reason = CASE WHEN v.has_reason THEN v.reason END, updated_at = v.updated_at, \
               items = NULLIF(v.items, -1), items_left = v.items_left \
               FROM unnest($2::text[], $3::text[], $4::int4[], $5::uuid[], $6::bool[], \
               $7::text[], $8::timestamptz[], $9::int4[], $10::int4[]) AS v (name, status, \
               waiting_on, job_id, has_reason, reason, updated_at, items, items_left) \
               WHERE s.workflow_id = $1 AND s.name = v.name";
    run(tx, sql, values).await
}

/// Runs one of these statements on PostgreSQL.
async fn run(tx: &Transaction, sql: &str, values: Vec<sea_orm::Value>) -> Result<()> {
    tx.execute_raw(Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        sql,
        values,
    ))
    .await?;
    Ok(())
}

/// The arrays of the columns a workflow's progress changes, in this order: status, waiting_on,
/// job_id (nil for none), has_reason, reason, updated_at, items (`NO_ITEMS` for none),
/// items_left.
fn progress(rows: &[workflow_step::Model]) -> [sea_orm::Value; 8] {
    [
        column(rows.iter().map(|row| row.status.to_value())),
        column(rows.iter().map(|row| row.waiting_on)),
        column(
            rows.iter()
                .map(|row| row.job_id.map_or(Uuid::nil(), |id| id.uuid())),
        ),
        column(rows.iter().map(|row| row.reason.is_some())),
        column(
            rows.iter()
                .map(|row| row.reason.clone().unwrap_or_default()),
        ),
        column(rows.iter().map(|row| row.updated_at)),
        column(rows.iter().map(|row| row.items.unwrap_or(NO_ITEMS))),
        column(rows.iter().map(|row| row.items_left)),
    ]
}
