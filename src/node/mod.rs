//! A running node: opens the store, starts the writer, serves the member
//! listener, and shuts down in order.
//!
//! [`Node::open`] does everything that can fail on bad local state (config,
//! keys, a locked or foreign data dir) before anything listens;
//! [`Node::run`] takes a bound listener and a shutdown token, so tests start
//! a node on `127.0.0.1:0` in two lines. Shutdown: stop accepting, let
//! in-flight requests finish (bounded by [`GRACE`]), let the writer commit
//! what it queued, flush the store last.

mod listener;
mod local;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use ring::signature::Ed25519KeyPair;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use listener::tls_incoming;
pub use local::{LocalNode, LocalNodeError};

use crate::config::Config;
use crate::engine::{self, Commits, DurableMarks, Fanout, Revocations};
use crate::federation::Federation;
use crate::pki::{OrgPki, PkiError};
use crate::rate::Buckets;
use crate::runtime::{Runtime, Worker, WorkerState};
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
    #[error(
        "the node certificate expired on {0}: members and partners would all be refused; \
         renew it with `samband pki renew --dir DIR`, then start the node again"
    )]
    CertificateExpired(String),
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
        Self::bind_to(config.client.listen, config.federation.listen).await
    }

    /// Binds the member listener to `client` and the federation listener
    /// to `federation` (port 0: any free port).
    pub async fn bind_to(client: SocketAddr, federation: SocketAddr) -> std::io::Result<Self> {
        Ok(Self {
            client: TcpListener::bind(client).await?,
            federation: TcpListener::bind(federation).await?,
        })
    }
}

// === impl Node ===

