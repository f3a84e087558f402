//! The single writer: every change to the message log goes through it.
//!
//! It runs on its own OS thread (sled calls block). Each round takes every
//! command that is waiting (up to [`MAX_ROUND`]): members' posts, envelopes
//! received from peers, roster changes, channel offers. It decides each one
//! against the current state (plus what the round already staged), stages
//! the effects in one atomic batch, flushes once, and only then answers and
//! publishes: an acknowledged post is on disk, a received envelope is
//! acknowledged to its peer only once durable, and concurrent work shares
//! one flush.
//!
//! This file holds the commands, the round and its commit; each command's
//! decision lives in a file of its own (`post`, `receive`, `offer`,
//! `roster`), so a new command is a new file and one arm of `decide`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ring::signature::{Ed25519KeyPair, KeyPair as _};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::commits::Commits;
use super::durable::DurableMarks;
use super::fanout::Fanout;
use crate::audit::Actor;
use crate::audit::{self, Event};
use crate::model::{
    ChainHead, ChannelId, Cursor, EnvelopeHash, Hlc, HlcClock, MemberName, OrgId, Priority, sign,
};
use crate::proto::{
    ChannelRecord, ChannelState, Envelope, EnvelopeBatch, Incident, MessageId, PictureBody,
    PostBody,
};
use crate::rules::{self, History, Reject, Verdict};
use crate::store::{Store, StoreBatch, StoreError, Stored};

mod ahead;
mod offer;
mod post;
mod receive;
mod roster;

/// How far ahead of this node's clock a received timestamp may be.
const MAX_DRIFT_MS: u64 = 5 * 60 * 1000;
/// Most commands decided per flush.
const MAX_ROUND: usize = 1024;
/// Commands that may wait for the writer before senders feel back-pressure.
const QUEUE: usize = 4096;

/// A member's post, as validated by the API.
#[derive(Debug)]
pub struct NewPost {
    pub channel: ChannelId,
    pub author: MemberName,
    pub priority: Priority,
    pub content: Content,
}

/// What a member posts.
#[derive(Debug)]
pub enum Content {
    /// A message. Its files' bytes are durable here already. Plain text is
    /// a `Kind::Text` envelope; with files, a reply or an acknowledgement
    /// request, a `Kind::Post`.
    Message(PostBody),
    /// An acknowledgement of this message of the channel (`Kind::Ack`).
    Ack(MessageId),
    /// A retraction of this org's earlier message of the channel
    /// (`Kind::Retract`); the caller checked who may.
    Retract(MessageId),
    /// An entry of the situational picture of the channel's incident, set
    /// or removed (`Kind::Picture`); the caller checked it.
    Picture(PictureBody),
}

/// What became of a channel offer.
#[derive(Debug, Clone)]
pub enum Offered {
    /// The channel is now held here (new, or rejoined after a removal).
    Joined(ChannelRecord),
    /// Held here already: the peer should be told (it did not know).
    AlreadyHeld,
    /// Waiting until an operator accepts it (`channel accept`).
    AwaitingAccept,
    /// Its roster removes this org: the offer held here for acceptance, if
    /// any, is withdrawn (`archived`: kept as an archived, empty channel).
    Withdrawn { archived: bool },
    /// A roster no newer than the one held here, from an org that roster
    /// has since removed (closing an incident removes everyone): the
    /// sender only lags behind and learns its removal from the home.
    /// Nothing is kept, answered or audited.
    Outdated,
}

