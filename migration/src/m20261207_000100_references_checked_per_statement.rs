//! The references of jobs and ledger entries checked once per statement on PostgreSQL.
//!
//! A foreign key checks each inserted row with a query of its own: a 1,000-job submission ran
//! 3,000 such queries for its jobs (workspace, submitter, batch) and 2,000 for its charges
//! (workspace, actor), about a third of PostgreSQL's time for the request. These keys become
//! triggers that do the same work once per statement:
//!
//! - Inserting jobs or ledger entries locks the rows they reference `FOR KEY SHARE`,
//!   as a foreign key's check does, and fails with `foreign_key_violation` (SQLSTATE 23503,
//!   naming the constraint it replaces) when one is missing. Changing a reference of a row later
//!   is checked per row, only when it changes.
//! - Deleting a referenced row does what the key's `ON DELETE` did: a workspace's jobs and
//!   ledger entries go with it, a batch's jobs lose their batch, a user's ledger entries lose
//!   their actor, and a user who submitted jobs is not deleted. Changing a referenced `id` is
//!   refused while it is referenced, as the keys' `NO ACTION` did.
//!
//! The delete side runs after the row is deleted, so a delete that waited on a submission's
//! lock sees its jobs. SQLite keeps its foreign keys: its check is a cheap lookup there, and
//! changing its constraints means rebuilding the tables.
#![expect(
    elided_lifetimes_in_paths,
    reason = "MigrationTrait elides the lifetime of SchemaManager in its signatures"
)]

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "ALTER TABLE jobs DROP CONSTRAINT fk_jobs_workspace, DROP CONSTRAINT fk_jobs_submitter, \
     DROP CONSTRAINT fk_jobs_batch",
    "ALTER TABLE credit_transactions DROP CONSTRAINT fk_credit_transactions_workspace, \
     DROP CONSTRAINT fk_credit_transactions_actor",
    // Fails with what a foreign key's check raises.
    r#"CREATE FUNCTION jobgraph_reference_missing(child text, constraint_name text)
       RETURNS void LANGUAGE plpgsql AS $$
       BEGIN
         RAISE foreign_key_violation USING
           MESSAGE = format('insert or update on table "%s" violates foreign key constraint "%s"',
                            child, constraint_name),
           CONSTRAINT = constraint_name, TABLE = child;
       END $$"#,
    // Every reference of the rows a statement inserted (`new_rows`) must be the id of a row of
    // its table, which stays locked FOR KEY SHARE until the transaction ends. Plain statements,
    // which a session plans once: a join per table the rows must all reference, and one per
    // reference that may be NULL, run only when some row has it.
    r#"CREATE FUNCTION jobgraph_jobs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
       DECLARE
         inserted bigint;
         batched bigint;
         held bigint;
       BEGIN
         SELECT count(*), count(batch_id) INTO inserted, batched FROM new_rows;
         PERFORM FROM new_rows AS n
           JOIN workspaces AS w ON w.id = n.workspace_id
           JOIN users AS u ON u.id = n.submitter_id
           FOR KEY SHARE OF w, u;
         GET DIAGNOSTICS held = ROW_COUNT;
         IF held <> inserted THEN
           IF EXISTS (SELECT FROM new_rows AS n
                      WHERE NOT EXISTS (SELECT FROM workspaces AS w WHERE w.id = n.workspace_id)) THEN
             PERFORM jobgraph_reference_missing('jobs', 'fk_jobs_workspace');
           END IF;
           PERFORM jobgraph_reference_missing('jobs', 'fk_jobs_submitter');
         END IF;
         IF batched > 0 THEN
           PERFORM FROM new_rows AS n JOIN batches AS b ON b.id = n.batch_id FOR KEY SHARE OF b;
           GET DIAGNOSTICS held = ROW_COUNT;
           IF held <> batched THEN
             PERFORM jobgraph_reference_missing('jobs', 'fk_jobs_batch');
           END IF;
         END IF;
         RETURN NULL;
       END $$"#,
    r#"CREATE FUNCTION jobgraph_credit_transactions_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
       DECLARE
         inserted bigint;
         acted bigint;
         held bigint;
       BEGIN
         SELECT count(*), count(actor_id) INTO inserted, acted FROM new_rows;
         PERFORM FROM new_rows AS n JOIN workspaces AS w ON w.id = n.workspace_id
           FOR KEY SHARE OF w;
         GET DIAGNOSTICS held = ROW_COUNT;
         IF held <> inserted THEN
           PERFORM jobgraph_reference_missing('credit_transactions', 'fk_credit_transactions_workspace');
         END IF;
         IF acted > 0 THEN
           PERFORM FROM new_rows AS n JOIN users AS u ON u.id = n.actor_id FOR KEY SHARE OF u;
           GET DIAGNOSTICS held = ROW_COUNT;
           IF held <> acted THEN
             PERFORM jobgraph_reference_missing('credit_transactions', 'fk_credit_transactions_actor');
           END IF;
         END IF;
         RETURN NULL;
       END $$"#,
    "CREATE TRIGGER jobs_references_inserted AFTER INSERT ON jobs \
     REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION jobgraph_jobs_inserted()",
    "CREATE TRIGGER credit_transactions_references_inserted AFTER INSERT ON credit_transactions \
     REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT \
     EXECUTE FUNCTION jobgraph_credit_transactions_inserted()",
    // A reference changed later: checked for that row only, and only when it changes (the
    // queue's updates of jobs never fire it).
    r#"CREATE FUNCTION jobgraph_job_references_changed() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         PERFORM 1 FROM workspaces WHERE id = NEW.workspace_id FOR KEY SHARE;
         IF NOT FOUND THEN
           PERFORM jobgraph_reference_missing('jobs', 'fk_jobs_workspace');
         END IF;
         PERFORM 1 FROM users WHERE id = NEW.submitter_id FOR KEY SHARE;
         IF NOT FOUND THEN
           PERFORM jobgraph_reference_missing('jobs', 'fk_jobs_submitter');
         END IF;
         IF NEW.batch_id IS NOT NULL THEN
           PERFORM 1 FROM batches WHERE id = NEW.batch_id FOR KEY SHARE;
           IF NOT FOUND THEN
             PERFORM jobgraph_reference_missing('jobs', 'fk_jobs_batch');
           END IF;
         END IF;
         RETURN NULL;
       END $$"#,
    r#"CREATE FUNCTION jobgraph_credit_transaction_references_changed() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         PERFORM 1 FROM workspaces WHERE id = NEW.workspace_id FOR KEY SHARE;
         IF NOT FOUND THEN
           PERFORM jobgraph_reference_missing('credit_transactions', 'fk_credit_transactions_workspace');
         END IF;
         IF NEW.actor_id IS NOT NULL THEN
           PERFORM 1 FROM users WHERE id = NEW.actor_id FOR KEY SHARE;
           IF NOT FOUND THEN
             PERFORM jobgraph_reference_missing('credit_transactions', 'fk_credit_transactions_actor');
           END IF;
         END IF;
         RETURN NULL;
       END $$"#,
    "CREATE TRIGGER jobs_references_changed AFTER UPDATE OF workspace_id, submitter_id, batch_id \
     ON jobs FOR EACH ROW WHEN (OLD.workspace_id IS DISTINCT FROM NEW.workspace_id \
     OR OLD.submitter_id IS DISTINCT FROM NEW.submitter_id OR OLD.batch_id IS DISTINCT FROM NEW.batch_id) \
     EXECUTE FUNCTION jobgraph_job_references_changed()",
    "CREATE TRIGGER credit_transactions_references_changed AFTER UPDATE OF workspace_id, actor_id \
     ON credit_transactions FOR EACH ROW WHEN (OLD.workspace_id IS DISTINCT FROM NEW.workspace_id \
     OR OLD.actor_id IS DISTINCT FROM NEW.actor_id) EXECUTE FUNCTION jobgraph_credit_transaction_references_changed()",
    // The referenced side: what each key did ON DELETE, and NO ACTION on a change of `id`.
    r#"CREATE FUNCTION jobgraph_referenced() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF TG_OP = 'DELETE' THEN
           CASE TG_TABLE_NAME
             WHEN 'workspaces' THEN
               DELETE FROM jobs WHERE workspace_id = OLD.id;
               DELETE FROM credit_transactions WHERE workspace_id = OLD.id;
             WHEN 'batches' THEN
               UPDATE jobs SET batch_id = NULL WHERE batch_id = OLD.id;
             WHEN 'users' THEN
               IF EXISTS (SELECT 1 FROM jobs WHERE submitter_id = OLD.id) THEN
                 RAISE foreign_key_violation USING
                   MESSAGE = 'update or delete on table "users" violates foreign key constraint "fk_jobs_submitter" on table "jobs"',
                   CONSTRAINT = 'fk_jobs_submitter', TABLE = 'jobs';
               END IF;
               UPDATE credit_transactions SET actor_id = NULL WHERE actor_id = OLD.id;
           END CASE;
         ELSIF (CASE TG_TABLE_NAME
                 WHEN 'workspaces' THEN EXISTS (SELECT 1 FROM jobs WHERE workspace_id = OLD.id)
                   OR EXISTS (SELECT 1 FROM credit_transactions WHERE workspace_id = OLD.id)
                 WHEN 'batches' THEN EXISTS (SELECT 1 FROM jobs WHERE batch_id = OLD.id)
                 ELSE EXISTS (SELECT 1 FROM jobs WHERE submitter_id = OLD.id)
                   OR EXISTS (SELECT 1 FROM credit_transactions WHERE actor_id = OLD.id)
               END) THEN
           RAISE foreign_key_violation USING
             MESSAGE = format('update on table "%s" changes an id that jobs or ledger entries reference', TG_TABLE_NAME),
             TABLE = TG_TABLE_NAME;
         END IF;
         RETURN NULL;
       END $$"#,
    "CREATE TRIGGER workspaces_referenced_deleted AFTER DELETE ON workspaces \
     FOR EACH ROW EXECUTE FUNCTION jobgraph_referenced()",
    "CREATE TRIGGER batches_referenced_deleted AFTER DELETE ON batches \
     FOR EACH ROW EXECUTE FUNCTION jobgraph_referenced()",
    "CREATE TRIGGER users_referenced_deleted AFTER DELETE ON users \
     FOR EACH ROW EXECUTE FUNCTION jobgraph_referenced()",
    "CREATE TRIGGER workspaces_referenced_changed AFTER UPDATE OF id ON workspaces \
     FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION jobgraph_referenced()",
    "CREATE TRIGGER batches_referenced_changed AFTER UPDATE OF id ON batches \
     FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION jobgraph_referenced()",
    "CREATE TRIGGER users_referenced_changed AFTER UPDATE OF id ON users \
     FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id) EXECUTE FUNCTION jobgraph_referenced()",
];

