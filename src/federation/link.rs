//! One link to a peer: a bidirectional stream of [`LinkFrame`]s.
//!
//! Each side runs a *sender* (states what it holds, then pushes whatever the
//! peer lacks of every channel the roster lets it see, oldest first per
//! origin, and keeps pushing as commits happen) and a *reader* (hands
//! received envelopes to the writer, which decides and stores them, and
//! has the sender answer with progress). The reader never waits on the
//! outgoing stream (it leaves progress to the sender), so two nodes pushing to each other
//! cannot deadlock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prost::Message as _;
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tokio_stream::{Stream, StreamExt as _};
use tokio_util::sync::CancellationToken;

use super::Federation;
use super::error::LinkError;
use super::wire::{FrameError, MAX_FRAME_REFUSALS};
use crate::engine::{Offered, Reply};
use crate::model::{ChannelId, OrgId, VersionVector, unix_ms};
use crate::proto::{
    AcceptPolicy, ChannelRecord, ChannelVector, Envelope, EnvelopeBatch, EnvelopeRefusal,
    EnvelopeRefusals, LinkFrame, VectorEntry, VersionVectors, link_frame::Frame,
};
use crate::rules::{self, Eligibility, Resend, Verdict};

/// Frames buffered towards the peer before the sender waits.
pub(super) const LINK_BUFFER: usize = 16;
/// Most envelopes, and about the most bytes, in one frame.
const BATCH_ENVELOPES: usize = 512;
const BATCH_BYTES: usize = 4 << 20;
/// Most FLASH and URGENT envelopes of one origin's backlog sent ahead of it
/// per hello: beyond that many, the rest come in order.
const AHEAD_PER_ORIGIN: usize = 256;
/// Envelope batches of one link handed to the writer and not yet durable.
const IN_FLIGHT: usize = 4;
/// Least time between two restatements of what this node holds that the
/// reader asked for after seeing gaps (later requests wait, never drop).
const RESEND_INTERVAL: Duration = Duration::from_secs(1);
/// Most of the peer's hellos the sender acts on in [`HELLO_WINDOW`]: an
/// honest peer sends one when a link starts, and restates at most once a
/// second after that; each costs a look at every channel.
const HELLO_BURST: usize = 4;
const HELLO_WINDOW: Duration = Duration::from_secs(1);
/// How long a refusal that time cures (a timestamp ahead of this node's
/// clock) waits before the sender is asked to send again.
const CLOCK_RESEND_INTERVAL: Duration = Duration::from_secs(10);

/// What a link has moved, for status and tests.
#[derive(Debug, Default)]
pub struct LinkCounters {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub accepted: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected: AtomicU64,
}

/// What the peer is known to hold besides its last hello: what it sent us
/// and what its progress frames said. The reader fills it, the sender folds
/// it into its view, so nothing is pushed back to the peer that it has.
type PeerHas = std::sync::Mutex<HashMap<String, VersionVector>>;

fn note_has(has: &PeerHas, channel: &str, origin: OrgId, seq: u64) {
    let mut has = crate::locks::lock(has);
    let held = has
        .entry(channel.to_owned())
        .or_default()
        .entry(origin)
        .or_default();
    *held = (*held).max(seq);
}

/// What the reader asks of the sender. Requests wait until the sender gets
/// to them and merge meanwhile; none is dropped.
#[derive(Debug, Default)]
struct Asks {
    /// Restate this node's vectors (the peer sent something out of order).
    restate: Notify,
    /// The same, for refusals that time cures: after [`CLOCK_RESEND_INTERVAL`].
    restate_later: Notify,
    /// What the peer's batches made durable here, newest per channel.
    progress: std::sync::Mutex<HashMap<String, ChannelVector>>,
    progress_ready: Notify,
    /// What this node refused of the peer's envelopes, to tell it (at most
    /// [`MAX_FRAME_REFUSALS`] waiting; it is refused again if sent again).
    refusals: std::sync::Mutex<Vec<EnvelopeRefusal>>,
    refusals_ready: Notify,
}

impl Asks {
    fn progress(&self, channels: Vec<ChannelVector>) {
        let mut progress = crate::locks::lock(&self.progress);
        for cv in channels {
            // Read later, so at least as far: it supersedes what is there.
            progress.insert(cv.channel.clone(), cv);
        }
        drop(progress);
        self.progress_ready.notify_one();
    }

    fn refused(&self, refusals: Vec<EnvelopeRefusal>) {
        let mut waiting = crate::locks::lock(&self.refusals);
        let room = MAX_FRAME_REFUSALS.saturating_sub(waiting.len());
        waiting.extend(refusals.into_iter().take(room));
        drop(waiting);
        self.refusals_ready.notify_one();
    }

    fn take_progress(&self) -> Vec<ChannelVector> {
        std::mem::take(&mut *crate::locks::lock(&self.progress))
            .into_values()
            .collect()
    }
}

/// Folds what the peer is known to hold into the sender's view of it.
fn fold_has(known: &mut HashMap<String, VersionVector>, has: &PeerHas) {
    let mut has = crate::locks::lock(has);
    for (channel, vector) in has.drain() {
        // A channel missing from the peer's hello stays missing: it is offered, not pushed.
        if let Some(theirs) = known.get_mut(&channel) {
            for (origin, seq) in vector {
                let held = theirs.entry(origin).or_default();
                *held = (*held).max(seq);
            }
        }
    }
}

fn to_proto(channel: &str, vector: &VersionVector) -> ChannelVector {
    ChannelVector {
        channel: channel.to_owned(),
        entries: vector
            .iter()
            .map(|(o, s)| VectorEntry {
                origin: o.to_string(),
                seq: *s,
            })
            .collect(),
    }
}

fn from_proto(cv: &ChannelVector) -> VersionVector {
    cv.entries
        .iter()
        .filter_map(|e| Some((OrgId::parse(&e.origin).ok()?, e.seq)))
        .collect()
}

fn frame(f: Frame) -> LinkFrame {
    LinkFrame { frame: Some(f) }
}