/// A change to a home channel's roster.
#[derive(Debug, Clone)]
pub enum RosterChange {
    /// Share with each org, given with its message-signing key, and what
    /// it gets of what the channel holds. `None` when not chosen: refused
    /// if one of the orgs was removed from the channel before.
    Share {
        orgs: Vec<(OrgId, Vec<u8>)>,
        history: Option<History>,
    },
    Unshare {
        org: OrgId,
    },
    /// Opens an incident in a channel not held here yet: creates it,
    /// shares it with each org (all history) and states the incident.
    OpenIncident {
        orgs: Vec<(OrgId, Vec<u8>)>,
        incident: Incident,
    },
    /// Closes the channel's incident at that time: removes every
    /// participant (each keeps what it has) and states it closed.
    CloseIncident {
        at_unix_ms: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the node is shutting down")]
    Stopped,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the node could not store this and is stopping; try again once it is back")]
    Commit,
    #[error("another change decided with this one failed on the node; try again")]
    RoundRefused,
    #[error("channel {0} does not exist on this node")]
    NoChannel(String),
    #[error("channel {0} is archived: this org was removed from it, so it is read-only")]
    Archived(String),
    #[error("channel {0} is offered but not accepted yet (samband channel accept)")]
    NotAccepted(String),
    #[error("channel {channel} belongs to {home}; only its home changes who it is shared with")]
    NotHome { channel: String, home: String },
    #[error("{org} is not a participant of {channel}")]
    NotParticipant { channel: String, org: String },
    #[error("channel {0} is not waiting to be accepted: this node holds it already")]
    NotPending(String),
    #[error(
        "channel {0} was withdrawn: its home removed this org before the offer was accepted; \
         it is archived, empty and read-only"
    )]
    Withdrawn(String),
    #[error(
        "channel {channel} belongs to {home}, which is no longer a partner of this node: \
         nothing posted here would reach anyone; it is read-only"
    )]
    HomeNotPeer { channel: String, home: String },
    #[error(
        "{0} is not a configured peer (any more); import its trust bundle first (samband peer add)"
    )]
    NotPeer(String),
    #[error(
        "{channel} was shared with {orgs} before, and unshared since: say whether sharing \
         again hands over what was posted meanwhile (--history all) or only what is posted \
         from now on (--history from-now)"
    )]
    HistoryNotChosen { channel: String, orgs: String },
    #[error(
        "the incident of channel {0} is closed or past its end (until): the channel is \
         read-only, with everything received kept"
    )]
    IncidentOver(String),
    #[error("channel {0} is not an incident's")]
    NotIncident(String),
    #[error(
        "channel {0} does not carry an incident's situational picture (its first channel does)"
    )]
    NoPicture(String),
    #[error("the incident of channel {0} is closed already")]
    AlreadyClosed(String),
    #[error("channel {0} exists already: an incident opens channels of its own; give other names")]
    NotFresh(String),
    #[error(
        "this node has an incident named {0} already (samband incident show {0}): give the new \
         one another name"
    )]
    IncidentExists(String),
    #[error(
        "{0} names a channel or an incident of this node already: an incident and its channels \
         take names that no other channel or incident has"
    )]
    NameTaken(String),
    #[error("channel {0} exists already")]
    ChannelExists(String),
}

type Answer<T> = oneshot::Sender<Result<T, WriteError>>;

enum Command {
    Post(NewPost, Answer<Arc<Stored>>),
    /// Envelopes a peer sent (with the retractions that prove its withheld
    /// copies); answered with one verdict per envelope.
    Apply {
        from: OrgId,
        batch: EnvelopeBatch,
        answer: Answer<Vec<Verdict>>,
    },
    /// FLASH and URGENT envelopes a peer sent ahead of their run; answered
    /// with how many are shown.
    Ahead {
        from: OrgId,
        envelopes: Vec<Envelope>,
        answer: Answer<usize>,
    },
    /// A channel offered by a peer: its home's latest control envelope.
    Offer {
        from: OrgId,
        envelope: Envelope,
        hold: bool,
        answer: Answer<Result<Offered, Reject>>,
    },
    /// One change to the rosters of these channels of this org: decided
    /// for all before any is staged, so all change in the round or none.
    Roster {
        channels: Vec<ChannelId>,
        change: RosterChange,
        actor: Actor,
        answer: Answer<Vec<ChannelRecord>>,
    },
    Accept {
        channel: ChannelId,
        actor: Actor,
        answer: Answer<ChannelRecord>,
    },
    /// A new internal channel of this org.
    Create {
        record: ChannelRecord,
        actor: Actor,
        answer: Answer<ChannelRecord>,
    },
    Stop,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Post(..) => "Post",
            Command::Apply { .. } => "Apply",
            Command::Ahead { .. } => "Ahead",
            Command::Offer { .. } => "Offer",
            Command::Roster { .. } => "Roster",
            Command::Accept { .. } => "Accept",
            Command::Create { .. } => "Create",
            Command::Stop => "Stop",
        })
    }
}

