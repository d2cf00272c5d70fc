//! Rate limits: who a request is counted against (its API token, or its client's address),
//! what it costs, and the buckets that count, in this process's memory.
//!
//! Each API token and each client address without a token has a bucket (GCRA, by `governor`)
//! refilled at the configured rate up to its burst. A request takes one from it; a request
//! that submits jobs takes `--rate-limit-submission-cost`, and one with uploaded files
//! `--rate-limit-upload-cost`. Worker tokens are not counted: only platform administrators
//! create them, and a remote worker refused its heartbeat would lose its job. Several API
//! processes each count their own requests.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use axum::http::{HeaderMap, HeaderName};
use entity::ids::{TokenId, UserId};
use governor::clock::{Clock as _, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use tokio_util::sync::CancellationToken;

use crate::access::{Credential, Viewer};
use crate::config::{Rate, RateLimitConfig};
use crate::files::fetch::Cidr;
use crate::metrics::Metrics;

/// The root fields that submit jobs or workflows: a request selecting any of them costs a
/// submission.
pub const SUBMISSIONS: [&str; 7] = [
    "submitJob",
    "submitBatch",
    "retryJob",
    "duplicateJob",
    "submitWorkflow",
    "retryWorkflow",
    "duplicateWorkflow",
];

/// How often buckets back to full are dropped, which keeps the memory bounded by the clients
/// seen in the last moments.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// What a request does, for its cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Anything else: a query, a subscription, another mutation, a download.
    Read,
    /// A request that submits jobs.
    Submission,
    /// A request carrying uploaded files.
    Upload,
}

impl Operation {
    /// A GraphQL request's operation, by the root fields of the operation it runs (parsing
    /// its document if it was not yet).
    pub fn of_request(request: &mut async_graphql::Request) -> Operation {
        let name = request.operation_name.clone();
        match request.parsed_query() {
            Ok(document) => Operation::of_document(document, name.as_deref()),
            Err(_) => Operation::Read,
        }
    }

    /// The operation `name` (or the only one) of a document, by its root fields.
    pub fn of_document(document: &ExecutableDocument, name: Option<&str>) -> Operation {
        let Some(operation) = crate::graphql::guard::operation(document, name) else {
            return Operation::Read;
        };
        if operation.node.ty == OperationType::Mutation
            && selects_any(
                document,
                &operation.node.selection_set.node,
                &SUBMISSIONS,
                0,
            )
        {
            return Operation::Submission;
        }
        Operation::Read
    }
}

/// Whether `selections` (at a root, through its fragments) select any field of `names`.
fn selects_any(
    document: &ExecutableDocument,
    selections: &SelectionSet,
    names: &[&str],
    depth: usize,
) -> bool {
    // Fragments nest only so deep; a cycle is refused by validation anyway.
    if depth > 8 {
        return false;
    }
    selections.items.iter().any(|item| match &item.node {
        Selection::Field(field) => names.contains(&field.node.name.node.as_str()),
        Selection::InlineFragment(fragment) => selects_any(
            document,
            &fragment.node.selection_set.node,
            names,
            depth + 1,
        ),
        Selection::FragmentSpread(spread) => document
            .fragments
            .get(&spread.node.fragment_name.node)
            .is_some_and(|fragment| {
                selects_any(
                    document,
                    &fragment.node.selection_set.node,
                    names,
                    depth + 1,
                )
            }),
    })
}

/// Who a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// A user: by their API token, or by their identity when the identity provider's token
    /// signed them in.
    Token(Signed),
    /// A client without a valid token, by its address (an IPv6 address by its /64 network,
    /// which one client is given whole).
    Address(IpAddr),
    /// Not counted: worker tokens and the server itself.
    Exempt,
}