/// Where a link's frames to the peer go; an error ends the stream with
/// that status (a dialed link cannot send one: its stream just ends).
pub(super) type Out = mpsc::Sender<Result<LinkFrame, tonic::Status>>;

/// One link's shared state: its sender and its reader both hold it.
struct Link {
    fed: Arc<Federation>,
    peer: OrgId,
    /// Frames to the peer.
    out: Out,
    /// What the peer is known to hold besides its last hello.
    has: PeerHas,
    /// What the reader asks of the sender.
    asks: Asks,
    /// Ends both halves.
    cancel: CancellationToken,
    counters: Arc<LinkCounters>,
}

/// A link the registry took: its id, its cancellation and its counters.
#[derive(Debug)]
pub(super) struct Registered {
    pub(super) id: u64,
    pub(super) cancel: CancellationToken,
    pub(super) counters: Arc<LinkCounters>,
}

/// How long until `not_after` (zero if it passed).
fn until(not_after: time::OffsetDateTime) -> Duration {
    Duration::try_from(not_after - time::OffsetDateTime::now_utc()).unwrap_or_default()
}

/// Runs a link until either side ends it, or the partner's node
/// certificate expires (`expires`, from the handshake): rustls checks it
/// only then, so an open link would otherwise outlive it. Then unregisters it.
pub(super) async fn run(
    fed: Arc<Federation>,
    peer: OrgId,
    Registered {
        id,
        cancel,
        counters,
    }: Registered,
    expires: Option<time::OffsetDateTime>,
    incoming: impl Stream<Item = Result<LinkFrame, tonic::Status>> + Send + Unpin + 'static,
    out: Out,
) {
    tracing::info!(%peer, "link up");
    if expires.is_none() {
        tracing::warn!(%peer, "cannot read when the partner's node certificate expires; this link will not end at its expiry");
    }
    let link = Arc::new(Link {
        fed,
        peer,
        out,
        has: PeerHas::default(),
        asks: Asks::default(),
        cancel,
        counters,
    });
    let (fed, peer, cancel) = (&link.fed, &link.peer, &link.cancel);
    if let Err(e) = fed
        .store
        .retain_cursors(peer, |channel| link.keeps_state_of(channel))
    {
        tracing::warn!(%peer, error = %e, "cannot prune the peer's records of channels not shared with it");
    }
    let (hello_tx, hello_rx) = watch::channel(None);
    let pushing = link.clone().sender(hello_rx);
    // Cancellation ends the sender at any await, even one waiting for room
    // on the outgoing stream of a peer that stopped reading.
    let stop = cancel.clone();
    // The link ends when either direction ends: a sender that failed must not
    // leave a link that looks connected but never pushes.
    let mut sender = fed.runtime.spawn(async move {
        tokio::select! {
            r = pushing => r,
            () = stop.cancelled() => Ok(()),
        }
    });
    let reading = link.reader(incoming, hello_tx);
    let expiry = async {
        match expires {
            Some(at) => {
                tokio::time::sleep(until(at)).await;
                at
            }
            None => std::future::pending().await,
        }
    };
    let (result, sent) = tokio::select! {
        r = reading => {
            cancel.cancel();
            (r, (&mut sender).await.unwrap_or_else(|e| Err(e.into())))
        }
        s = &mut sender => {
            cancel.cancel();
            (Ok(()), s.unwrap_or_else(|e| Err(e.into())))
        }
        at = expiry => {
            cancel.cancel();
            let _ = (&mut sender).await;
            (Err(LinkError::PartnerCertificateExpired(at)), Ok(()))
        }
    };
    match result.err().or(sent.err()) {
        Some(LinkError::Refused(reason)) => {
            // Released first, so that the peer's next dial is not refused as a second link.
            fed.unregister_link(peer, id, Some(reason.to_string()));
            link.refuse(&reason).await;
        }
        Some(e) => {
            tracing::info!(%peer, error = %e, "link down");
            fed.unregister_link(peer, id, Some(e.to_string()));
        }
        None => {
            tracing::info!(%peer, "link closed");
            fed.unregister_link(peer, id, None);
        }
    }
}

impl Link {
    /// Ends a link whose peer broke the frame protocol: the peer is told why
    /// (when it dialed, as the stream's status), and the refusal is audited.
    async fn refuse(&self, reason: &FrameError) {
        let peer = &self.peer;
        tracing::warn!(target: "samband::federation::rejected", %peer, %reason, "link refused: frame broke the protocol");
        // The peer may not be reading: give up on telling it after a moment.
        let _ =
            tokio::time::timeout(Duration::from_secs(1), self.out.send(Err(reason.status()))).await;
        let (fed, peer, reason) = (self.fed.clone(), peer.clone(), reason.to_string());
        let audited =
            tokio::task::spawn_blocking(move || fed.audit_link_refusal(&peer, &reason)).await;
        if let Ok(Err(e)) = audited {
            tracing::warn!(error = %e, "cannot audit a refused link");
        }
    }

    /// The record of `channel` (as a partner named it), if it is held here and
    /// its roster lets `peer` see it: only then is anything the peer says of it kept.
    fn visible_record(&self, channel: &str) -> Option<ChannelRecord> {
        let id = ChannelId::parse(channel).ok()?;
        let record = self.fed.store.channel(&id).ok()??;
        (self.fed.eligibility(&record, &self.peer) != Eligibility::None).then_some(record)
    }

    /// Whether what the peer stated it holds of `channel` is kept: while it
    /// may see the channel, and after it was removed from it (closing an
    /// incident removes everyone): receipts still say it held what it held.
    fn keeps_state_of(&self, channel: &str) -> bool {
        let Some(record) = ChannelId::parse(channel)
            .ok()
            .and_then(|id| self.fed.store.channel(&id).ok().flatten())
        else {
            return false;
        };
        self.fed.eligibility(&record, &self.peer) != Eligibility::None
            || rules::took_part(&record, &self.peer)
    }

