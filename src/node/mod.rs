//! A running node: opens the store, starts the writer, serves the member
//! listener, and shuts down in order.
//!
//! [`Node::open`] does everything that can fail on bad local state (config,
//! keys, a locked or foreign data dir) before anything listens;
//! [`Node::run`] takes a bound listener and a shutdown token, so tests start
//! a node on `127.0.0.1:0` in two lines. Shutdown: stop accepting, let
//! in-flight requests finish (bounded by [`GRACE`]), let the writer commit
//! what it queued, flush the store last.

mod fanout;
mod listener;
mod subscription;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ring::signature::Ed25519KeyPair;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use subscription::{Start, Subscription};
pub use writer::{NewPost, WriteError, WriterHandle};

use crate::config::{Config, Limits};
use crate::model::{ChannelId, OrgId};
use crate::pki::{OrgPki, PkiError};
use crate::store::{Store, StoreError};

/// How long in-flight requests may take to finish once shutdown begins.
pub const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("cannot start the writer thread: {0}")]
    Thread(std::io::Error),
    #[error("gRPC server: {0}")]
    Server(String),
}

/// A node whose state is open but which does not serve yet.
#[derive(Debug)]
pub struct Node {
    config: Config,
    store: Store,
    key: Ed25519KeyPair,
    client_tls: Arc<rustls::ServerConfig>,
}

/// What the API services share. Cheap to reach through an `Arc`.
#[derive(Debug)]
pub struct Shared {
    pub org: OrgId,
    pub store: Store,
    pub writer: WriterHandle,
    pub limits: Limits,
    pub started: Instant,
    /// Cancelled when the node begins to shut down; long streams end on it.
    pub shutdown: CancellationToken,
    fanout: Arc<fanout::Fanout>,
}

/// The data directory inside a node directory.
pub fn data_dir(node_dir: &Path) -> PathBuf {
    node_dir.join("data")
}

// === impl Node ===

impl Node {
    /// Opens the node in `dir` with a validated `config`.
    pub fn open(dir: &Path, config: Config) -> Result<Self, NodeError> {
        let pki = OrgPki::at(dir);
        let key = pki.message_key()?;
        let client_tls = Arc::new(pki.client_listener_tls()?);
        let store = Store::open(
            &data_dir(dir),
            &config.org,
            config.store.cache_mib * 1024 * 1024,
        )?;
        Ok(Self {
            config,
            store,
            key,
            client_tls,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Serves members on `client` until `shutdown` is cancelled.
    pub async fn run(
        self,
        client: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), NodeError> {
        let Node {
            config,
            store,
            key,
            client_tls,
        } = self;
        let fanout = Arc::new(fanout::Fanout::default());
        let (writer, writer_thread) =
            writer::spawn(store.clone(), config.org.clone(), key, fanout.clone())
                .map_err(NodeError::Thread)?;
        let shared = Arc::new(Shared {
            org: config.org.clone(),
            store: store.clone(),
            writer: writer.clone(),
            limits: config.limits.clone(),
            started: Instant::now(),
            shutdown: shutdown.clone(),
            fanout,
        });
        let incoming = listener::tls_incoming(client, client_tls, shutdown.clone());
        let served = crate::api::client_router(shared)
            .await
            .map_err(|e| NodeError::Server(e.to_string()))?;
        let server =
            served.serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
        tokio::pin!(server);
        let result = tokio::select! {
            r = &mut server => r.map_err(|e| NodeError::Server(e.to_string())),
            () = async { shutdown.cancelled().await; tokio::time::sleep(GRACE).await } => {
                tracing::warn!(grace = ?GRACE, "in-flight requests did not finish in time; closing them");
                Ok(())
            }
        };
        writer.stop().await;
        match tokio::task::spawn_blocking(move || writer_thread.join()).await {
            Ok(Ok(())) => {}
            _ => tracing::error!("writer thread ended abnormally"),
        }
        store.flush()?;
        tracing::info!("stopped; store flushed");
        result
    }
}

// === impl Shared ===

impl Shared {
    /// Follows `channel` from `start`; see [`Subscription`].
    pub fn subscribe(&self, channel: &ChannelId, start: Start) -> Result<Subscription, StoreError> {
        let rx = self.fanout.subscribe(channel);
        Subscription::new(self.store.clone(), channel.clone(), rx, start)
    }
}
