//! The PostgreSQL forms of the store's statements: rows travel as arrays (`db::column`), so
//! each statement's text does not grow with its rows and stays prepared; a change and
//! the timeline rows and live entries it records are one statement.

use chrono::{DateTime, Utc};
use entity::job::{self, JobStatus};
use entity::live_event::{self, LiveKind};
use sea_orm::sea_query::{Expr, SimpleExpr};
use sea_orm::{
    ActiveEnum as _, ConnectionTrait, DatabaseBackend, DatabaseTransaction, DbErr, IdenStatic as _,
    Statement,
};
use uuid::Uuid;

use super::writes::Completion;
use super::{FACTS, LIVE_CHANNEL, QUEUED_CHANNEL, TIMELINE, rows};
use crate::db::{Transaction, column};
use crate::error::Result;

/// The advisory lock under which a committing transaction numbers its live entries: held until
/// the commit is visible, so numbers follow commit order.
const NUMBERING_LOCK: i64 = 7_202_611_230_010;

/// The advisory lock that makes claims under limits take turns.
const CLAIM_LOCK: i64 = 7_202_611_230_020;

/// How a claim's transaction plans its reads: the head of the queue is read in claim order
/// from `idx_jobs_claim`, however few QUEUED jobs the table's statistics promise, and the
/// claimed jobs are then found by id through the primary key.
/// Left to those statistics, which a queue outdates all the time (and which a server without
/// autovacuum never gathers), the planner may gather every QUEUED job and sort them, and then
/// each claim costs the whole queue: 21 ms at 20,000 queued jobs instead of 0.5 ms. Asked for a
/// few hundred jobs by id, it also prefers reading the whole table while the table is young
/// (below about 200,000 jobs) over that many index lookups.
/// That plan does not depend on the parameters, so it is planned once per connection and kept
/// (`plan_cache_mode`): planned anew, the claim's UPDATE took about 1 ms to plan, and PostgreSQL
/// kept doing so on most connections.
pub(super) const CLAIM_PLAN: &str = "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off; SET LOCAL enable_seqscan = off; SET LOCAL plan_cache_mode = force_generic_plan";

pub(super) async fn claim_in_turn(tx: &Transaction) -> Result<()> {
    tx.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({CLAIM_LOCK})"))
        .await?;
    Ok(())
}

/// `jobs.id = ANY(ARRAY(head))`: the head is read first, and the claimed rows are then reached
/// through the primary key. As `IN (head)`, PostgreSQL joins the head with every QUEUED job,
/// which made each claim read the whole queue (25 ms at 40,000 queued jobs, however few it
/// claimed).
pub(super) fn head_ids(head: sea_orm::sea_query::SelectStatement) -> SimpleExpr {
    Expr::cust_with_expr(
        r#""jobs"."id" = ANY(ARRAY $1)"#,
        Expr::SubQuery(None, Box::new(head.into())),
    )
}

/// Queues the notification of queued jobs, sent at commit and folded into one per transaction:
/// for a transaction without live entries, whose statement sends it otherwise.
pub(super) async fn announce_queued(tx: &DatabaseTransaction) -> std::result::Result<(), DbErr> {
    let mark = super::process_mark();
    tx.execute_unprepared(&format!("NOTIFY {QUEUED_CHANNEL}, '{mark}'"))
        .await?;
    Ok(())
}

/// The UPDATE of `store::renew_all`: the held attempts travel as two arrays, joined to their
/// rows by primary key.
pub(super) fn renew_all(
    held: &[(entity::ids::JobId, i32)],
    now: DateTime<Utc>,
    expires: DateTime<Utc>,
) -> Statement {
    let processing = JobStatus::Processing.to_value();
    Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        format!(
            "UPDATE jobs SET lease_expires_at = $1, heartbeat_at = $2 \
             FROM unnest($3::uuid[], $4::int4[]) AS held(id, attempt) \
             WHERE jobs.id = held.id AND jobs.attempt = held.attempt \
             AND jobs.status = '{processing}' RETURNING jobs.id"
        ),
        [
            expires.into(),
            now.into(),
            column(held.iter().map(|(id, _)| id.uuid())),
            column(held.iter().map(|(_, attempt)| *attempt)),
        ],
    )
}