/// The answer to a queued command, once the writer has decided (and, for
/// changes, made them durable).
#[derive(Debug)]
pub struct Reply<T>(oneshot::Receiver<Result<T, WriteError>>);

impl<T> Reply<T> {
    pub async fn wait(self) -> Result<T, WriteError> {
        self.0.await.map_err(|_| WriteError::Stopped)?
    }
}

/// The sending side of the writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Command>,
}

/// An answer to send once the round is durable.
enum Done {
    /// The post's index in the round's envelopes.
    Post(Answer<Arc<Stored>>, usize),
    Apply(Answer<Vec<Verdict>>, Vec<Verdict>),
    /// Shown to subscribers once the round commits.
    Ahead(Answer<usize>, Vec<(ChannelId, Arc<Stored>)>),
    Offer(Answer<Result<Offered, Reject>>, Result<Offered, Reject>),
    Record(Answer<ChannelRecord>, ChannelRecord),
    Records(Answer<Vec<ChannelRecord>>, Vec<ChannelRecord>),
}

/// What one round staged.
#[derive(Default)]
struct Round {
    /// Channel records changed this round.
    batch: StoreBatch,
    /// Envelopes accepted this round, in order; signed where `true` (seals).
    envelopes: Vec<(ChannelId, Cursor, Envelope)>,
    /// Per channel: this node's latest unsealed envelope (index), and the
    /// envelopes and bytes since this node's last seal in it.
    open_runs: HashMap<ChannelId, (usize, usize, usize)>,
    done: Vec<Done>,
    /// Chain hashes of what this round staged, which the store cannot show yet.
    staged: HashMap<(ChannelId, OrgId, u64), EnvelopeHash>,
    /// A store error while deciding: the in-memory state may have moved
    /// without the store, so the whole round is refused, not committed.
    failed: Option<String>,
    /// Audit entries for what this round changed, written with its commit.
    audit: Vec<Event>,
    /// Channels whose record or log this round changed.
    touched: HashSet<ChannelId>,
}

impl Round {
    fn put_channel(&mut self, channel: &ChannelId, record: &ChannelRecord) {
        self.batch.put_channel(record);
        self.touched.insert(channel.clone());
    }
}

/// An origin signs (seals) its last envelope per channel in each round, and
/// at least every this many envelopes or bytes, so that a run between two
/// seals always fits in one link frame.
const SEAL_EVERY: usize = 256;
const SEAL_BYTES: usize = 1 << 20;

/// Tunables the writer needs from the config.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    pub org: OrgId,
    pub max_envelope_bytes: usize,
    pub channels_per_partner: usize,
}

struct Writer {
    rx: mpsc::Receiver<Command>,
    store: Store,
    settings: WriterSettings,
    key: Ed25519KeyPair,
    public_key: Vec<u8>,
    clock: HlcClock,
    /// Chain head per (channel, origin); filled lazily from the store.
    heads: HashMap<(ChannelId, OrgId), ChainHead>,
    /// Channel records as of the staged state; filled lazily from the store.
    records: HashMap<ChannelId, ChannelRecord>,
    /// This node's key and its peers' keys, read from the peer table once
    /// in a round that needs them (the table changes outside the writer).
    pinned: rules::Pinned,
    pinned_fresh: bool,
    fanout: Arc<Fanout>,
    /// Told after every durable round that changed the log, and which channels.
    commits: Arc<Commits>,
    durable: Arc<DurableMarks>,
    /// Caps the audit entries that what a peer sends causes (rejections,
    /// roster changes, offers): per peer, so that none can fill the disk.
    peer_audit: audit::Budget,
    /// Files whose last reference a retraction took away, to remove once
    /// no post with files is in flight (the sweep lock).
    unreferenced: Vec<crate::model::FileHash>,
}