    /// The part of a peer's hello or progress that this node keeps: channels
    /// it may see, each once (the last statement wins), and of each only the
    /// origins its roster lists. Each channel's record is read once per frame.
    fn only_shared(&self, vv: VersionVectors) -> VersionVectors {
        let mut kept: HashMap<String, ChannelVector> = HashMap::new();
        let mut records: HashMap<String, Option<ChannelRecord>> = HashMap::new();
        for cv in vv.channels {
            let record = records
                .entry(cv.channel.clone())
                .or_insert_with(|| self.visible_record(&cv.channel));
            if let Some(record) = record {
                let vector = rules::roster_origins(record, from_proto(&cv));
                kept.insert(cv.channel.clone(), to_proto(&cv.channel, &vector));
            }
        }
        VersionVectors {
            channels: kept.into_values().collect(),
        }
    }
}

/// What one hello or progress frame counts against the peer's pace: one for
/// the frame, one per channel vector and one per entry, as envelopes count
/// one each.
fn vector_cost(vv: &VersionVectors) -> usize {
    1 + vv
        .channels
        .iter()
        .map(|cv| 1 + cv.entries.len())
        .sum::<usize>()
}

impl Link {
    async fn send(&self, f: Frame) -> Result<(), LinkError> {
        self.out
            .send(Ok(frame(f)))
            .await
            .map_err(|_| LinkError::Closed)
    }

    /// What this node holds of every channel the peer may see.
    fn hello(&self) -> Result<VersionVectors, LinkError> {
        let (fed, peer) = (&self.fed, &self.peer);
        let mut channels = Vec::new();
        for record in fed.store.channels()? {
            let eligibility = fed.eligibility(&record, peer);
            if eligibility == Eligibility::None {
                continue;
            }
            let Ok(id) = ChannelId::parse(&record.id) else {
                continue;
            };
            let mine = fed.durable_vector(&id)?;
            let visible = rules::visible_vector(&record, eligibility, &mine);
            channels.push(to_proto(&record.id, &visible));
        }
        let frame = VersionVectors { channels };
        // The peer refuses a frame over the limits: say why here instead.
        let entries: usize = frame.channels.iter().map(|cv| cv.entries.len()).sum();
        if frame.channels.len() > super::wire::MAX_FRAME_CHANNELS
            || entries > super::wire::MAX_FRAME_ENTRIES
        {
            return Err(LinkError::TooManyChannels {
                peer: peer.clone(),
                channels: frame.channels.len(),
                entries,
            });
        }
        Ok(frame)
    }