/// The one UPDATE that writes `reports` (at most one per attempt), each only while its job is
/// PROCESSING in the attempt its runner saw, returning the rows it changed. The reports travel
/// as arrays; absent values as a stand-in and a flag.
pub(super) fn reporting(reports: &[super::Report<'_>], now: DateTime<Utc>) -> Statement {
    let processing = JobStatus::Processing.to_value();
    Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        format!(
            "UPDATE jobs SET updated_at = $1, \
             progress = CASE WHEN r.has_progress THEN r.progress ELSE jobs.progress END, \
             stage = CASE WHEN r.has_stage THEN r.stage ELSE jobs.stage END \
             FROM unnest($2::uuid[], $3::int4[], $4::bool[], $5::float8[], $6::bool[], \
             $7::text[]) AS r(id, attempt, has_progress, progress, has_stage, stage) \
             WHERE jobs.id = r.id AND jobs.attempt = r.attempt AND jobs.status = '{processing}' \
             AND jobs.id = ANY($2::uuid[]) {}",
            rows::returning_sql("jobs")
        ),
        [
            now.into(),
            column(reports.iter().map(|r| r.job.id.uuid())),
            column(reports.iter().map(|r| r.job.attempt)),
            column(reports.iter().map(|r| r.progress.is_some())),
            column(
                reports
                    .iter()
                    .map(|r| r.progress.map_or(0.0, super::clamped)),
            ),
            column(reports.iter().map(|r| r.stage.is_some())),
            column(
                reports
                    .iter()
                    .map(|r| r.stage.unwrap_or_default().to_owned()),
            ),
        ],
    )
}

/// Inserts new jobs, their keys and the timeline rows `timeline` (with their `messages`) in one
/// statement, whatever their number: the rows travel as arrays (`arrays`), so the statement's
/// text depends only on which columns all the jobs share, stays prepared, and PostgreSQL plans
/// it once instead of a VALUES list of 40 parameters a row.
pub(super) async fn insert_jobs(
    tx: &Transaction,
    new: Vec<job::ActiveModel>,
    timeline: &[job::Model],
    messages: Vec<Option<String>>,
    now: DateTime<Utc>,
) -> Result<()> {
    use sea_orm::Iterable as _;
    let columns: Vec<job::Column> = job::Column::iter().collect();
    let Arrays {
        from,
        columns: select,
        mut values,
    } = arrays(new, &columns, 1)?;
    let (events, event_values) = timeline_rows(timeline, messages, now, values.len() + 1);
    values.extend(event_values);
    let names: Vec<&str> = columns.iter().map(|c| c.as_str()).collect();
    let sql = format!(
        "WITH inserted AS (INSERT INTO jobs ({}) SELECT {} FROM {from} \
         RETURNING id, workspace_id, tool, submitter_id), \
         keys AS (INSERT INTO job_keys (job_id, workspace_id, tool, submitter_id) \
         SELECT id, workspace_id, tool, submitter_id FROM inserted) \
         {events}",
        names.join(", "),
        select.join(", ")
    );
    execute(tx, sql, values).await
}

/// Runs a statement of this file's.
async fn execute(tx: &Transaction, sql: String, values: Vec<sea_orm::Value>) -> Result<()> {
    tx.execute_raw(Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        sql,
        values,
    ))
    .await?;
    Ok(())
}

/// Rows as arrays, for a statement whose text does not grow with their number.
pub(crate) struct Arrays {
    /// `unnest(...) WITH ORDINALITY AS r (...)`: one row `r` per row given, `r.ord` its place
    /// among them from 1.
    pub from: String,
    /// Each column's value in `r`, in the order the columns were given: NULL where the row's
    /// is.
    pub columns: Vec<String>,
    /// The arrays and the scalars, as parameters numbered from the `first` given to `arrays`.
    pub values: Vec<sea_orm::Value>,
}

