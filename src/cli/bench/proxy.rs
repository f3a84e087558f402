//! A TCP proxy between two nodes of a bench: it moves at most a given
//! rate each way, remembers when it last accepted a connection, and can
//! cut the link (every connection closed, new ones refused) and heal it.
//! Loopback only; it never interprets what it carries.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// No limit on the rate, bytes per second.
pub(super) const UNLIMITED: u64 = u64::MAX;

#[derive(Default)]
struct State {
    /// When the first connection since the last [`Proxy::reset`] came.
    accepted: Option<Instant>,
    /// The connections being carried, to close on a cut.
    carried: Vec<AbortHandle>,
}

pub(super) struct Proxy {
    pub(super) addr: SocketAddr,
    state: Arc<Mutex<State>>,
    cut: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a loopback port and carries each connection to
    /// `upstream` at no more than `rate` bytes per second each way.
    pub(super) async fn start(upstream: SocketAddr, rate: u64) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state: Arc<Mutex<State>> = Arc::default();
        let cut = Arc::new(AtomicBool::new(false));
        let (held, is_cut) = (state.clone(), cut.clone());
        let task = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                if is_cut.load(Ordering::SeqCst) {
                    continue; // dropped: the dialer sees the connection close
                }
                let carried = tokio::spawn(async move {
                    let Ok(up) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = (down.set_nodelay(true), up.set_nodelay(true));
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    tokio::join!(pipe(dr, uw, rate), pipe(ur, dw, rate));
                });
                let mut state = held.lock().unwrap_or_else(PoisonError::into_inner);
                state.accepted.get_or_insert_with(Instant::now);
                state.carried.retain(|c| !c.is_finished());
                state.carried.push(carried.abort_handle());
            }
        });
        Ok(Self {
            addr,
            state,
            cut,
            task,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets the last connection: the next one counts as the link's return.
    pub(super) fn reset(&self) {
        self.state().accepted = None;
    }

    /// When the first connection since the last [`Proxy::reset`] came.
    pub(super) fn accepted(&self) -> Option<Instant> {
        self.state().accepted
    }

    /// Cuts the link: every connection carried is closed, and new ones
    /// are closed as they come, until [`Proxy::heal`].
    pub(super) fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for carried in self.state().carried.drain(..) {
            carried.abort();
        }
    }

    /// Carries connections again.
    pub(super) fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        for carried in self.state().carried.drain(..) {
            carried.abort();
        }
    }
}

/// Copies `from` to `to` at no more than `rate` bytes per second.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    rate: u64,
) {
    let start = Instant::now();
    let mut moved = 0u64;
    let mut buf = vec![0; 16 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        if rate == UNLIMITED {
            continue;
        }
        moved += n as u64;
        let due = Duration::from_secs_f64(moved as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    let _ = to.shutdown().await;
}
