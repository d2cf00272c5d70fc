//! Waiting for an event rather than for a while: a condition polled until a deadline, and a
//! future that tells when it has taken its place in a queue.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long to wait for something that happens within moments on an idle machine. Generous, so
/// that a loaded machine only makes a test slower, never wrong.
pub const WAIT: Duration = Duration::from_secs(30);

/// How soon a condition is checked again: at first soon, then less and less often (up to
/// `POLL_MAX`), so that a long wait does not load the server it waits for.
const POLL_FIRST: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(200);

/// Checks `check` until it returns `Ok`, and returns that. After `within`, fails with `what`
/// and the last `Err` seen: the state the test was waiting to change.
pub async fn eventually<T, E, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + within;
    let mut poll = POLL_FIRST;
    loop {
        match check().await {
            Ok(done) => return done,
            Err(seen) => assert!(
                Instant::now() < deadline,
                "{what}: still not so after {within:?}: {seen:?}"
            ),
        }
        tokio::time::sleep(poll).await;
        poll = (poll * 2).min(POLL_MAX);
    }
}

/// Checks `holds` until it is true; after `within`, fails with `what`.
pub async fn until<F, Fut>(within: Duration, what: &str, mut holds: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(within, what, || {
        let holds = holds();
        async move { if holds.await { Ok(()) } else { Err("false") } }
    })
    .await
}

/// Runs `future`, telling `polled` once it has been polled the first time. A future that queues
/// for a lock or a turn (a `tokio::sync::Mutex`, a SQLite writer's turn) has then taken its
/// place in the queue: whoever queues after that comes after it.
pub async fn telling_when_polled<F: Future>(future: F, polled: oneshot::Sender<()>) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut polled = Some(polled);
    std::future::poll_fn(|cx| {
        let poll = future.as_mut().poll(cx);
        if let Some(polled) = polled.take() {
            // The test may have stopped listening; the future runs on regardless.
            let _ = polled.send(());
        }
        poll
    })
    .await
}