/// `rows`' values of `columns` as `Arrays`, with parameters numbered from `first`. Arrays
/// travel without NULLs: the first parameter is one bitmask per row of which columns are NULL
/// in it (bit `i` for `columns[i]`). Every row gives every column; the values are moved out of
/// the rows, not copied.
///
/// A column that holds one value in every row (the workspace of a batch's jobs, their times,
/// a column NULL in all of them) travels as that one value instead of an array of copies:
/// PostgreSQL decodes each element of a bound array, so a batch of a thousand jobs bound some
/// forty thousand elements where a few thousand differ. The statement's text therefore names
/// which columns are alike; a workload has few such shapes (one for single rows), each
/// prepared once per connection.
pub(crate) fn arrays<A: sea_orm::ActiveModelTrait>(
    mut rows: Vec<A>,
    columns: &[<A::Entity as sea_orm::EntityTrait>::Column],
    first: usize,
) -> Result<Arrays> {
    let count = rows.len();
    columns_as_arrays(count, taken(&mut rows, columns)?, first)
}

/// `columns`' values in every row of `rows`, by column, moved out of the rows.
fn taken<'c, A: sea_orm::ActiveModelTrait>(
    rows: &mut [A],
    columns: &'c [<A::Entity as sea_orm::EntityTrait>::Column],
) -> Result<Vec<(&'c str, Vec<sea_orm::Value>)>> {
    columns
        .iter()
        .map(|column| {
            let name = column.as_str();
            let values = rows
                .iter_mut()
                .map(|row| {
                    row.take(*column)
                        .into_value()
                        .ok_or_else(|| internal(format!("a row gives no {name}")))
                })
                .collect::<Result<Vec<_>>>()?;
            Ok((name, values))
        })
        .collect()
}

/// A row that `arrays` cannot send: a fault of its caller.
fn internal(what: String) -> crate::error::Error {
    crate::error::Error::Internal(anyhow::anyhow!(what))
}

/// `arrays` of `count` rows given as columns: each column's name (in `r`) and its value in
/// every row.
fn columns_as_arrays(
    count: usize,
    columns: Vec<(&str, Vec<sea_orm::Value>)>,
    first: usize,
) -> Result<Arrays> {
    use sea_orm::Value as V;
    use sea_orm::sea_query::ArrayType;
    if columns.len() > 63 {
        return Err(internal(format!(
            "{} columns do not fit a NULL mask",
            columns.len()
        )));
    }
    let mut nulls = vec![0i64; count];
    // The NULL mask is parameter `first`; the others follow in the columns' order.
    let mut values = vec![V::BigInt(None)];
    let mut unnest = Vec::with_capacity(columns.len());
    let mut names = Vec::with_capacity(columns.len());
    let mut select = Vec::with_capacity(columns.len());
    for (i, (name, taken)) in columns.into_iter().enumerate() {
        debug_assert_eq!(taken.len(), count, "{name} has a value in every row");
        let bit = 1i64 << i;
        let parameter = first + values.len();
        if let Some(one) = taken.first().filter(|one| taken.iter().all(|v| v == *one)) {
            let sql_type = sql_type(one).ok_or_else(|| {
                internal(format!("{name} holds {one:?}, not sent as a parameter"))
            })?;
            select.push(format!("${parameter}::{sql_type}"));
            values.push(one.clone());
            continue;
        }
        let mut kind = None;
        let mut elements = Vec::with_capacity(count);
        for (value, mask) in taken.into_iter().zip(&mut nulls) {
            let mut null = || *mask |= bit;
            // The value, or in its place a stand-in of its type and the row's NULL bit.
            macro_rules! given {
                ($variant:ident, $value:expr, $stand_in:expr) => {
                    V::$variant(Some($value.unwrap_or_else(|| {
                        null();
                        $stand_in
                    })))
                };
            }
            let sql_type = sql_type(&value);
            let element = match value {
                V::Uuid(v) => given!(Uuid, v, Uuid::nil()),
                V::String(v) => given!(String, v, String::new()),
                V::Json(v) => given!(Json, v, Box::new(serde_json::Value::Null)),
                V::ChronoDateTimeUtc(v) => given!(ChronoDateTimeUtc, v, DateTime::UNIX_EPOCH),
                V::Int(v) => given!(Int, v, 0),
                V::BigInt(v) => given!(BigInt, v, 0),
                V::Double(v) => given!(Double, v, 0.0),
                V::Bool(v) => given!(Bool, v, false),
                other => {
                    return Err(internal(format!(
                        "{name} holds {other:?}, not sent as an array"
                    )));
                }
            };
            kind = sql_type.map(|sql_type| (sql_type, element.array_type()));
            elements.push(element);
        }
        // With no rows, any type does: the statement writes nothing.
        let (sql_type, array_type) = kind.unwrap_or(("text", ArrayType::String));
        values.push(V::Array(array_type, Some(Box::new(elements))));
        unnest.push(format!("${parameter}::{sql_type}[]"));
        names.push(name);
        select.push(format!("CASE WHEN r.nulls & {bit} = 0 THEN r.{name} END"));
    }
    values[0] = column(nulls);
    let names: String = names.iter().map(|name| format!(", {name}")).collect();
    let unnest: String = unnest.iter().map(|array| format!(", {array}")).collect();
    Ok(Arrays {
        from: format!("unnest(${first}::int8[]{unnest}) WITH ORDINALITY AS r (nulls{names}, ord)"),
        columns: select,
        values,
    })
}