    /// The half that writes: states what this node holds, then pushes what
    /// the peer lacks as commits happen, and answers the reader's asks.
    async fn sender(
        self: Arc<Self>,
        mut peer_hello: watch::Receiver<Option<Arc<VersionVectors>>>,
    ) -> Result<(), LinkError> {
        let (asks, cancel) = (&self.asks, &self.cancel);
        let commits = self.fed.commits.subscribe();
        let mut rehello = self.fed.hello.subscribe();
        let mut files_refused = self.fed.files_refused.subscribe();
        self.send(Frame::Hello(self.hello()?)).await?;
        self.tell_files_refused().await?;
        // What the peer holds (as it told us, plus what we sent since); `None` until it says.
        let mut known: Option<HashMap<String, VersionVector>> = None;
        let mut said = Said::default();
        // What the next push looks at: `None` is every channel (after the
        // peer's hello), else the channels that commits changed since.
        let mut todo: Option<HashSet<ChannelId>> = None;
        // The reader's requests to restate what this node holds: when the last
        // one was sent, and when the next is due.
        let (mut restated, mut restate_at) = (None, None);
        // The peer's hellos: when the last ones were acted on, and when the
        // next is due.
        let mut hellos: VecDeque<Instant> = VecDeque::with_capacity(HELLO_BURST);
        let mut hello_at: Option<Instant> = None;
        loop {
            if let Some(known) = known.as_mut()
                && todo.as_ref().is_none_or(|changed| !changed.is_empty())
            {
                fold_has(known, &self.has);
                let only = todo.replace(HashSet::new());
                tokio::select! {
                    r = self.push(known, &mut said, only) => r?,
                    () = cancel.cancelled() => return Ok(()),
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                // Each hello makes this sender look at every channel: past
                // HELLO_BURST in HELLO_WINDOW, the next waits (and is the latest:
                // the watch keeps only that); pushing and progress go on meanwhile.
                hello = peer_hello.changed(), if hello_at.is_none() => {
                    hello.map_err(|_| LinkError::Closed)?;
                    hello_at = Some(hello_due(&hellos, Instant::now()));
                }
                () = tokio::time::sleep_until(hello_at.unwrap_or_else(Instant::now)), if hello_at.is_some() => {
                    hello_at = None;
                    if hellos.len() == HELLO_BURST {
                        hellos.pop_front();
                    }
                    hellos.push_back(Instant::now());
                    let stated = peer_hello.borrow_and_update().clone().unwrap_or_default();
                    known = Some(stated.channels.iter().map(|cv| (cv.channel.clone(), from_proto(cv))).collect());
                    said = Said::default();
                    todo = None;
                }
                channels = commits.next() => {
                    if let Some(changed) = todo.as_mut() {
                        changed.extend(channels);
                    }
                }
                changed = rehello.changed() => {
                    changed.map_err(|_| LinkError::Stopping)?;
                    self.send(Frame::Hello(self.hello()?)).await?;
                }
                changed = files_refused.changed() => {
                    changed.map_err(|_| LinkError::Stopping)?;
                    self.tell_files_refused().await?;
                }
                () = asks.progress_ready.notified() => {
                    let channels = asks.take_progress();
                    if !channels.is_empty() {
                        self.send(Frame::Progress(VersionVectors { channels })).await?;
                    }
                }
                () = asks.refusals_ready.notified() => {
                let refusals = std::mem::take(&mut *crate::locks::lock(&asks.refusals));
                if !refusals.is_empty() {
                    self.send(Frame::Refusals(EnvelopeRefusals { refusals })).await?;
                }
            }
            () = asks.restate_later.notified() => {
                    restate_at.get_or_insert(Instant::now() + CLOCK_RESEND_INTERVAL);
                }
                () = asks.restate.notified() => {
                    restate_at.get_or_insert(restate_due(restated, Instant::now()));
                }
                () = tokio::time::sleep_until(restate_at.unwrap_or_else(Instant::now)), if restate_at.is_some() => {
                    restate_at = None;
                    restated = Some(Instant::now());
                    self.send(Frame::Hello(self.hello()?)).await?;
                }
            }
        }
    }
}

/// How many of `envelopes` (one origin's run, in seq order) go in one frame:
/// about `max_bytes` at most, and ending at a seal so that the receiver can
/// verify all of it. Zero when no seal is among them: an unsealed frame
/// would only be refused, and the peer taken to hold it.
fn frame_len(envelopes: &[Envelope], max_bytes: usize) -> usize {
    let mut bytes = 0;
    let fits = envelopes
        .iter()
        .position(|e| {
            bytes += e.encoded_len();
            bytes > max_bytes
        })
        .unwrap_or(envelopes.len())
        .max(1)
        .min(envelopes.len());
    envelopes[..fits]
        .iter()
        .rposition(|e| !e.signature.is_empty())
        .map_or(0, |seal| seal + 1)
}

/// What a peer lacks of one channel: the channel, its record, and the
/// (origin, first seq, last seq) ranges to send it.
type Lacks = (ChannelId, ChannelRecord, Vec<(OrgId, u64, u64)>);

/// What a sender has told the peer, or the operator, since the peer's last
/// hello: each only once.
#[derive(Debug, Default)]
struct Said {
    /// Channels offered to the peer, with the home's roster seq offered.
    offered: HashMap<String, u64>,
    /// Origins whose envelopes to send hold no seal (logged).
    unsealed: HashSet<(ChannelId, OrgId)>,
    /// Envelopes sent ahead of their run.
    ahead: HashSet<(ChannelId, OrgId, u64)>,
}

/// Sends the peer everything it lacks of every channel it may see, or of
/// the channels in `only`.
impl Link {
    async fn push(
        &self,
        known: &mut HashMap<String, VersionVector>,
        said: &mut Said,
        only: Option<HashSet<ChannelId>>,
    ) -> Result<(), LinkError> {
        let (fed, peer) = (&*self.fed, &self.peer);
        let channels: Vec<ChannelId> = match only {
            Some(channels) => channels.into_iter().collect(),
            None => fed
                .store
                .channels()?
                .iter()
                .filter_map(|record| ChannelId::parse(&record.id).ok())
                .collect(),
        };
        // What the peer lacks, per channel: (record, ranges to send).
        let mut lacks = Vec::new();
        for channel in channels {
            // Order matters: first what is held (durably), then who may see it.
            // Everything in `mine` was committed before this read of the roster,
            // so a roster change that excludes the peer is either seen here or
            // came after all of it.
            let mine = fed.durable_vector(&channel)?;
            let Some(record) = fed.store.channel(&channel)? else {
                continue;
            };
            let eligibility = fed.eligibility(&record, peer);
            if eligibility == Eligibility::None {
                continue;
            }
            let Some(theirs) = known.get(&record.id) else {
                // The peer does not hold this channel yet: offer it the
                // roster `rules::roster_to_offer` chooses, once per hello and
                // roster. (The roster envelope itself may not have arrived
                // here yet: then the commit that brings it wakes this push
                // again.)
                let is_home = record.home == fed.org.as_str();
                let acknowledged =
                    || Ok::<_, LinkError>(!fed.store.cursor(peer, &record.id)?.is_empty());
                let Some(roster_seq) =
                    rules::roster_to_offer(&record, eligibility, is_home, acknowledged)?
                else {
                    continue;
                };
                // A removal roster goes once while this node runs: the
                // org never lists the channel in its hellos again.
                let withdrawal = matches!(eligibility, Eligibility::UntilRemoval { .. });
                if said.offered.get(&record.id) == Some(&roster_seq)
                    || (withdrawal && fed.withdrawal_sent(peer, &record.id, roster_seq))
                {
                    continue;
                }
                let roster_durable = mine
                    .get(channel.home())
                    .is_some_and(|&seq| seq >= roster_seq);
                let home = channel.home().clone();
                if roster_durable
                    && let Some(roster) = fed.store.envelope(&channel, &home, roster_seq)?
                {
                    self.send(Frame::Offer(roster)).await?;
                    said.offered.insert(record.id.clone(), roster_seq);
                    if withdrawal {
                        fed.withdrawal_done(peer, &record.id, roster_seq);
                    }
                }
                continue;
            };
            let ranges = rules::to_send(&record, eligibility, &mine, theirs);
            if !ranges.is_empty() {
                lacks.push((channel, record, ranges));
            }
        }
        self.send_ahead(&lacks, said).await?;
        for (channel, record, ranges) in lacks {
            let Some(theirs) = known.get_mut(&record.id) else {
                continue;
            };
            for (origin, first, held) in ranges {
                let mut next = first;
                while next <= held {
                    let want = (held - next + 1).min(BATCH_ENVELOPES as u64) as usize;
                    let mut envelopes = fed.store.envelopes_from(&channel, &origin, next, want)?;
                    // A retracted message goes as its withheld copy, with the
                    // signed retraction that lets the peer take it so.
                    let mut retractions = Vec::new();
                    for env in envelopes.iter().filter(|e| e.withheld) {
                        if let Some(r) = fed.store.retraction(&channel, &origin, env.origin_seq)?
                            && let Some(proof) =
                                fed.store.envelope(&channel, &origin, r.cursor.seq)?
                        {
                            retractions.push(proof);
                        }
                    }
                    let retracted: HashSet<u64> = retractions
                        .iter()
                        .filter_map(|r| rules::retraction_of(r).map(|m| m.seq))
                        .collect();
                    // A run cut here (a body held withheld that the peer may
                    // read) goes on from another participant that holds it.
                    let cut = rules::ready_for(&record, peer, &mut envelopes, &retracted);
                    let keep = frame_len(&envelopes, BATCH_BYTES);
                    if keep == 0 {
                        // Durable marks sit at seals (a round's marks move
                        // together), so envelopes without one mean a broken
                        // store: say so instead of sending what would be refused.
                        if !cut
                            && !envelopes.is_empty()
                            && said.unsealed.insert((channel.clone(), origin.clone()))
                        {
                            tracing::warn!(%peer, %channel, %origin, from = next, "no seal among the envelopes to send; this origin cannot move on over the link");
                        }
                        break;
                    }
                    envelopes.truncate(keep);
                    let last = envelopes[keep - 1].origin_seq;
                    retractions.retain(|r| rules::retraction_of(r).is_some_and(|m| m.seq <= last));
                    self.counters
                        .sent
                        .fetch_add(envelopes.len() as u64, Ordering::Relaxed);
                    self.send(Frame::Envelopes(EnvelopeBatch {
                        envelopes,
                        retractions,
                    }))
                    .await?;
                    theirs.insert(origin.clone(), last);
                    next = last + 1;
                }
            }
        }
        Ok(())
    }