impl Node {
    /// Opens the node in `dir` with a validated `config`.
    pub fn open(dir: &Path, config: Config) -> Result<Self, NodeError> {
        let pki = OrgPki::at(dir);
        if pki.install_renewal()? {
            tracing::info!("completed an interrupted node certificate renewal");
        }
        pki.check_org(&config.org)?;
        let key = pki.message_key()?;
        let client_tls = Arc::new(pki.client_listener_tls()?);
        let cert = pki.node_certificate()?;
        if cert.not_after <= time::OffsetDateTime::now_utc() {
            return Err(NodeError::CertificateExpired(crate::model::rfc3339(
                cert.not_after,
            )));
        }
        let store = Store::open(
            &crate::layout::data_dir(dir),
            &config.org,
            config.store.cache_mib * 1024 * 1024,
        )?;
        store
            .files()
            .pace_during_messages(config.limits.file_bytes_per_second_during_messages);
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
        let runtime = Runtime::new(shutdown.clone());
        let refusals = Arc::new(crate::federation::Refusals::default());
        let fanout = Arc::new(Fanout::default());
        let commits = Arc::new(Commits::default());
        let settings = engine::WriterSettings {
            org: config.org.clone(),
            // The protocol-wide ceiling, not this node's own posting limit.
            max_envelope_bytes: crate::config::MAX_ENVELOPE_BYTES,
            channels_per_partner: config.limits.channels_per_partner,
        };
        let durable = Arc::new(DurableMarks::default());
        let (writer, writer_thread) = engine::spawn(
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
        let fed = Federation::new(crate::federation::Dependencies {
            org: config.org.clone(),
            pki: pki.clone(),
            store: store.clone(),
            writer: writer.clone(),
            commits,
            durable,
            runtime: runtime.clone(),
            refusals: refusals.clone(),
            advertise,
            peer_rate: (
                config.limits.peer_envelopes_per_second,
                config.limits.peer_envelope_burst,
            ),
        })?;
        let shared = Arc::new(crate::api::ApiContext {
            org: config.org.clone(),
            store: store.clone(),
            writer: writer.clone(),
            limits: config.limits.clone(),
            started: Instant::now(),
            runtime: runtime.clone(),
            refusals,
            revocations: Revocations::load(&store)?,
            identities: Default::default(),
            pki,
            client_tls: RwLock::new(client_tls),
            post_rates: Buckets::new(
                config.limits.member_posts_per_second,
                config.limits.member_post_burst,
            ),
            upload_rates: Buckets::new(
                config.limits.member_upload_bytes_per_second,
                config
                    .limits
                    .member_upload_bytes_per_second
                    .max(crate::model::CHUNK_BYTES as u32),
            ),
            file_streams: Default::default(),
            fanout,
        });
        let (tls_shared, members) = (shared.clone(), shared.clone());
        let client_incoming = listener::tls_incoming(
            listeners.client,
            move || Some(tls_shared.client_tls()),
            move |chain| members.identify(chain),
            config.limits.connections_per_listener,
            shutdown.clone(),
        );
        runtime.spawn_worker(Reloader {
            trigger: reload,
            api: shared.clone(),
            fed: fed.clone(),
            due: false,
            last: "waiting for SIGHUP".to_owned(),
        });
        runtime.spawn_worker(fed.fetcher(
            config.limits.max_file_bytes,
            config.limits.disk_reserve_bytes,
        ));
        runtime.spawn_worker(UploadSweep {
            store: store.clone(),
            keep: Duration::from_secs(config.limits.unposted_upload_seconds),
            last: "not run yet".to_owned(),
        });
        runtime.spawn_worker(ExpiryWatch {
            api: shared.clone(),
            last: String::new(),
        });
        runtime.spawn_worker(crate::api::OverdueWatch::new(shared.clone()));
        let (tls_fed, peers) = (fed.clone(), fed.clone());
        let federation_incoming = listener::tls_incoming(
            listeners.federation,
            move || tls_fed.listener_tls(),
            move |chain| peers.identify(chain),
            config.limits.connections_per_listener,
            shutdown.clone(),
        );
        let server_error = |e: tonic_reflection::server::Error| NodeError::Server(e.to_string());
        let client_server = crate::api::client_router(shared, fed.clone())
            .await
            .map_err(|e| NodeError::Server(e.to_string()))?
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
        // Links, dialers, streams and the reloader end on the signal; what
        // they handed the writer is committed before it stops.
        if !runtime.drain(GRACE).await {
            tracing::warn!(tasks = runtime.tasks(), grace = ?GRACE, "background tasks did not end in time; stopping without them");
        }
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

/// Re-reads certificate and trust each time `trigger` is notified (SIGHUP,
/// `samband pki reload` reloads directly).
struct Reloader {
    trigger: Arc<Notify>,
    api: Arc<crate::api::ApiContext>,
    fed: Arc<Federation>,
    /// Whether a reload was asked for and not done yet.
    due: bool,
    /// What the last reload did.
    last: String,
}

impl Worker for Reloader {
    fn name(&self) -> String {
        "reloader".to_owned()
    }

    async fn work(&mut self) -> WorkerState {
        if std::mem::take(&mut self.due) {
            let at = crate::store::now_rfc3339();
            self.last = match crate::api::reload(&self.api, &self.fed, &crate::audit::Actor::Host) {
                Ok(cert) => format!("reloaded at {at} (node certificate {})", cert.serial),
                Err(e) => {
                    tracing::error!(error = %e, "reload failed; the node keeps its previous certificate and trust");
                    format!("reload failed at {at}: {e}")
                }
            };
        }
        WorkerState::Idle
    }

    async fn wait_for_work(&mut self) {
        self.trigger.notified().await;
        self.due = true;
    }

    fn status(&self) -> String {
        self.last.clone()
    }
}

/// Removes uploads no post referenced within `limits.unposted_upload_seconds`
/// (and their bytes, unless a stored message references them), and partial
/// files idle as long.
struct UploadSweep {
    store: Store,
    keep: Duration,
    last: String,
}

impl Worker for UploadSweep {
    fn name(&self) -> String {
        "upload sweep".to_owned()
    }

    async fn work(&mut self) -> WorkerState {
        let before = crate::model::unix_ms().saturating_sub(self.keep.as_millis() as u64);
        self.last = match self.store.sweep_uploads(before).await {
            Ok((0, _)) => "no unposted uploads expired".to_owned(),
            Ok((uploads, files)) => {
                tracing::info!(uploads, files, "removed unposted uploads");
                format!("removed {uploads} unposted uploads, {files} files")
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot sweep unposted uploads");
                format!("failed: {e}")
            }
        };
        WorkerState::Idle
    }

    async fn wait_for_work(&mut self) {
        // A quarter of the keep time, so nothing outstays it by much.
        let every = (self.keep / 4).clamp(Duration::from_secs(1), Duration::from_secs(600));
        tokio::time::sleep(every).await;
    }

    fn status(&self) -> String {
        self.last.clone()
    }
}

/// Once a day (and at start): records in the audit log the member
/// certificates issued on the host since, and warns in the log of every
/// certificate of the org that ends within
/// [`crate::pki::EXPIRY_WARNING_DAYS`] — the CA, the node, the operator
/// identity, members — with its date and how to renew it.
struct ExpiryWatch {
    api: Arc<crate::api::ApiContext>,
    /// The soonest end, or why it could not be read.
    last: String,
}

impl Worker for ExpiryWatch {
    fn name(&self) -> String {
        "certificate watch".to_owned()
    }

    async fn work(&mut self) -> WorkerState {
        // Members issued on the host since the node last looked.
        let host = crate::audit::Actor::Host;
        if let Err(e) = crate::engine::record_issued(&self.api.pki, &self.api.store, &host) {
            tracing::warn!(error = %e, "cannot record issued member certificates in the audit log");
        }
        let expiries = match self.api.expiries() {
            Ok(expiries) => expiries,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the org's certificates to watch their expiry");
                self.last = format!("cannot read the certificates: {e}");
                return WorkerState::Idle;
            }
        };
        for c in expiries
            .iter()
            .filter(|c| c.days_left < crate::pki::EXPIRY_WARNING_DAYS)
        {
            let renew = match c.kind.as_str() {
                "node" => "samband pki renew --dir DIR".to_owned(),
                "operator" => "samband user renew operator --dir DIR".to_owned(),
                "ca" => "a new CA means new trust bundles for every partner; plan it".to_owned(),
                _ => format!("samband user renew {} --dir DIR --out BUNDLE_DIR", c.name),
            };
            tracing::warn!(
                kind = %c.kind, name = %c.name, serial = %c.serial,
                not_after = %c.not_after, days_left = c.days_left,
                "a certificate ends soon ({renew})"
            );
        }
        self.last = match expiries.first() {
            Some(c) => format!("soonest end: {} {} on {}", c.kind, c.name, c.not_after),
            None => "no certificates".to_owned(),
        };
        WorkerState::Idle
    }

    async fn wait_for_work(&mut self) {
        tokio::time::sleep(Duration::from_secs(24 * 60 * 60)).await;
    }

    fn status(&self) -> String {
        self.last.clone()
    }
}
