//! Federation: partner trust, links to partner nodes, and replication of
//! shared channels over them.
//!
//! * `wire` — the link's codec and the limits of one frame.
//! * `link` — one link: a bidirectional stream of frames; a sender that
//!   pushes what the peer lacks, a reader that applies what arrives.
//! * `dialer` — dialing a peer with capped, jittered backoff.
//! * this file — the registry of peers and links, listener TLS that follows
//!   the peer table without a restart, and link status for operators.
//!
//! Nothing here decides what may leave the node: `rules::eligibility` does,
//! from the channel's roster, for every envelope of every push.

mod deliveries;
mod dialer;
mod error;
mod files;

use error::IdentifyError;
pub(crate) use refusals::Refusals;
mod link;
pub(crate) mod refusals;
pub mod wire;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use rustls_pki_types::CertificateDer;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use crate::engine::{Commits, DurableMarks, WriterHandle};
use crate::model::{ChannelId, OrgId, unix_ms};
use crate::pki::{OrgPki, PkiError};
use crate::proto::{self, AcceptPolicy, ChannelRecord, PeerRecord};
use crate::rules;
use crate::runtime::Runtime;
use crate::store::{Store, StoreError};
use crate::trust::{BundleError, TrustBundle};

pub use files::Fetcher;
pub(crate) use files::stream_file;
pub use link::LinkCounters;
pub(crate) use wire::MAX_FRAME_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{0} is this node's own org")]
    SelfPeer(String),
    #[error("{0} is not a configured peer")]
    UnknownPeer(String),
    #[error("endpoint {0:?} is not host:port")]
    BadEndpoint(String),
    #[error(
        "{org} still participates in {channels}; unshare them first \
         (samband channel unshare CHANNEL {org}), or remove it with --unshare to do both"
    )]
    StillShared { org: String, channels: String },
}

/// A configured peer's node, as a connection's handshake identified it.
#[derive(Debug, Clone)]
pub(crate) struct PeerNode {
    pub org: OrgId,
    /// The pinned CA that verified its chain (DER): a link call on a
    /// connection that outlived a replaced CA is refused.
    pub ca_der: Vec<u8>,
    /// When its certificate expires (an open link ends then); `None` if unreadable.
    pub not_after: Option<time::OffsetDateTime>,
}

/// How the federation listener identifies a connection ([`crate::identity::Verified`]).
pub(crate) type PeerIdentity = Result<PeerNode, Arc<IdentifyError>>;

/// Where a peer's link stands, as operators see it (`samband status`,
/// `Admin.ListPeers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkState {
    /// No endpoint for the peer: this node waits for it to dial in.
    Waiting,
    /// Dialing, or about to.
    #[default]
    Connecting,
    Connected,
    /// The last `failures` dials failed; the next comes after a backoff.
    BackingOff {
        failures: u32,
    },
    /// The last dial was refused in the TLS handshake: one side does not
    /// accept the other's certificate (expired, revoked trust, wrong CA).
    Refused(Refusal),
}

/// Which side of a TLS handshake refused which certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This node does not accept the partner's server certificate (not
    /// issued by the CA pinned for it, not for its endpoint, or expired).
    TheirCertificate,
    /// The partner refused this node's certificate (it does not trust
    /// this org, or this node's certificate expired).
    OurCertificate,
}

impl LinkState {
    /// The word the Admin API and the CLI show.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Waiting => "waiting",
            LinkState::Connecting => "connecting",
            LinkState::Connected => "connected",
            LinkState::BackingOff { .. } => "backing-off",
            LinkState::Refused(_) => "refused",
        }
    }
}

/// What the node knows about one peer's link, for operators.
#[derive(Debug, Clone, Default)]
struct PeerStatus {
    state: LinkState,
    last_error: String,
    connected_unix_ms: u64,
}

/// The live link to a peer (at most one per peer).
#[derive(Debug)]
struct LinkEntry {
    id: u64,
    dialed_by_us: bool,
    /// When it was registered: a link younger than [`REPLACE_AFTER`] is not
    /// replaced by another dialed the same way.
    since: std::time::Instant,
    cancel: CancellationToken,
    counters: Arc<LinkCounters>,
}

/// How old a link must be before a new one dialed the same way replaces it.
/// Two nodes of the same identity (a restored backup beside the original)
/// would otherwise replace each other's link as fast as they can dial.
const REPLACE_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// Per-peer registry state.
#[derive(Debug, Default)]
struct Registry {
    links: HashMap<OrgId, LinkEntry>,
    status: HashMap<OrgId, PeerStatus>,
    dialers: HashMap<OrgId, CancellationToken>,
    next_link_id: u64,
}