    /// Sends the FLASH, then the URGENT, envelopes of a backlog the peer
    /// lacks (`lacks`) ahead of it, each signed on its own, so that its
    /// members see them before the bulk arrives in order. Only where the
    /// backlog of an origin is longer than one frame: a shorter one arrives
    /// as fast in order.
    async fn send_ahead(&self, lacks: &[Lacks], said: &mut Said) -> Result<(), LinkError> {
        let (fed, peer) = (&*self.fed, &self.peer);
        let mut ahead = Vec::new();
        for (channel, record, ranges) in lacks {
            for (origin, first, held) in ranges {
                if held - first < BATCH_ENVELOPES as u64 {
                    continue;
                }
                let seqs =
                    fed.store
                        .urgent_seqs(channel, origin, *first, *held, AHEAD_PER_ORIGIN)?;
                for seq in seqs {
                    if !said.ahead.insert((channel.clone(), origin.clone(), seq)) {
                        continue;
                    }
                    let Some(env) = fed.store.envelope(channel, origin, seq)? else {
                        continue;
                    };
                    // As the peer may have it; a body withheld from it, or a
                    // message without a signature of its own, waits for its run.
                    let mut one = vec![env];
                    rules::ready_for(record, peer, &mut one, &HashSet::new());
                    if let Some(env) = one.pop().filter(|e| !e.withheld && !e.signature.is_empty())
                    {
                        ahead.push(env);
                    }
                }
            }
        }
        ahead.sort_by_key(|e| (std::cmp::Reverse(e.priority), e.hlc));
        let mut batch = Vec::new();
        let mut bytes = 0;
        for env in ahead {
            let size = env.encoded_len();
            if !batch.is_empty() && (bytes + size > BATCH_BYTES || batch.len() == BATCH_ENVELOPES) {
                let envelopes = std::mem::take(&mut batch);
                let batch = EnvelopeBatch {
                    envelopes,
                    retractions: Vec::new(),
                };
                self.send(Frame::Ahead(batch)).await?;
                bytes = 0;
            }
            bytes += size;
            batch.push(env);
        }
        if !batch.is_empty() {
            tracing::debug!(%peer, n = batch.len(), "sending FLASH and URGENT envelopes ahead of a backlog");
            let batch = EnvelopeBatch {
                envelopes: batch,
                retractions: Vec::new(),
            };
            self.send(Frame::Ahead(batch)).await?;
        }
        Ok(())
    }

