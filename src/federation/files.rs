//! File bytes between partner nodes.
//!
//! Serving: a partner gets a file only through a message this node may send
//! it ([`Federation::file_for_peer`]): a channel shared with it (fully, not
//! a removed participant's remainder), a message within what it may see and
//! not withheld from it, and that message's signed body naming the file.
//! Never by hash alone: bytes also referenced by an internal channel are
//! served only through the shared message. Every refusal reads the same, so
//! a partner learns nothing of what else this node holds.
//!
//! Fetching: the [`Fetcher`] worker takes the files that stored messages
//! reference and this node does not hold (the store's wanted list, written
//! with the messages), as soon as a commit brings them, and asks the
//! message's origin, then the channel's home, then the other participants,
//! on a call of its own (`FetchFile`, on its own connection), so text on
//! the link never waits behind file bytes. A partner this node cannot dial
//! (added without an endpoint) serves its files the other way round: while
//! its link is up it opens `ServeFiles` on its own connection, this node
//! sends requests on it, and the partner answers each with the chunks
//! ([`serve_over_call`] on the partner's side, [`Served`] on this one);
//! the same checks apply to what arrives. A transfer resumes from the
//! bytes held; it has no total time limit, only an idle one
//! ([`IDLE`]); bytes are checked against the signed SHA-256 before the file
//! is kept; a partner that sends other bytes, or more than the signed size,
//! is audited and its transfer dropped.
//!
//! May use: `model`, `proto`, `rules`, `store`, `audit`, `client`, `pki`,
//! `runtime`, `engine`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::link::partner_words;
use super::{Federation, PeerIdentity, PeerNode};
use crate::audit::Event;
use crate::engine::Changes;
use crate::model::{CHUNK_BYTES, ChannelId, FileHash, OrgId};
use crate::proto::file_push::Push;
use crate::proto::{self, ChannelState, PeerRecord, federation_client::FederationClient};
use crate::rules::{self, Eligibility};
use crate::runtime::{Worker, WorkerState};
use crate::store::{FileError, PartialOf, PartialWriter, Store, StoreError, Wanted};

/// A transfer that sends nothing for this long is given up (and resumed
/// later); there is no limit on how long a transfer that moves may take.
const IDLE: Duration = Duration::from_secs(60);

/// How often files still missing are asked for again.
const RETRY: Duration = Duration::from_secs(10);

/// Chunks of a file stream read ahead of its reader.
const DOWNLOAD_AHEAD: usize = 4;

/// Files looked at per unit of work.
const PER_ROUND: usize = 256;

impl Federation {
    /// The store, for serving file bytes.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Whether the calling partner may have file `req.sha256` through
    /// message (`req.channel`, `req.origin`, `req.seq`): the partner, the
    /// file and its size.
    pub(crate) fn file_for_peer(
        &self,
        identity: &PeerIdentity,
        req: &proto::FileRequest,
    ) -> Result<(OrgId, FileHash, u64), tonic::Status> {
        let peer = self.pinned_peer(identity)?.org;
        let refused = || {
            tonic::Status::not_found(format!(
                "no such file in a message of a channel shared with {peer}"
            ))
        };
        let (Ok(channel), Ok(origin), Some(hash)) = (
            ChannelId::parse(&req.channel),
            OrgId::parse(&req.origin),
            FileHash::from_bytes(&req.sha256),
        ) else {
            return Err(refused());
        };
        let unavailable =
            |e: StoreError| tonic::Status::unavailable(format!("reading the store: {e}"));
        let Some(record) = self.store.channel(&channel).map_err(unavailable)? else {
            return Err(refused());
        };
        let eligibility = self.eligibility(&record, &peer);
        if eligibility != Eligibility::Full {
            return Err(refused());
        }
        let mine = self.durable_vector(&channel).map_err(unavailable)?;
        let visible = rules::visible_vector(&record, eligibility, &mine);
        let may_see = visible.get(&origin).is_some_and(|&last| req.seq <= last)
            && !rules::withheld_from(&record, &peer, origin.as_str(), req.seq);
        if !may_see
            || !self
                .store
                .references(&hash, &channel, &origin, req.seq)
                .map_err(unavailable)?
        {
            return Err(refused());
        }
        // Held for this message: a partner naming a hash in its own post
        // gets nothing this node holds for another reason.
        match self
            .store
            .held_for(&hash, &origin, &self.org)
            .map_err(unavailable)?
        {
            Some(size) => Ok((peer, hash, size)),
            None => Err(refused()),
        }
    }

