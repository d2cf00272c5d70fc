//! One execution of a subscription for every subscriber that would get the same results: the
//! same document, operation and variables, asked by one audience (`access::Audience`), of a
//! subscription whose results do not depend on when it started (`graphql::shared_from_start`).
//! Each result is resolved and serialized once; each subscriber only wraps it in its own
//! message. A thousand browsers watching one workspace cost one resolution per change, not a
//! thousand.
//!
//! A subscriber joins an execution already running and gets every result it gives from then
//! on, which covers every change committed after the subscriber started. One that falls more
//! than [`BACKLOG`] results behind (a slow client), or whose execution ends without finishing,
//! leaves it and goes on alone from the last event it got, read from the log
//! (`graphql::ResumeAfter`): nothing is missed, nothing repeated. The execution stops when its
//! last subscriber leaves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use futures_util::StreamExt as _;
use serde_json::json;
use tokio::sync::broadcast;
use tokio::task::AbortHandle;

use super::{CountOnce, Replies, run_operation};
use crate::access::{Audience, Viewer};
use crate::graphql::{self, AppSchema, Position};
use crate::live::Bus;

/// Results an execution keeps for subscribers that are behind; one further behind leaves it.
const BACKLOG: usize = 1024;

/// What makes two subscriptions the same.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) struct Key {
    query: String,
    operation_name: Option<String>,
    /// The variables as JSON.
    variables: String,
    audience: Audience,
}

impl Key {
    /// The key of a parsed request, or `None` when its results are each subscriber's own.
    pub(super) fn of(request: &mut async_graphql::Request, viewer: &Viewer) -> Option<Key> {
        let audience = viewer.audience()?;
        if !graphql::shared_from_start(request) {
            return None;
        }
        Some(Key {
            query: request.query.clone(),
            operation_name: request.operation_name.clone(),
            variables: serde_json::to_string(&request.variables).ok()?,
            audience,
        })
    }

    /// The request again, unparsed, for a subscriber going on alone.
    fn request(&self) -> async_graphql::Request {
        let mut request = async_graphql::Request::new(self.query.clone());
        request.operation_name = self.operation_name.clone();
        if let Ok(variables) = serde_json::from_str(&self.variables) {
            request.variables = async_graphql::Variables::from_json(variables);
        }
        request
    }
}

/// A result of a shared execution.
enum Item {
    /// The payload of a `next` message, how the metrics count it, and the `seq` of the last
    /// event behind it.
    Next {
        payload: Box<str>,
        outcome: &'static str,
        seq: i64,
    },
    /// Request errors (nothing ran); the end.
    Refused(Vec<async_graphql::ServerError>),
    /// The subscription finished.
    Complete,
}

/// A running execution, stopped when its last subscriber drops it.
pub(super) struct Execution {
    key: Key,
    /// Taken when the execution ends, after its last result: a subscriber that finds it gone
    /// starts a new execution.
    sender: Mutex<Option<broadcast::Sender<Arc<Item>>>>,
    task: Mutex<Option<AbortHandle>>,
    registry: Weak<Mutex<HashMap<Key, Weak<Execution>>>>,
}

impl Drop for Execution {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
        if let Some(registry) = self.registry.upgrade() {
            let mut running = registry.lock().unwrap_or_else(PoisonError::into_inner);
            // Unless a new execution of the same key took its place.
            if running
                .get(&self.key)
                .is_some_and(|entry| entry.strong_count() == 0)
            {
                running.remove(&self.key);
            }
        }
    }
}

/// This process's shared executions, by key.
pub struct SharedSubscriptions {
    /// Tells where the log stands when a subscriber joins.
    bus: Bus,
    running: Arc<Mutex<HashMap<Key, Weak<Execution>>>>,
    /// Subscribers that left an execution to go on alone.
    alone: AtomicU64,
}

impl SharedSubscriptions {
    pub fn new(bus: Bus) -> Self {
        SharedSubscriptions {
            bus,
            running: Arc::default(),
            alone: AtomicU64::new(0),
        }
    }

