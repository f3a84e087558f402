//! The single writer: assigns sequence numbers and timestamps, chains and
//! signs envelopes, and commits them in groups.
//!
//! It runs on its own OS thread (sled calls block). Each round takes every
//! post that is waiting (up to [`MAX_BATCH`]), stages them in one atomic
//! batch, flushes once, and only then answers the posters and publishes the
//! messages: an acknowledged post is on disk, and concurrent posts share one
//! flush.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::signature::Ed25519KeyPair;
use tokio::sync::{mpsc, oneshot};

use super::fanout::Fanout;
use crate::model::{
    ChannelId, Cursor, EnvelopeHash, GENESIS_HASH, HlcClock, MemberName, OrgId, Priority,
    sign_and_hash,
};
use crate::proto::{Envelope, Kind};
use crate::store::{Store, StoreError, Stored};

/// Most posts committed by one flush.
const MAX_BATCH: usize = 1024;
/// Posts that may wait for the writer before posters feel back-pressure.
const QUEUE: usize = 4096;

/// A member's post, as validated by the API.
#[derive(Debug)]
pub struct NewPost {
    pub channel: ChannelId,
    pub author: MemberName,
    pub priority: Priority,
    pub body: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the node is shutting down")]
    Stopped,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("commit failed: {0}")]
    Commit(String),
}

type Reply = oneshot::Sender<Result<Arc<Stored>, WriteError>>;

enum Command {
    Post(NewPost, Reply),
    Stop,
}

/// The posting side of the writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Post(..) => "Post",
            Command::Stop => "Stop",
        })
    }
}

struct Writer {
    rx: mpsc::Receiver<Command>,
    store: Store,
    org: OrgId,
    key: Ed25519KeyPair,
    clock: HlcClock,
    /// Chain head (seq, hash) of this org's log per channel; filled lazily from the store.
    heads: HashMap<ChannelId, (u64, EnvelopeHash)>,
    fanout: Arc<Fanout>,
}

/// Starts the writer thread.
pub(super) fn spawn(
    store: Store,
    org: OrgId,
    key: Ed25519KeyPair,
    fanout: Arc<Fanout>,
) -> std::io::Result<(WriterHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let writer = Writer {
        rx,
        store,
        org,
        key,
        clock: HlcClock::default(),
        heads: HashMap::new(),
        fanout,
    };
    let thread = std::thread::Builder::new()
        .name("samband-writer".into())
        .spawn(move || writer.run())?;
    Ok((WriterHandle { tx }, thread))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

// === impl WriterHandle ===

impl WriterHandle {
    /// Commits a post; resolves once it is durable.
    pub async fn post(&self, post: NewPost) -> Result<Arc<Stored>, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Post(post, reply))
            .await
            .map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }

    /// Asks the writer to finish what is queued before this call, then stop.
    pub async fn stop(&self) {
        // An error means the writer is gone already.
        let _ = self.tx.send(Command::Stop).await;
    }
}

// === impl Writer ===

impl Writer {
    fn run(mut self) {
        let mut batch = Vec::new();
        let mut stopping = false;
        while !stopping {
            match self.rx.blocking_recv() {
                Some(Command::Post(p, r)) => batch.push((p, r)),
                Some(Command::Stop) | None => break,
            }
            while batch.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(Command::Post(p, r)) => batch.push((p, r)),
                    Ok(Command::Stop) => {
                        stopping = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit(std::mem::take(&mut batch));
        }
        self.rx.close();
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "final flush failed");
        }
    }

    fn head(&mut self, channel: &ChannelId) -> Result<(u64, EnvelopeHash), StoreError> {
        if let Some(head) = self.heads.get(channel) {
            return Ok(*head);
        }
        let head = match self.store.chain_head(channel, &self.org)? {
            Some(h) => {
                // Never issue a timestamp below one already on disk, whatever the wall clock says.
                self.clock.observe(h.hlc);
                (h.seq, h.hash)
            }
            None => (0, GENESIS_HASH),
        };
        self.heads.insert(channel.clone(), head);
        Ok(head)
    }

    fn commit(&mut self, batch: Vec<(NewPost, Reply)>) {
        let now = unix_ms();
        let mut staged = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for (post, reply) in batch {
            let (seq, prev) = match self.head(&post.channel) {
                Ok(head) => head,
                Err(e) => {
                    let _ = reply.send(Err(e.into()));
                    continue;
                }
            };
            let hlc = self.clock.tick(now);
            let mut envelope = Envelope {
                channel: post.channel.to_string(),
                origin: self.org.to_string(),
                origin_seq: seq + 1,
                author: post.author.to_string(),
                hlc: hlc.0,
                kind: Kind::Text as i32,
                priority: post.priority as i32,
                body: post.body,
                prev: prev.to_vec(),
                signature: Vec::new(),
            };
            let hash = sign_and_hash(&mut envelope, &self.key);
            self.heads.insert(post.channel.clone(), (seq + 1, hash));
            let cursor = Cursor {
                hlc,
                origin: self.org.clone(),
                seq: seq + 1,
            };
            staged.push((post.channel, Stored { cursor, envelope }));
            replies.push(reply);
        }
        if staged.is_empty() {
            return;
        }
        let refs: Vec<_> = staged
            .iter()
            .map(|(c, s)| (c.clone(), s.cursor.clone(), &s.envelope))
            .collect();
        let result = self.store.append(&refs).and_then(|()| self.store.flush());
        if let Err(e) = result {
            tracing::error!(error = %e, posts = staged.len(), "commit failed; posts answered with an error");
            // The in-memory heads may be ahead of the disk now: re-read them.
            self.heads.clear();
            for reply in replies {
                let _ = reply.send(Err(WriteError::Commit(e.to_string())));
            }
            return;
        }
        for ((channel, stored), reply) in staged.into_iter().zip(replies) {
            let stored = Arc::new(stored);
            self.fanout.publish(&channel, stored.clone());
            // The poster may have gone away; the message is committed all the same.
            let _ = reply.send(Ok(stored));
        }
    }
}
