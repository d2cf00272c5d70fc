//! The loop of the writers that record in groups (`completions`, `reports`): what arrives
//! while one group is being written goes together into the next. No request waits for a
//! timer: an idle writer writes one at once.

use std::future::Future;

use tokio::sync::mpsc;

/// Starts a writer that hands `write` every group of requests sent to it, at most `max_group`
/// each, one group after the other; it stops when the last sender is dropped.
pub(super) fn start<R, W, F>(max_group: usize, mut write: W) -> mpsc::UnboundedSender<R>
where
    R: Send + 'static,
    W: FnMut(Vec<R>) -> F + Send + 'static,
    F: Future<Output = ()> + Send,
{
    let (sender, mut receiver) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut group = Vec::new();
        while receiver.recv_many(&mut group, max_group).await > 0 {
            write(std::mem::take(&mut group)).await;
        }
    });
    sender
}