/// Starts the writer thread.
pub fn spawn(
    store: Store,
    settings: WriterSettings,
    key: Ed25519KeyPair,
    fanout: Arc<Fanout>,
    commits: Arc<Commits>,
    durable: Arc<DurableMarks>,
    stop_node: CancellationToken,
) -> std::io::Result<(WriterHandle, std::thread::JoinHandle<Result<(), String>>)> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let public_key = key.public_key().as_ref().to_vec();
    let writer = Writer {
        rx,
        store,
        settings,
        key,
        public_key,
        clock: HlcClock::default(),
        heads: HashMap::new(),
        records: HashMap::new(),
        pinned: rules::Pinned::default(),
        pinned_fresh: false,
        fanout,
        commits,
        durable,
        peer_audit: audit::Budget::default(),
        unreferenced: Vec::new(),
    };
    let thread = std::thread::Builder::new()
        .name("samband-writer".into())
        .spawn(move || {
            // However the writer ends (stopped, failed, panicked), the node stops too.
            let _stop_node = stop_node.drop_guard();
            writer.run()
        })?;
    Ok((WriterHandle { tx }, thread))
}

/// Answers every request of a round that was not committed.
fn refuse_all(done: Vec<Done>, err: impl Fn() -> WriteError) {
    for done in done {
        // Whoever asked may be gone; nothing to do about that.
        let _ = match done {
            Done::Post(a, _) => a.send(Err(err())).map_err(drop),
            Done::Apply(a, _) => a.send(Err(err())).map_err(drop),
            Done::Ahead(a, _) => a.send(Err(err())).map_err(drop),
            Done::Offer(a, _) => a.send(Err(err())).map_err(drop),
            Done::Record(a, _) => a.send(Err(err())).map_err(drop),
            Done::Records(a, _) => a.send(Err(err())).map_err(drop),
        };
    }
}

/// Answers a refused command; a store error fails the whole round.
fn refuse<T>(round: &mut Round, answer: Answer<T>, e: WriteError) {
    if let WriteError::Store(store) = &e {
        round.failed.get_or_insert_with(|| store.to_string());
    }
    // Whoever asked may be gone; nothing to do about that.
    let _ = answer.send(Err(e));
}

// === impl WriterHandle ===

impl WriterHandle {
    async fn ask<T>(&self, make: impl FnOnce(Answer<T>) -> Command) -> Result<T, WriteError> {
        self.submit(make).await?.wait().await
    }

    /// Queues a command; its answer comes through the returned [`Reply`].
    async fn submit<T>(
        &self,
        make: impl FnOnce(Answer<T>) -> Command,
    ) -> Result<Reply<T>, WriteError> {
        let (answer, rx) = oneshot::channel();
        self.tx
            .send(make(answer))
            .await
            .map_err(|_| WriteError::Stopped)?;
        Ok(Reply(rx))
    }

    /// Queues a post without waiting for it to be durable. Lets one stream
    /// keep many posts in flight.
    pub async fn submit_post(&self, post: NewPost) -> Result<Reply<Arc<Stored>>, WriteError> {
        self.submit(|a| Command::Post(post, a)).await
    }

    /// Commits a post; resolves once it is durable.
    pub async fn post(&self, post: NewPost) -> Result<Arc<Stored>, WriteError> {
        self.ask(|a| Command::Post(post, a)).await
    }

    /// Hands FLASH and URGENT envelopes that `from` sent ahead of their run
    /// to the writer, to be checked and shown to subscribers: how many were.
    pub async fn ahead(&self, from: OrgId, envelopes: Vec<Envelope>) -> Result<usize, WriteError> {
        self.ask(|answer| Command::Ahead {
            from,
            envelopes,
            answer,
        })
        .await
    }

    /// Queues envelopes received from `from` for the writer to decide and
    /// store; the answer comes once the accepted ones are durable. Lets one
    /// link keep several batches in flight.
    pub async fn submit_apply(
        &self,
        from: OrgId,
        batch: EnvelopeBatch,
    ) -> Result<Reply<Vec<Verdict>>, WriteError> {
        self.submit(|answer| Command::Apply {
            from,
            batch,
            answer,
        })
        .await
    }

