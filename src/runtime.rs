//! The node's runtime: one value that carries the shutdown signal and
//! tracks every background task the node starts (dialers, links, live
//! streams, exports, the reloader), so that shutdown can wait for them
//! before the writer stops and the store is flushed last.
//!
//! Owns no domain state and decides nothing; it must never block on a task
//! without a bound. May use: nothing of samband.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Cheap to clone: clones share the signal and the tracker.
#[derive(Debug, Clone, Default)]
pub struct Runtime {
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Runtime {
    /// A runtime that stops when `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            tasks: TaskTracker::new(),
        }
    }

    /// Cancelled when the node stops; tasks watch it (or a child of it).
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Starts a tracked task: [`Runtime::drain`] waits for it.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// Takes no new tasks and waits up to `within` for the tracked ones to
    /// end (they end on the shutdown signal); `false` if some did not.
    pub async fn drain(&self, within: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(within, self.tasks.wait())
            .await
            .is_ok()
    }

    /// How many tracked tasks are running.
    pub fn tasks(&self) -> usize {
        self.tasks.len()
    }
}