/// The federation side of a running node.
#[derive(Debug)]
pub struct Federation {
    org: OrgId,
    pki: OrgPki,
    store: Store,
    writer: WriterHandle,
    commits: Arc<Commits>,
    /// What of the store is durable: links never send beyond it.
    durable: Arc<DurableMarks>,
    /// Bumped to make every link restate its version vectors (after a channel is accepted).
    hello: watch::Sender<u64>,
    /// Bumped when this node refuses a partner's file: links tell it.
    files_refused: watch::Sender<u64>,
    registry: Mutex<Registry>,
    /// Wakes dialers when a link ends.
    link_ended: Notify,
    listener_tls: RwLock<Option<Arc<rustls::ServerConfig>>>,
    /// The orgs of the peer table, kept with the listener's trust (links
    /// ask on every push whether a channel's home is still a peer).
    peer_orgs: RwLock<HashSet<String>>,
    /// The node's shutdown signal and task tracker: dialers and links run on it.
    pub(crate) runtime: Runtime,
    /// What partners refused of this node's envelopes.
    pub(crate) refusals: Arc<Refusals>,
    advertise: String,
    /// Per peer, not per link: a peer cannot refill its burst by redialing.
    paces: crate::rate::Buckets<OrgId>,
    /// Caps the audit entries of refused links per peer.
    link_refusal_audits: Mutex<crate::audit::Budget>,
    /// Per partner this node cannot dial: its open ServeFiles call.
    served: Mutex<HashMap<OrgId, files::Served>>,
    /// When each partner was first known to hold what (for receipts).
    pub(crate) deliveries: deliveries::Deliveries,
    /// The removal rosters sent to orgs removed before they took anything
    /// of a channel (peer, channel, the roster's seq): each is sent once
    /// while this node runs, not on every hello.
    withdrawals: Mutex<HashSet<(OrgId, String, u64)>>,
}

fn valid_endpoint(endpoint: &str) -> bool {
    endpoint
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
}

/// Checks a partner's bundle against the fingerprint its operator read out,
/// and makes the peer record to store.
pub fn peer_record(
    local: &OrgId,
    bundle_text: &str,
    fingerprint: &str,
    endpoint: Option<&str>,
    accept: AcceptPolicy,
) -> Result<PeerRecord, FederationError> {
    let bundle = TrustBundle::parse(bundle_text)?;
    bundle.check_fingerprint(fingerprint)?;
    if &bundle.org == local {
        return Err(FederationError::SelfPeer(bundle.org.to_string()));
    }
    // No endpoint means "they dial us": the bundle's endpoint is only a suggestion.
    let endpoint = endpoint.map(str::to_owned).unwrap_or_default();
    if !endpoint.is_empty() && !valid_endpoint(&endpoint) {
        return Err(FederationError::BadEndpoint(endpoint));
    }
    let accept = if accept == AcceptPolicy::Unspecified {
        AcceptPolicy::Auto
    } else {
        accept
    };
    Ok(PeerRecord {
        org: bundle.org.to_string(),
        ca_der: bundle.ca_der,
        signing_key: bundle.signing_key,
        endpoint,
        accept: accept as i32,
        added_unix_ms: unix_ms(),
    })
}

/// The fingerprint of a stored peer.
pub fn peer_fingerprint(peer: &PeerRecord) -> String {
    match OrgId::parse(&peer.org) {
        Ok(org) => TrustBundle {
            org,
            ca_der: peer.ca_der.clone(),
            signing_key: peer.signing_key.clone(),
            endpoint: None,
        }
        .fingerprint(),
        Err(_) => String::new(),
    }
}

/// This org's trust bundle.
pub fn own_bundle(org: &OrgId, pki: &OrgPki, endpoint: &str) -> Result<TrustBundle, PkiError> {
    Ok(TrustBundle {
        org: org.clone(),
        ca_der: pki.ca_der()?,
        signing_key: pki.message_public_key()?,
        endpoint: Some(endpoint.to_owned()),
    })
}

