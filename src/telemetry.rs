//! Traces over OTLP/HTTP (protobuf), when an endpoint is configured (`--otlp-endpoint`): the
//! spans of requests, GraphQL operations, database work and job runs are exported by a layer on
//! the tracing subscriber, and W3C Trace Context (`traceparent`) carries a trace from a client's
//! request to the jobs it submits and to the workers, local or remote, that run them.
//!
//! Without an endpoint nothing of OpenTelemetry runs: `enabled()` is false, the helpers below
//! return at once, and the spans only traces use (target `SPANS`, `DEBUG`) stay disabled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    Sampler, SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample, Tracer,
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use crate::config::TraceConfig;

/// The target of the spans only traces use (operations, database work), at `DEBUG`: enabled
/// when traces are exported, whatever `RUST_LOG` says of the rest.
pub const SPANS: &str = "jobgraph::spans";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// How long one export may take before it is given up.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether spans are exported by this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The exporting pipeline of this process: shut it down before exiting, so that the last spans
/// leave.
pub struct Traces {
    provider: SdkTracerProvider,
    tracer: Tracer,
}

impl Traces {
    /// Starts exporting to the configured endpoint, if any. Call inside the Tokio runtime: the
    /// exports are sent from it.
    pub fn start(config: &TraceConfig) -> anyhow::Result<Option<Traces>> {
        let Some(endpoint) = config.otlp_endpoint.as_deref() else {
            return Ok(None);
        };
        let client = Http {
            client: reqwest::Client::builder()
                .timeout(EXPORT_TIMEOUT)
                .build()
                .context("building the OTLP client")?,
            runtime: tokio::runtime::Handle::current(),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(EXPORT_TIMEOUT)
            .with_endpoint(traces_url(endpoint))
            .build()
            .context("--otlp-endpoint")?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Work)))
            .with_resource(
                Resource::builder()
                    .with_service_name(config.otlp_service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("jobgraph");
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Some(Traces { provider, tracer }))
    }

    /// The layer that turns this crate's spans into exported ones: every span of `jobgraph` down
    /// to `DEBUG` (operations, database work), and events from `INFO` as their span's events.
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.tracer.clone())
            .with_threads(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
                let limit = if metadata.is_span() {
                    tracing::Level::DEBUG
                } else {
                    tracing::Level::INFO
                };
                metadata.target().starts_with("jobgraph") && *metadata.level() <= limit
            }))
    }

    /// Sends the spans still queued and stops the exporter.
    pub async fn shutdown(self) {
        // The batch processor's thread waits for exports that run on this runtime: block a
        // thread of the blocking pool, never a worker.
        let provider = self.provider;
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "the last spans were not all exported"),
            Err(err) => tracing::warn!(error = %err, "stopping the span exporter failed"),
        }
    }
}

/// Which spans begin a trace: requests, job runs and the queue's groups of work, but not the
/// database work of background upkeep (polls, reclaims), which would bury them; database spans
/// under a request or a run are kept with it.
#[derive(Clone, Debug)]
struct Work;

/// The names of database spans (`#[instrument(name = ...)]`).
const DATABASE_SPANS: [&str; 4] = ["db.", "store.", "history.", "ledger."];

impl ShouldSample for Work {
    fn should_sample(
        &self,
        parent: Option<&opentelemetry::Context>,
        _: opentelemetry::trace::TraceId,
        name: &str,
        _: &opentelemetry::trace::SpanKind,
        _: &[opentelemetry::KeyValue],
        _: &[opentelemetry::trace::Link],
    ) -> SamplingResult {
        let upkeep = DATABASE_SPANS.iter().any(|prefix| name.starts_with(prefix));
        SamplingResult {
            decision: if upkeep {
                SamplingDecision::Drop
            } else {
                SamplingDecision::RecordAndSample
            },
            attributes: Vec::new(),
            trace_state: parent
                .map(|parent| parent.span().span_context().trace_state().clone())
                .unwrap_or_default(),
        }
    }
}

/// The URL spans are posted to: the endpoint is a base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn traces_url(endpoint: &str) -> String {
    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
}

/// Makes `span`, not yet entered, continue the trace its request's `traceparent` header names;
/// a missing or malformed header leaves it a new trace.
pub fn continue_request(span: &Span, headers: &axum::http::HeaderMap) {
    if !enabled() {
        return;
    }
    let well_formed = headers
        .get("traceparent")
        .and_then(|value| value.to_str().ok())
        .is_some_and(well_formed);
    if !well_formed {
        return;
    }
    let parent =
        TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Whether `traceparent` has the form W3C Trace Context gives it: `version-traceid-parentid-
/// flags` in lowercase hex of 2, 32, 16 and 2 digits, more fields only after a version above 00,
/// never version ff. (The propagator also takes shorter ids, padded with zeros: another trace.)
fn well_formed(traceparent: &str) -> bool {
    let fields: Vec<&str> = traceparent.split('-').collect();
    let hex = |field: &str, digits: usize| {
        field.len() == digits
            && field
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    fields.len() >= 4
        && hex(fields[0], 2)
        && fields[0] != "ff"
        && (fields.len() == 4 || fields[0] != "00")
        && hex(fields[1], 32)
        && hex(fields[2], 16)
        && hex(fields[3], 2)
}

/// Makes `span`, not yet entered, continue the trace of `traceparent` (as `traceparent` gave it).
pub fn continue_from(span: &Span, traceparent: Option<&str>) {
    let Some(traceparent) = traceparent.filter(|value| enabled() && well_formed(value)) else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The W3C `traceparent` naming `span`, to continue its trace elsewhere; `None` when traces are
/// off.
pub fn traceparent(span: &Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// The exporter's HTTP client: this crate's reqwest client, its requests run on the Tokio
/// runtime (the batch processor exports from a thread of its own).
#[derive(Debug)]
struct Http {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for Http {
    async fn send_bytes(
        &self,
        request: axum::http::Request<bytes::Bytes>,
    ) -> Result<axum::http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        let sent = self.runtime.spawn(async move {
            let response = client.execute(request).await?;
            let mut answer = axum::http::Response::builder().status(response.status());
            if let Some(headers) = answer.headers_mut() {
                *headers = response.headers().clone();
            }
            let body = response.bytes().await?;
            Ok::<_, opentelemetry_http::HttpError>(answer.body(body)?)
        });
        sent.await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_traceparents_are_read() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert!(well_formed(&format!("00-{id}-00f067aa0ba902b7-01")));
        assert!(well_formed(&format!("01-{id}-00f067aa0ba902b7-01-future")));
        for wrong in [
            String::new(),
            format!("00-{id}-00f067aa0ba902b7-01-more"),
            format!("ff-{id}-00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", id.to_uppercase()),
            "00-4bf92f35-00f067aa0ba902b7-01".to_owned(),
            format!("00-{id}-00f067aa0ba9-01"),
            format!("00-{id}-00f067aa0ba902b7-1"),
            format!("0-{id}-00f067aa0ba902b7-01"),
        ] {
            assert!(!well_formed(&wrong), "{wrong}");
        }
    }

    #[test]
    fn spans_are_posted_under_the_base_url() {
        assert_eq!(
            traces_url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
    }
}
