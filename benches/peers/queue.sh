#!/usr/bin/env bash
# The queue and submission side by side with graphile-worker (../shared/peers/graphile-worker),
# alternately, PAIRS times, one system running at a time, each on a fresh PostgreSQL database:
#
# - graphile-worker: `run.sh lq` (its fastest setup): N jobs enqueued by one `add_jobs` call,
#   then processed (`process_jobs_per_s`, from the end of enqueueing to the last no-op task).
# - jobgraph, as a user runs it: `jobgraph serve --workers 0` takes N jobs of a no-op tool
#   (one credit each) through `submitBatch` over HTTP, 1,000 per request, from one client
#   (submission jobs/s); the server stops; `jobgraph worker --workers WORKERS` starts and runs
#   them (jobs/s from the worker's start to the last `finished_at`). Then it checks every job
#   COMPLETED once, one charge each, the ledger equal to the balance, and three timeline rows
#   and three live entries per job (submitted, started, completed). Last, on the idle queue, `jobgraph serve --workers 16` (the
#   API and its worker pool, as a user starts it) takes WARMUP, then LATENCY jobs one at a time
#   through `submitJob`, 5 ms apart: the median and p99 of QUEUED to PROCESSING (`started_at -
#   queued_at`) of the LATENCY jobs (graphile-worker publishes an average of 4.16 ms for the
#   same), and the median and maximum of the WARMUP jobs, the first after the server started
#   (each of its database connections prepares its statements and loads its catalog caches
#   on first use).
#
#   bash benches/peers/queue.sh        # PAIRS=3 N=40000 WORKERS=2000 WARMUP=50 LATENCY=1000 BIN=
#
# BIN: another build of jobgraph to measure (for example one from another worktree).
# KEEP: set to keep the last jobgraph run's database, jobgraph_peer_queue (for
# benches/row_costs.sql).
# SSLMODE: how jobgraph connects to PostgreSQL, `disable` by default: graphile-worker's driver
# (node-postgres) connects without TLS unless told to, while jobgraph's (sqlx) uses TLS when
# the server offers it, as a local PostgreSQL often does.
#
# Prints each run and the medians of the ratios jobgraph / graphile-worker.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
PAIRS=${PAIRS:-3}
N=${N:-40000}
WORKERS=${WORKERS:-2000}
LATENCY=${LATENCY:-1000}
WARMUP=${WARMUP:-50}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
SSLMODE=${SSLMODE:-disable}
PEERS=${PEERS:-$(cd .. && pwd)/shared/peers}
peer=$PEERS/graphile-worker
[ -x "$peer/run.sh" ] || { echo "no graphile-worker peer at $peer (set PEERS)" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then
  cargo build --release -q --bin jobgraph
  BIN=${CARGO_TARGET_DIR:-target}/release/jobgraph
fi
bin=$BIN
db=jobgraph_peer_queue
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
sql() { psql "$PG/$db" -XAtqc "$1"; }
# Starts `jobgraph serve --workers $1` on port $2 in the background (its pid in `server`) and
# waits until it answers.
serve() {
  "$bin" serve --workers "$1" --listen "127.0.0.1:$2" >"$work/serve.log" 2>&1 &
  server=$!; pids+=("$server")
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$2/healthz" >/dev/null && return; sleep 0.1; done
  echo "jobgraph serve did not answer: $(tail -5 "$work/serve.log")" >&2; exit 1
}

# One jobgraph run, in a subshell of its own; prints "<submission jobs/s> <worker jobs/s>
# <idle median/p99 ms>". The processes it starts stop with it, however it ends.
jobgraph_run() {
  trap 'for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done' EXIT
  psql "$PG/postgres" -Xqc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" 2>/dev/null
  export DATABASE_URL="$PG/$db?sslmode=$SSLMODE" JOBGRAPH_TOOLS_FILE=$repo/benches/support/noop-tools.toml JOBGRAPH_DATA_DIR=$work/data
  "$bin" migrate >/dev/null 2>&1
  "$bin" user create --email bench@peer.example --admin >/dev/null
  local token port
  token=$("$bin" token create --email bench@peer.example --name bench)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  serve 0 "$port"
  local submitted
  submitted=$(URL="http://127.0.0.1:$port/graphql" TOKEN=$token N=$N WARMUP=$WARMUP LATENCY=$LATENCY BIN=$bin \
    python3 benches/peers/client.py submit)
  kill "$server"; wait "$server" || true
  local started finished
  started=$(date +%s.%N)
  "$bin" worker --workers "$WORKERS" >"$work/worker.log" 2>&1 &
  local worker=$!; pids+=("$worker")
  # Polled with a look at the head of the QUEUED and PROCESSING jobs (their partial indexes)
  # rather than a count of every COMPLETED one, which took CPU from the run it timed.
  for _ in $(seq 1200); do
    [ "$(sql "SELECT EXISTS (SELECT 1 FROM jobs WHERE status = 'QUEUED')
      OR EXISTS (SELECT 1 FROM jobs WHERE status = 'PROCESSING')")" = f ] && break
    sleep 0.25
  done
  [ "$(sql "SELECT count(*) FROM jobs WHERE status = 'COMPLETED'")" = "$N" ] ||
    { echo "the worker did not complete $N jobs in 300 s" >&2; tail -5 "$work/worker.log" >&2; exit 1; }
  kill "$worker"; wait "$worker" || true
  finished=$(sql "SELECT extract(epoch FROM max(finished_at)) FROM jobs")
  # Every job completed once, charged once, timelined and live; the ledger equals the balance.
  local check
  check=$(sql "SELECT (SELECT count(*) FROM jobs WHERE status = 'COMPLETED' AND attempt = 1) = $N
    AND (SELECT count(*) FROM credit_transactions WHERE kind = 'CHARGE') = $N
    AND (SELECT sum(amount) FROM credit_transactions) = (SELECT sum(credit_balance) FROM workspaces)
    AND (SELECT count(*) FROM job_events) = 3 * $N
    AND (SELECT count(*) FROM live_events WHERE job_id IS NOT NULL) = 3 * $N")
  [ "$check" = t ] || { echo "jobgraph run failed its checks (logs in $work)" >&2; tail -5 "$work/worker.log" >&2; exit 1; }
  # The idle queue: `jobgraph serve` as a user starts it (the API and its worker pool), WARMUP
  # then LATENCY jobs submitted one at a time over HTTP, 5 ms apart; QUEUED to PROCESSING of
  # each.
  local latency=- cold=-
  if [ "$LATENCY" -gt 0 ]; then
    serve 16 "$port"
    URL="http://127.0.0.1:$port/graphql" TOKEN=$token WARMUP=$WARMUP LATENCY=$LATENCY \
      python3 benches/peers/client.py latency
    for _ in $(seq 100); do
      [ "$(sql "SELECT count(*) FROM jobs WHERE name LIKE 'latency %' AND status = 'COMPLETED'")" = "$LATENCY" ] && break
      sleep 0.1
    done
    # "<median>/<p99>" of the jobs named `$1 %`, or "<median>/<max>" with $2 = max.
    delays() {
      local top="percentile_cont(0.99) WITHIN GROUP (ORDER BY d)"
      [ "${2:-}" = max ] && top="max(d)"
      sql "SELECT round((percentile_cont(0.5) WITHIN GROUP (ORDER BY d))::numeric, 2) || '/' ||
        round(($top)::numeric, 2)
        FROM (SELECT extract(epoch FROM started_at - queued_at) * 1000 AS d FROM jobs
              WHERE name LIKE '$1 %' AND status = 'COMPLETED') AS l
        HAVING count(*) > 0"
    }
    latency=$(delays latency)
    [ "$WARMUP" -gt 0 ] && cold=$(delays warm-up max)
    kill "$server"; wait "$server" || true
    [ "$(sql "SELECT count(*) FROM jobs WHERE name LIKE 'latency %' AND status = 'COMPLETED'")" = "$LATENCY" ] ||
      { echo "the idle queue did not run its $LATENCY jobs" >&2; exit 1; }
  fi
  [ -n "${KEEP:-}" ] || psql "$PG/postgres" -Xqc "DROP DATABASE $db WITH (FORCE)"
  awk -v s="$submitted" -v a="$started" -v b="$finished" -v n="$N" -v l="$latency" -v c="$cold" \
    'BEGIN {printf "%d %.0f %s %s\n", s, n / (b - a), l, c}'
}

median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
queue_ratios=() submit_ratios=()
for i in $(seq 1 "$PAIRS"); do
  line=$(N=$N "$peer/run.sh" lq 2>/dev/null | grep "^{\"system\"")
  g_rate=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["process_jobs_per_s"])' "$line")
  g_enqueue=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(round(d["jobs"] / d["enqueue_s"]))' "$line")
  read -r j_submit j_rate j_latency j_cold < <(jobgraph_run)
  q=$(awk -v a="$g_rate" -v b="$j_rate" 'BEGIN {printf "%.2f", b / a}')
  s=$(awk -v a="$g_enqueue" -v b="$j_submit" 'BEGIN {printf "%.2f", b / a}')
  queue_ratios+=("$q") submit_ratios+=("$s")
  echo "pair $i: queue graphile-worker $g_rate, jobgraph $j_rate jobs/s (${q}x); submission graphile-worker add_jobs $g_enqueue (SQL), jobgraph $j_submit jobs/s over HTTP (${s}x); idle queue, QUEUED to PROCESSING median/p99 $j_latency ms (the $WARMUP first after the start: median/max $j_cold ms)"
done
echo "queue, jobgraph / graphile-worker, median of $PAIRS pairs: $(printf '%s\n' "${queue_ratios[@]}" | median)x (target 1.3x)"
echo "submission over HTTP, jobgraph / graphile-worker add_jobs, median: $(printf '%s\n' "${submit_ratios[@]}" | median)x (target: 20,000 jobs/s)"
