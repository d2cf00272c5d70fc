//! What a run tells operators: log lines in the job's span, and metrics.

use serde_json::json;

use super::{app_worker, spawn};
use crate::support::{WAIT, eventually};

/// An event's message and the names of the spans around it, innermost first.
type Scoped = (String, Vec<String>);

/// The names of the spans around each event, by the event's message.
#[derive(Clone, Default)]
struct EventScopes(std::sync::Arc<std::sync::Mutex<Vec<Scoped>>>);

impl<S> tracing_subscriber::Layer<S> for EventScopes
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let spans = ctx
            .event_scope(event)
            .map(|scope| scope.map(|span| span.name().to_owned()).collect())
            .unwrap_or_default();
        self.0.lock().unwrap().push((message.0, spans));
    }
}

#[tokio::test]
async fn a_runs_log_lines_carry_its_job_and_no_other_tasks_do() {
    use tracing_subscriber::layer::SubscriberExt as _;
    // A current-thread runtime: the worker's loop, its completion writer and every run take
    // turns on this one thread, where the subscriber is installed.
    // With one dispatcher in the process, tracing works out a callsite's interest from the
    // default dispatcher of whichever thread reaches the callsite first: another test's thread,
    // which has none, would switch this test's events off for good. With a second (inert) one
    // registered, every live dispatcher is asked instead.
    let _inert = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let scopes = EventScopes::default();
    let subscriber = tracing_subscriber::registry().with(scopes.clone()).with(
        tracing_subscriber::filter::Targets::new().with_target("jobgraph", tracing::Level::DEBUG),
    );
    let _default = tracing::subscriber::set_default(subscriber);
    let app = spawn(0).await;
    let (alice, ws) = app.setup("lab", 1000).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let mut worker = app_worker(&app);
    worker.config.concurrency = 2;
    let handle = tokio::spawn(worker.run(shutdown.clone()));
    // The second job is claimed while the first one runs.
    let first = app
        .submit(
            &alice,
            &ws,
            json!({"tool": "nap", "settings": {"seconds": 1}}),
        )
        .await;
    app.wait_for(&alice.token, &first, WAIT, |job| {
        job["status"] == "PROCESSING"
    })
    .await;
    let second = app
        .submit(
            &alice,
            &ws,
            json!({"tool": "nap", "settings": {"seconds": 1}}),
        )
        .await;
    for id in [&first, &second] {
        assert_eq!(
            app.wait_final(&alice.token, id, WAIT).await["status"],
            "COMPLETED"
        );
    }
    shutdown.cancel();
    handle.await.unwrap();
    let events = scopes.0.lock().unwrap().clone();
    let with = |message: &str| -> Vec<Vec<String>> {
        events
            .iter()
            .filter(|(m, _)| m == message)
            .map(|(_, spans)| spans.clone())
            .collect()
    };
    let runs = with("run started");
    assert_eq!(runs.len(), 2, "{events:?}");
    assert!(runs.iter().all(|spans| spans == &["job"]), "{events:?}");
    let claims: Vec<_> = with("claimed");
    assert!(claims.len() >= 2, "{events:?}");
    let completions = with("recorded completions");
    assert!(!completions.is_empty(), "{events:?}");
    for spans in claims.iter().chain(&completions) {
        assert!(!spans.contains(&"job".to_owned()), "{events:?}");
    }
}

#[tokio::test]
async fn metrics_report_jobs_the_queue_claims_and_runs() {
    let app = spawn(1).await;
    let (alice, ws) = app.setup("lab", 1000).await;
    let done = app.submit(&alice, &ws, json!({"tool": "noop"})).await;
    app.wait_final(&alice.token, &done, WAIT).await;
    let timed_out = app
        .submit(
            &alice,
            &ws,
            json!({"tool": "slow", "settings": {"seconds": 5}}),
        )
        .await;
    app.wait_final(&alice.token, &timed_out, WAIT).await;
    // A run's outcome is counted just after its job's final status is written.
    let expected = [
        "jobgraph_jobs{status=\"COMPLETED\",tool=\"noop\"} 1",
        "jobgraph_jobs{status=\"TIMEOUT\",tool=\"slow\"} 1",
        "jobgraph_queue_depth 0",
        "jobgraph_claim_latency_seconds_count 2",
        "jobgraph_run_duration_seconds_count{tool=\"noop\",outcome=\"COMPLETED\"} 1",
        "jobgraph_job_retries{tool=\"slow\"} 0",
        "jobgraph_jobs_refunded{tool=\"slow\"} 1",
        "jobgraph_jobs_refunded{tool=\"noop\"} 0",
    ];
    let text = eventually(WAIT, "the metrics count both runs", || async {
        let response = app.client().get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let text = response.text().await.unwrap();
        let missing: Vec<_> = expected
            .iter()
            .filter(|line| !text.lines().any(|l| l == **line))
            .collect();
        match missing.is_empty() {
            true => Ok(text),
            false => Err(format!("missing {missing:?} in:\n{text}")),
        }
    })
    .await;
    assert!(text.contains("jobgraph_running_jobs{worker="), "{text}");
}
