//! A running node: opens the store, starts the writer, serves the member
//! listener, and shuts down in order.
//!
//! [`Node::open`] does everything that can fail on bad local state (config,
//! keys, a locked or foreign data dir) before anything listens;
//! [`Node::run`] takes a bound listener and a shutdown token, so tests start
//! a node on `127.0.0.1:0` in two lines. Shutdown: stop accepting, let
//! in-flight requests finish (bounded by [`GRACE`]), let the writer commit
//! what it queued, flush the store last.

mod commits;
mod durable;
mod fanout;
mod listener;
mod local;
mod revocations;
mod subscription;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ring::signature::Ed25519KeyPair;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use commits::Commits;
pub use durable::DurableMarks;
pub use listener::tls_incoming;
pub use local::{LocalNode, LocalNodeError};
pub use revocations::{Revocations, RevokeError, revoke_member};
pub use subscription::{Start, Subscription};
pub use writer::{NewPost, Offered, Pending, RosterChange, WriteError, WriterHandle};

use crate::audit::Event;
use crate::config::{Config, Limits};
use crate::federation::Federation;
use crate::model::{ChannelId, MemberName, OrgId};
use crate::pki::{CertInfo, OrgPki, PkiError};
use crate::rate::Buckets;
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
    #[error("stopped: {0}; a restart recovers what is durable")]
    WriterFailed(String),
    #[error(transparent)]
    Federation(#[from] crate::federation::FederationError),
}

/// A node whose state is open but which does not serve yet.
#[derive(Debug)]
pub struct Node {
    config: Config,
    pki: OrgPki,
    store: Store,
    key: Ed25519KeyPair,
    client_tls: Arc<rustls::ServerConfig>,
    reload: Arc<Notify>,
}

/// The bound sockets a node serves on.
#[derive(Debug)]
pub struct Listeners {
    /// Members (Messaging, Admin).
    pub client: TcpListener,
    /// Partner nodes (Federation).
    pub federation: TcpListener,
}