    /// Records a channel offered by `from` (held for acceptance if `hold`);
    /// `None` if the channel is known here already.
    pub async fn offer(
        &self,
        from: OrgId,
        envelope: Envelope,
        hold: bool,
    ) -> Result<Result<Offered, Reject>, WriteError> {
        self.ask(|answer| Command::Offer {
            from,
            envelope,
            hold,
            answer,
        })
        .await
    }

    /// Changes the roster of a channel whose home is this org; the audit
    /// entry names `actor`.
    pub async fn roster(
        &self,
        channel: ChannelId,
        change: RosterChange,
        actor: Actor,
    ) -> Result<ChannelRecord, WriteError> {
        let mut changed = self.rosters(vec![channel], change, actor).await?;
        changed.pop().ok_or(WriteError::Stopped)
    }

    /// Makes the same change to the rosters of several channels of this
    /// org in one durable step: all of them change, or (with the first
    /// error) none. Their records as changed, in order.
    pub async fn rosters(
        &self,
        channels: Vec<ChannelId>,
        change: RosterChange,
        actor: Actor,
    ) -> Result<Vec<ChannelRecord>, WriteError> {
        self.ask(|answer| Command::Roster {
            channels,
            change,
            actor,
            answer,
        })
        .await
    }

    /// Accepts a held channel offer; the audit entry names `actor`.
    pub async fn accept(
        &self,
        channel: ChannelId,
        actor: Actor,
    ) -> Result<ChannelRecord, WriteError> {
        self.ask(|answer| Command::Accept {
            channel,
            actor,
            answer,
        })
        .await
    }

    /// Creates the internal channel `record` of this org, once durable with
    /// its audit entry (naming `actor`). ALREADY_EXISTS-kind errors when the
    /// channel exists or its name is an incident's.
    pub async fn create(
        &self,
        record: ChannelRecord,
        actor: Actor,
    ) -> Result<ChannelRecord, WriteError> {
        self.ask(|answer| Command::Create {
            record,
            actor,
            answer,
        })
        .await
    }

    /// Asks the writer to finish what is queued before this call, then stop.
    pub async fn stop(&self) {
        // An error means the writer is gone already.
        let _ = self.tx.send(Command::Stop).await;
    }
}

// === impl Writer ===

impl Writer {
    /// Decides and commits rounds until told to stop. A round that fails
    /// stops the writer and the node (crash-only): after a failed write or
    /// sync, neither sled nor the file system says what reached the disk,
    /// so the only safe state is the one a restart recovers. Its requests
    /// are answered with the error; a supervisor restarts the node.
    fn run(mut self) -> Result<(), String> {
        let mut commands = Vec::new();
        let mut stopping = false;
        while !stopping {
            match self.rx.blocking_recv() {
                Some(Command::Stop) | None => break,
                Some(c) => commands.push(c),
            }
            while commands.len() < MAX_ROUND {
                match self.rx.try_recv() {
                    Ok(Command::Stop) => {
                        stopping = true;
                        break;
                    }
                    Ok(c) => commands.push(c),
                    Err(_) => break,
                }
            }
            self.pinned_fresh = false;
            let mut round = Round::default();
            for command in commands.drain(..) {
                self.decide(command, &mut round);
            }
            if let Err(e) = self.commit(round) {
                self.rx.close();
                return Err(e);
            }
        }
        self.rx.close();
        self.store.flush().map_err(|e| e.to_string())
    }

    fn record(&mut self, channel: &ChannelId) -> Result<Option<ChannelRecord>, StoreError> {
        if let Some(r) = self.records.get(channel) {
            return Ok(Some(r.clone()));
        }
        let record = self.store.channel(channel)?;
        if let Some(r) = &record {
            self.records.insert(channel.clone(), r.clone());
        }
        Ok(record)
    }

    fn head(&mut self, channel: &ChannelId, origin: &OrgId) -> Result<ChainHead, StoreError> {
        let key = (channel.clone(), origin.clone());
        if let Some(head) = self.heads.get(&key) {
            return Ok(*head);
        }
        let Some(head) = self.store.chain_head(channel, origin)? else {
            // Not cached: a partner naming made-up origins must not grow
            // this map. Staging an origin's first envelope caches its head.
            return Ok(ChainHead::GENESIS);
        };
        // Never issue a timestamp below one already on disk, whatever the wall clock says.
        self.clock.observe(head.hlc);
        self.heads.insert(key, head);
        Ok(head)
    }