    /// The worker that fetches the files of received messages; files over
    /// `max_file_bytes` are not fetched.
    pub fn fetcher(self: &Arc<Self>, max_file_bytes: u64, disk_reserve_bytes: u64) -> Fetcher {
        Fetcher {
            fed: self.clone(),
            changes: self.commits.subscribe(),
            max_file_bytes,
            disk_reserve_bytes,
            said: HashSet::new(),
            after: None,
            no_endpoint: std::sync::Mutex::default(),
            last: "not run yet".to_owned(),
        }
    }
}

/// A partner's open ServeFiles call: requests go out on `requests`, its
/// answers come in on `pushes`, one request at a time.
#[derive(Debug)]
pub(crate) struct Served {
    requests: mpsc::Sender<Result<proto::FileRequest, tonic::Status>>,
    pushes: tonic::Streaming<proto::FilePush>,
}

impl Federation {
    /// A partner's ServeFiles call: keeps it (replacing an earlier one of
    /// the same partner) for the fetcher, and gives the stream of requests
    /// to send it. PERMISSION_DENIED for a caller that is not a configured
    /// peer with the CA that verified it.
    pub(crate) fn accept_served_files(
        &self,
        identity: &PeerIdentity,
        pushes: tonic::Streaming<proto::FilePush>,
    ) -> Result<mpsc::Receiver<Result<proto::FileRequest, tonic::Status>>, tonic::Status> {
        let peer = self.pinned_peer(identity)?.org;
        // One request at a time: the fetcher sends the next after an answer.
        let (requests, rx) = mpsc::channel(1);
        tracing::debug!(%peer, "the partner's file call is open");
        crate::locks::lock(&self.served).insert(peer, Served { requests, pushes });
        Ok(rx)
    }

    /// Takes `peer`'s ServeFiles call for one transfer.
    fn take_served(&self, peer: &OrgId) -> Option<Served> {
        crate::locks::lock(&self.served).remove(peer)
    }

    /// Gives back a call after a transfer that ended where the next may
    /// begin, unless the partner opened another meanwhile.
    fn give_back_served(&self, peer: &OrgId, served: Served) {
        crate::locks::lock(&self.served)
            .entry(peer.clone())
            .or_insert(served);
    }
}

/// Why one transfer did not complete.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("{0}")]
    Dial(String),
    #[error("{0}")]
    Call(#[from] tonic::Status),
    #[error("sent nothing for {}s", IDLE.as_secs())]
    Idle,
    /// This partner was added without an endpoint, and has no ServeFiles
    /// call open (it opens one while its link is up).
    #[error(
        "no endpoint to dial for files and no link from it now (it serves files while its link is up; or add an endpoint: samband peer add BUNDLE --fingerprint ... --endpoint HOST:PORT)"
    )]
    NoEndpoint,
    #[error("sent bytes at offset {got} where {want} was next")]
    Offset { got: u64, want: u64 },
    #[error("sent more than the {size} bytes the signed message gives")]
    TooLong { size: u64 },
    #[error("ended the transfer after {held} of {size} bytes")]
    Short { held: u64, size: u64 },
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl FetchError {
    /// What a partner can be blamed for: audited.
    fn is_hostile(&self) -> bool {
        matches!(
            self,
            FetchError::TooLong { .. }
                | FetchError::Offset { .. }
                | FetchError::File(FileError::Mismatch { .. })
        )
    }
}

/// Fetches the files that stored messages reference and this node lacks.
#[derive(Debug)]
pub struct Fetcher {
    fed: Arc<Federation>,
    changes: Arc<Changes>,
    max_file_bytes: u64,
    /// Bytes that must stay free on the disk: a file that would leave less
    /// waits (`limits.disk_reserve_bytes`).
    disk_reserve_bytes: u64,
    /// Files not fetched for a limit (size, disk), said in the log once each.
    said: HashSet<FileHash>,
    /// Where the next round goes on in the wanted list.
    after: Option<Wanted>,
    /// Partners whose files cannot be fetched for want of an endpoint
    /// (said in the log once, and in the status).
    no_endpoint: std::sync::Mutex<HashSet<OrgId>>,
    last: String,
}

