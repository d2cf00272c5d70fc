//! The credit ledger: append-only entries, each moving a workspace balance.
//!
//! `append` (and `append_all`, for many entries at once) is the only writer of balances. It moves the balance with one guarded UPDATE (the
//! balance never goes below zero, whatever runs concurrently) and records the entry in the same
//! transaction, so the balance always equals the sum of the ledger. A unique `(job_id, kind)`
//! index makes a second charge or refund of one job impossible.
//!
//! No balance exceeds `Credits::MAX`: only grants and adjustments add credits of their own, and
//! they are refused when the balance plus what unfinished jobs hold (which a refund may give
//! back) would go above it. Charges keep that sum, refunds keep it, and finished jobs lower it.

use entity::credit_transaction::{self, TransactionKind};
use entity::ids::{JobId, TransactionId, UserId, WorkspaceId};
use entity::job::{self, JobStatus};
use entity::workspace;
use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, Order, QueryFilter, QuerySelect,
    Set,
};
use sea_orm::{FromQueryResult as _, QueryTrait as _, TryIntoModel as _};

use super::Credits;
use crate::access::{self, PlatformAction, Viewer, WorkspaceAccess, WorkspaceRef};
use crate::db;
use crate::error::{Error, Result, is_unique_violation};
use crate::pagination::{self, Page, PageArgs};

/// What a new ledger entry records.
#[derive(Debug, Clone)]
pub struct Entry {
    pub workspace_id: WorkspaceId,
    pub kind: TransactionKind,
    /// Signed: positive adds credits.
    pub amount: i64,
    pub actor_id: Option<UserId>,
    pub job_id: Option<JobId>,
    pub note: Option<String>,
}

/// Appends an entry inside the caller's transaction and moves the balance. It takes a
/// transaction, not any connection: the balance move and the entry stand or fall together.
///
/// INSUFFICIENT_CREDITS if the balance would go below zero; CONFLICT if the job already has an
/// entry of this kind.
#[tracing::instrument(
    target = "jobgraph::spans",
    level = "debug",
    name = "ledger.append",
    skip_all
)]
pub async fn append(
    tx: &crate::db::Transaction,
    entry: Entry,
) -> Result<(credit_transaction::Model, workspace::Model)> {
    let (mut records, workspace) = append_all(tx, vec![entry]).await?;
    let record = records.pop().expect("one entry was appended");
    Ok((record, workspace))
}

/// Appends entries of one workspace, in order, inside the caller's transaction, and moves its
/// balance once by their sum: one guarded UPDATE, one multi-row INSERT (each entry with the
/// balance after it; on PostgreSQL the two are one statement) and one balance entry in the live
/// log, whatever their number. A batch of
/// jobs is charged this way.
///
/// INSUFFICIENT_CREDITS (for the sum) if the balance would go below zero; CONFLICT if a job
/// already has an entry of its kind. Entries of one sign never take any `balance_after` below
/// zero.
#[tracing::instrument(
    target = "jobgraph::spans",
    level = "debug",
    name = "ledger.append_all",
    skip_all
)]
pub async fn append_all(
    tx: &crate::db::Transaction,
    entries: Vec<Entry>,
) -> Result<(Vec<credit_transaction::Model>, workspace::Model)> {
    append_from(tx, entries, Source::Balance).await
}

/// What a move that takes credits takes them from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The balance above what running workflows reserve (`workspaces.credits_reserved`).
    Balance,
    /// What running workflows reserve: charges of their steps, which the caller has checked
    /// against their own workflow's reservation. The reservation shrinks with the balance.
    Reservation,
}

/// `append_all`, taking what the entries take from `source`.
pub async fn append_from(
    tx: &crate::db::Transaction,
    entries: Vec<Entry>,
    source: Source,
) -> Result<(Vec<credit_transaction::Model>, workspace::Model)> {
    moved(tx, entries, source, Held::No).await
}

/// `append_from` for a caller whose transaction holds the workspace's lock
/// (`workspaces::hold`): on PostgreSQL the move and its entries are then one statement.
pub async fn append_held(
    tx: &crate::db::Transaction,
    entries: Vec<Entry>,
    source: Source,
) -> Result<(Vec<credit_transaction::Model>, workspace::Model)> {
    moved(tx, entries, source, Held::Yes).await
}