/// The PostgreSQL type a value of `arrays`' columns travels as.
fn sql_type(value: &sea_orm::Value) -> Option<&'static str> {
    use sea_orm::Value as V;
    Some(match value {
        V::Uuid(_) => "uuid",
        V::String(_) => "text",
        V::Json(_) => "jsonb",
        V::ChronoDateTimeUtc(_) => "timestamptz",
        V::Int(_) => "int4",
        V::BigInt(_) => "int8",
        V::Double(_) => "float8",
        V::Bool(_) => "bool",
        _ => return None,
    })
}

/// The `FACTS` of the job entries among live entries, for `numbered_insert` to build their
/// `data` from: the facts alike in all of them (a batch's tool, submitter, batch and time) as
/// one JSON object, sent once, and the others (such as each job's name) as columns.
struct Facts {
    /// The facts alike in every job entry.
    common: serde_json::Value,
    /// The keys of the facts that differ, in the order of their columns.
    keys: Vec<&'static str>,
}

/// The columns `Facts::of` gives for the entries' rows.
type FactColumns = Vec<(&'static str, Vec<sea_orm::Value>)>;

impl Facts {
    /// The facts of `entries` (those of the job entries), and their columns: the `given` flag
    /// of each entry (a job's, with facts), then a column of each fact that differs, NULL in
    /// the entries that are not jobs'. None when no entry is a job's.
    fn of(entries: Vec<Option<Vec<sea_orm::Value>>>) -> Option<(Facts, FactColumns)> {
        const NAMES: [&str; FACTS.len()] =
            ["fact_0", "fact_1", "fact_2", "fact_3", "fact_4", "fact_5"];
        let first = entries.iter().flatten().next()?.clone();
        let alike: Vec<bool> = (0..FACTS.len())
            .map(|i| entries.iter().flatten().all(|facts| facts[i] == first[i]))
            .collect();
        let mut common = serde_json::Map::new();
        let mut keys = Vec::new();
        let mut by_fact = Vec::new();
        for (i, ((key, _), value)) in FACTS.iter().zip(&first).enumerate() {
            if alike[i] {
                common.insert((*key).to_owned(), super::fact_json(value));
            } else {
                keys.push(*key);
                by_fact.push((NAMES[i], i, Vec::with_capacity(entries.len())));
            }
        }
        let mut given = Vec::with_capacity(entries.len());
        for facts in entries {
            given.push(sea_orm::Value::Bool(Some(facts.is_some())));
            for (_, i, column) in &mut by_fact {
                column.push(match &facts {
                    Some(facts) => facts[*i].clone(),
                    None => first[*i].as_null(),
                });
            }
        }
        let mut columns = vec![("facts_given", given)];
        columns.extend(by_fact.into_iter().map(|(name, _, values)| (name, values)));
        let common = serde_json::Value::Object(common);
        Some((Facts { common, keys }, columns))
    }

    /// The `data` of a row: its facts for a job's entry, `data` otherwise. `of_row` are
    /// `columns`' expressions, `common` the parameter of `common`.
    fn data(&self, of_row: &[String], data: &str, common: usize) -> String {
        let mut facts = format!("${common}::jsonb");
        if !self.keys.is_empty() {
            let differing: Vec<String> = self
                .keys
                .iter()
                .zip(&of_row[1..])
                .map(|(key, value)| format!("'{key}', {value}"))
                .collect();
            facts = format!("{facts} || jsonb_build_object({})", differing.join(", "));
        }
        format!("CASE WHEN {} THEN {facts} ELSE {data} END", of_row[0])
    }
}

/// The `job_events` columns a timeline row takes from its job (`TIMELINE`), comma-separated.
fn timeline_columns() -> String {
    TIMELINE
        .iter()
        .map(|(event, _)| event.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The timeline rows of `jobs` (as they are in Rust), each with its message, in one statement
/// of fixed text.
pub(super) async fn insert_timeline(
    tx: &Transaction,
    jobs: &[job::Model],
    messages: Vec<Option<String>>,
    now: DateTime<Utc>,
) -> Result<()> {
    let (sql, values) = timeline_rows(jobs, messages, now, 1);
    execute(tx, sql, values).await
}

/// The INSERT of the timeline rows of `jobs`, each with its message, and its parameters, which
/// are numbered from `first`.
fn timeline_rows(
    jobs: &[job::Model],
    messages: Vec<Option<String>>,
    now: DateTime<Utc>,
    first: usize,
) -> (String, Vec<sea_orm::Value>) {
    use job::Column as C;
    // The job columns travel in `TIMELINE`'s order; a NULL stage or message as a flag.
    debug_assert_eq!(
        TIMELINE.map(|(_, c)| c.as_str()),
        [
            C::Id,
            C::WorkspaceId,
            C::Status,
            C::Stage,
            C::Progress,
            C::Attempt
        ]
        .map(|c| c.as_str())
    );
    let p: Vec<String> = (first..first + 11).map(|n| format!("${n}")).collect();
    let sql = format!(
        "INSERT INTO job_events (id, message, created_at, {}) \
         SELECT e.id, CASE WHEN e.noted THEN e.message END, {}, e.job_id, e.workspace_id, \
         e.status, CASE WHEN e.staged THEN e.stage END, e.progress, e.attempt \
         FROM unnest({}::text[], {}::bool[], {}::uuid[], {}::uuid[], {}::uuid[], {}::text[], \
         {}::bool[], {}::text[], {}::float8[], {}::int4[]) \
         AS e (message, noted, id, job_id, workspace_id, status, staged, stage, progress, \
         attempt)",
        timeline_columns(),
        p[1],
        p[0],
        p[10],
        p[2],
        p[3],
        p[4],
        p[5],
        p[6],
        p[7],
        p[8],
        p[9],
    );
    let values = vec![
        column(
            messages
                .iter()
                .map(|message| message.clone().unwrap_or_default()),
        ),
        now.into(),
        column(jobs.iter().map(|_| Uuid::now_v7())),
        column(jobs.iter().map(|job| job.id)),
        column(jobs.iter().map(|job| job.workspace_id)),
        column(jobs.iter().map(|job| job.status.to_value())),
        column(jobs.iter().map(|job| job.stage.is_some())),
        column(jobs.iter().map(|job| job.stage.clone().unwrap_or_default())),
        column(jobs.iter().map(|job| job.progress)),
        column(jobs.iter().map(|job| job.attempt)),
        column(messages.iter().map(Option::is_some)),
    ];
    (sql, values)
}

/// `update` (numbered parameters) wrapped so that it also inserts a timeline row and a live
/// entry for each job it returns, and still returns those jobs: neither costs a round trip, the
/// rows sent back to the database, nor client-side work while the transaction is open. The
/// event ids come from here (UUIDv7, in the writer's order, as every timeline row's id does),
/// paired with the changed rows in the order they come. The statement returns the columns
/// `returned` of them.
pub(super) fn with_timeline(
    update: Statement,
    message: Option<String>,
    now: DateTime<Utc>,
    at_most: usize,
    returned: &str,
) -> Statement {
    let mut values = update.values.map(|values| values.0).unwrap_or_default();
    let first = values.len() + 1;
    let from_job: Vec<String> = TIMELINE
        .iter()
        .map(|(_, job)| format!("c.{}", job.as_str()))
        .collect();
    let sql = format!(
        "WITH changed AS ({update}), \
         timeline AS (INSERT INTO job_events (id, message, created_at, {columns}) \
         SELECT e.id, ${message}, ${now}, {from_job} \
         FROM (SELECT changed.*, row_number() OVER () AS n FROM changed) AS c \
         JOIN unnest(${ids}::uuid[]) WITH ORDINALITY AS e (id, n) ON e.n = c.n), \
         {live} \
         SELECT {returned} FROM changed",
        update = update.sql,
        columns = timeline_columns(),
        from_job = from_job.join(", "),
        message = first,
        now = first + 1,
        ids = first + 2,
        live = entries_of_changed_jobs("changed", &format!("${}", first + 1)),
    );
    values.extend([
        message.into(),
        now.into(),
        column((0..at_most).map(|_| Uuid::now_v7())),
    ]);
    Statement::from_sql_and_values(DatabaseBackend::Postgres, sql, values)
}

/// The common table expressions that write the live entries of the jobs a statement changes,
/// from inside that statement: `changed` names its CTE of changed `jobs` rows and `now` the
/// parameter with the entries' time. They write the UPDATED entries `super::live_entry` builds
/// for those rows (the `FACTS` alike), numbered as `write_live` numbers (under the numbering
/// lock, held until commit), and queue the notification. The lock is asked for once every changed row is
/// counted, that is once the change itself is done, so statements of other transactions change
/// their rows in parallel and take turns only for the numbering; no lock is taken when nothing
/// changed.
fn entries_of_changed_jobs(changed: &str, now: &str) -> String {
    let updated = LiveKind::Updated.to_value();
    let facts: Vec<String> = FACTS
        .iter()
        .map(|(key, column)| format!("'{key}', c.{}", column.as_str()))
        .collect();
    format!(
        "live_counted AS (SELECT count(*) AS n FROM {changed}), \
         live_locked AS (SELECT n, pg_advisory_xact_lock({NUMBERING_LOCK}) FROM live_counted \
         WHERE n > 0), \
         live_reserved AS (SELECT setval('live_events_seq', nextval('live_events_seq') + n - 1) \
         - n AS before, pg_notify('{LIVE_CHANNEL}', '') FROM live_locked), \
         live AS (INSERT INTO live_events \
         (id, seq, workspace_id, job_id, kind, status, stage, progress, attempt, data, created_at) \
         SELECT r.before + c.ord, r.before + c.ord, c.workspace_id, c.id, \
         '{updated}', c.status, \
         c.stage, c.progress, c.attempt, jsonb_build_object({facts}), {now} \
         FROM live_reserved AS r, (SELECT {changed}.*, row_number() OVER () AS ord \
         FROM {changed}) AS c)",
        facts = facts.join(", ")
    )
}

/// Writes a committing transaction's live entries as its last statement: one statement takes
/// the numbering lock, reserves a block of consecutive numbers from `live_events_seq`, writes
/// the rows with them (each row's number is its `id` as well as its `seq`, so the primary key
/// keeps numbers unique: migration 000090) and notifies the buses. The lock is held until the
/// commit is visible, so a reader of `seq > n` never misses a row committed later with a
/// smaller number. The statement is built before the lock is asked for, so the lock waits for
/// no client-side work. The lock is re-entrant: a transaction's later statements continue its
/// numbers.
pub(super) async fn write_live(
    tx: &DatabaseTransaction,
    entries: Vec<super::LiveEntry>,
    queued: bool,
) -> std::result::Result<(), DbErr> {
    let insert = numbered_insert(entries, queued).map_err(|err| DbErr::Custom(err.to_string()))?;
    tx.execute_raw(insert).await?;
    Ok(())
}

/// The live entries' INSERT, which also notifies the workers' channel when `queued`. The
/// entries travel as `arrays`: those of one change share their workspace, time and most
/// columns, which then travel once. A job's entry travels as the values of its `FACTS`, and
/// the statement builds its `data` from them (`Facts`): the facts alike in all the entries, as
/// a batch's tool and submitter are, as one JSON object sent once, joined with the others, not
/// as a JSON document per entry for PostgreSQL to parse.
fn numbered_insert(entries: Vec<super::LiveEntry>, queued: bool) -> Result<Statement> {
    use live_event::Column as C;
    let columns = [
        C::WorkspaceId,
        C::JobId,
        C::Kind,
        C::Status,
        C::Stage,
        C::Progress,
        C::Attempt,
        C::Data,
        C::CreatedAt,
    ];
    let mark = super::process_mark();
    let count = entries.len();
    let (mut rows, facts): (Vec<_>, Vec<_>) = entries.into_iter().map(|e| (e.row, e.facts)).unzip();
    let mut given = taken(&mut rows, &columns)?;
    let facts = Facts::of(facts).map(|(facts, columns)| {
        given.extend(columns);
        facts
    });
    let Arrays {
        from,
        columns: mut select,
        values: mut rows,
    } = columns_as_arrays(count, given, 3)?;
    if let Some(facts) = facts {
        let of_row = select.split_off(columns.len());
        let data = columns
            .iter()
            .position(|c| c.as_str() == C::Data.as_str())
            .expect("data is written");
        select[data] = facts.data(&of_row, &select[data], 3 + rows.len());
        rows.push(facts.common.into());
    }
    let mut values = vec![(count as i64).into(), queued.into()];
    values.extend(rows);
    let names: Vec<&str> = columns.iter().map(|c| c.as_str()).collect();
    let sql = format!(
        "WITH numbering AS (SELECT pg_advisory_xact_lock({NUMBERING_LOCK})), \
         reserved AS (SELECT setval('live_events_seq', nextval('live_events_seq') + $1 - 1) - $1 \
         AS before, pg_notify('{LIVE_CHANNEL}', ''), \
         CASE WHEN $2 THEN pg_notify('{QUEUED_CHANNEL}', '{mark}') END FROM numbering) \
         INSERT INTO live_events (id, seq, {}) \
         SELECT reserved.before + r.ord, reserved.before + r.ord, {} FROM reserved, {from}",
        names.join(", "),
        select.join(", "),
    );
    Ok(Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        sql,
        values,
    ))
}

/// The one statement that moves `completions` to COMPLETED with `sets`, each only if it still
/// has the status and attempt its runner saw, returning the rows it moved. The rows travel as
/// arrays in `done`.
pub(super) fn completing(
    sets: Vec<(job::Column, SimpleExpr)>,
    completions: &[&Completion],
) -> Statement {
    use sea_orm::sea_query::{Alias, PostgresQueryBuilder, Query};
    let mut update = Query::update();
    update
        .table(job::Entity)
        .values(sets)
        .from(Alias::new("done"));
    let (set_sql, set_values) = update.build(PostgresQueryBuilder);
    // `UPDATE "jobs" SET ... FROM "done"`, its parameters first; `done`'s arrays follow them.
    let n = set_values.0.len();
    // `jobs.id = ANY(ARRAY(...))` reaches the group's jobs through the primary key. Seeing
    // how many rows the arrays hold, PostgreSQL would otherwise hash the whole `jobs` table
    // to join a thousand of them, until the table outgrows its random-read estimate: the
    // cost of every group grew with the history, to 30-50 ms at 40,000 jobs.
    let sql = format!(
        "WITH done AS (SELECT * FROM unnest(${}::uuid[], ${}::text[], ${}::int4[], \
         ${}::jsonb[], ${}::jsonb[]) AS d (id, status, attempt, result, resources)) \
         {set_sql} WHERE jobs.id = done.id AND jobs.status = done.status \
         AND jobs.attempt = done.attempt AND jobs.id = ANY(ARRAY(SELECT id FROM done)) {}",
        n + 1,
        n + 2,
        n + 3,
        n + 4,
        n + 5,
        rows::returning_sql("jobs")
    );
    let mut values = set_values.0;
    values.extend([
        column(completions.iter().map(|c| c.job.id)),
        column(completions.iter().map(|c| c.job.status.to_value())),
        column(completions.iter().map(|c| c.job.attempt)),
        column(completions.iter().map(|c| c.result.clone())),
        column(completions.iter().map(|c| c.resources.clone())),
    ]);
    Statement::from_sql_and_values(DatabaseBackend::Postgres, sql, values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use entity::credit_transaction::{self, TransactionKind};
    use entity::ids::{JobId, TransactionId, WorkspaceId};
    use sea_orm::{Iterable as _, Set};

    fn entry(amount: i64, job_id: Option<JobId>) -> credit_transaction::ActiveModel {
        credit_transaction::ActiveModel {
            id: Set(TransactionId::new()),
            workspace_id: Set(WorkspaceId(Uuid::nil())),
            kind: Set(TransactionKind::Charge),
            amount: Set(amount),
            balance_after: Set(0),
            actor_id: Set(None),
            job_id: Set(job_id),
            note: Set(Some("a charge".to_owned())),
            created_at: Set(DateTime::UNIX_EPOCH),
        }
    }

    #[test]
    fn the_facts_alike_in_the_job_entries_travel_once_and_other_entries_keep_their_data() {
        use sea_orm::Value as V;
        let workspace = WorkspaceId(Uuid::nil());
        let job = |name: &str| super::super::LiveEntry {
            row: super::super::live_entry_of(workspace, Some(JobId::new()), LiveKind::Created),
            facts: Some(vec![
                V::String(Some(name.to_owned())),
                V::String(Some("noop".to_owned())),
                V::Uuid(Some(Uuid::nil())),
                V::Uuid(None),
                V::ChronoDateTimeUtc(Some(DateTime::UNIX_EPOCH)),
                V::Uuid(None),
            ]),
        };
        let mut balance = super::super::live_entry_of(workspace, None, LiveKind::Credits);
        balance.data = Set(Some(serde_json::json!({"balance": 1})));
        let statement = numbered_insert(vec![job("a"), balance.into(), job("b")], false).unwrap();
        let values = statement.values.unwrap().0;
        // The alike facts: one object, the last parameter; the names a column.
        assert_eq!(
            values.last(),
            Some(&V::Json(Some(Box::new(serde_json::json!({
                "tool": "noop",
                "submitterId": Uuid::nil(),
                "batchId": null,
                "createdAt": "1970-01-01T00:00:00+00:00",
                "workflowId": null,
            })))))
        );
        let n = values.len();
        assert!(statement.sql.contains(&format!(
            "r.facts_given END THEN ${n}::jsonb || jsonb_build_object('name', "
        )));
        assert!(
            values.contains(&column(["a", "", "b"].map(String::from))),
            "{values:?}"
        );
        assert!(values.contains(&column([true, false, true])), "{values:?}");
        // The balance entry's data travels as given, among the data column's values.
        assert!(
            values.iter().any(|v| matches!(v, V::Array(_, Some(items))
                if items.contains(&V::Json(Some(Box::new(serde_json::json!({"balance": 1}))))))),
            "{values:?}"
        );
    }

    #[test]
    fn columns_alike_in_every_row_travel_as_one_value() {
        let columns: Vec<credit_transaction::Column> = credit_transaction::Column::iter().collect();
        let rows = [
            entry(-1, None),
            entry(-2, Some(JobId::new())),
            entry(-3, Some(JobId::new())),
        ];
        let arrays = arrays(rows.to_vec(), &columns, 5).unwrap();
        // Only the id, the amount and the job differ; the mask is the first parameter.
        assert_eq!(
            arrays.from,
            "unnest($5::int8[], $6::uuid[], $9::int8[], $12::uuid[]) WITH ORDINALITY \
             AS r (nulls, id, amount, job_id, ord)"
        );
        assert_eq!(arrays.columns[1], "$7::uuid");
        assert_eq!(arrays.columns[5], "$11::uuid");
        assert_eq!(
            arrays.columns[6],
            "CASE WHEN r.nulls & 64 = 0 THEN r.job_id END"
        );
        assert_eq!(arrays.values.len(), 10);
        // The first row's job is NULL: bit 6 of its mask.
        assert_eq!(arrays.values[0], column([64i64, 0, 0]));
        // A column NULL in every row is one NULL.
        assert_eq!(arrays.values[6], sea_orm::Value::Uuid(None));
        assert_eq!(
            arrays.values[8],
            sea_orm::Value::String(Some("a charge".to_owned()))
        );

        // One row: every column is alike, and the mask alone gives the row.
        let one = super::arrays(rows[..1].to_vec(), &columns, 1).unwrap();
        assert_eq!(
            one.from,
            "unnest($1::int8[]) WITH ORDINALITY AS r (nulls, ord)"
        );
        assert_eq!(one.values.len(), columns.len() + 1);
    }
}