impl Listeners {
    /// Binds both listeners of `config`.
    pub async fn bind(config: &Config) -> std::io::Result<Self> {
        Ok(Self {
            client: TcpListener::bind(config.client.listen).await?,
            federation: TcpListener::bind(config.federation.listen).await?,
        })
    }
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
    pub revocations: Revocations,
    /// Members read from client certificates, so each is parsed once.
    pub identities: crate::identity::IdentityCache,
    pub pki: OrgPki,
    /// The member listener's TLS settings; a reload replaces them.
    client_tls: RwLock<Arc<rustls::ServerConfig>>,
    /// Per member: how fast they may post (`limits.member_posts_per_second`).
    post_rates: Buckets<MemberName>,
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
        if pki.install_renewal()? {
            tracing::info!("completed an interrupted node certificate renewal");
        }
        let key = pki.message_key()?;
        let client_tls = Arc::new(pki.client_listener_tls()?);
        warn_if_expiring(&pki.node_certificate()?);
        let store = Store::open(
            &data_dir(dir),
            &config.org,
            config.store.cache_mib * 1024 * 1024,
        )?;
        Ok(Self {
            config,
            pki,
            store,
            key,
            client_tls,
            reload: Arc::default(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Notify this (e.g. on SIGHUP) to make the running node re-read its
    /// certificate and peer trust; see [`reload`].
    pub fn reload_trigger(&self) -> Arc<Notify> {
        self.reload.clone()
    }

    /// Serves members and partner nodes until `shutdown` is cancelled.
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: CancellationToken,
    ) -> Result<(), NodeError> {
        let Node {
            config,
            pki,
            store,
            key,
            client_tls,
            reload,
        } = self;
        let fanout = Arc::new(fanout::Fanout::default());
        let commits = Arc::new(Commits::default());
        let settings = writer::WriterSettings {
            org: config.org.clone(),
            // The protocol-wide ceiling, not this node's own posting limit.
            max_envelope_bytes: crate::config::MAX_ENVELOPE_BYTES,
            channels_per_partner: config.limits.channels_per_partner,
        };
        let durable = Arc::new(DurableMarks::default());
        let (writer, writer_thread) = writer::spawn(
            store.clone(),
            settings,
            key,
            fanout.clone(),
            commits.clone(),
            durable.clone(),
            shutdown.clone(),
        )
        .map_err(NodeError::Thread)?;
        let advertise = match config.federation.advertise.rsplit_once(':') {
            // Port 0 (tests, scripts): advertise the port the listener got.
            Some((host, "0")) => format!(
                "{host}:{}",
                listeners.federation.local_addr().map_or(0, |a| a.port())
            ),
            _ => config.federation.advertise.clone(),
        };
        let fed = Federation::new(crate::federation::Parts {
            org: config.org.clone(),
            pki: pki.clone(),
            store: store.clone(),
            writer: writer.clone(),
            commits,
            durable,
            shutdown: shutdown.clone(),
            advertise,
            peer_rate: (
                config.limits.peer_envelopes_per_second,
                config.limits.peer_envelope_burst,
            ),
        })?;
        let shared = Arc::new(Shared {
            org: config.org.clone(),
            store: store.clone(),
            writer: writer.clone(),
            limits: config.limits.clone(),
            started: Instant::now(),
            shutdown: shutdown.clone(),
            revocations: Revocations::load(&store)?,
            identities: Default::default(),
            pki,
            client_tls: RwLock::new(client_tls),
            post_rates: Buckets::new(
                config.limits.member_posts_per_second,
                config.limits.member_post_burst,
            ),
            fanout,
        });
        let tls_shared = shared.clone();
        let client_incoming = listener::tls_incoming(
            listeners.client,
            move || Some(tls_shared.client_tls()),
            config.limits.connections_per_listener,
            shutdown.clone(),
        );
        spawn_reloader(reload, shared.clone(), fed.clone(), shutdown.clone());
        let tls_fed = fed.clone();
        let federation_incoming = listener::tls_incoming(
            listeners.federation,
            move || tls_fed.listener_tls(),
            config.limits.connections_per_listener,
            shutdown.clone(),
        );
        let server_error = |e: tonic_reflection::server::Error| NodeError::Server(e.to_string());
        let client_server = crate::api::client_router(shared, fed.clone())
            .await
            .map_err(server_error)?
            .serve_with_incoming_shutdown(client_incoming, shutdown.clone().cancelled_owned());
        let federation_server =
            crate::api::federation_router(fed.clone(), config.limits.streams_per_connection)
                .await
                .map_err(server_error)?
                .serve_with_incoming_shutdown(
                    federation_incoming,
                    shutdown.clone().cancelled_owned(),
                );
        fed.start()?;
        let servers = async {
            let (a, b) = tokio::join!(client_server, federation_server);
            a.and(b).map_err(|e| NodeError::Server(e.to_string()))
        };
        let result = tokio::select! {
            r = servers => r,
            () = async { shutdown.cancelled().await; tokio::time::sleep(GRACE).await } => {
                tracing::warn!(grace = ?GRACE, "in-flight requests did not finish in time; closing them");
                Ok(())
            }
        };
        drop(fed);
        writer.stop().await;
        match tokio::task::spawn_blocking(move || writer_thread.join()).await {
            Ok(Ok(Ok(()))) => {}
            // Nothing more is written: what the failed write left is for the restart to recover.
            Ok(Ok(Err(e))) => {
                return Err(NodeError::WriterFailed(format!(
                    "the store could not make a write durable ({e})"
                )));
            }
            _ => return Err(NodeError::WriterFailed("the writer thread panicked".into())),
        }
        store.flush()?;
        tracing::info!("stopped; store flushed");
        result
    }
}

/// Re-reads the node certificate (e.g. after `samband pki renew`) and the
/// peer trust. New connections use them; open ones keep theirs.
pub fn reload(shared: &Shared, fed: &Federation) -> Result<CertInfo, NodeError> {
    shared.pki.install_renewal()?;
    let tls = Arc::new(shared.pki.client_listener_tls()?);
    fed.reload_tls()?;
    *crate::sync::write(&shared.client_tls) = tls;
    let cert = shared.pki.node_certificate()?;
    let not_after = crate::model::rfc3339(cert.not_after);
    shared.store.audit(
        Event::new("node.reloaded")
            .with("node_cert_serial", &cert.serial)
            .with("node_cert_not_after", &not_after),
    )?;
    shared.store.flush()?;
    tracing::info!(serial = %cert.serial, %not_after, "reloaded the node certificate and peer trust");
    warn_if_expiring(&cert);
    Ok(cert)
}

/// Warns when the node certificate expires within 30 days.
pub fn warn_if_expiring(cert: &CertInfo) {
    let left = cert.not_after - time::OffsetDateTime::now_utc();
    if left < time::Duration::days(30) {
        tracing::warn!(
            not_after = %crate::model::rfc3339(cert.not_after),
            days_left = left.whole_days(),
            "the node certificate expires soon; partners and members will be refused then \
             (renew it: samband pki renew --dir DIR)"
        );
    }
}

fn spawn_reloader(
    trigger: Arc<Notify>,
    shared: Arc<Shared>,
    fed: Arc<Federation>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = trigger.notified() => {}
            }
            if let Err(e) = reload(&shared, &fed) {
                tracing::error!(error = %e, "reload failed; the node keeps its previous certificate and trust");
            }
        }
    });
}

// === impl Shared ===

impl Shared {
    /// Whether `member` may post now under `limits.member_posts_per_second`.
    pub fn may_post(&self, member: &MemberName) -> bool {
        self.post_rates.try_take(member, Instant::now())
    }

    fn client_tls(&self) -> Arc<rustls::ServerConfig> {
        crate::sync::read(&self.client_tls).clone()
    }

    /// Follows `channel` from `start`; see [`Subscription`].
    /// `None` when the channel has `limits.subscribers_per_channel` already.
    pub fn subscribe(
        &self,
        channel: &ChannelId,
        start: Start,
    ) -> Result<Option<Subscription>, StoreError> {
        let Some(rx) = self
            .fanout
            .subscribe(channel, self.limits.subscribers_per_channel)
        else {
            return Ok(None);
        };
        Subscription::new(self.store.clone(), channel.clone(), rx, start).map(Some)
    }
}