/// Whether the caller's transaction holds the workspace's lock. The ledger is in the order of
/// its entries' ids, which are made as they are written: without the lock they are made once
/// the balance's UPDATE holds the row, so that they follow the order of the moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Yes,
    No,
}

async fn moved(
    tx: &crate::db::Transaction,
    entries: Vec<Entry>,
    source: Source,
    held: Held,
) -> Result<(Vec<credit_transaction::Model>, workspace::Model)> {
    let Some(workspace_id) = entries.first().map(|e| e.workspace_id) else {
        return Err(Error::Internal(anyhow::anyhow!(
            "no ledger entries to append"
        )));
    };
    if entries.iter().any(|e| e.workspace_id != workspace_id) {
        return Err(Error::Internal(anyhow::anyhow!(
            "ledger entries of one move must share their workspace"
        )));
    }
    let sum = entries
        .iter()
        .try_fold(0i64, |sum, e| sum.checked_add(e.amount))
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("ledger entries overflow their sum")))?;
    // The entries are not read back: their times are the database's, to the microsecond.
    let now = db::now();
    let balance = workspace::Column::CreditBalance;
    let reserved = workspace::Column::CreditsReserved;
    let mut update = workspace::Entity::update_many()
        .col_expr(balance, Expr::col(balance).add(sum))
        .col_expr(workspace::Column::UpdatedAt, Expr::value(now))
        .filter(workspace::Column::Id.eq(workspace_id))
        .filter(Expr::col(balance).add(sum).gte(0));
    update = match source {
        // What workflows reserve is not for other charges.
        Source::Balance if sum < 0 => {
            update.filter(Expr::col(balance).sub(Expr::col(reserved)).add(sum).gte(0))
        }
        Source::Balance => update,
        Source::Reservation => update
            .col_expr(reserved, Expr::col(reserved).add(sum))
            .filter(Expr::col(reserved).add(sum).gte(0)),
    };
    let one_statement =
        held == Held::Yes && crate::store::Dialect::of(tx) == crate::store::Dialect::Postgres;
    let moved = if one_statement {
        None
    } else {
        Some(update.clone().exec_with_returning(tx).await?)
    };
    let mut after = -sum;
    let rows: Vec<credit_transaction::ActiveModel> = entries
        .into_iter()
        .map(|entry| {
            after += entry.amount;
            credit_transaction::ActiveModel {
                id: Set(TransactionId::new()),
                workspace_id: Set(workspace_id),
                kind: Set(entry.kind),
                amount: Set(entry.amount),
                // Until the balance is known: what the entry adds to the balance before the move.
                balance_after: Set(after),
                actor_id: Set(entry.actor_id),
                job_id: Set(entry.job_id),
                note: Set(entry.note),
                created_at: Set(now),
            }
        })
        .collect();
    let unique = |err: sea_orm::DbErr| {
        if is_unique_violation(&err) {
            Error::conflict("this job already has a ledger entry of this kind")
        } else {
            Error::from(err)
        }
    };
    let moved = match moved {
        Some(moved) => moved,
        // The move and its entries in one statement.
        None => {
            let statement = moved_with_entries(update.into_query(), &rows)?;
            let moved = tx.query_all_raw(statement).await.map_err(unique)?;
            moved
                .iter()
                .map(|row| workspace::Model::from_query_result(row, ""))
                .collect::<std::result::Result<Vec<_>, _>>()?
        }
    };
    let Some(workspace) = moved.into_iter().next() else {
        let current = workspace::Entity::find_by_id(workspace_id)
            .one(tx)
            .await?
            .ok_or(Error::NotFound("workspace"))?;
        return Err(Error::InsufficientCredits {
            needed: -sum,
            balance: match source {
                Source::Balance => current.credit_balance - current.credits_reserved,
                Source::Reservation => current.credits_reserved,
            },
        });
    };
    // Every column is given and the database adds nothing: the entries are not read back.
    let records = rows
        .into_iter()
        .map(|mut row| {
            row.balance_after = Set(workspace.credit_balance + row.balance_after.as_ref());
            row
        })
        .collect::<Vec<_>>();
    if !one_statement {
        for chunk in records.chunks(ENTRIES_PER_INSERT) {
            credit_transaction::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(tx)
                .await
                .map_err(unique)?;
        }
    }
    let records = records
        .into_iter()
        .map(|row| row.try_into_model())
        .collect::<std::result::Result<Vec<credit_transaction::Model>, sea_orm::DbErr>>()?;
    let entry_ids: Vec<TransactionId> = records.iter().map(|record| record.id).collect();
    crate::live::balance_moved(tx, workspace.id, workspace.credit_balance, &entry_ids).await?;
    Ok((records, workspace))
}

