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
//! the link never waits behind file bytes. A transfer resumes from the
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

use super::{Federation, PeerIdentity};
use crate::audit::Event;
use crate::engine::Changes;
use crate::model::{CHUNK_BYTES, ChannelId, FileHash, OrgId};
use crate::proto::{self, ChannelState, federation_client::FederationClient};
use crate::rules::{self, Eligibility};
use crate::runtime::{Worker, WorkerState};
use crate::store::{FileError, PartialOf, PartialWriter, Store, StoreError, Wanted};

/// A transfer that sends nothing for this long is given up (and resumed
/// later); there is no limit on how long a transfer that moves may take.
const IDLE: Duration = Duration::from_secs(60);

/// How often files still missing are asked for again.
const RETRY: Duration = Duration::from_secs(10);

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

/// Why one transfer did not complete.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("{0}")]
    Dial(String),
    #[error("{0}")]
    Call(#[from] tonic::Status),
    #[error("sent nothing for {}s", IDLE.as_secs())]
    Idle,
    /// Files are fetched by dialing; this partner was added without an
    /// endpoint.
    #[error(
        "no endpoint to dial for files (add one: samband peer add BUNDLE --fingerprint ... --endpoint HOST:PORT)"
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
                    tracing::debug!(%peer, hash = %w.hash, error = %e, "file not fetched from this partner");
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
    /// resumed from.
    async fn fetch_from(&self, peer: &OrgId, w: &Wanted) -> Result<u64, FetchError> {
        let fed = &self.fed;
        let record = fed
            .store
            .peer(peer)?
            .ok_or_else(|| FetchError::Dial("not a configured peer".into()))?;
        if record.endpoint.is_empty() {
            return Err(FetchError::NoEndpoint);
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
        let store = fed.store.clone();
        let hash = w.hash;
        let _writing = store
            .files()
            .claim(&PartialOf::Transfer(&hash))
            .ok_or_else(|| FetchError::Dial("a transfer of this file is running".into()))?;
        let held = store.files().partial_len(&PartialOf::Transfer(&hash));
        let offset = if held <= w.size { held } else { 0 };
        let partial =
            blocking(move || store.files().partial(&PartialOf::Transfer(&hash), offset)).await?;
        let req = proto::FileRequest {
            channel: w.channel.to_string(),
            origin: w.origin.to_string(),
            seq: w.seq,
            sha256: w.hash.0.to_vec(),
            offset,
        };
        let mut chunks = client.fetch_file(req).await?.into_inner();
        // Received and written at once: the writer hashes and writes a chunk
        // while the next one is received.
        let mut writer = partial.into_writer(&fed.store);
        let received = receive(fed, &mut chunks, &mut writer, w.size).await;
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
        Ok(offset)
    }
}

/// Receives a transfer's chunks into `writer` until it ends: each must
/// follow the last, and all within the signed `size`.
async fn receive(
    fed: &Federation,
    chunks: &mut tonic::Streaming<proto::FileChunk>,
    writer: &mut PartialWriter,
    size: u64,
) -> Result<(), FetchError> {
    loop {
        let next = tokio::select! {
            () = fed.runtime.shutdown().cancelled() => return Err(FetchError::Dial("the node is stopping".into())),
            next = tokio::time::timeout(IDLE, chunks.message()) => next,
        };
        let Some(chunk) = next.map_err(|_| FetchError::Idle)?? else {
            return Ok(());
        };
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

/// Runs blocking file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FileError> + Send + 'static,
) -> Result<T, FetchError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| FetchError::Dial(format!("file task failed: {e}")))?
        .map_err(FetchError::from)
}
