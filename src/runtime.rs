//! The node's runtime: one value that carries the shutdown signal and
//! tracks every background task the node starts (dialers, links, live
//! streams, exports, the reloader), so that shutdown can wait for them
//! before the writer stops and the store is flushed last.
//!
//! Background jobs share one shape, [`Worker`]: a bounded unit of work, an
//! interruptible wait for more, and a status line that the Admin API shows
//! (`samband status`). The runtime runs them ([`Runtime::spawn_worker`]).
//!
//! Owns no domain state and decides nothing; it must never block on a task
//! without a bound. May use: `locks`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Cheap to clone: clones share the signal, the tracker and the workers.
#[derive(Debug, Clone, Default)]
pub struct Runtime {
    shutdown: CancellationToken,
    tasks: TaskTracker,
    workers: Arc<Mutex<Workers>>,
}

#[derive(Debug, Default)]
struct Workers {
    next_id: u64,
    running: BTreeMap<u64, WorkerInfo>,
}

/// What a worker's last unit of work left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// More is waiting: work again at once.
    Busy,
    /// Nothing to do until [`Worker::wait_for_work`] returns.
    Idle,
    /// Finished for good.
    Done,
}

impl WorkerState {
    /// The word operators see.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Busy => "busy",
            WorkerState::Idle => "idle",
            WorkerState::Done => "done",
        }
    }
}

/// A background job (as in Garage's `Worker`): the runtime calls
/// [`Worker::work`] while it answers `Busy`, [`Worker::wait_for_work`] when
/// it answers `Idle`, stops at `Done`, and interrupts either call when the
/// node stops.
pub trait Worker: Send + 'static {
    /// What operators see it as, e.g. "reloader".
    fn name(&self) -> String;
    /// One bounded unit of work.
    fn work(&mut self) -> impl Future<Output = WorkerState> + Send;
    /// Completes when there may be work again.
    fn wait_for_work(&mut self) -> impl Future<Output = ()> + Send;
    /// One line for operators: what the last unit did, or why it failed.
    fn status(&self) -> String;
}

/// A running worker, as operators see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub name: String,
    pub state: WorkerState,
    /// Units of work done.
    pub runs: u64,
    pub status: String,
}

impl Runtime {
    /// A runtime that stops when `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            ..Self::default()
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

    /// Runs `worker` as a tracked task until it is `Done` or the node stops.
    pub fn spawn_worker<W: Worker>(&self, mut worker: W) {
        let id = {
            let mut workers = crate::locks::lock(&self.workers);
            workers.next_id += 1;
            let info = WorkerInfo {
                name: worker.name(),
                state: WorkerState::Idle,
                runs: 0,
                status: worker.status(),
            };
            let id = workers.next_id;
            workers.running.insert(id, info);
            id
        };
        let (shutdown, workers) = (self.shutdown.clone(), self.workers.clone());
        self.spawn(async move {
            loop {
                let state = tokio::select! {
                    () = shutdown.cancelled() => break,
                    state = worker.work() => state,
                };
                if let Some(info) = crate::locks::lock(&workers).running.get_mut(&id) {
                    info.runs += 1;
                    info.state = state;
                    info.status = worker.status();
                }
                match state {
                    WorkerState::Busy => {}
                    WorkerState::Idle => tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = worker.wait_for_work() => {}
                    },
                    WorkerState::Done => break,
                }
            }
            crate::locks::lock(&workers).running.remove(&id);
        });
    }

    /// The running workers, in the order they started.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        crate::locks::lock(&self.workers)
            .running
            .values()
            .cloned()
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Busy twice, then idle until woken, then done.
    struct Countdown {
        left: u32,
        wake: Arc<tokio::sync::Notify>,
    }

    impl Worker for Countdown {
        fn name(&self) -> String {
            "countdown".into()
        }
        async fn work(&mut self) -> WorkerState {
            self.left = self.left.saturating_sub(1);
            match self.left {
                0 => WorkerState::Done,
                1 => WorkerState::Idle,
                _ => WorkerState::Busy,
            }
        }
        async fn wait_for_work(&mut self) {
            self.wake.notified().await;
        }
        fn status(&self) -> String {
            format!("{} left", self.left)
        }
    }

    /// Yields until `cond` holds; fails the test after a generous bound.
    async fn until(what: &str, cond: impl Fn() -> bool) {
        let wait = async {
            while !cond() {
                tokio::task::yield_now().await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .unwrap_or_else(|_| panic!("never: {what}"));
    }

    #[tokio::test]
    async fn a_worker_runs_while_busy_waits_while_idle_and_is_listed_until_done() {
        let runtime = Runtime::new(CancellationToken::new());
        let wake = Arc::new(tokio::sync::Notify::new());
        runtime.spawn_worker(Countdown {
            left: 3,
            wake: wake.clone(),
        });
        let idle = WorkerInfo {
            name: "countdown".into(),
            state: WorkerState::Idle,
            runs: 2,
            status: "1 left".into(),
        };
        until("idle after two units", || {
            runtime.workers() == [idle.clone()]
        })
        .await;
        wake.notify_one();
        until("done once woken", || runtime.workers().is_empty()).await;
        assert!(runtime.drain(Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn shutdown_interrupts_an_idle_worker_and_drain_waits_for_it() {
        let runtime = Runtime::new(CancellationToken::new());
        runtime.spawn_worker(Countdown {
            left: 2,
            wake: Arc::default(),
        });
        let state = || runtime.workers().first().map(|w| w.state);
        until("idle", || state() == Some(WorkerState::Idle)).await;
        runtime.shutdown().cancel();
        assert!(runtime.drain(Duration::from_secs(5)).await);
        assert!(runtime.workers().is_empty());
        assert_eq!(runtime.tasks(), 0);
    }
}