/// PostgreSQL's form of a ledger move: `update` (the guarded balance UPDATE) and the INSERT of
/// `rows` as one statement, the rows travelling as arrays (`store::arrays`) so that its text is
/// the same for any number of them. Each row's `balance_after` holds what it adds to the balance
/// from before the move; the statement adds the balance after the move. It returns the
/// workspace as moved, or no row (and writes no entry) when the guard refused the move.
fn moved_with_entries(
    mut update: sea_orm::sea_query::UpdateStatement,
    rows: &[credit_transaction::ActiveModel],
) -> Result<sea_orm::Statement> {
    use credit_transaction::Column as C;
    use sea_orm::sea_query::PostgresQueryBuilder;
    use sea_orm::{DatabaseBackend, IdenStatic as _, Iterable as _};
    update.returning_all();
    let (update, values) = update.build(PostgresQueryBuilder);
    let mut values = values.0;
    let columns: Vec<C> = C::iter().collect();
    let entries = crate::store::arrays(rows.to_vec(), &columns, values.len() + 1)?;
    values.extend(entries.values);
    let select: Vec<String> = columns
        .iter()
        .zip(entries.columns)
        .map(|(column, value)| match column {
            C::BalanceAfter => format!("moved.credit_balance + {value}"),
            _ => value,
        })
        .collect();
    let names: Vec<&str> = columns.iter().map(|c| c.as_str()).collect();
    let sql = format!(
        "WITH moved AS ({update}), \
         entries AS (INSERT INTO credit_transactions ({}) SELECT {} FROM moved, {}) \
         SELECT * FROM moved",
        names.join(", "),
        select.join(", "),
        entries.from
    );
    Ok(sea_orm::Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        sql,
        values,
    ))
}

/// Sets `amount` credits of a workspace's balance aside for a workflow's steps, in the
/// caller's transaction: other charges may no longer take them. INSUFFICIENT_CREDITS when the
/// balance above what is already reserved is smaller.
pub async fn reserve(
    tx: &crate::db::Transaction,
    workspace_id: WorkspaceId,
    amount: i64,
) -> Result<workspace::Model> {
    let balance = workspace::Column::CreditBalance;
    let reserved = workspace::Column::CreditsReserved;
    let moved = workspace::Entity::update_many()
        .col_expr(reserved, Expr::col(reserved).add(amount))
        .filter(workspace::Column::Id.eq(workspace_id))
        .filter(
            Expr::col(balance)
                .sub(Expr::col(reserved))
                .sub(amount)
                .gte(0),
        )
        .exec_with_returning(tx)
        .await?;
    match moved.into_iter().next() {
        Some(workspace) => Ok(workspace),
        None => {
            let current = workspace::Entity::find_by_id(workspace_id)
                .one(tx)
                .await?
                .ok_or(Error::NotFound("workspace"))?;
            Err(Error::InsufficientCredits {
                needed: amount,
                balance: current.credit_balance - current.credits_reserved,
            })
        }
    }
}

/// Gives back what is left of a workflow's reservation, in the caller's transaction.
pub async fn release(
    tx: &crate::db::Transaction,
    workspace_id: WorkspaceId,
    amount: i64,
) -> Result<()> {
    if amount == 0 {
        return Ok(());
    }
    let reserved = workspace::Column::CreditsReserved;
    let moved = workspace::Entity::update_many()
        .col_expr(reserved, Expr::col(reserved).sub(amount))
        .filter(workspace::Column::Id.eq(workspace_id))
        .filter(Expr::col(reserved).sub(amount).gte(0))
        .exec(tx)
        .await?;
    if moved.rows_affected != 1 {
        return Err(Error::Internal(anyhow::anyhow!(
            "the workspace reserves less than the {amount} credits a workflow gives back"
        )));
    }
    Ok(())
}

/// Ledger entries written by one INSERT: far below the parameter limits of both databases.
const ENTRIES_PER_INSERT: usize = 1000;

fn check_note(note: Option<String>, required: bool) -> Result<Option<String>> {
    let note = note.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    match &note {
        None if required => Err(Error::bad_input("note", "say why the balance is adjusted")),
        Some(n) if n.chars().count() > 500 => {
            Err(Error::bad_input("note", "must be at most 500 characters"))
        }
        _ => Ok(note),
    }
}

