//! Execution: workers claim queued jobs and run them with their tool's executor, under time
//! limits, with retries, cancellation and recovery of jobs whose worker died.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::support::TestApp;

mod claims;
mod failures;
mod fencing;
mod limits;
mod observability;
mod runs;
mod stopping;

/// The built-in tools plus tools that exercise limits and failures.
const TEST_TOOLS: &str = r##"
# Fails its first `fail_attempts` attempts, transiently unless `permanent`; the attempt is
# read from the name of its working directory, `<job id>-<attempt>`.
[[tools]]
name = "flaky"
title = "Flaky"
version = "1"
timeout_seconds = 30
max_attempts = 2
settings_schema = { type = "object", properties = { fail_attempts = { type = "integer", default = 1 }, permanent = { type = "boolean", default = false } } }
executor = { kind = "command", program = "sh", args = ["-c", """
attempt=${1##*-}
if [ "$attempt" -le "$2" ]; then
  echo "attempt $attempt failed on purpose" >&2
  if [ "$3" = true ]; then exit 1; else exit 75; fi
fi
printf '{"succeededOnAttempt": %s}' "$attempt" > result.json
""", "flaky", "{workdir}", "{setting:fail_attempts}", "{setting:permanent}"], retryable_exit_codes = [75] }
price = { base = 3 }

[[tools]]
name = "slow"
title = "Slow"
version = "1"
timeout_seconds = 1
max_attempts = 3
executor = { kind = "builtin", function = "sleep" }
price = { base = 4 }

[[tools]]
name = "count"
title = "Count bytes"
version = "1"
timeout_seconds = 20
inputs = [{ name = "text", kind = "file", required = true }]
executor = { kind = "command", program = "sh", args = ["-c", """
echo 'progress: 50% Counting'
n=$(wc -c < "$1")
printf '{"bytes": %s, "label": "%s"}' $n "$2" > result.json
echo hi > outputs/report.txt
""", "count", "{input:text}", "{setting:label}"] }
price = { base = 1 }

[[tools]]
name = "solo"
title = "One at a time"
version = "1"
timeout_seconds = 30
max_running = 1
executor = { kind = "builtin", function = "sleep" }
price = { base = 1 }

[[tools]]
name = "crash"
title = "Crash"
version = "1"
timeout_seconds = 20
max_attempts = 2
executor = { kind = "command", program = "sh", args = ["-c", "echo boom >&2; exit $1", "crash", "{setting:code}"], retryable_exit_codes = [75] }
price = { base = 1 }

[[tools]]
name = "hang"
title = "Hang"
version = "1"
timeout_seconds = 1
max_attempts = 1
executor = { kind = "command", program = "sh", args = ["-c", "sleep 30 & echo $! > \"$1\"; wait", "hang", "{setting:pidfile}"] }
price = { base = 1 }

[[tools]]
name = "nap"
title = "Nap"
version = "1"
timeout_seconds = 60
max_attempts = 1
executor = { kind = "builtin", function = "sleep" }
price = { base = 2 }

[[tools]]
name = "burn"
title = "Burn"
version = "1"
timeout_seconds = 30
executor = { kind = "command", program = "sh", args = ["-c", "python3 -c \"$1\"; echo burnt", "burn", """
import time
block = b"x" * (50 * 1024 * 1024)
start = time.process_time()
while time.process_time() - start < 0.3:
    pass
"""] }
price = { base = 1 }
"##;

/// A server offering the test tools, with `workers` local workers and 3-second leases.
async fn spawn(workers: usize) -> TestApp {
    TestApp::spawn_with_tools(TEST_TOOLS, |config| {
        config.server.workers = workers;
        config.server.lease_seconds = 3;
    })
    .await
}

/// A job's live entries in the order of their numbers.
async fn live_entries(app: &TestApp, job_id: entity::ids::JobId) -> Vec<entity::live_event::Model> {
    use sea_orm::QueryOrder as _;
    entity::live_event::Entity::find()
        .filter(entity::live_event::Column::JobId.eq(job_id))
        .order_by_asc(entity::live_event::Column::Seq)
        .all(&app.db)
        .await
        .unwrap()
}

/// How many jobs are being run.
async fn processing(app: &TestApp) -> usize {
    entity::job::Entity::find()
        .filter(entity::job::Column::Status.eq(entity::job::JobStatus::Processing))
        .all(&app.db)
        .await
        .unwrap()
        .len()
}

/// Claims of any tool's jobs.
fn any_tool() -> jobgraph::queue::Tools {
    jobgraph::queue::Tools::Except(Vec::new())
}

/// A worker in the test server's own process, sharing its in-memory wake-up.
fn app_worker(app: &TestApp) -> jobgraph::queue::runner::Worker {
    jobgraph::queue::runner::Worker {
        db: app.state.db.clone(),
        catalog: app.state.catalog.clone(),
        name: "local".to_owned(),
        config: jobgraph::queue::runner::WorkerConfig {
            concurrency: 1,
            ..Default::default()
        },
        wake: app.state.wake.clone(),
        places: jobgraph::executors::Places {
            work_root: app.state.data_dir.join("work"),
            supervisor: app.state.config.supervisor(),
        },
        metrics: app.state.metrics.clone(),
        files: app.state.files.clone(),
        listen_url: None,
    }
}