impl Worker for Fetcher {
    fn name(&self) -> String {
        "file fetcher".to_owned()
    }

    async fn work(&mut self) -> WorkerState {
        let state = self.round().await;
        let more = self.after.is_some();
        self.last = match state {
            Ok((0, 0)) => "every referenced file is here".to_owned(),
            Ok((fetched, missing)) => {
                let mut line = format!("fetched {fetched} files this round; {missing} not here");
                let no_endpoint = crate::locks::lock(&self.no_endpoint);
                if !no_endpoint.is_empty() {
                    let mut orgs: Vec<_> = no_endpoint.iter().map(OrgId::as_str).collect();
                    orgs.sort_unstable();
                    line.push_str(&format!(
                        "; no endpoint to fetch from {} (samband peer add ... --endpoint)",
                        orgs.join(", ")
                    ));
                }
                line
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the files to fetch");
                format!("failed: {e}")
            }
        };
        // The rest of the list at once; then wait for a commit or a retry.
        if more {
            WorkerState::Busy
        } else {
            WorkerState::Idle
        }
    }

    async fn wait_for_work(&mut self) {
        tokio::select! {
            _ = self.changes.next() => {}
            () = tokio::time::sleep(RETRY) => {}
        }
    }

    fn status(&self) -> String {
        self.last.clone()
    }
}

impl Fetcher {
    /// One pass over the wanted files: how many were fetched, and how many
    /// are still missing.
    async fn round(&mut self) -> Result<(usize, usize), StoreError> {
        let store = self.fed.store.clone();
        let wanted = store.wanted(self.after.as_ref(), PER_ROUND)?;
        // Next round goes on after these, or from the start once all were seen.
        self.after = (wanted.len() == PER_ROUND)
            .then(|| wanted.last().cloned())
            .flatten();
        let (mut fetched, mut missing) = (0, 0);
        // Files fetched this round, per origin.
        let mut done: HashSet<(FileHash, OrgId)> = HashSet::new();
        let local = &self.fed.org;
        for w in wanted {
            // Held for a message of this origin: posted here (its author
            // uploaded it), or received for one. Bytes held for another
            // reason are fetched all the same: the origin's node must show
            // it has them.
            let held = done.contains(&(w.hash, w.origin.clone()))
                || store.held_for(&w.hash, &w.origin, local)?.is_some();
            if held || w.origin == *local {
                store.no_longer_wanted(&w)?;
                continue;
            }
            let Some(record) = store.channel(&w.channel)? else {
                store.no_longer_wanted(&w)?;
                continue;
            };
            // A channel this org was removed from fetches nothing new.
            if record.state != ChannelState::Active as i32 {
                missing += 1;
                continue;
            }
            if w.size > self.max_file_bytes {
                if self.said.insert(w.hash) {
                    tracing::warn!(hash = %w.hash, size = w.size, limit = self.max_file_bytes, channel = %w.channel,
                        "a partner's file is over limits.max_file_bytes; not fetched");
                }
                // Said to members here and, through the links, to the partners.
                let reason = format!(
                    "file of {} bytes; this node takes files of at most {} (limits.max_file_bytes)",
                    w.size, self.max_file_bytes
                );
                let fed = &self.fed;
                let channel = w.channel.to_string();
                if fed
                    .refusals
                    .record_file(&fed.org, &channel, &w.origin, w.seq, w.hash.0, &reason)
                {
                    fed.files_refused.send_modify(|n| *n += 1);
                }
                missing += 1;
                continue;
            }
            let free = store.files().available_bytes().unwrap_or(0);
            let to_come = w.size
                - store
                    .files()
                    .partial_len(&PartialOf::Transfer(&w.hash))
                    .min(w.size);
            if free.saturating_sub(to_come) < self.disk_reserve_bytes {
                if self.said.insert(w.hash) {
                    tracing::warn!(hash = %w.hash, size = w.size, free, reserve = self.disk_reserve_bytes,
                    "a partner's file waits: the disk is nearly full (limits.disk_reserve_bytes)");
                }
                missing += 1;
                continue;
            }
            match self.fetch(&record, &w).await {
                Ok(()) => {
                    store.record_vouched(&w.hash, &w.origin)?;
                    store.no_longer_wanted(&w)?;
                    done.insert((w.hash, w.origin.clone()));
                    fetched += 1;
                }
                Err(()) => missing += 1,
            }
        }
        Ok((fetched, missing))
    }

