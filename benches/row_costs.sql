-- What each kind of row write costs PostgreSQL, per row, on the shapes of jobgraph's tables: the
-- writes a job's claim and completion make, and those a narrower queue would make instead. Run
-- it on the database a `queue.sh` run leaves with KEEP=1 (40,000 completed jobs):
--
--   KEEP=1 PAIRS=1 bash benches/peers/queue.sh
--   psql postgres://postgres@127.0.0.1:5432/jobgraph_peer_queue -f benches/row_costs.sql
--
-- It copies 10,000 of the jobs into scratch tables of the same shape (`LIKE ... INCLUDING ALL`:
-- the same columns, defaults and indexes), times each write on 1,000 rows at a time in a
-- subtransaction that is rolled back (so each repetition starts from the same rows), 9 times
-- on fresh rows, and prints the median per row in microseconds. It drops its tables at the end.
-- One session, one statement at a time: CPU and WAL insertion only, no commit, no lock waits.
\set ON_ERROR_STOP on
\pset footer off
SET client_min_messages = warning;
DROP TABLE IF EXISTS rc_jobs, rc_jobs_roomy, rc_queue, rc_job_events, rc_live_events, rc_times;
CREATE TABLE rc_jobs (LIKE jobs INCLUDING ALL);
-- The same with room on every page for a new version of each row, for HOT updates.
CREATE TABLE rc_jobs_roomy (LIKE jobs INCLUDING ALL) WITH (fillfactor = 50);
-- A narrow table of queue state, as a queue apart from the jobs would keep.
CREATE TABLE rc_queue (
  job_id uuid PRIMARY KEY, priority int NOT NULL, queued_at timestamptz NOT NULL,
  worker_id text, lease_expires_at timestamptz
) WITH (fillfactor = 50);
CREATE TABLE rc_job_events (LIKE job_events INCLUDING ALL);
CREATE TABLE rc_live_events (LIKE live_events INCLUDING ALL);
CREATE TABLE rc_times (what text, rep int, us_per_row float8);
INSERT INTO rc_jobs SELECT * FROM jobs ORDER BY id LIMIT 10000;
UPDATE rc_jobs SET status = 'QUEUED', started_at = NULL, finished_at = NULL, worker_id = NULL,
  lease_expires_at = NULL, result = NULL, resources = NULL;
VACUUM FULL rc_jobs;
INSERT INTO rc_jobs_roomy SELECT * FROM rc_jobs;
INSERT INTO rc_queue SELECT id, priority, queued_at FROM rc_jobs;
VACUUM ANALYZE rc_jobs, rc_jobs_roomy, rc_queue;
CHECKPOINT;

-- Times `statement` (a format string whose %s takes the 1,000 ids of repetition `rep`) on
-- rows rep * 1000 to rep * 1000 + 999 of rc_jobs, rolled back.
CREATE OR REPLACE FUNCTION pg_temp.timed(what text, statement text) RETURNS void AS $$
DECLARE
  ids text;
  began timestamptz;
  took float8;
BEGIN
  FOR rep IN 0..8 LOOP
    SELECT 'ARRAY[' || string_agg(quote_literal(id::text) || '::uuid', ',') || ']' INTO ids
      FROM (SELECT id FROM rc_jobs ORDER BY id OFFSET rep * 1000 LIMIT 1000) AS s;
    BEGIN
      began := clock_timestamp();
      EXECUTE format(statement, ids);
      took := extract(epoch FROM clock_timestamp() - began) * 1e6 / 1000;
      RAISE EXCEPTION 'rolled back';
    EXCEPTION WHEN raise_exception THEN
      INSERT INTO rc_times VALUES (what, rep, took);
    END;
  END LOOP;
END $$ LANGUAGE plpgsql;

\o /dev/null
SELECT pg_temp.timed('1. jobs: a claim''s update (status, lease; not HOT: status is indexed)',
  $q$UPDATE rc_jobs SET status = 'PROCESSING', attempt = attempt + 1, started_at = now(),
     updated_at = now(), heartbeat_at = now(), worker_id = 'w', lease_expires_at = now()
     WHERE id = ANY(%s)$q$);
SELECT pg_temp.timed('2. jobs: an update of unindexed columns only, no room on the page (not HOT)',
  $q$UPDATE rc_jobs SET updated_at = now(), heartbeat_at = now() WHERE id = ANY(%s)$q$);
SELECT pg_temp.timed('3. jobs at fillfactor 50: the same update, HOT',
  $q$UPDATE rc_jobs_roomy SET updated_at = now(), heartbeat_at = now() WHERE id = ANY(%s)$q$);
SELECT pg_temp.timed('4. a narrow queue row: a claim''s update, HOT',
  $q$UPDATE rc_queue SET worker_id = 'w', lease_expires_at = now() WHERE job_id = ANY(%s)$q$);
SELECT pg_temp.timed('5. a narrow queue row: deleted',
  $q$DELETE FROM rc_queue WHERE job_id = ANY(%s)$q$);
SELECT pg_temp.timed('6. a timeline row: inserted',
  $q$INSERT INTO rc_job_events (id, job_id, workspace_id, status, stage, message, progress,
     attempt, created_at)
     SELECT gen_random_uuid(), id, workspace_id, 'PROCESSING', stage, 'claimed by w', progress,
     attempt, now() FROM rc_jobs WHERE id = ANY(%s)$q$);
SELECT pg_temp.timed('7. a live entry with its facts built (jsonb_build_object): inserted',
  $q$INSERT INTO rc_live_events (id, seq, workspace_id, job_id, kind, status, stage, progress,
     attempt, data, created_at)
     SELECT n, n, workspace_id, id, 'UPDATED', 'PROCESSING', stage, progress, attempt,
     jsonb_build_object('name', name, 'tool', tool, 'submitterId', submitter_id,
       'batchId', batch_id, 'createdAt', created_at, 'workflowId', workflow_id), now()
     FROM (SELECT *, row_number() OVER () AS n FROM rc_jobs WHERE id = ANY(%s)) AS j$q$);
SELECT pg_temp.timed('8. a live entry without facts: inserted',
  $q$INSERT INTO rc_live_events (id, seq, workspace_id, job_id, kind, status, stage, progress,
     attempt, data, created_at)
     SELECT n, n, workspace_id, id, 'UPDATED', 'PROCESSING', stage, progress, attempt, NULL,
     now() FROM (SELECT *, row_number() OVER () AS n FROM rc_jobs WHERE id = ANY(%s)) AS j$q$);
SELECT pg_temp.timed('9. reading the 1,000 jobs by id (what every statement above also does)',
  $q$SELECT count(*) FROM rc_jobs WHERE id = ANY(%s)$q$);

\o
SELECT what AS "write (1,000 rows at a time)",
  round((percentile_cont(0.5) WITHIN GROUP (ORDER BY us_per_row))::numeric, 1) AS "us per row",
  round(min(us_per_row)::numeric, 1) AS "fastest"
FROM rc_times GROUP BY what ORDER BY what;
DROP TABLE rc_jobs, rc_jobs_roomy, rc_queue, rc_job_events, rc_live_events, rc_times;