/// What a node hands its federation side.
#[derive(Debug)]
pub(crate) struct Dependencies {
    pub(crate) org: OrgId,
    pub(crate) pki: OrgPki,
    pub(crate) store: Store,
    pub(crate) writer: WriterHandle,
    pub(crate) commits: Arc<Commits>,
    pub(crate) durable: Arc<DurableMarks>,
    pub(crate) runtime: Runtime,
    /// What partners refused of this node's envelopes (shared with the API).
    pub(crate) refusals: Arc<Refusals>,
    /// `host:port` written into this org's trust bundle.
    pub(crate) advertise: String,
    /// Envelopes per second and burst one peer may push.
    pub(crate) peer_rate: (u32, u32),
}

// === impl Federation ===

impl Federation {
    pub(crate) fn new(parts: Dependencies) -> Result<Arc<Self>, FederationError> {
        let Dependencies {
            org,
            pki,
            store,
            writer,
            commits,
            durable,
            runtime,
            refusals,
            advertise,
            peer_rate,
        } = parts;
        let fed = Arc::new(Self {
            org,
            pki,
            store,
            writer,
            commits,
            durable,
            hello: watch::channel(0).0,
            files_refused: watch::channel(0).0,
            registry: Mutex::default(),
            link_ended: Notify::new(),
            listener_tls: RwLock::new(None),
            peer_orgs: RwLock::default(),
            runtime,
            refusals,
            advertise,
            paces: crate::rate::Buckets::new(peer_rate.0, peer_rate.1),
            link_refusal_audits: Mutex::default(),
            served: Mutex::default(),
            deliveries: deliveries::Deliveries::default(),
            withdrawals: Mutex::default(),
        });
        fed.reload_tls()?;
        Ok(fed)
    }

    /// Starts dialing every peer that has an endpoint.
    pub(crate) fn start(self: &Arc<Self>) -> Result<(), FederationError> {
        for peer in self.store.peers()? {
            self.restart_dialer(&peer);
        }
        Ok(())
    }

    /// Whether the removal roster `seq` of `channel` went to `peer` already
    /// while this node runs.
    fn withdrawal_sent(&self, peer: &OrgId, channel: &str, seq: u64) -> bool {
        crate::locks::lock(&self.withdrawals).contains(&(peer.clone(), channel.to_owned(), seq))
    }

    /// Records that the removal roster `seq` of `channel` went to `peer`.
    fn withdrawal_done(&self, peer: &OrgId, channel: &str, seq: u64) {
        crate::locks::lock(&self.withdrawals).insert((peer.clone(), channel.to_owned(), seq));
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        crate::locks::lock(&self.registry)
    }