    /// Asks the origin, the home, then the other participants, until one
    /// transfer completes.
    async fn fetch(&self, record: &proto::ChannelRecord, w: &Wanted) -> Result<(), ()> {
        let local = self.fed.org.as_str();
        let mut peers: Vec<&str> = vec![w.origin.as_str(), record.home.as_str()];
        peers.extend(
            record
                .participants
                .iter()
                .filter(|p| p.active)
                .map(|p| p.org.as_str()),
        );
        let mut asked = HashSet::new();
        for peer in peers {
            if peer == local || !asked.insert(peer) {
                continue;
            }
            let Ok(peer) = OrgId::parse(peer) else {
                continue;
            };
            match self.fetch_from(&peer, w).await {
                Ok(resumed_from) => {
                    tracing::info!(%peer, hash = %w.hash, size = w.size, resumed_from, channel = %w.channel, "file fetched");
                    return Ok(());
                }
                Err(e) => {
                    if e.is_hostile() {
                        self.audit(&peer, w, &e);
                        self.fed
                            .store
                            .files()
                            .remove_partial(&PartialOf::Transfer(&w.hash));
                    }
                    // Said once per partner: the operator can fix it.
                    if matches!(e, FetchError::NoEndpoint)
                        && crate::locks::lock(&self.no_endpoint).insert(peer.clone())
                    {
                        tracing::warn!(%peer, error = %e, "cannot fetch this partner's files");
                    }
                    // A call's status comes from the partner: logged as its words.
                    let error = partner_words(&e.to_string());
                    tracing::debug!(%peer, hash = %w.hash, %error, "file not fetched from this partner");
                }
            }
        }
        Err(())
    }

    fn audit(&self, peer: &OrgId, w: &Wanted, e: &FetchError) {
        tracing::warn!(%peer, hash = %w.hash, error = %e, "a partner sent a file that is not the one the message names; dropped");
        let event = Event::new("federation.file_rejected")
            .with("peer", peer)
            .with("channel", &w.channel)
            .with("origin", &w.origin)
            .with("seq", w.seq)
            .with("sha256", w.hash)
            .with("reason", crate::audit::clip(&e.to_string()))
            .by(&crate::audit::Actor::Peer(peer.to_string()));
        if let Err(e) = self
            .fed
            .store
            .audit(event)
            .and_then(|_| self.fed.store.flush())
        {
            tracing::warn!(error = %e, "cannot record a rejected file in the audit log");
        }
    }

    /// One transfer from `peer`, resuming what is held: the offset it
    /// resumed from. By dialing it, or, for a partner without an endpoint,
    /// over its ServeFiles call.
    async fn fetch_from(&self, peer: &OrgId, w: &Wanted) -> Result<u64, FetchError> {
        let fed = &self.fed;
        let record = fed
            .store
            .peer(peer)?
            .ok_or_else(|| FetchError::Dial("not a configured peer".into()))?;
        let store = fed.store.clone();
        let hash = w.hash;
        let _writing = store
            .files()
            .claim(&PartialOf::Transfer(&hash))
            .ok_or_else(|| FetchError::Dial("a transfer of this file is running".into()))?;
        let held = store.files().partial_len(&PartialOf::Transfer(&hash));
        let offset = if held <= w.size { held } else { 0 };
        let req = proto::FileRequest {
            channel: w.channel.to_string(),
            origin: w.origin.to_string(),
            seq: w.seq,
            sha256: w.hash.0.to_vec(),
            offset,
        };
        if record.endpoint.is_empty() {
            let mut served = fed.take_served(peer).ok_or(FetchError::NoEndpoint)?;
            served
                .requests
                .send(Ok(req))
                .await
                .map_err(|_| FetchError::Dial("its file call ended".into()))?;
            let mut answer = (&mut served.pushes).map_while(|push| match push {
                Ok(proto::FilePush {
                    push: Some(Push::Chunk(chunk)),
                }) => Some(Ok(chunk)),
                Ok(proto::FilePush {
                    push: Some(Push::Done(_)),
                }) => None,
                Ok(proto::FilePush {
                    push: Some(Push::Refused(why)),
                }) => Some(Err(tonic::Status::not_found(partner_words(&why)))),
                Ok(proto::FilePush { push: None }) => {
                    Some(Err(tonic::Status::invalid_argument("an empty answer")))
                }
                Err(status) => Some(Err(status)),
            });
            let done = self.transfer(&mut answer, w, offset).await;
            // After a whole file or a refusal, the call is where the next
            // request may go; after anything else it is dropped (the partner
            // opens another).
            let at_boundary = match &done {
                Ok(()) => true,
                Err(FetchError::Call(status)) => status.code() == tonic::Code::NotFound,
                Err(_) => false,
            };
            if at_boundary {
                fed.give_back_served(peer, served);
            }
            return done.map(|()| offset);
        }
        let tls = fed
            .pki
            .peer_client_tls(&record.ca_der)
            .map_err(|e| FetchError::Dial(e.to_string()))?;
        let channel = crate::client::dial_for_files(Arc::new(tls), &record.endpoint)
            .await
            .map_err(|e| FetchError::Dial(e.to_string()))?;
        let mut client =
            FederationClient::new(channel).max_decoding_message_size(CHUNK_BYTES + (64 << 10));
        let mut chunks = client.fetch_file(req).await?.into_inner();
        self.transfer(&mut chunks, w, offset).await?;
        Ok(offset)
    }