const DOWN: &[&str] = &[
    "DROP TRIGGER workspaces_referenced_deleted ON workspaces",
    "DROP TRIGGER batches_referenced_deleted ON batches",
    "DROP TRIGGER users_referenced_deleted ON users",
    "DROP TRIGGER workspaces_referenced_changed ON workspaces",
    "DROP TRIGGER batches_referenced_changed ON batches",
    "DROP TRIGGER users_referenced_changed ON users",
    "DROP TRIGGER jobs_references_inserted ON jobs",
    "DROP TRIGGER credit_transactions_references_inserted ON credit_transactions",
    "DROP TRIGGER jobs_references_changed ON jobs",
    "DROP TRIGGER credit_transactions_references_changed ON credit_transactions",
    "DROP FUNCTION jobgraph_referenced()",
    "DROP FUNCTION jobgraph_job_references_changed()",
    "DROP FUNCTION jobgraph_credit_transaction_references_changed()",
    "DROP FUNCTION jobgraph_jobs_inserted()",
    "DROP FUNCTION jobgraph_credit_transactions_inserted()",
    "DROP FUNCTION jobgraph_reference_missing(text, text)",
    "ALTER TABLE jobs \
     ADD CONSTRAINT fk_jobs_workspace FOREIGN KEY (workspace_id) REFERENCES workspaces (id) ON DELETE CASCADE, \
     ADD CONSTRAINT fk_jobs_submitter FOREIGN KEY (submitter_id) REFERENCES users (id) ON DELETE RESTRICT, \
     ADD CONSTRAINT fk_jobs_batch FOREIGN KEY (batch_id) REFERENCES batches (id) ON DELETE SET NULL",
    "ALTER TABLE credit_transactions \
     ADD CONSTRAINT fk_credit_transactions_workspace FOREIGN KEY (workspace_id) REFERENCES workspaces (id) ON DELETE CASCADE, \
     ADD CONSTRAINT fk_credit_transactions_actor FOREIGN KEY (actor_id) REFERENCES users (id) ON DELETE SET NULL",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_on_postgres(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_on_postgres(manager, DOWN).await
    }
}