    /// The half that reads: hands the peer's batches to the writer and
    /// answers each with progress once it is durable, in the order read.
    async fn reader(
        &self,
        incoming: impl Stream<Item = Result<LinkFrame, tonic::Status>> + Unpin,
        hello_tx: watch::Sender<Option<Arc<VersionVectors>>>,
    ) -> Result<(), LinkError> {
        let asks = &self.asks;
        // One batch is being answered; the others wait in the queue.
        let (submitted_tx, mut submitted_rx) = mpsc::channel(IN_FLIGHT - 1);
        let reading = self.read_frames(incoming, hello_tx, submitted_tx);
        // Verdicts in the order the batches were read.
        let answering = async {
            while let Some(received) = submitted_rx.recv().await {
                match self.answer(received).await? {
                    Some(Resend::Soon) => asks.restate.notify_one(),
                    Some(Resend::Later) => asks.restate_later.notify_one(),
                    None => {}
                }
            }
            Ok(())
        };
        tokio::try_join!(reading, answering).map(drop)
    }
}

/// A batch handed to the writer, whose verdicts are still to come.
struct Received {
    /// (channel, origin, seq) of each envelope, in order.
    ids: Vec<(String, String, u64)>,
    verdicts: Reply<Vec<Verdict>>,
}

impl Link {
    /// Reads the peer's frames. Envelope batches go to the writer without
    /// waiting for the previous one to be durable, up to [`IN_FLIGHT`] of them,
    /// so that under load the writer stores several in one round.
    async fn read_frames(
        &self,
        mut incoming: impl Stream<Item = Result<LinkFrame, tonic::Status>> + Unpin,
        hello_tx: watch::Sender<Option<Arc<VersionVectors>>>,
        submitted: mpsc::Sender<Received>,
    ) -> Result<(), LinkError> {
        let (fed, peer, cancel) = (&self.fed, &self.peer, &self.cancel);
        loop {
            let next = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                next = incoming.next() => next,
            };
            let frame = match next {
                None => return Err(LinkError::PeerClosed),
                Some(Err(status)) => return Err(LinkError::of_stream(status)),
                Some(Ok(LinkFrame { frame: None })) => continue,
                Some(Ok(LinkFrame { frame: Some(f) })) => f,
            };
            match frame {
                // Only channels shared with the peer are kept of what it states:
                // anything else would let it write records here at will.
                Frame::Hello(vv) => {
                    if !self.pace(vector_cost(&vv)).await {
                        return Ok(());
                    }
                    let vv = self.only_shared(vv);
                    // What the peer states it holds is also what it has acknowledged.
                    for cv in &vv.channels {
                        let vector = from_proto(cv);
                        fed.refusals.held(peer, &cv.channel, &vector);
                        fed.deliveries
                            .held(peer, &cv.channel, &vector, unix_ms(), true);
                        if let Err(e) = fed.store.put_cursor(peer, &cv.channel, &vector) {
                            tracing::warn!(%peer, error = %e, "cannot record the peer's state");
                        }
                    }
                    let _ = hello_tx.send(Some(Arc::new(vv)));
                }
                Frame::Progress(vv) => {
                    if !self.pace(vector_cost(&vv)).await {
                        return Ok(());
                    }
                    for cv in &self.only_shared(vv).channels {
                        let vector = from_proto(cv);
                        fed.refusals.held(peer, &cv.channel, &vector);
                        fed.deliveries
                            .held(peer, &cv.channel, &vector, unix_ms(), false);
                        if let Err(e) = fed.store.put_cursor(peer, &cv.channel, &vector) {
                            tracing::warn!(%peer, error = %e, "cannot record the peer's progress");
                        }
                        for (origin, seq) in vector {
                            note_has(&self.has, &cv.channel, origin, seq);
                        }
                    }
                }
                Frame::Refusals(EnvelopeRefusals { refusals }) => {
                    if !self.pace(1 + refusals.len()).await {
                        return Ok(());
                    }
                    self.refused_by_peer(refusals);
                }
                Frame::Offer(envelope) => {
                    if !self.pace(1).await {
                        return Ok(());
                    }
                    // An offer of a channel held here means the peer does not know
                    // that yet: restate what this node holds.
                    if self.offered(envelope).await? {
                        self.asks.restate.notify_one();
                    }
                }
                Frame::Ahead(batch) => {
                    if !self.pace(batch.envelopes.len()).await {
                        return Ok(());
                    }
                    // Shown now; stored when the ordered envelopes come.
                    let shown = fed.writer.ahead(peer.clone(), batch.envelopes).await?;
                    tracing::debug!(%peer, shown, "envelopes shown ahead of their run");
                }
                Frame::Envelopes(batch) => {
                    if !self.pace(batch.envelopes.len()).await {
                        return Ok(());
                    }
                    // Room first: a batch counts from when the writer has it.
                    let room = tokio::select! {
                        () = cancel.cancelled() => return Ok(()),
                        room = submitted.reserve() => room.map_err(|_| LinkError::Closed)?,
                    };
                    room.send(self.submit(batch).await?);
                }
            }
        }
    }

    /// Waits until `peer` may hand in `n` more items; `false` if the link was
    /// cancelled meanwhile. A peer above its limit is slowed, not refused: not
    /// reading holds it back through HTTP/2 flow control, on its link only.
    async fn pace(&self, n: usize) -> bool {
        let wait = self.fed.pace(&self.peer, n);
        if wait.is_zero() {
            return true;
        }
        tracing::debug!(peer = %self.peer, ?wait, "peer above limits.peer_envelopes_per_second; pacing its link");
        tokio::select! {
            () = self.cancel.cancelled() => false,
            () = tokio::time::sleep(wait) => true,
        }
    }
}

impl Link {
    /// Keeps what the peer says it refused of this node's envelopes: only of
    /// channels it may see and of envelopes this node holds (anything else
    /// is not this node's to know). Each new refusal is logged.
    /// Tells the peer which files of channels it may see this node
    /// refused (and will not fetch), so its members see it.
    async fn tell_files_refused(&self) -> Result<(), LinkError> {
        let (fed, peer) = (&self.fed, &self.peer);
        let mut refusals = Vec::new();
        // Per channel: what the peer may see of it (None: nothing).
        let mut visible: HashMap<String, Option<(ChannelRecord, VersionVector)>> = HashMap::new();
        for (channel, origin, seq, hash, reason) in fed.refusals.files_refused_by(&fed.org) {
            let sees = visible.entry(channel.clone()).or_insert_with(|| {
                let record = self.visible_record(&channel)?;
                let held = fed.durable_vector(&ChannelId::parse(&channel).ok()?).ok()?;
                let eligibility = fed.eligibility(&record, peer);
                let vector = rules::visible_vector(&record, eligibility, &held);
                Some((record, vector))
            });
            let may_see = sees.as_ref().is_some_and(|(record, vector)| {
                vector.get(&origin).is_some_and(|&last| seq <= last)
                    && !rules::withheld_from(record, peer, origin.as_str(), seq)
            });
            if !may_see {
                continue;
            }
            refusals.push(EnvelopeRefusal {
                channel,
                origin: origin.to_string(),
                origin_seq: seq,
                reason,
                retrying: false,
                file_sha256: hash.to_vec(),
            });
        }
        for frame in refusals.chunks(MAX_FRAME_REFUSALS) {
            tracing::debug!(%peer, files = frame.len(), "telling the partner which files this node refused");
            let refusals = frame.to_vec();
            self.send(Frame::Refusals(EnvelopeRefusals { refusals }))
                .await?;
        }
        Ok(())
    }