    /// Executions running now.
    pub fn running(&self) -> usize {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Subscribers of the executions running now.
    pub fn subscribers(&self) -> usize {
        let running: Vec<Arc<Execution>> = self
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        running
            .iter()
            .filter_map(|execution| {
                let sender = execution
                    .sender
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                sender.as_ref().map(broadcast::Sender::receiver_count)
            })
            .sum()
    }

    /// Subscribers that fell behind their execution, or outlived it, and went on alone.
    pub fn went_on_alone(&self) -> u64 {
        self.alone.load(Ordering::Relaxed)
    }

    /// Joins the running execution of `key`, or starts one with `request` (parsed, with its
    /// data), and returns it with a receiver of its results from now on.
    fn join(
        &self,
        key: Key,
        schema: &AppSchema,
        request: async_graphql::Request,
    ) -> (Arc<Execution>, broadcast::Receiver<Arc<Item>>) {
        // An execution that ended is dropped after the registry is unlocked: its `Drop`
        // locks it.
        let mut ended = None;
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(execution) = running.get(&key).and_then(Weak::upgrade) {
            // A task that stopped without ending the execution (it panicked) serves no more.
            let stopped = execution
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .is_some_and(AbortHandle::is_finished);
            let mut sender = execution
                .sender
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if stopped {
                // Its subscribers go on alone.
                sender.take();
            }
            let receiver = sender.as_ref().map(broadcast::Sender::subscribe);
            drop(sender);
            match receiver {
                Some(receiver) => return (execution, receiver),
                None => ended = Some(execution),
            }
        }
        let (sender, receiver) = broadcast::channel(BACKLOG);
        let execution = Arc::new(Execution {
            key: key.clone(),
            sender: Mutex::new(Some(sender)),
            task: Mutex::new(None),
            registry: Arc::downgrade(&self.running),
        });
        let task = tokio::spawn(execute(schema.clone(), request, Arc::downgrade(&execution)));
        *execution
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(task.abort_handle());
        running.insert(key, Arc::downgrade(&execution));
        drop(running);
        drop(ended);
        (execution, receiver)
    }
}

/// Runs the shared execution and broadcasts its results, each serialized once.
async fn execute(
    schema: AppSchema,
    mut request: async_graphql::Request,
    execution: Weak<Execution>,
) {
    let position = Position::default();
    request.data.insert(position.clone());
    let mut responses = std::pin::pin!(schema.execute_stream(request));
    let mut first = true;
    let mut last = None;
    while let Some(mut response) = responses.next().await {
        graphql::codes::fill(&mut response, false);
        let item = if first && graphql::is_request_error(&response) {
            Item::Refused(std::mem::take(&mut response.errors))
        } else {
            Item::Next {
                payload: serde_json::to_string(&response)
                    .unwrap_or_else(|_| {
                        r#"{"errors":[{"message":"the result could not be serialized"}]}"#.into()
                    })
                    .into(),
                outcome: crate::metrics::outcome(&response),
                seq: position.0.load(Ordering::Acquire),
            }
        };
        first = false;
        let refused = matches!(item, Item::Refused(_));
        if refused {
            last = Some(item);
            break;
        }
        let Some(execution) = execution.upgrade() else {
            return;
        };
        if let Some(sender) = execution
            .sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            // No receivers is not an error: the last subscriber is leaving.
            let _ = sender.send(Arc::new(item));
        }
    }
    // The last result goes out as the channel closes, so that no subscriber joins after it.
    if let Some(execution) = execution.upgrade()
        && let Some(sender) = execution
            .sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    {
        let _ = sender.send(Arc::new(last.unwrap_or(Item::Complete)));
    }
}

impl SharedSubscriptions {
    /// Runs an operation on the shared execution of `key` (joined, or started with `request`,
    /// parsed, with its data) and queues its results for the socket, as `run_operation` does
    /// for an execution of its own. It goes on alone, with request data from `data`, when it
    /// falls behind.
    pub(super) async fn follow(
        self: Arc<Self>,
        key: Key,
        schema: AppSchema,
        request: async_graphql::Request,
        data: impl Fn() -> async_graphql::Data,
        replies: Replies,
        count: impl FnOnce(&str),
    ) {
        // Every event after the bus's head is to come to this subscriber: later ones are
        // broadcast after it joins.
        let start = self.bus.head();
        let (execution, mut results) = self.join(key.clone(), &schema, request);
        let mut count = CountOnce(Some(count));
        let id = json!(replies.id).to_string();
        // Every event after `last` is still to come to this subscriber.
        let mut last = start;
        while let Ok(item) = results.recv().await {
            let message = match &*item {
                Item::Next {
                    payload,
                    outcome,
                    seq,
                } => {
                    count.once(outcome);
                    last = last.max(*seq);
                    let next = replies.protocol.next_type();
                    format!(r#"{{"type":"{next}","id":{id},"payload":{payload}}}"#)
                }
                Item::Refused(errors) => {
                    count.once("rejected");
                    replies.send(replies.request_error(errors)).await;
                    return;
                }
                Item::Complete => return replies.complete().await,
            };
            if !replies.send(message).await {
                return;
            }
        }
        // Behind, or the execution ended unfinished: on alone from the last event this
        // subscriber got.
        drop(results);
        drop(execution);
        self.alone.fetch_add(1, Ordering::Relaxed);
        let mut request = key.request();
        if let Err(error) = graphql::guard::admit(&mut request, None) {
            replies.send(replies.request_error(&[error])).await;
            return;
        }
        request.data = data();
        request.data.insert(graphql::ResumeAfter(last));
        run_operation(schema, request, replies, move |outcome| count.once(outcome)).await;
    }
}