    /// Writes `chunks` (from `offset`) to the file's partial and keeps the
    /// file once it is whole and its SHA-256 is the signed one.
    async fn transfer(
        &self,
        chunks: &mut (impl Stream<Item = Result<proto::FileChunk, tonic::Status>> + Unpin),
        w: &Wanted,
        offset: u64,
    ) -> Result<(), FetchError> {
        let fed = &self.fed;
        let (store, hash) = (fed.store.clone(), w.hash);
        let partial =
            blocking(move || store.files().partial(&PartialOf::Transfer(&hash), offset)).await?;
        // Received and written at once: the writer hashes and writes a chunk
        // while the next one is received.
        let mut writer = partial.into_writer(&fed.store);
        let received = receive(fed, chunks, &mut writer, w.size).await;
        let partial = writer.finish().await?;
        received?;
        if partial.len() < w.size {
            return Err(FetchError::Short {
                held: partial.len(),
                size: w.size,
            });
        }
        let store = fed.store.clone();
        blocking(move || partial.finish(store.files(), &hash)).await?;
        Ok(())
    }
}

/// Receives a transfer's chunks into `writer` until it ends: each must
/// follow the last, and all within the signed `size`.
async fn receive(
    fed: &Federation,
    chunks: &mut (impl Stream<Item = Result<proto::FileChunk, tonic::Status>> + Unpin),
    writer: &mut PartialWriter,
    size: u64,
) -> Result<(), FetchError> {
    loop {
        let next = tokio::select! {
            () = fed.runtime.shutdown().cancelled() => return Err(FetchError::Dial("the node is stopping".into())),
            next = tokio::time::timeout(IDLE, chunks.next()) => next,
        };
        let Some(chunk) = next.map_err(|_| FetchError::Idle)? else {
            return Ok(());
        };
        let chunk = chunk?;
        if chunk.offset != writer.len() {
            return Err(FetchError::Offset {
                got: chunk.offset,
                want: writer.len(),
            });
        }
        if writer.len() + chunk.data.len() as u64 > size {
            return Err(FetchError::TooLong { size });
        }
        writer.write(chunk.data).await?;
    }
}