impl Client {
    /// The client of a request by `viewer` from `address`.
    pub fn of(viewer: &Viewer, address: IpAddr) -> Client {
        match viewer {
            Viewer::User {
                via: Credential::Token(token_id),
                ..
            } => Client::Token(Signed::Token(*token_id)),
            Viewer::User { user, .. } => Client::Token(Signed::User(user.id)),
            Viewer::Anonymous => Client::anonymous(address),
            Viewer::Worker(_) | Viewer::System => Client::Exempt,
        }
    }

    /// A client known only by its address.
    pub fn anonymous(address: IpAddr) -> Client {
        Client::Address(match address.to_canonical() {
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
            v4 => v4,
        })
    }
}

/// A request refused: the client may try again after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

impl Limited {
    /// `Retry-After` in whole seconds: rounded up, at least 1.
    pub fn retry_after_seconds(&self) -> u64 {
        let seconds = self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0);
        seconds.max(1)
    }

    pub fn message(&self) -> String {
        format!(
            "too many requests: try again in {} seconds",
            self.retry_after_seconds()
        )
    }
}

/// The key of a signed-in client's bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signed {
    Token(TokenId),
    User(UserId),
}

type Buckets<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

/// This process's buckets, and how a request's client address is found.
pub struct RateLimits {
    tokens: Option<Buckets<Signed>>,
    addresses: Option<Buckets<IpAddr>>,
    submission_cost: u32,
    upload_cost: u32,
    trusted_proxies: Vec<Cidr>,
    client_ip_header: HeaderName,
    /// Where refusals are counted.
    metrics: Option<Arc<Metrics>>,
}

impl RateLimits {
    /// Counts refusals in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The limits of a validated configuration.
    pub fn new(config: &RateLimitConfig) -> Self {
        RateLimits {
            tokens: config.tokens().map(|rate| buckets(config, rate)),
            addresses: config.addresses().map(|rate| buckets(config, rate)),
            submission_cost: config.rate_limit_submission_cost,
            upload_cost: config.rate_limit_upload_cost,
            trusted_proxies: config
                .trusted_proxies
                .iter()
                .filter_map(|entry| Cidr::parse(entry).ok())
                .collect(),
            client_ip_header: HeaderName::try_from(config.client_ip_header.as_str())
                .unwrap_or(HeaderName::from_static("x-forwarded-for")),
            metrics: None,
        }
    }

    /// What `operation` costs, in requests.
    pub fn cost(&self, operation: Operation) -> u32 {
        match operation {
            Operation::Read => 1,
            Operation::Submission => self.submission_cost,
            Operation::Upload => self.upload_cost,
        }
    }

    /// Takes `cost` from the client's bucket, or says when it holds enough again (and takes
    /// nothing). A cost of 0 always passes.
    pub fn take(&self, client: Client, cost: u32) -> Result<(), Limited> {
        let Some(n) = NonZeroU32::new(cost) else {
            return Ok(());
        };
        let taken = match client {
            Client::Token(id) => take(self.tokens.as_ref(), &id, n),
            Client::Address(address) => take(self.addresses.as_ref(), &address, n),
            Client::Exempt => Ok(()),
        };
        if taken.is_err()
            && let Some(metrics) = &self.metrics
        {
            metrics.rate_limited(matches!(client, Client::Token(_)));
        }
        taken
    }