    /// Stages one envelope and moves the chain head; returns its index in the round.
    fn stage(
        &mut self,
        round: &mut Round,
        channel: &ChannelId,
        envelope: Envelope,
        hash: EnvelopeHash,
    ) -> Result<usize, StoreError> {
        let origin = OrgId::parse(&envelope.origin).map_err(|_| StoreError::Inconsistent {
            key: envelope.origin.clone(),
            why: "staged envelope with an invalid origin",
        })?;
        let cursor = Cursor {
            hlc: Hlc(envelope.hlc),
            origin: origin.clone(),
            seq: envelope.origin_seq,
        };
        round
            .staged
            .insert((channel.clone(), origin.clone(), envelope.origin_seq), hash);
        // Readers elsewhere must not pass this on before it is flushed.
        self.durable.hold(channel, &origin, envelope.origin_seq - 1);
        self.heads
            .insert((channel.clone(), origin), ChainHead::after(&envelope, hash));
        round.touched.insert(channel.clone());
        round.envelopes.push((channel.clone(), cursor, envelope));
        Ok(round.envelopes.len() - 1)
    }

    fn writable(&mut self, channel: &ChannelId) -> Result<ChannelRecord, WriteError> {
        let record = self
            .record(channel)?
            .ok_or_else(|| WriteError::NoChannel(channel.to_string()))?;
        match ChannelState::try_from(record.state) {
            Ok(ChannelState::Archived)
                if record
                    .incident
                    .as_ref()
                    .is_some_and(|i| i.closed_unix_ms > 0) =>
            {
                Err(WriteError::IncidentOver(channel.to_string()))
            }
            Ok(ChannelState::Archived) => Err(WriteError::Archived(channel.to_string())),
            Ok(ChannelState::Pending) => Err(WriteError::NotAccepted(channel.to_string())),
            _ => Ok(record),
        }
    }

    fn decide(&mut self, command: Command, round: &mut Round) {
        match command {
            Command::Post(post, answer) => match self.post(round, post) {
                Ok(index) => round.done.push(Done::Post(answer, index)),
                Err(e) => refuse(round, answer, e),
            },
            Command::Apply {
                from,
                batch,
                answer,
            } => match self.apply(round, &from, batch) {
                Ok(verdicts) => round.done.push(Done::Apply(answer, verdicts)),
                Err(e) => refuse(round, answer, e.into()),
            },
            Command::Ahead {
                from,
                envelopes,
                answer,
            } => match self.ahead(round, &from, envelopes) {
                Ok(shown) => round.done.push(Done::Ahead(answer, shown)),
                Err(e) => refuse(round, answer, e.into()),
            },
            Command::Offer {
                from,
                envelope,
                hold,
                answer,
            } => match self.offer(round, &from, &envelope, hold) {
                Ok(outcome) => round.done.push(Done::Offer(answer, outcome)),
                Err(e) => refuse(round, answer, e.into()),
            },
            Command::Roster {
                channels,
                change,
                actor,
                answer,
            } => match self.change_rosters(round, &channels, &change, &actor) {
                Ok(records) => round.done.push(Done::Records(answer, records)),
                Err(e) => refuse(round, answer, e),
            },
            Command::Accept {
                channel,
                actor,
                answer,
            } => match self.accept(round, &channel, &actor) {
                Ok(record) => round.done.push(Done::Record(answer, record)),
                Err(e) => refuse(round, answer, e),
            },
            Command::Create {
                record,
                actor,
                answer,
            } => match self.create(round, record, &actor) {
                Ok(record) => round.done.push(Done::Record(answer, record)),
                Err(e) => refuse(round, answer, e),
            },
            Command::Stop => {}
        }
    }

    /// Makes `self.pinned` hold this node's own key and every peer's key
    /// as the peer table has them now; read once per round.
    fn refresh_pinned(&mut self) -> Result<(), StoreError> {
        if !self.pinned_fresh {
            self.pinned = rules::Pinned::from_peers(&self.store.peers()?)
                .with_own(&self.settings.org, &self.public_key);
            self.pinned_fresh = true;
        }
        Ok(())
    }