/// Gives credits to a workspace (platform administrators).
pub async fn grant(
    db: &DatabaseConnection,
    viewer: &Viewer,
    workspace_id: WorkspaceId,
    amount: i64,
    note: Option<String>,
) -> Result<(credit_transaction::Model, workspace::Model)> {
    if amount <= 0 || amount > Credits::MAX.get() {
        return Err(Error::bad_input(
            "amount",
            format!("must be a number of credits from 1 to {}", Credits::MAX),
        ));
    }
    record_by_admin(
        db,
        viewer,
        workspace_id,
        TransactionKind::Grant,
        amount,
        check_note(note, false)?,
    )
    .await
}

/// Corrects a balance up or down (platform administrators), with a note saying why.
pub async fn adjust(
    db: &DatabaseConnection,
    viewer: &Viewer,
    workspace_id: WorkspaceId,
    amount: i64,
    note: Option<String>,
) -> Result<(credit_transaction::Model, workspace::Model)> {
    if amount == 0 || amount.abs() > Credits::MAX.get() {
        return Err(Error::bad_input(
            "amount",
            format!(
                "must not be zero, and at most {} credits either way",
                Credits::MAX
            ),
        ));
    }
    record_by_admin(
        db,
        viewer,
        workspace_id,
        TransactionKind::Adjustment,
        amount,
        check_note(note, true)?,
    )
    .await
    .map_err(|err| match err {
        Error::InsufficientCredits { balance, .. } => {
            Error::InsufficientForAdjustment { amount, balance }
        }
        other => other,
    })
}

async fn record_by_admin(
    db: &DatabaseConnection,
    viewer: &Viewer,
    workspace_id: WorkspaceId,
    kind: TransactionKind,
    amount: i64,
    note: Option<String>,
) -> Result<(credit_transaction::Model, workspace::Model)> {
    if let Err(refused) = access::check_platform(viewer, PlatformAction::ManageCredits) {
        // Members learn only that they may not; others learn nothing about the workspace.
        WorkspaceAccess::load(db, viewer, workspace_id).await?;
        return Err(refused);
    }
    let tx = db::begin_write(db).await?;
    if amount > 0 {
        check_room(&tx, workspace_id, amount).await?;
    }
    let result = append(
        &tx,
        Entry {
            workspace_id,
            kind,
            amount,
            actor_id: viewer.user_id(),
            job_id: None,
            note,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(result)
}

/// BAD_USER_INPUT on `amount` unless the workspace can take `amount` more credits: its balance
/// plus what its unfinished jobs hold stays within `Credits::MAX`. The workspace row is locked
/// first, so a charge committed meanwhile is counted (it moved credits from the balance to what
/// is held) and a later one waits for this move.
async fn check_room(tx: &db::Transaction, workspace_id: WorkspaceId, amount: i64) -> Result<()> {
    let balance = crate::workspaces::lock(tx, workspace_id, crate::workspaces::Hold::Change)
        .await?
        .credit_balance;
    let held: i64 = job::Entity::find_in_workspace(workspace_id)
        .select_only()
        .expr(Expr::cust("CAST(COALESCE(SUM(credit_cost), 0) AS BIGINT)"))
        .filter(job::Column::Status.is_in(JobStatus::ACTIVE))
        .into_tuple()
        .one(tx)
        .await?
        .unwrap_or(0);
    let after = balance.saturating_add(held).saturating_add(amount);
    if after > Credits::MAX.get() {
        return Err(Error::bad_input(
            "amount",
            format!(
                "would bring the workspace to {after} credits ({balance} in its balance and \
                 {held} held by unfinished jobs, which get them back if they fail); a workspace \
                 holds at most {} credits",
                Credits::MAX
            ),
        ));
    }
    Ok(())
}

/// A workspace's ledger, newest first.
#[tracing::instrument(
    target = "jobgraph::spans",
    level = "debug",
    name = "ledger.list",
    skip_all
)]
pub async fn list(
    db: &impl ConnectionTrait,
    workspace: WorkspaceRef,
    page: PageArgs,
) -> Result<Page<credit_transaction::Model>> {
    pagination::fetch(
        db,
        credit_transaction::Entity::find_in_workspace(workspace.id),
        credit_transaction::Column::Id,
        Order::Desc,
        page,
    )
    .await
}
