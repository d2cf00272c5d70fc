//! Writing a workflow's step rows: all of them when it is submitted, then those a change of the
//! workflow touched. On PostgreSQL the rows travel as arrays (`db::column`), so each statement's
//! text is the same for any number of steps and stays prepared: a 1,000-step workflow is one
//! INSERT, and each change of its progress one UPDATE, instead of multi-row VALUES lists parsed
//! anew for every count of rows.
//!
//! `complete` settles the usual change, jobs of steps that completed, in the database itself:
//! one statement on PostgreSQL, three on SQLite, whatever the number of jobs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use entity::ids::{WorkflowId, WorkspaceId};
use entity::job;
use entity::workflow::WorkflowStatus;
use entity::workflow_step;
use sea_orm::{
    ActiveEnum as _, ConnectionTrait as _, DatabaseBackend, EntityTrait, IntoActiveModel as _,
    Statement,
};
use uuid::Uuid;

use super::definition::Checked;
use crate::db::{Transaction, column};
use crate::error::{Error, Result};
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

/// What `complete` left of a workflow.
pub(super) struct Completed {
    pub workspace_id: WorkspaceId,
    pub status: WorkflowStatus,
    /// Its steps that have not ended.
    pub steps_left: i32,
    /// The steps that waited for those completed and wait for nothing more, in name order:
    /// WAITING, without a job yet.
    pub ready: Vec<String>,
}

/// Records that the jobs `ended` of steps of the workflow `workflow_id` completed, whatever the
/// workflow's status: a RUNNING step whose job this is, or a mapped step's item, counts it; the
/// step is COMPLETED with its job, or with the last of its items. Each step that waits for a
/// step completed here waits for one fewer (`waiting_on`), and the workflow has one fewer step
/// left. `None` when the workflow is gone. The caller holds the workflow's workspace.
pub(super) async fn complete(
    tx: &Transaction,
    workflow_id: WorkflowId,
    checked: &Checked,
    ended: &[&job::Model],
    now: DateTime<Utc>,
) -> Result<Option<Completed>> {
    let ended: Vec<(&str, &job::Model)> = ended
        .iter()
        .filter_map(|job| Some((job.workflow_step.as_deref()?, *job)))
        .collect();
    let row = if Dialect::of(tx) == Dialect::Sqlite {
        complete_on_sqlite(tx, workflow_id, checked, &ended, now).await?
    } else {
        let mut names: Vec<&str> = ended.iter().map(|(name, _)| *name).collect();
        names.sort_unstable();
        names.dedup();
        // Every step that may wait for an ended one: the statement keeps those whose upstream
        // completed.
        let edges: Vec<(&str, &str)> = names
            .iter()
            .flat_map(|up| {
                checked
                    .dependents(up)
                    .iter()
                    .map(move |down| (*up, down.as_str()))
            })
            .collect();
        let values = vec![
            workflow_id.uuid().into(),
            column(ended.iter().map(|(name, _)| name.to_string())),
            column(ended.iter().map(|(_, job)| job.id.uuid())),
            column(ended.iter().map(|(_, job)| job.workflow_item.is_some())),
            column(edges.iter().map(|(up, _)| up.to_string())),
            column(edges.iter().map(|(_, down)| down.to_string())),
            now.into(),
        ];
        // Each step is reached from the list by its key (the LATERAL, fenced by OFFSET 0, keeps
        // that order whatever the table's statistics say), never by a scan of the workflow.
        let sql = "WITH e AS (SELECT s.name, count(*)::int4 AS n \
                   FROM unnest($2::text[], $3::uuid[], $4::bool[]) AS e (name, job_id, item) \
                   CROSS JOIN LATERAL (SELECT t.name, t.items, t.job_id FROM workflow_steps AS t \
                   WHERE t.workflow_id = $1 AND t.name = e.name AND t.status = 'RUNNING' \
                   OFFSET 0) AS s \
                   WHERE CASE WHEN s.items IS NULL THEN s.job_id = e.job_id ELSE e.item END \
                   GROUP BY s.name), \
                   done AS (UPDATE workflow_steps AS s SET \
                   items_left = CASE WHEN s.items IS NULL THEN s.items_left \
                   ELSE s.items_left - e.n END, \
                   status = CASE WHEN s.items IS NULL OR s.items_left <= e.n THEN 'COMPLETED' \
                   ELSE s.status END, updated_at = $7 \
                   FROM e WHERE s.workflow_id = $1 AND s.name = e.name \
                   RETURNING s.name, s.status), \
                   fed AS (SELECT d.down AS name, count(*)::int4 AS n \
                   FROM unnest($5::text[], $6::text[]) AS d (up, down) \
                   JOIN done ON done.name = d.up AND done.status = 'COMPLETED' \
                   GROUP BY d.down), \
                   woken AS (UPDATE workflow_steps AS s SET waiting_on = s.waiting_on - fed.n, \
                   updated_at = $7 FROM fed WHERE s.workflow_id = $1 AND s.name = fed.name \
                   RETURNING s.name, s.waiting_on, s.status), \
                   w AS (UPDATE workflows SET steps_left = steps_left \
                   - (SELECT count(*) FROM done WHERE status = 'COMPLETED')::int4, \
                   updated_at = $7 WHERE id = $1 RETURNING workspace_id, status, steps_left) \
                   SELECT w.workspace_id, w.status, w.steps_left, \
                   ARRAY(SELECT name FROM woken WHERE waiting_on = 0 AND status = 'WAITING') \
                   AS ready FROM w";
        let row = tx
            .query_one_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                sql,
                values,
            ))
            .await?;
        match row {
            Some(row) => Some((
                row.try_get::<Uuid>("", "workspace_id")?,
                row.try_get::<String>("", "status")?,
                row.try_get::<i32>("", "steps_left")?,
                row.try_get::<Vec<String>>("", "ready")?,
            )),
            None => None,
        }
    };
    let Some((workspace_id, status, steps_left, mut ready)) = row else {
        return Ok(None);
    };
    ready.sort_unstable();
    let status = <WorkflowStatus as sea_orm::ActiveEnum>::try_from_value(&status)
        .map_err(|err| Error::Internal(anyhow::anyhow!("a workflow's status: {err}")))?;
    Ok(Some(Completed {
        workspace_id: WorkspaceId(workspace_id),
        status,
        steps_left,
        ready,
    }))
}