    fn refused_by_peer(&self, refusals: Vec<EnvelopeRefusal>) {
        let (fed, peer) = (&self.fed, &self.peer);
        let mut held: HashMap<String, Option<VersionVector>> = HashMap::new();
        for r in refusals {
            let Ok(origin) = OrgId::parse(&r.origin) else {
                continue;
            };
            // What this node may have sent the peer of the channel: only
            // a refusal of that is the peer's to make.
            let mine = held.entry(r.channel.clone()).or_insert_with(|| {
                let record = self.visible_record(&r.channel)?;
                let held = fed
                    .durable_vector(&ChannelId::parse(&r.channel).ok()?)
                    .ok()?;
                let eligibility = fed.eligibility(&record, peer);
                Some(rules::visible_vector(&record, eligibility, &held))
            });
            let holds = mine
                .as_ref()
                .is_some_and(|v| v.get(&origin).is_some_and(|&s| r.origin_seq <= s));
            if !holds || r.origin_seq == 0 {
                continue;
            }
            let reason = partner_words(&r.reason);
            if !r.file_sha256.is_empty() {
                self.file_refused_by_peer(&r, &origin, &reason);
                continue;
            }
            if fed
                .refusals
                .record(peer, &r.channel, &origin, r.origin_seq, &reason, r.retrying)
            {
                tracing::warn!(
                    %peer, channel = %r.channel, %origin, seq = r.origin_seq, %reason,
                    retrying = r.retrying,
                    "the partner refused an envelope of this node's{}",
                    if r.retrying { "; it is sent again later (is this node's clock ahead?)" } else { "" }
                );
            }
        }
    }

    /// A file of an envelope the peer took, which it refuses: kept (if that
    /// envelope references that file) for members to see.
    fn file_refused_by_peer(&self, r: &EnvelopeRefusal, origin: &OrgId, reason: &str) {
        let (fed, peer) = (&self.fed, &self.peer);
        let (Ok(channel), Some(hash)) = (
            ChannelId::parse(&r.channel),
            crate::model::FileHash::from_bytes(&r.file_sha256),
        ) else {
            return;
        };
        if !fed
            .store
            .references(&hash, &channel, origin, r.origin_seq)
            .unwrap_or(false)
        {
            return;
        }
        if fed
            .refusals
            .record_file(peer, &r.channel, origin, r.origin_seq, hash.0, reason)
        {
            tracing::warn!(%peer, channel = %r.channel, %origin, seq = r.origin_seq, %hash, %reason,
                "the partner refused a file; it will not reach it");
        }
    }
}

/// Most bytes of a partner's words that this node keeps (UTF-8).
const PARTNER_WORDS_BYTES: usize = 200;

/// A partner's words as this node keeps and logs them: no control
/// characters, at most [`PARTNER_WORDS_BYTES`] bytes of them.
pub(super) fn partner_words(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > PARTNER_WORDS_BYTES {
            break;
        }
        out.push(c);
    }
    out
}

/// When a hello that arrived at `now` is acted on, given when the last ones
/// were (oldest first, at most [`HELLO_BURST`]).
fn hello_due(recent: &VecDeque<Instant>, now: Instant) -> Instant {
    match recent.front() {
        Some(&oldest) if recent.len() == HELLO_BURST => (oldest + HELLO_WINDOW).max(now),
        _ => now,
    }
}

/// When a restatement asked for at `now` is due: at once, or one
/// [`RESEND_INTERVAL`] after the `last` one, so a peer that keeps sending
/// out of order cannot make this node restate on every frame.
fn restate_due(last: Option<Instant>, now: Instant) -> Instant {
    last.map_or(now, |t| (t + RESEND_INTERVAL).max(now))
}

/// Hands a batch to the writer.
impl Link {
    async fn submit(&self, batch: EnvelopeBatch) -> Result<Received, LinkError> {
        let ids: Vec<(String, String, u64)> = batch
            .envelopes
            .iter()
            .map(|e| (e.channel.clone(), e.origin.clone(), e.origin_seq))
            .collect();
        // The peer holds what it sends: note it before the writer commits (the
        // commit wakes this link's sender, which must not push it back). Only
        // of channels shared with it, so made-up names take no memory here.
        let mut records: HashMap<&str, Option<ChannelRecord>> = HashMap::new();
        for (channel, origin, seq) in &ids {
            let record = records
                .entry(channel)
                .or_insert_with(|| self.visible_record(channel));
            let (Some(record), Ok(origin)) = (record, OrgId::parse(origin)) else {
                continue;
            };
            for (origin, seq) in rules::roster_origins(record, [(origin, *seq)].into()) {
                note_has(&self.has, channel, origin, seq);
            }
        }
        let verdicts = self
            .fed
            .writer
            .submit_apply(self.peer.clone(), batch)
            .await?;
        Ok(Received { ids, verdicts })
    }

    /// Waits for a batch's verdicts, logs every rejection, has the sender
    /// answer with progress. Whether, and how soon, the peer should be told
    /// what this node really holds, so that it sends again what was refused.
    async fn answer(
        &self,
        Received { ids, verdicts }: Received,
    ) -> Result<Option<Resend>, LinkError> {
        let (peer, counters) = (&self.peer, &self.counters);
        counters
            .received
            .fetch_add(ids.len() as u64, Ordering::Relaxed);
        let verdicts = verdicts.wait().await?;
        let mut touched = HashSet::new();
        let mut resend = None;
        let mut refused = Vec::new();
        let mut visible: HashMap<String, bool> = HashMap::new();
        for ((channel, origin, seq), verdict) in ids.into_iter().zip(verdicts) {
            match verdict {
                Verdict::Accept => {
                    counters.accepted.fetch_add(1, Ordering::Relaxed);
                    touched.insert(channel);
                }
                // Never left over: apply turns it into Accept or Unsealed.
                Verdict::Chained => resend = Some(Resend::Soon),
                Verdict::Duplicate => {
                    counters.duplicates.fetch_add(1, Ordering::Relaxed);
                    // Held already (it came another way): the sender should know too.
                    touched.insert(channel);
                }
                Verdict::Reject(reason) => {
                    counters.rejected.fetch_add(1, Ordering::Relaxed);
                    resend = resend.max(reason.resend());
                    // Out of order is routine (a catch-up, a re-share): the
                    // restatement answers it; anything else broke a rule.
                    if reason.is_out_of_order() {
                        tracing::debug!(
                            target: "samband::federation::rejected",
                            %peer, ?channel, ?origin, seq, reason = %reason,
                            "envelope out of order; restating what this node holds"
                        );
                    } else {
                        tracing::warn!(
                            target: "samband::federation::rejected",
                            %peer, ?channel, ?origin, seq, reason = %reason,
                            "federation envelope rejected"
                        );
                    }
                    // The peer is told, for a channel it may see, unless a
                    // restatement of what this node holds is the answer
                    // (a gap: nothing is wrong with the envelope itself).
                    let may_see = *visible
                        .entry(channel.clone())
                        .or_insert_with(|| self.visible_record(&channel).is_some());
                    if may_see && reason.resend() != Some(Resend::Soon) {
                        refused.push(EnvelopeRefusal {
                            reason: reason.to_string(),
                            retrying: reason.resend() == Some(Resend::Later),
                            channel,
                            origin,
                            origin_seq: seq,
                            file_sha256: Vec::new(),
                        });
                    }
                }
            }
        }
        let mut channels = Vec::new();
        for channel in touched {
            let Ok(id) = ChannelId::parse(&channel) else {
                continue;
            };
            // Only what is durable: later batches may be applied and not flushed yet.
            channels.push(to_proto(&channel, &self.fed.durable_vector(&id)?));
        }
        if !channels.is_empty() {
            // The sender sends it when it has room; the reader never waits for that.
            self.asks.progress(channels);
        }
        if !refused.is_empty() {
            self.asks.refused(refused);
        }
        Ok(resend)
    }