    /// The TLS settings for the next federation handshake (`None`: no peers, refuse).
    pub(crate) fn listener_tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        crate::locks::read(&self.listener_tls).clone()
    }

    /// Rebuilds the listener's TLS, and the set of peer orgs, from the
    /// node certificate and the peer table.
    pub(crate) fn reload_tls(&self) -> Result<(), FederationError> {
        let peers = self.store.peers()?;
        let cas: Vec<Vec<u8>> = peers.iter().map(|p| p.ca_der.clone()).collect();
        let config = self.pki.federation_listener_tls(&cas)?.map(Arc::new);
        *crate::locks::write(&self.listener_tls) = config;
        *crate::locks::write(&self.peer_orgs) = peers.into_iter().map(|p| p.org).collect();
        Ok(())
    }

    /// How long `peer` must wait before `n` more envelopes or offers are
    /// taken in, under `limits.peer_envelopes_per_second`.
    pub(crate) fn pace(&self, peer: &OrgId, n: usize) -> std::time::Duration {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.paces.take_or_wait(peer, n, std::time::Instant::now())
    }

    /// This org's trust bundle, with the advertised federation endpoint.
    pub fn trust_bundle(&self) -> Result<TrustBundle, PkiError> {
        own_bundle(&self.org, &self.pki, &self.advertise)
    }

    /// Trusts a peer (or replaces its record) and starts dialing it if it
    /// has an endpoint; the audit entry names `actor`.
    pub fn add_peer(
        self: &Arc<Self>,
        record: PeerRecord,
        actor: &crate::audit::Actor,
    ) -> Result<(), FederationError> {
        self.store.put_peer(&record, actor)?;
        self.reload_tls()?;
        // A replaced record may carry a new CA: drop the old link.
        if let Ok(org) = OrgId::parse(&record.org)
            && let Some(link) = self.registry().links.remove(&org)
        {
            link.cancel.cancel();
        }
        self.restart_dialer(&record);
        tracing::info!(peer = %record.org, endpoint = %record.endpoint, "peer trusted");
        Ok(())
    }

    /// Channels homed here that `org` participates in, by id.
    pub fn shared_from_here_with(&self, org: &OrgId) -> Result<Vec<String>, FederationError> {
        let records = self.store.channels()?;
        Ok(rules::shared_from_here_with(&records, &self.org, org)
            .into_iter()
            .map(|r| r.id.clone())
            .collect())
    }

    /// Waits until `org` has acknowledged (its durable progress on the link)
    /// the home's envelope at each (channel, seq), at most `wait`; whether
    /// it did. `false` at once if no link to it is up.
    pub async fn told_of(
        &self,
        org: &OrgId,
        at: &[(ChannelId, u64)],
        wait: std::time::Duration,
    ) -> Result<bool, FederationError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut all = true;
            for (channel, seq) in at {
                let held = self.store.cursor(org, &channel.to_string())?;
                all &= held.get(channel.home()).is_some_and(|held| held >= seq);
            }
            if all {
                return Ok(true);
            }
            if !self.has_link(org) || tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Stops trusting `org`: new handshakes are refused and its live link
    /// closes now. Refused while it still
    /// participates in a channel homed here ([`FederationError::StillShared`]):
    /// the roster would go on listing a partner this node no longer hears,
    /// and other participants would go on relaying to and from it.
    pub fn remove_peer(
        &self,
        org: &OrgId,
        actor: &crate::audit::Actor,
    ) -> Result<(), FederationError> {
        let channels = self.shared_from_here_with(org)?;
        if !channels.is_empty() {
            return Err(FederationError::StillShared {
                org: org.to_string(),
                channels: channels.join(", "),
            });
        }
        if !self.store.remove_peer(org, actor)? {
            return Err(FederationError::UnknownPeer(org.to_string()));
        }
        self.reload_tls()?;
        let mut registry = self.registry();
        if let Some(link) = registry.links.remove(org) {
            link.cancel.cancel();
        }
        if let Some(dialer) = registry.dialers.remove(org) {
            dialer.cancel();
        }
        registry.status.remove(org);
        drop(registry);
        self.refusals.forget(org);
        self.link_ended.notify_waiters();
        tracing::info!(peer = %org, "peer removed; its links are closed");
        Ok(())
    }

    fn restart_dialer(self: &Arc<Self>, peer: &PeerRecord) {
        let Ok(org) = OrgId::parse(&peer.org) else {
            return;
        };
        let mut registry = self.registry();
        if let Some(old) = registry.dialers.remove(&org) {
            old.cancel();
        }
        if peer.endpoint.is_empty() {
            registry.status.insert(
                org,
                PeerStatus {
                    state: LinkState::Waiting,
                    ..Default::default()
                },
            );
            return;
        }
        let cancel = self.runtime.shutdown().child_token();
        registry.dialers.insert(org.clone(), cancel.clone());
        drop(registry);
        self.runtime.spawn(dialer::run(self.clone(), org, cancel));
    }

    fn set_status(&self, peer: &OrgId, state: LinkState, error: Option<String>) {
        let mut registry = self.registry();
        let status = registry.status.entry(peer.clone()).or_default();
        status.state = state;
        if state == LinkState::Connected {
            status.connected_unix_ms = unix_ms();
        }
        if let Some(e) = error {
            status.last_error = e;
        }
    }

    /// Where the link to `peer` stands (`None`: not a configured peer).
    pub(crate) fn link_state(&self, peer: &OrgId) -> Option<LinkState> {
        self.registry().status.get(peer).map(|s| s.state)
    }

    fn has_link(&self, peer: &OrgId) -> bool {
        self.registry().links.contains_key(peer)
    }

    /// Registers a new link to `peer`; `None` means the new link is the one
    /// to close. If one exists already:
    /// * dialed the same way, the new one replaces it: a side dials only
    ///   while it has no link, so a second link dialed the same way means the
    ///   first is dead on the dialer's side, even if this side has not
    ///   noticed (a NAT or firewall that lost the connection's state);
    /// * dialed the other way (both sides dialed at once), the link dialed
    ///   by the org with the smaller id is kept, the same rule on both sides.
    fn register_link(&self, peer: &OrgId, dialed_by_us: bool) -> Option<link::Registered> {
        let mut registry = self.registry();
        let keep_ours = self.org < *peer;
        if let Some(existing) = registry.links.get(peer) {
            let stale =
                existing.dialed_by_us == dialed_by_us && existing.since.elapsed() >= REPLACE_AFTER;
            let new_wins =
                stale || (dialed_by_us == keep_ours && existing.dialed_by_us != keep_ours);
            if !new_wins {
                tracing::info!(%peer, "a link between these nodes exists already; keeping that one");
                return None;
            }
            if stale {
                tracing::info!(%peer, "a new link from the same side replaces the previous one, which that side gave up");
            }
            existing.cancel.cancel();
        }
        registry.next_link_id += 1;
        let id = registry.next_link_id;
        let cancel = self.runtime.shutdown().child_token();
        let counters = Arc::new(LinkCounters::default());
        registry.links.insert(
            peer.clone(),
            LinkEntry {
                id,
                dialed_by_us,
                since: std::time::Instant::now(),
                cancel: cancel.clone(),
                counters: counters.clone(),
            },
        );
        drop(registry);
        self.set_status(peer, LinkState::Connected, Some(String::new()));
        Some(link::Registered {
            id,
            cancel,
            counters,
        })
    }

    fn unregister_link(&self, peer: &OrgId, id: u64, error: Option<String>) {
        let mut registry = self.registry();
        if registry.links.get(peer).is_some_and(|l| l.id == id) {
            registry.links.remove(peer);
            let has_dialer = registry.dialers.contains_key(peer);
            if let Some(status) = registry.status.get_mut(peer) {
                status.state = if has_dialer {
                    LinkState::Connecting
                } else {
                    LinkState::Waiting
                };
                if let Some(e) = error {
                    status.last_error = e;
                }
            }
        }
        drop(registry);
        self.link_ended.notify_waiters();
    }

    /// Which configured peer a verified client chain belongs to: the one whose
    /// pinned CA verifies it, provided the certificate names that same org.
    /// The federation listener asks this once per connection, at its handshake.
    pub(crate) fn identify(&self, chain: &[CertificateDer<'static>]) -> PeerIdentity {
        self.identify_chain(chain).map_err(Arc::new)
    }

    fn identify_chain(&self, chain: &[CertificateDer<'static>]) -> Result<PeerNode, IdentifyError> {
        let leaf = chain.first().ok_or(IdentifyError::NoCertificate)?;
        for peer in self.store.peers()? {
            if crate::pki::chain_verifies(&peer.ca_der, chain) {
                let named = crate::identity::node_org(leaf)?;
                if named.as_str() != peer.org {
                    return Err(IdentifyError::NamesAnotherOrg {
                        ca_of: peer.org,
                        named,
                    });
                }
                return Ok(PeerNode {
                    org: named,
                    ca_der: peer.ca_der,
                    not_after: crate::pki::cert_info(leaf).map(|c| c.not_after),
                });
            }
        }
        Err(IdentifyError::UnknownCa)
    }

    /// Accepts a link a peer dialed, from the identity its connection's
    /// handshake established, and starts the link. The receiver is the
    /// stream of frames to send back.
    /// The peer a call comes from, as pinned now: the connection may have
    /// outlived the peer's removal or the replacement of its CA, so the
    /// peer table decides, per call.
    fn pinned_peer(&self, identity: &PeerIdentity) -> Result<PeerNode, tonic::Status> {
        let node = identity.clone().map_err(|reason| {
            tracing::warn!(target: "samband::federation::rejected", %reason, "call refused");
            tonic::Status::permission_denied(reason.to_string())
        })?;
        let pinned = self
            .store
            .peer(&node.org)
            .map_err(|e| tonic::Status::unavailable(format!("reading the peer table: {e}")))?;
        if pinned.is_none_or(|p| p.ca_der != node.ca_der) {
            let peer = &node.org;
            tracing::warn!(target: "samband::federation::rejected", %peer, "call refused: no longer a configured peer with that CA");
            return Err(tonic::Status::permission_denied(format!(
                "{peer} is no longer a configured peer of this node with the CA that verified this connection"
            )));
        }
        Ok(node)
    }

    pub(crate) fn accept_link(
        self: &Arc<Self>,
        identity: &PeerIdentity,
        incoming: impl tokio_stream::Stream<Item = Result<proto::LinkFrame, tonic::Status>>
        + Send
        + Unpin
        + 'static,
    ) -> Result<tokio::sync::mpsc::Receiver<Result<proto::LinkFrame, tonic::Status>>, tonic::Status>
    {
        let PeerNode {
            org: peer,
            not_after: expires,
            ..
        } = self.pinned_peer(identity)?;
        let Some(registered) = self.register_link(&peer, false) else {
            return Err(tonic::Status::already_exists(
                "a link between these nodes exists already; keeping that one",
            ));
        };
        let (tx, rx) = tokio::sync::mpsc::channel(link::LINK_BUFFER);
        self.runtime.spawn(link::run(
            self.clone(),
            peer,
            registered,
            expires,
            incoming,
            tx,
        ));
        Ok(rx)
    }

    /// Records that `peer`'s link was refused for breaking the frame
    /// protocol, within the peer's audit budget (a peer that redials and
    /// breaks it again cannot fill the disk), and makes it durable.
    pub(crate) fn audit_link_refusal(&self, peer: &OrgId, reason: &str) -> Result<(), StoreError> {
        let registered = crate::locks::lock(&self.link_refusal_audits)
            .admit(peer.as_str(), crate::model::unix_ms());
        let Some(left_out) = registered else {
            return Ok(());
        };
        let mut event = crate::audit::Event::new("federation.link_refused")
            .with("peer", peer)
            .with("reason", crate::audit::clip(reason));
        if left_out > 0 {
            event = event.with("left_out_before", left_out);
        }
        self.store.audit(event)?;
        self.store.flush()
    }

    /// What `peer` may receive of `record` from this node: what the roster
    /// allows, and nothing of a channel whose home is no longer a peer (its
    /// rosters could not be checked, and its copy here is cut off).
    fn eligibility(&self, record: &ChannelRecord, peer: &OrgId) -> rules::Eligibility {
        let home_known = record.home == self.org.as_str()
            || crate::locks::read(&self.peer_orgs).contains(&record.home);
        if home_known {
            rules::eligibility(record, &self.org, peer)
        } else {
            rules::Eligibility::None
        }
    }

    /// The durable part of this node's vector of `channel`.
    fn durable_vector(
        &self,
        channel: &ChannelId,
    ) -> Result<crate::model::VersionVector, StoreError> {
        Ok(self.durable.cap(channel, self.store.vector(channel)?))
    }

    /// Makes every link restate what this node holds (used after accepting a channel).
    pub fn rehello(&self) {
        self.hello.send_modify(|n| *n += 1);
    }

    /// Peers with their link state and lag, for operators.
    pub fn peers(&self) -> Result<Vec<proto::Peer>, FederationError> {
        let channels = self.store.channels()?;
        // Each channel's vector, read once for all peers.
        let mut vectors = HashMap::new();
        let mut out = Vec::new();
        for record in self.store.peers()? {
            let Ok(org) = OrgId::parse(&record.org) else {
                continue;
            };
            let registry = self.registry();
            let status = registry.status.get(&org).cloned().unwrap_or_default();
            let counters = registry
                .links
                .get(&org)
                .map(|l| l.counters.clone())
                .unwrap_or_default();
            drop(registry);
            let mut lag = Vec::new();
            for ch in &channels {
                let Ok(id) = ChannelId::parse(&ch.id) else {
                    continue;
                };
                if self.eligibility(ch, &org) != rules::Eligibility::Full {
                    continue;
                }
                let mine = match vectors.entry(id) {
                    Entry::Occupied(v) => v.into_mut(),
                    Entry::Vacant(v) => {
                        let vector = self.store.vector(v.key())?;
                        v.insert(vector)
                    }
                };
                let theirs = self.store.cursor(&org, &ch.id)?;
                // The peer holds its own messages whatever its cursor says.
                let behind: u64 = mine
                    .iter()
                    .filter(|(o, _)| **o != org)
                    .map(|(o, s)| s.saturating_sub(*theirs.get(o).unwrap_or(&0)))
                    .sum();
                lag.push(proto::ChannelLag {
                    channel: ch.id.clone(),
                    messages: behind,
                });
            }
            let refused = self.refusals.by_peer(&org);
            out.push(proto::Peer {
                fingerprint: peer_fingerprint(&record),
                org: record.org,
                endpoint: record.endpoint,
                accept: record.accept,
                link: Some(proto::LinkStatus {
                    state: status.state.as_str().to_owned(),
                    last_error: status.last_error,
                    connected_unix_ms: status.connected_unix_ms,
                    lag,
                    envelopes_sent: counters.sent.load(Ordering::Relaxed),
                    envelopes_received: counters.received.load(Ordering::Relaxed),
                    envelopes_rejected: counters.rejected.load(Ordering::Relaxed),
                    refused_by_peer: refused.count as u64,
                    last_refusal: refused.last_reason,
                }),
            });
        }
        Ok(out)
    }
}