    /// The address of the client of a request that came from `peer`: the peer itself, unless
    /// it is a trusted proxy; then the last address in `--client-ip-header` that is not one.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let trusted = |ip: IpAddr| self.trusted_proxies.iter().any(|net| net.contains(ip));
        let mut address = peer.to_canonical();
        if !trusted(address) {
            return address;
        }
        // Each proxy appends the address it was reached from: read from the nearest back.
        let hops = headers
            .get_all(&self.client_ip_header)
            .iter()
            .rev()
            .flat_map(|value| value.to_str().unwrap_or("").rsplit(','));
        for hop in hops {
            let hop = hop.trim();
            let Some(ip) = hop
                .parse::<IpAddr>()
                .ok()
                .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
            else {
                // What a proxy did not write cannot be trusted: count the proxy's last hop.
                return address;
            };
            address = ip.to_canonical();
            if !trusted(address) {
                return address;
            }
        }
        address
    }

    /// Drops the buckets that are full again, every few seconds, until `shutdown`.
    pub async fn sweep(self: std::sync::Arc<Self>, shutdown: CancellationToken) {
        if self.tokens.is_none() && self.addresses.is_none() {
            return;
        }
        let mut every = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            self.forget_full();
        }
    }

    /// Drops the buckets that are full again: their clients are counted as new ones.
    pub fn forget_full(&self) {
        if let Some(buckets) = &self.tokens {
            buckets.retain_recent();
            buckets.shrink_to_fit();
        }
        if let Some(buckets) = &self.addresses {
            buckets.retain_recent();
            buckets.shrink_to_fit();
        }
    }

    /// The buckets held.
    pub fn held(&self) -> usize {
        self.tokens.as_ref().map_or(0, Buckets::len)
            + self.addresses.as_ref().map_or(0, Buckets::len)
    }
}

/// The buckets of one kind of client, refilled at `rate`.
fn buckets<K: Clone + std::hash::Hash + Eq>(config: &RateLimitConfig, rate: Rate) -> Buckets<K> {
    let burst = NonZeroU32::new(config.burst(rate)).unwrap_or(NonZeroU32::MIN);
    let quota = Quota::with_period(rate.interval())
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst);
    RateLimiter::keyed(quota)
}