    /// Handles an offer; `true` if the channel is held here already.
    async fn offered(&self, envelope: crate::proto::Envelope) -> Result<bool, LinkError> {
        let (fed, peer) = (&self.fed, &self.peer);
        let channel = envelope.channel.clone();
        // The policy for the home's channels is the one set for the home (a relay
        // may carry the offer); an unknown home falls back to the sender's policy.
        let home = ChannelId::parse(&channel)
            .map(|c| c.home().clone())
            .unwrap_or_else(|_| peer.clone());
        let policy = match fed.store.peer(&home)? {
            Some(p) => Some(p),
            None => fed.store.peer(peer)?,
        };
        let hold = policy.is_some_and(|p| p.accept == AcceptPolicy::Manual as i32);
        match fed.writer.offer(peer.clone(), envelope, hold).await? {
            Ok(Offered::AwaitingAccept) => {
                tracing::info!(%peer, %channel, "channel offered; waiting for `samband channel accept`");
            }
            Ok(Offered::Joined(_)) => {
                tracing::info!(%peer, %channel, "channel shared with this org; joined");
                fed.rehello();
            }
            Ok(Offered::AlreadyHeld) => return Ok(true),
            Ok(Offered::Withdrawn { archived: true }) => {
                tracing::info!(%peer, %channel, "the channel's home removed this org before it was accepted; the offer is withdrawn");
            }
            Ok(Offered::Withdrawn { archived: false }) => {}
            Ok(Offered::Outdated) => {
                tracing::debug!(%peer, %channel, "an outdated offer from an org removed since; it learns that from the home");
            }
            Err(reason) => tracing::warn!(
                target: "samband::federation::rejected",
                %peer, ?channel, reason = %reason, "channel offer rejected"
            ),
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(seq: u64, body: usize, seal: bool) -> Envelope {
        Envelope {
            origin_seq: seq,
            body: vec![0; body],
            signature: if seal { vec![1; 64] } else { vec![] },
            ..Envelope::default()
        }
    }

    #[test]
    fn a_frame_ends_at_the_last_seal_that_fits() {
        let run = |seals: &[bool]| -> Vec<Envelope> {
            (1..)
                .zip(seals)
                .map(|(i, &s)| envelope(i, 100, s))
                .collect()
        };
        assert_eq!(frame_len(&run(&[false, true, false, true]), 1 << 20), 4);
        assert_eq!(frame_len(&run(&[false, true, false, false]), 1 << 20), 2);
        // Never a frame without a seal: the peer would refuse it all.
        assert_eq!(frame_len(&run(&[false, false, false]), 1 << 20), 0);
        assert_eq!(frame_len(&[], 1 << 20), 0);
        // The byte budget cuts first (three of these fit), then back to a seal.
        let budget = 3 * envelope(1, 100, true).encoded_len();
        assert_eq!(frame_len(&run(&[true, false, true, true]), budget), 3);
        assert_eq!(frame_len(&run(&[false, true, false, true]), budget), 2);
        // A seal larger than the budget still goes, alone.
        assert_eq!(frame_len(&[envelope(1, 10_000, true)], 100), 1);
    }

    #[test]
    fn a_partners_words_are_kept_without_control_characters_and_bounded_in_bytes() {
        let words = partner_words(&format!("a\u{1b}[2J\n{}", "ä".repeat(300)));
        assert!(words.len() <= PARTNER_WORDS_BYTES, "{}", words.len());
        assert!(words.starts_with("a[2Jää"), "{words}");
        assert!(!words.chars().any(char::is_control));
    }

    #[test]
    fn hellos_past_the_burst_wait_for_the_window() {
        let t0 = Instant::now();
        let mut recent = VecDeque::new();
        for i in 0..HELLO_BURST {
            let at = t0 + Duration::from_millis(i as u64);
            assert_eq!(hello_due(&recent, at), at, "within the burst: at once");
            recent.push_back(at);
        }
        let soon = t0 + Duration::from_millis(10);
        assert_eq!(hello_due(&recent, soon), t0 + HELLO_WINDOW);
        let later = t0 + HELLO_WINDOW * 2;
        assert_eq!(hello_due(&recent, later), later);
    }

    #[test]
    fn a_restatement_inside_the_interval_is_deferred_not_dropped() {
        let t0 = Instant::now();
        assert_eq!(restate_due(None, t0), t0);
        let soon = t0 + RESEND_INTERVAL / 4;
        assert_eq!(restate_due(Some(t0), soon), t0 + RESEND_INTERVAL);
        let later = t0 + RESEND_INTERVAL * 3;
        assert_eq!(restate_due(Some(t0), later), later);
    }
}