/// The bytes of the held file `hash` (`size` bytes) from `offset`, in
/// chunks of [`CHUNK_BYTES`] made by `chunk(offset, size, data)`, read on
/// the blocking pool a few chunks ahead of the reader. Ends early, with
/// UNAVAILABLE, when the node stops (the reader resumes from its offset).
/// The stream holds `hold` (a caller's stream slot) until it ends.
pub(crate) fn stream_file<T: Send + 'static>(
    store: &Store,
    runtime: &crate::runtime::Runtime,
    hold: impl Send + 'static,
    hash: FileHash,
    mut offset: u64,
    size: u64,
    chunk: fn(u64, u64, Vec<u8>) -> T,
) -> ReceiverStream<Result<T, Status>> {
    let (tx, rx) = mpsc::channel(DOWNLOAD_AHEAD);
    let (store, shutdown) = (store.clone(), runtime.shutdown().clone());
    runtime.spawn(async move {
        let _hold = hold;
        while offset < size {
            let len = CHUNK_BYTES.min((size - offset) as usize);
            let store = store.clone();
            let read =
                tokio::task::spawn_blocking(move || store.read_file(&hash, offset, len)).await;
            let data = match read {
                Ok(Ok(data)) if !data.is_empty() => data,
                Ok(Ok(_)) => {
                    let _ = tx.send(Err(Status::internal("the file ended early"))).await;
                    return;
                }
                Ok(Err(e)) => {
                    tracing::error!(%hash, error = %e, "cannot read a file");
                    let _ = tx.send(Err(Status::internal("cannot read the file on the node"))).await;
                    return;
                }
                Err(_) => return,
            };
            let n = data.len() as u64;
            tokio::select! {
                () = shutdown.cancelled() => {
                    let stopping = Status::unavailable("the node is shutting down; resume from the last offset received");
                    let _ = tx.send(Err(stopping)).await;
                    return;
                }
                sent = tx.send(Ok(chunk(offset, size, data))) => if sent.is_err() { return },
            }
            offset += n;
        }
    });
    ReceiverStream::new(rx)
}

/// Serves this node's files to `peer` over a ServeFiles call it makes (for
/// a partner that cannot dial this node), until `cancel`: opened again,
/// after a short wait, whenever it ends. Each request gets what FetchFile
/// would give: the chunks and `done`, or `refused`.
pub(super) async fn serve_over_call(
    fed: Arc<Federation>,
    peer: OrgId,
    record: PeerRecord,
    cancel: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        let served = tokio::select! {
            () = cancel.cancelled() => return,
            served = serve_once(&fed, &peer, &record) => served,
        };
        match served {
            Ok(()) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::debug!(%peer, error = %e, "the file call to the partner ended");
            }
        }
        let delay = super::dialer::backoff(failures.max(4), super::dialer::jitter());
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

async fn serve_once(fed: &Federation, peer: &OrgId, record: &PeerRecord) -> Result<(), String> {
    let tls = fed
        .pki
        .peer_client_tls(&record.ca_der)
        .map_err(|e| e.to_string())?;
    let channel = crate::client::dial_for_files(Arc::new(tls), &record.endpoint)
        .await
        .map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel(DOWNLOAD_AHEAD);
    let mut requests = FederationClient::new(channel)
        .serve_files(ReceiverStream::new(rx))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    // The server this call reached was verified against the CA pinned for
    // `peer`: it is that peer, as pinned now (checked again per request).
    let identity: PeerIdentity = Ok(PeerNode {
        org: peer.clone(),
        ca_der: record.ca_der.clone(),
        not_after: None,
    });
    let ended = |_| "the partner ended the call".to_owned();
    let push = |push| proto::FilePush { push: Some(push) };
    while let Some(req) = requests.message().await.map_err(|e| e.to_string())? {
        let (hash, size) = match fed.file_for_peer(&identity, &req) {
            Ok((_, _, size)) if req.offset > size => {
                let why = format!("offset {} lies beyond the file's {size} bytes", req.offset);
                tx.send(push(Push::Refused(why))).await.map_err(ended)?;
                continue;
            }
            Ok((_, hash, size)) => (hash, size),
            Err(status) => {
                let why = status.message().to_owned();
                tx.send(push(Push::Refused(why))).await.map_err(ended)?;
                continue;
            }
        };
        let mut chunks = stream_file(
            &fed.store,
            &fed.runtime,
            (),
            hash,
            req.offset,
            size,
            |offset, size, data| proto::FileChunk { offset, data, size },
        );
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| e.message().to_owned())?;
            tx.send(push(Push::Chunk(chunk))).await.map_err(ended)?;
        }
        tx.send(push(Push::Done(true))).await.map_err(ended)?;
    }
    Ok(())
}

/// Runs blocking file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FileError> + Send + 'static,
) -> Result<T, FetchError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| FetchError::Dial(format!("file task failed: {e}")))?
        .map_err(FetchError::from)
}