fn take<K: Clone + std::hash::Hash + Eq>(
    buckets: Option<&Buckets<K>>,
    key: &K,
    n: NonZeroU32,
) -> Result<(), Limited> {
    let Some(buckets) = buckets else {
        return Ok(());
    };
    match buckets.check_key_n(key, n) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(not_until)) => Err(Limited {
            retry_after: not_until.wait_time_from(buckets.clock().now()),
        }),
        // More than the burst: refused by the configuration's check; never passes.
        Err(_) => Err(Limited {
            retry_after: Duration::from_secs(60),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn limits(trusted: &[&str]) -> RateLimits {
        let mut config = crate::config::Config::defaults().server.rate_limits;
        config.rate_limit = Some("2/min".parse().unwrap());
        config.rate_limit_burst = Some(10);
        config.trusted_proxies = trusted.iter().map(|s| s.to_string()).collect();
        RateLimits::new(&config)
    }

    fn forwarded(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_forwarded_address_is_believed_only_from_a_trusted_proxy() {
        let headers = forwarded("203.0.113.9, 10.0.0.7");
        assert_eq!(
            limits(&[]).client_address(ip("10.0.0.5"), &headers),
            ip("10.0.0.5")
        );
        assert_eq!(
            limits(&["10.0.0.0/8"]).client_address(ip("10.0.0.5"), &headers),
            ip("203.0.113.9")
        );
        // A client's own forged entry comes before what the proxies wrote.
        let forged = forwarded("1.2.3.4, 203.0.113.9");
        assert_eq!(
            limits(&["10.0.0.0/8"]).client_address(ip("10.0.0.5"), &forged),
            ip("203.0.113.9")
        );
        assert_eq!(
            limits(&["10.0.0.0/8"]).client_address(ip("10.0.0.5"), &forwarded("junk")),
            ip("10.0.0.5")
        );
        assert_eq!(
            limits(&["10.0.0.0/8"]).client_address(ip("10.0.0.5"), &HeaderMap::new()),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_network() {
        assert_eq!(
            Client::anonymous(ip("2001:db8:1:2:aaaa::1")),
            Client::anonymous(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            Client::anonymous(ip("2001:db8:1:2::1")),
            Client::anonymous(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Client::anonymous(ip("::ffff:192.0.2.1")),
            Client::Address(ip("192.0.2.1"))
        );
    }

    #[test]
    fn a_bucket_refuses_past_its_burst_and_says_when_to_come_back() {
        let limits = limits(&[]);
        let client = Client::anonymous(ip("192.0.2.1"));
        assert_eq!(limits.take(client, 10), Ok(()));
        let refused = limits.take(client, 1).unwrap_err();
        // 2/min refills one request every 30 s.
        assert!(
            (29..=30).contains(&refused.retry_after_seconds()),
            "{refused:?}"
        );
        assert_eq!(limits.take(Client::anonymous(ip("192.0.2.2")), 1), Ok(()));
        assert_eq!(limits.take(Client::Exempt, 1000), Ok(()));
        assert_eq!(limits.take(client, 0), Ok(()));
    }

    #[test]
    fn buckets_full_again_are_forgotten() {
        let mut config = crate::config::Config::defaults().server.rate_limits;
        config.rate_limit = Some("1000/s".parse().unwrap());
        let limits = RateLimits::new(&config);
        for last in 1..=3 {
            limits
                .take(Client::anonymous(IpAddr::from([192, 0, 2, last])), 1)
                .unwrap();
        }
        assert_eq!(limits.held(), 3);
        // One request refills in a millisecond.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while limits.held() > 0 {
            assert!(std::time::Instant::now() < deadline, "still held");
            std::thread::sleep(Duration::from_millis(2));
            limits.forget_full();
        }
    }

    #[test]
    fn a_burst_below_a_cost_is_refused_at_start() {
        let mut config = crate::config::Config::defaults().server;
        assert!(config.validate().is_ok(), "off by default");
        config.rate_limits.rate_limit = Some("5/s".parse().unwrap());
        assert!(
            config.validate().is_ok(),
            "the burst is raised to the costs"
        );
        config.rate_limits.rate_limit_burst = Some(5);
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("--rate-limit-burst"), "{err}");
        config.rate_limits.rate_limit_upload_cost = 5;
        assert!(config.validate().is_ok());
        config.rate_limits.trusted_proxies = vec!["10.0.0.0/33".into()];
        assert!(config.validate().is_err());
    }

    #[test]
    fn a_request_selecting_a_submission_is_a_submission() {
        let operation = |query: &str, name: Option<&str>| {
            let document = async_graphql::parser::parse_query(query).unwrap();
            Operation::of_document(&document, name)
        };
        let submit = "mutation S { submitJob(input: $i) { job { id } } }";
        assert_eq!(operation(submit, None), Operation::Submission);
        assert_eq!(
            operation(
                "mutation { a: renameJob(input: $i) { job { id } } b: retryJob(input: $j) { job { id } } }",
                None
            ),
            Operation::Submission
        );
        assert_eq!(
            operation(
                "mutation { ...F } fragment F on Mutation { duplicateJob(input: $i) { job { id } } }",
                None
            ),
            Operation::Submission
        );
        assert_eq!(
            operation(
                &format!("{submit} query Q {{ viewer {{ isAuthenticated }} }}"),
                Some("Q")
            ),
            Operation::Read
        );
        for field in ["submitWorkflow", "retryWorkflow", "duplicateWorkflow"] {
            assert_eq!(
                operation(
                    &format!("mutation {{ {field}(input: $i) {{ workflow {{ id }} }} }}"),
                    None
                ),
                Operation::Submission,
                "{field}"
            );
        }
        assert_eq!(operation("{ submitJob }", None), Operation::Read);
        assert_eq!(
            operation("mutation { cancelJob(input: $i) { job { id } } }", None),
            Operation::Read
        );
    }

    #[test]
    fn rates_read_as_a_count_per_unit() {
        let rate: Rate = "30/min".parse().unwrap();
        assert_eq!(rate.interval(), Duration::from_secs(2));
        assert_eq!("5".parse::<Rate>().unwrap().per, Duration::from_secs(1));
        assert_eq!("0".parse::<Rate>().unwrap().count, 0);
        assert!("5/day".parse::<Rate>().is_err());
        assert!("many".parse::<Rate>().is_err());
    }
}