/// `complete` on SQLite, which has no UPDATE in a WITH: the same changes in three statements,
/// the arrays as JSON (job ids as the hex of the bytes SQLite stores). Each UPDATE finds its
/// rows from the list (`CROSS JOIN` keeps that order) and reaches them by `rowid`, so it reads
/// only the steps named, not every step of the workflow.
async fn complete_on_sqlite(
    tx: &Transaction,
    workflow_id: WorkflowId,
    checked: &Checked,
    ended: &[(&str, &job::Model)],
    now: DateTime<Utc>,
) -> Result<Option<(Uuid, String, i32, Vec<String>)>> {
    let sqlite = |sql: &str, values: Vec<sea_orm::Value>| {
        Statement::from_sql_and_values(DatabaseBackend::Sqlite, sql, values)
    };
    let rows: Vec<serde_json::Value> = ended
        .iter()
        .map(|(name, job)| {
            serde_json::json!([
                name,
                job.id.simple().to_string(),
                job.workflow_item.is_some()
            ])
        })
        .collect();
    let done = tx
        .query_all_raw(sqlite(
            "UPDATE workflow_steps AS s SET \
             items_left = CASE WHEN s.items IS NULL THEN s.items_left \
             ELSE s.items_left - e.n END, \
             status = CASE WHEN s.items IS NULL OR s.items_left <= e.n THEN 'COMPLETED' \
             ELSE s.status END, updated_at = $2 \
             FROM (SELECT t.rowid AS id, count(*) AS n FROM json_each($3) AS j \
             CROSS JOIN workflow_steps AS t \
             ON t.workflow_id = $1 AND t.name = j.value ->> '$[0]' \
             WHERE t.status = 'RUNNING' AND CASE WHEN t.items IS NULL \
             THEN t.job_id = unhex(j.value ->> '$[1]') ELSE j.value ->> '$[2]' END \
             GROUP BY t.rowid) AS e \
             WHERE s.rowid = e.id \
             RETURNING name, status",
            vec![
                workflow_id.uuid().into(),
                now.into(),
                serde_json::Value::Array(rows).to_string().into(),
            ],
        ))
        .await?;
    let mut completed = Vec::new();
    for row in &done {
        if row.try_get::<String>("", "status")? == "COMPLETED" {
            completed.push(row.try_get::<String>("", "name")?);
        }
    }
    let mut fed: BTreeMap<&str, i32> = BTreeMap::new();
    for up in &completed {
        for down in checked.dependents(up) {
            *fed.entry(down.as_str()).or_default() += 1;
        }
    }
    let mut ready = Vec::new();
    if !fed.is_empty() {
        let fed: Vec<serde_json::Value> = fed
            .into_iter()
            .map(|(name, n)| serde_json::json!([name, n]))
            .collect();
        for row in tx
            .query_all_raw(sqlite(
                "UPDATE workflow_steps AS s SET waiting_on = s.waiting_on - e.n, updated_at = $2 \
                 FROM (SELECT t.rowid AS id, sum(j.value ->> '$[1]') AS n \
                 FROM json_each($3) AS j CROSS JOIN workflow_steps AS t \
                 ON t.workflow_id = $1 AND t.name = j.value ->> '$[0]' GROUP BY t.rowid) AS e \
                 WHERE s.rowid = e.id \
                 RETURNING name, waiting_on, status",
                vec![
                    workflow_id.uuid().into(),
                    now.into(),
                    serde_json::Value::Array(fed).to_string().into(),
                ],
            ))
            .await?
        {
            if row.try_get::<i32>("", "waiting_on")? == 0
                && row.try_get::<String>("", "status")? == "WAITING"
            {
                ready.push(row.try_get::<String>("", "name")?);
            }
        }
    }
    let workflow = tx
        .query_one_raw(sqlite(
            "UPDATE workflows SET steps_left = steps_left - $2, updated_at = $3 WHERE id = $1 \
             RETURNING workspace_id, status, steps_left",
            vec![
                workflow_id.uuid().into(),
                (completed.len() as i32).into(),
                now.into(),
            ],
        ))
        .await?;
    Ok(match workflow {
        Some(row) => Some((
            row.try_get::<Uuid>("", "workspace_id")?,
            row.try_get::<String>("", "status")?,
            row.try_get::<i32>("", "steps_left")?,
            ready,
        )),
        None => None,
    })
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