    /// Makes the round durable and answers it. A round refused while
    /// deciding is answered with an error; a failed write or sync is
    /// answered so and returned, which stops the writer.
    fn commit(&mut self, mut round: Round) -> Result<(), String> {
        if round.done.is_empty() && round.failed.is_none() {
            return Ok(());
        }
        if let Some(e) = round.failed.take() {
            // A read failed while deciding: nothing was written, so the node
            // goes on; what the round staged in memory is read again.
            tracing::error!(error = %e, answers = round.done.len(), "a store read failed while deciding; the round is refused, nothing was written");
            self.heads.clear();
            self.records.clear();
            refuse_all(round.done, || WriteError::RoundRefused);
            return Ok(());
        }
        // Seal each channel's run of this node's envelopes.
        for (index, ..) in round.open_runs.values() {
            sign(&mut round.envelopes[*index].2, &self.key);
        }
        let changed =
            !round.batch.is_empty() || !round.envelopes.is_empty() || !round.audit.is_empty();
        let mut batch = round.batch;
        for (channel, cursor, envelope) in &round.envelopes {
            batch.put_envelope(channel, cursor, envelope);
        }
        // Retractions last: the messages they drop the bodies of may be in
        // this very batch.
        let mut unreferenced = Vec::new();
        let retracted = round
            .envelopes
            .iter()
            .try_for_each(|(channel, cursor, envelope)| {
                if let Some(target) = rules::retraction_of(envelope) {
                    let files = batch.retract(
                        &self.store,
                        channel,
                        cursor,
                        &envelope.author,
                        target.seq,
                    )?;
                    unreferenced.extend(files);
                }
                Ok(())
            });
        // Audit entries first: a crash between the two may leave an entry
        // for a change that did not land, never a change without its entry.
        let written = if changed {
            retracted
                .and_then(|()| {
                    round
                        .audit
                        .drain(..)
                        .try_for_each(|e| self.store.audit(e).map(drop))
                })
                .and_then(|()| self.store.apply(batch))
                .and_then(|()| self.store.flush())
        } else {
            Ok(())
        };
        if let Err(e) = written {
            tracing::error!(error = %e, answers = round.done.len(), "commit failed; answering the round's requests with an error and stopping the node, so that a restart recovers what is durable");
            refuse_all(round.done, || WriteError::Commit);
            return Err(e.to_string());
        }
        self.unreferenced.extend(unreferenced);
        if !self.unreferenced.is_empty() {
            match self.store.remove_unreferenced(&mut self.unreferenced) {
                Ok(0) => {}
                Ok(removed) => tracing::info!(
                    removed,
                    "removed the files only retracted messages referenced"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot remove the files of retracted messages")
                }
            }
        }
        self.durable.advance(
            round
                .envelopes
                .iter()
                .map(|(channel, cursor, _)| (channel, &cursor.origin, cursor.seq)),
        );
        let stored: Vec<Arc<Stored>> = round
            .envelopes
            .into_iter()
            .map(|(channel, cursor, envelope)| {
                let s = Arc::new(Stored { cursor, envelope });
                self.fanout.publish(&channel, s.clone());
                s
            })
            .collect();
        if changed && !round.touched.is_empty() {
            self.commits.record(&round.touched);
        }
        for done in round.done {
            // Whoever asked may be gone; the change is committed all the same.
            let _ = match done {
                Done::Post(a, index) => a.send(Ok(stored[index].clone())).map_err(drop),
                Done::Apply(a, v) => a.send(Ok(v)).map_err(drop),
                Done::Ahead(a, shown) => {
                    let n = shown.len();
                    for (channel, stored) in shown {
                        self.fanout.publish_ahead(&channel, stored);
                    }
                    a.send(Ok(n)).map_err(drop)
                }
                Done::Offer(a, o) => a.send(Ok(o)).map_err(drop),
                Done::Record(a, r) => a.send(Ok(r)).map_err(drop),
                Done::Records(a, r) => a.send(Ok(r)).map_err(drop),
            };
        }
        Ok(())
    }
}
