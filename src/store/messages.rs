//! Channels and messages in the `log` tree: staging a round's writes
//! ([`StoreBatch`]), applying them atomically, and reading them back by
//! origin and as history, a merge of the origins' runs ([`Store::history`]).

use std::ops::Bound;

use prost::Message as _;

use super::kv::{Value, Write};
use super::{MESSAGE_OVERHEAD_BYTES, Page, Store, StoreError, Stored, decode, keys, lossy, runs};
use crate::model::{
    ChainHead, ChannelId, Cursor, FileHash, Hlc, OrgId, Priority, VersionVector, chain_hash,
    withheld_copy,
};
use crate::proto::{Ack, ChannelRecord, Envelope, Kind, PictureBody, PostBody};

/// Writes staged together and applied atomically by [`Store::apply`].
#[derive(Debug, Default)]
pub struct StoreBatch {
    /// (key, value) in the `log` tree, in staging order (a later write of
    /// the same key wins).
    log: Vec<(Vec<u8>, Vec<u8>)>,
    /// Message runs, in the order they were started.
    runs: Vec<runs::RunBuilder>,
    /// Each (channel, origin)'s latest run.
    latest: std::collections::HashMap<(ChannelId, OrgId), usize>,
    /// Whether it holds a message without files (text, a roster change):
    /// file writes then give way ([`super::Files::pace`]).
    messages: bool,
    /// Stored runs changed by this batch (a retraction), by key.
    rewritten: std::collections::HashMap<Vec<u8>, runs::RunBuilder>,
    /// Keys removed, after every write of the batch.
    deletes: Vec<Vec<u8>>,
}

/// One origin's messages of a history page, in reading order, with the
/// next one decoded.
struct OriginPage<'a> {
    /// The stored runs that hold the page's seqs, in reading order.
    rest: super::kv::Entries<'a>,
    seqs: std::ops::RangeInclusive<u64>,
    backward: bool,
    /// What is left of the stored run being read, the next one last.
    buffered: Vec<Stored>,
    head: Option<Stored>,
}

impl<'a> OriginPage<'a> {
    fn new(
        rest: super::kv::Entries<'a>,
        seqs: std::ops::RangeInclusive<u64>,
        backward: bool,
    ) -> Result<Self, StoreError> {
        let mut page = Self {
            rest,
            seqs,
            backward,
            buffered: Vec::new(),
            head: None,
        };
        page.head = page.read()?;
        Ok(page)
    }

    fn read(&mut self) -> Result<Option<Stored>, StoreError> {
        loop {
            if let Some(next) = self.buffered.pop() {
                return Ok(Some(next));
            }
            let Some((key, bytes)) = self.rest.next().transpose()? else {
                return Ok(None);
            };
            let mut stored = runs::decode(&key, &bytes)?
                .into_iter()
                .filter(|e| self.seqs.contains(&e.origin_seq))
                .map(|envelope| {
                    let origin =
                        OrgId::parse(&envelope.origin).map_err(|_| StoreError::Inconsistent {
                            key: lossy(&key),
                            why: "stored envelope with a malformed origin",
                        })?;
                    Ok(Stored {
                        cursor: Cursor {
                            hlc: Hlc(envelope.hlc),
                            origin,
                            seq: envelope.origin_seq,
                        },
                        envelope,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            if !self.backward {
                stored.reverse();
            }
            self.buffered = stored;
        }
    }

    /// Takes the head and reads the next one.
    fn advance(&mut self) -> Result<Option<Stored>, StoreError> {
        let next = self.read()?;
        Ok(std::mem::replace(&mut self.head, next))
    }
}

/// The latest statement of one entry of a situational picture: the
/// envelope (its owner, seq and hlc) and author that set it, and its body
/// (a `PictureBody`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PictureRecord {
    pub owner: OrgId,
    pub seq: u64,
    pub hlc: u64,
    pub author: String,
    pub body: Vec<u8>,
}

/// A picture key (under a prefix of `prefix_len` bytes) and its value
/// ([`keys`]: seq, hlc, author, NUL, body) as a [`PictureRecord`].
fn picture_record(
    prefix_len: usize,
    key: &[u8],
    value: &[u8],
) -> Result<PictureRecord, StoreError> {
    let inconsistent = || StoreError::Inconsistent {
        key: lossy(key),
        why: "malformed picture entry",
    };
    let owner = keys::parse_picture(prefix_len, key).ok_or_else(inconsistent)?;
    let (seq, rest) = value.split_at_checked(8).ok_or_else(inconsistent)?;
    let (hlc, rest) = rest.split_at_checked(8).ok_or_else(inconsistent)?;
    let nul = rest.iter().position(|b| *b == 0).ok_or_else(inconsistent)?;
    Ok(PictureRecord {
        owner,
        seq: u64::from_be_bytes(seq.try_into().map_err(|_| inconsistent())?),
        hlc: u64::from_be_bytes(hlc.try_into().map_err(|_| inconsistent())?),
        author: String::from_utf8_lossy(&rest[..nul]).into_owned(),
        body: rest[nul + 1..].to_vec(),
    })
}

// === impl StoreBatch ===

impl StoreBatch {
    /// Stages an envelope; consecutive ones of an origin in a channel share
    /// a stored run ([`runs`]).
    pub fn put_envelope(&mut self, channel: &ChannelId, cursor: &Cursor, env: &Envelope) {
        let mut with_files = false;
        let member_message = matches!(
            Kind::try_from(env.kind),
            Ok(Kind::Text | Kind::Post | Kind::Ack)
        );
        if member_message && !env.withheld && env.priority >= Priority::Urgent as i32 {
            let key = keys::urgent_key(channel, &cursor.origin, cursor.seq);
            self.log.push((key, Vec::new()));
        }
        match Kind::try_from(env.kind) {
            _ if env.withheld => {}
            Ok(Kind::Post) => {
                let body = PostBody::decode(env.body.as_slice()).unwrap_or_default();
                // The files a post references, with it: what the sweep never removes.
                for file in &body.files {
                    if let Some(hash) = FileHash::from_bytes(&file.sha256) {
                        with_files = true;
                        let key = keys::file_ref_key(&hash, channel, &cursor.origin, cursor.seq);
                        self.log.push((key, Vec::new()));
                        let key = keys::file_wanted_key(&hash, channel, &cursor.origin, cursor.seq);
                        self.log.push((key, file.size.to_be_bytes().to_vec()));
                    }
                }
                if let Some(ack) = body.ack.filter(|a| a.deadline_ms > 0) {
                    let due = cursor.hlc.unix_ms().saturating_add(ack.deadline_ms);
                    let key = keys::due_key(channel, due, &cursor.origin, cursor.seq);
                    self.log.push((key, Vec::new()));
                }
            }
            Ok(Kind::Picture) => {
                if let Ok(body) = PictureBody::decode(env.body.as_slice()) {
                    let key = keys::picture_key(channel, &cursor.origin, &body.key);
                    let mut value = cursor.seq.to_be_bytes().to_vec();
                    value.extend_from_slice(&cursor.hlc.0.to_be_bytes());
                    value.extend_from_slice(env.author.as_bytes());
                    value.push(0);
                    value.extend_from_slice(&env.body);
                    self.log.push((key, value));
                }
            }
            Ok(Kind::Ack) => {
                let acked = Ack::decode(env.body.as_slice())
                    .ok()
                    .and_then(|a| a.message)
                    .and_then(|m| Some((OrgId::parse(&m.origin).ok()?, m.seq)));
                if let Some((origin, seq)) = acked {
                    let key = keys::ack_key(channel, &origin, seq, &cursor.origin, &env.author);
                    let mut value = cursor.hlc.0.to_be_bytes().to_vec();
                    value.extend_from_slice(&cursor.seq.to_be_bytes());
                    self.log.push((key, value));
                }
            }
            _ => {}
        }
        self.messages |= !with_files;
        // The run to extend is usually the last one; else look it up.
        let latest = match self.runs.last() {
            Some(last) if last.is_of(channel, &cursor.origin) => Some(self.runs.len() - 1),
            _ => self
                .latest
                .get(&(channel.clone(), cursor.origin.clone()))
                .copied(),
        };
        if latest.is_some_and(|i| self.runs[i].push(cursor.seq, env)) {
            return;
        }
        self.latest
            .insert((channel.clone(), cursor.origin.clone()), self.runs.len());
        self.runs.push(runs::RunBuilder::new(
            channel,
            &cursor.origin,
            cursor.seq,
            env,
        ));
    }

    /// Stages the retraction at `cursor` (by `author`) of message `seq` of
    /// the same origin in `channel`: records who retracted it, replaces the
    /// message held here (staged in this batch or stored) by its withheld
    /// copy, and forgets its file references, deadline and priority mark.
    /// The files it referenced: to remove once no message references them.
    pub fn retract(
        &mut self,
        store: &Store,
        channel: &ChannelId,
        cursor: &Cursor,
        author: &str,
        seq: u64,
    ) -> Result<Vec<FileHash>, StoreError> {
        let origin = &cursor.origin;
        let mut value = cursor.hlc.0.to_be_bytes().to_vec();
        value.extend_from_slice(&cursor.seq.to_be_bytes());
        value.extend_from_slice(author.as_bytes());
        self.log
            .push((keys::retracted_key(channel, origin, seq), value));
        let drop_body = |env: &Envelope| withheld_copy(env).unwrap_or_else(|| env.clone());
        let mut original = None;
        for run in self.runs.iter_mut().filter(|r| r.is_of(channel, origin)) {
            if run.holds(seq) {
                original = run.replace(seq, drop_body)?;
            }
        }
        if original.is_none()
            && let Some((key, bytes)) = store.run_holding(channel, origin, seq)?
        {
            let key = key.to_vec();
            if !self.rewritten.contains_key(&key) {
                let envelopes = runs::decode(&key, &bytes)?;
                if let Some(run) = runs::RunBuilder::of_stored(channel, origin, &envelopes) {
                    self.rewritten.insert(key.clone(), run);
                }
            }
            if let Some(run) = self.rewritten.get_mut(&key) {
                original = run.replace(seq, drop_body)?;
            }
        }
        let Some(original) = original.filter(|e| !e.withheld) else {
            return Ok(Vec::new());
        };
        self.deletes.push(keys::urgent_key(channel, origin, seq));
        let mut files = Vec::new();
        if original.kind == Kind::Post as i32 {
            let body = PostBody::decode(original.body.as_slice()).unwrap_or_default();
            for file in &body.files {
                if let Some(hash) = FileHash::from_bytes(&file.sha256) {
                    self.deletes
                        .push(keys::file_ref_key(&hash, channel, origin, seq));
                    self.deletes
                        .push(keys::file_wanted_key(&hash, channel, origin, seq));
                    files.push(hash);
                }
            }
            if let Some(ack) = body.ack.filter(|a| a.deadline_ms > 0) {
                let due = Hlc(original.hlc).unix_ms().saturating_add(ack.deadline_ms);
                self.deletes.push(keys::due_key(channel, due, origin, seq));
            }
        }
        Ok(files)
    }

    pub fn put_channel(&mut self, record: &ChannelRecord) {
        self.log
            .push((keys::channel_key(&record.id), record.encode_to_vec()));
    }

    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
            && self.runs.is_empty()
            && self.rewritten.is_empty()
            && self.deletes.is_empty()
    }
}

/// A retraction of a message: where it is in the channel (its origin is
/// the message's) and the member who made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retracted {
    pub cursor: Cursor,
    pub author: String,
}

/// One member's acknowledgement of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledged {
    pub org: OrgId,
    pub member: String,
    /// Where the acknowledgement is in the channel.
    pub cursor: Cursor,
}

impl Store {
    // --- acknowledgements ---

    /// Who acknowledged message (`origin`, `seq`) of `channel`, by org then member.
    pub fn acks(
        &self,
        channel: &ChannelId,
        origin: &OrgId,
        seq: u64,
    ) -> Result<Vec<Acknowledged>, StoreError> {
        let prefix = keys::acks_prefix(channel, origin, seq);
        let mut out = Vec::new();
        for kv in self.log.scan_prefix(&prefix) {
            let (key, value) = kv?;
            let inconsistent = |why| StoreError::Inconsistent {
                key: lossy(&key),
                why,
            };
            let (org, member) =
                keys::parse_ack(prefix.len(), &key).ok_or(inconsistent("malformed ack key"))?;
            let (hlc, ack_seq) = match (value.get(..8), value.get(8..16)) {
                (Some(h), Some(s)) => (
                    u64::from_be_bytes(h.try_into().unwrap_or_default()),
                    u64::from_be_bytes(s.try_into().unwrap_or_default()),
                ),
                _ => return Err(inconsistent("ack value is not hlc and seq")),
            };
            out.push(Acknowledged {
                cursor: Cursor {
                    hlc: Hlc(hlc),
                    origin: org.clone(),
                    seq: ack_seq,
                },
                org,
                member,
            });
        }
        Ok(out)
    }

    /// Who retracted message (`origin`, `seq`) of `channel`, if it was.
    pub fn retraction(
        &self,
        channel: &ChannelId,
        origin: &OrgId,
        seq: u64,
    ) -> Result<Option<Retracted>, StoreError> {
        let key = keys::retracted_key(channel, origin, seq);
        let Some(value) = self.log.get(&key)? else {
            return Ok(None);
        };
        let (Some(hlc), Some(at), Some(author)) =
            (value.get(..8), value.get(8..16), value.get(16..))
        else {
            return Err(StoreError::Inconsistent {
                key: lossy(&key),
                why: "a retraction record that is not hlc, seq and author",
            });
        };
        Ok(Some(Retracted {
            cursor: Cursor {
                hlc: Hlc(u64::from_be_bytes(hlc.try_into().unwrap_or_default())),
                origin: origin.clone(),
                seq: u64::from_be_bytes(at.try_into().unwrap_or_default()),
            },
            author: String::from_utf8_lossy(author).into_owned(),
        }))
    }

    /// The seqs of `origin`'s FLASH and URGENT messages in `channel` from
    /// `first` to `last` (inclusive), at most `limit`, in seq order.
    pub fn urgent_seqs(
        &self,
        channel: &ChannelId,
        origin: &OrgId,
        first: u64,
        last: u64,
        limit: usize,
    ) -> Result<Vec<u64>, StoreError> {
        let from = keys::urgent_key(channel, origin, first);
        let to = keys::urgent_key(channel, origin, last);
        let mut out = Vec::new();
        for kv in self.log.range(Bound::Included(from), Bound::Included(to)) {
            let (key, _) = kv?;
            if let Some(seq) = keys::seq_of_message(&key) {
                out.push(seq);
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// The messages of `channel` asking for acknowledgement by a time
    /// before `before_unix_ms`: (due, origin, seq), earliest first.
    pub fn due_before(
        &self,
        channel: &ChannelId,
        before_unix_ms: u64,
    ) -> Result<Vec<(u64, OrgId, u64)>, StoreError> {
        let prefix = keys::due_prefix(channel);
        let mut out = Vec::new();
        for kv in self.log.scan_prefix(&prefix) {
            let (key, _) = kv?;
            let due = keys::parse_due(prefix.len(), &key).ok_or(StoreError::Inconsistent {
                key: lossy(&key),
                why: "malformed deadline key",
            })?;
            if due.0 >= before_unix_ms {
                break;
            }
            out.push(due);
        }
        Ok(out)
    }

    // --- channels ---

    pub fn channel(&self, id: &ChannelId) -> Result<Option<ChannelRecord>, StoreError> {
        let key = keys::channel_key(&id.to_string());
        self.log.get(&key)?.map(|v| decode(&key, &v)).transpose()
    }

    /// The ids of the channels homed at `home`, from the keys alone.
    pub fn channel_ids_of(
        &self,
        home: &OrgId,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let prefix = keys::channel_key(&format!("{home}/"));
        self.log
            .scan_prefix(&prefix)
            .map(|kv| Ok(lossy(&kv?.0[keys::CHANNEL_PREFIX.len()..])))
            .collect()
    }

    pub fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        self.log
            .scan_prefix(keys::CHANNEL_PREFIX)
            .map(|kv| {
                let (k, v) = kv?;
                decode(&k, &v)
            })
            .collect()
    }

    // --- messages ---

    /// The last envelope `origin` has in `channel`.
    pub fn chain_head(
        &self,
        channel: &ChannelId,
        origin: &OrgId,
    ) -> Result<Option<ChainHead>, StoreError> {
        let Some((key, bytes)) = self
            .log
            .scan_prefix(&keys::origin_messages_prefix(channel, origin))
            .next_back()
            .transpose()?
        else {
            return Ok(None);
        };
        let Some(env) = runs::decode(&key, &bytes)?.pop() else {
            return Err(StoreError::Inconsistent {
                key: lossy(&key),
                why: "an empty message run",
            });
        };
        Ok(Some(ChainHead::after(&env, chain_hash(&env))))
    }

    /// The stored run of `origin` in `channel` that holds `seq`, if any:
    /// runs are keyed by their last seq, so it is the first at or after it.
    fn run_holding(
        &self,
        channel: &ChannelId,
        origin: &OrgId,
        seq: u64,
    ) -> Result<Option<(Value, Value)>, StoreError> {
        let start = keys::message_key(channel, origin, seq);
        let end = keys::prefix_end(&keys::origin_messages_prefix(channel, origin));
        self.log
            .range(Bound::Included(start), Bound::Excluded(end))
            .next()
            .transpose()
    }

    /// The latest statement of every entry of `channel`'s picture, removals
    /// included, by owner, then key.
    pub fn picture(&self, channel: &ChannelId) -> Result<Vec<PictureRecord>, StoreError> {
        let prefix = keys::picture_prefix(channel);
        self.log
            .scan_prefix(&prefix)
            .map(|kv| {
                let (key, value) = kv?;
                picture_record(prefix.len(), &key, &value)
            })
            .collect()
    }

    /// The latest statement of entry `key` of `owner` in `channel`'s
    /// picture, a removal included, if there is one.
    pub fn picture_entry(
        &self,
        channel: &ChannelId,
        owner: &OrgId,
        key: &str,
    ) -> Result<Option<PictureRecord>, StoreError> {
        let at = keys::picture_key(channel, owner, key);
        let Some(value) = self.log.get(&at)? else {
            return Ok(None);
        };
        let prefix_len = keys::picture_prefix(channel).len();
        picture_record(prefix_len, &at, &value).map(Some)
    }

    /// The envelope `(channel, origin, seq)`, if held.
    pub fn envelope(
        &self,
        channel: &ChannelId,
        origin: &OrgId,
        seq: u64,
    ) -> Result<Option<Envelope>, StoreError> {
        if seq == 0 {
            return Ok(None);
        }
        let Some((key, bytes)) = self.run_holding(channel, origin, seq)? else {
            return Ok(None);
        };
        runs::get(&key, &bytes, seq)
    }

    /// Up to `limit` envelopes of `origin` in `channel` from `from_seq` on, in seq order.
    pub fn envelopes_from(
        &self,
        channel: &ChannelId,
        origin: &OrgId,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<Envelope>, StoreError> {
        let start = keys::message_key(channel, origin, from_seq);
        let end = keys::prefix_end(&keys::origin_messages_prefix(channel, origin));
        let mut out = Vec::new();
        for kv in self.log.range(Bound::Included(start), Bound::Excluded(end)) {
            let (key, bytes) = kv?;
            let run = runs::decode(&key, &bytes)?;
            out.extend(run.into_iter().filter(|e| e.origin_seq >= from_seq));
            if out.len() >= limit {
                out.truncate(limit);
                break;
            }
        }
        Ok(out)
    }

    /// The highest seq in `1..=head` of `origin` in `channel` whose history
    /// position is at or before `cursor` (0 if none); `head` is the origin's
    /// entry in [`Store::vector`].
    pub fn seq_at_or_before(
        &self,
        channel: &ChannelId,
        origin: &OrgId,
        head: u64,
        cursor: &Cursor,
    ) -> Result<u64, StoreError> {
        self.last_seq_where(channel, origin, head, |at| at <= cursor)
    }

    /// The highest seq in `1..=head` of `origin` whose history position
    /// satisfies `wanted` (0 if none), where `wanted` holds for a prefix of
    /// the origin's messages. An origin's timestamps grow with its seq, so
    /// "at or before a cursor" is such a prefix, and this is a binary search
    /// over stored runs that decodes one run's timestamps per step.
    fn last_seq_where(
        &self,
        channel: &ChannelId,
        origin: &OrgId,
        head: u64,
        wanted: impl Fn(&Cursor) -> bool,
    ) -> Result<u64, StoreError> {
        let (mut lo, mut hi) = (0u64, head); // answer in lo..=hi
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            let Some((key, bytes)) = self.run_holding(channel, origin, mid)? else {
                return Err(StoreError::Inconsistent {
                    key: lossy(&keys::message_key(channel, origin, mid)),
                    why: "gap in an origin's messages",
                });
            };
            let hlcs = runs::hlcs(&key, &bytes)?;
            let first = runs::first_seq(&key, hlcs.len())?;
            if first > mid {
                return Err(StoreError::Inconsistent {
                    key: lossy(&key),
                    why: "gap in an origin's messages",
                });
            }
            // The wanted ones of this run, a prefix of it.
            let wanted_here = (first..)
                .zip(&hlcs)
                .take_while(|&(seq, &hlc)| {
                    wanted(&Cursor {
                        hlc: Hlc(hlc),
                        origin: origin.clone(),
                        seq,
                    })
                })
                .count() as u64;
            if wanted_here == 0 {
                hi = first - 1;
            } else if wanted_here < hlcs.len() as u64 {
                return Ok((first + wanted_here - 1).min(hi));
            } else {
                lo = (first + wanted_here - 1).min(hi);
            }
        }
        Ok(lo)
    }

    /// The channel's version vector: per origin, the highest seq held
    /// (seqs are stored gap-free, so the highest is the contiguous one).
    pub fn vector(&self, channel: &ChannelId) -> Result<VersionVector, StoreError> {
        let prefix = keys::channel_messages_prefix(channel);
        let end = keys::prefix_end(&prefix);
        let mut vector = VersionVector::new();
        let mut from = prefix.clone();
        // One seek per origin: find the next origin, then its last key.
        while let Some((k, _)) = self
            .log
            .range(Bound::Included(from), Bound::Excluded(end.clone()))
            .next()
            .transpose()?
        {
            let Some(origin) = keys::origin_of_message(prefix.len(), &k) else {
                return Err(StoreError::Inconsistent {
                    key: lossy(&k),
                    why: "malformed message key",
                });
            };
            let origin_prefix = keys::origin_messages_prefix(channel, &origin);
            if let Some((last, _)) = self
                .log
                .scan_prefix(&origin_prefix)
                .next_back()
                .transpose()?
            {
                vector.insert(origin, keys::seq_of_message(&last).unwrap_or_default());
            }
            from = keys::prefix_end(&origin_prefix);
        }
        Ok(vector)
    }

    /// Applies a batch atomically. Durable only after [`Store::flush`].
    pub fn apply(&self, batch: StoreBatch) -> Result<(), StoreError> {
        if batch.messages {
            self.files.messages_written();
        }
        let writes = batch
            .log
            .into_iter()
            .chain(batch.runs.into_iter().map(runs::RunBuilder::finish))
            .chain(batch.rewritten.into_values().map(runs::RunBuilder::finish))
            .map(|(k, v)| Write::Put(k, v))
            .chain(batch.deletes.into_iter().map(Write::Delete));
        self.log.apply(writes.collect())
    }

    /// Up to `limit` messages of a page, oldest first, and whether more lie
    /// beyond it in the direction read. A page also stops before its
    /// messages would pass `max_bytes` (each counted as its envelope plus
    /// [`MESSAGE_OVERHEAD_BYTES`]), but always holds at least one, so that
    /// no page is too large to send and none is read into memory whole.
    ///
    /// Each origin's messages are stored in seq order, which is also their
    /// history order; a page is a merge of the origins' messages.
    pub fn history(
        &self,
        channel: &ChannelId,
        page: &Page,
        limit: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Stored>, bool), StoreError> {
        let backward = matches!(page, Page::Newest | Page::Before(_));
        let mut origins = Vec::new();
        for (origin, head) in self.vector(channel)? {
            let (first, last) = match page {
                Page::Beginning | Page::Newest => (1, head),
                Page::Before(c) => (1, self.last_seq_where(channel, &origin, head, |at| at < c)?),
                Page::After(c) => (self.seq_at_or_before(channel, &origin, head, c)? + 1, head),
            };
            if first > last {
                continue;
            }
            let Some((last_run, _)) = self.run_holding(channel, &origin, last)? else {
                continue;
            };
            let range = self.log.range(
                Bound::Included(keys::message_key(channel, &origin, first)),
                Bound::Included(last_run.to_vec()),
            );
            let rest: super::kv::Entries<'_> = if backward {
                Box::new(range.rev())
            } else {
                Box::new(range)
            };
            origins.push(OriginPage::new(rest, first..=last, backward)?);
        }
        let mut out = Vec::with_capacity(limit.min(1024));
        // The next message in reading order is the smallest (or, reading
        // backward, the largest) head among the origins.
        let next = |origins: &[OriginPage<'_>]| {
            let heads = origins
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.head.as_ref().map(|h| (i, &h.cursor)));
            if backward {
                heads.max_by(|a, b| a.1.cmp(b.1)).map(|(i, _)| i)
            } else {
                heads.min_by(|a, b| a.1.cmp(b.1)).map(|(i, _)| i)
            }
        };
        let mut bytes = 0;
        while let Some(i) = next(&origins) {
            let size = origins[i]
                .head
                .as_ref()
                .map_or(0, |h| h.envelope.encoded_len() + MESSAGE_OVERHEAD_BYTES);
            if out.len() == limit || (!out.is_empty() && bytes + size > max_bytes) {
                break;
            }
            bytes += size;
            out.extend(origins[i].advance()?);
        }
        let more = next(&origins).is_some();
        if backward {
            out.reverse();
        }
        Ok((out, more))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChannelName;

    fn org(s: &str) -> OrgId {
        OrgId::parse(s).unwrap()
    }

    /// A batch of one write (a plain insert) and of several (sled's batch)
    /// both land; within a batch the later write of a key wins.
    #[test]
    fn batches_of_one_and_of_many_apply() {
        let tmp = tempfile::tempdir().unwrap();
        let home = org("police.example");
        let store = Store::create(tmp.path(), &home, 1 << 20).unwrap();
        let record = |name: &str, roster_seq| ChannelRecord {
            id: format!("police.example/{name}"),
            home: home.to_string(),
            roster_seq,
            ..Default::default()
        };
        let mut one = StoreBatch::default();
        one.put_channel(&record("a", 1));
        store.apply(one).unwrap();
        let mut many = StoreBatch::default();
        many.put_channel(&record("b", 1));
        many.put_channel(&record("a", 2));
        many.put_channel(&record("a", 3));
        store.apply(many).unwrap();
        store.apply(StoreBatch::default()).unwrap();
        let held: Vec<_> = store
            .channels()
            .unwrap()
            .into_iter()
            .map(|r| (r.id, r.roster_seq))
            .collect();
        assert_eq!(
            held,
            [
                ("police.example/a".to_string(), 3),
                ("police.example/b".to_string(), 1)
            ]
        );
        // Channels by home, from the keys: another org's whose name extends
        // this one's is not among them.
        let mut other = StoreBatch::default();
        other.put_channel(&ChannelRecord {
            id: "police.examples/c".into(),
            home: "police.examples".into(),
            ..Default::default()
        });
        store.apply(other).unwrap();
        let ids = store.channel_ids_of(&home).unwrap();
        assert_eq!(
            ids,
            ["police.example/a", "police.example/b"]
                .map(String::from)
                .into()
        );
    }

    /// Stages an envelope of `origin` with that seq, hlc and body size;
    /// returns its cursor.
    fn stage(
        batch: &mut StoreBatch,
        ch: &ChannelId,
        origin: &OrgId,
        seq: u64,
        hlc: u64,
        body: usize,
    ) -> Cursor {
        let envelope = Envelope {
            origin: origin.to_string(),
            origin_seq: seq,
            hlc,
            body: vec![seq as u8; body],
            ..Default::default()
        };
        let cursor = Cursor {
            hlc: Hlc(hlc),
            origin: origin.clone(),
            seq,
        };
        batch.put_envelope(ch, &cursor, &envelope);
        cursor
    }

    /// A store with a gap in an origin's seqs (which the writer never
    /// writes) answers a positioned page with an error, not a wrong page or
    /// a search that never ends.
    #[test]
    fn a_gap_in_an_origins_seqs_is_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let home = org("police.example");
        let store = Store::create(tmp.path(), &home, 1 << 20).unwrap();
        let ch = ChannelId::new(home.clone(), ChannelName::parse("ops").unwrap());
        let mut batch = StoreBatch::default();
        let cursors: Vec<Cursor> = [1, 2, 3, 7, 8]
            .into_iter()
            .map(|seq| stage(&mut batch, &ch, &home, seq, 100 + seq, 0))
            .collect();
        store.apply(batch).unwrap();
        for page in [
            Page::Before(cursors[4].clone()),
            Page::After(cursors[1].clone()),
        ] {
            assert!(
                matches!(
                    store.history(&ch, &page, 10, usize::MAX),
                    Err(StoreError::Inconsistent { .. })
                ),
                "{page:?}"
            );
        }
    }

    /// A page stops before its messages pass the byte budget, keeping those
    /// nearest where it starts, and always holds at least one.
    #[test]
    fn history_pages_are_bounded_by_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let home = org("police.example");
        let store = Store::create(tmp.path(), &home, 1 << 20).unwrap();
        let ch = ChannelId::new(home.clone(), ChannelName::parse("ops").unwrap());
        let mut batch = StoreBatch::default();
        let all: Vec<Cursor> = (1..=5)
            .map(|seq| stage(&mut batch, &ch, &home, seq, 100 + seq, 1000))
            .collect();
        store.apply(batch).unwrap();
        let page = |p: Page, max_bytes| {
            let (got, more) = store.history(&ch, &p, 10, max_bytes).unwrap();
            (got.into_iter().map(|s| s.cursor).collect::<Vec<_>>(), more)
        };
        // Two messages of about 1,000 bytes and their overhead fit in 2,600.
        assert_eq!(page(Page::Beginning, 2600), (all[..2].to_vec(), true));
        assert_eq!(page(Page::Newest, 2600), (all[3..].to_vec(), true));
        assert_eq!(
            page(Page::After(all[1].clone()), 2600),
            (all[2..4].to_vec(), true)
        );
        assert_eq!(page(Page::Beginning, 1), (all[..1].to_vec(), true));
        assert_eq!(page(Page::Beginning, usize::MAX), (all.clone(), false));
    }

    /// Three origins whose timestamps interleave (with ties across origins):
    /// every page, read either way from anywhere, is the matching slice of
    /// all messages sorted by (hlc, origin, seq).
    #[test]
    fn history_pages_merge_the_origins_in_cursor_order() {
        let tmp = tempfile::tempdir().unwrap();
        let home = org("police.example");
        let store = Store::create(tmp.path(), &home, 1 << 20).unwrap();
        let ch = ChannelId::new(home.clone(), ChannelName::parse("ops").unwrap());
        let origins = [home.clone(), org("rescue.example"), org("health.example")];
        let mut all = Vec::new();
        let mut batch = StoreBatch::default();
        for (i, origin) in origins.iter().enumerate() {
            // Strictly growing per origin; equal across origins now and then.
            let mut hlc = 100;
            for seq in 1..=(7 + 3 * i as u64) {
                hlc += 1 + (seq * (i as u64 + 2)) % 3;
                // Bodies of 0 to 4,200 bytes, so some runs end at their size.
                let body = (seq as usize % 7) * 700;
                all.push(stage(&mut batch, &ch, origin, seq, hlc, body));
                // Several rounds, so runs end at rounds too.
                if seq % 5 == 0 {
                    store.apply(std::mem::take(&mut batch)).unwrap();
                }
            }
        }
        store.apply(batch).unwrap();
        all.sort();
        let page = |p: Page, limit| {
            let (got, more) = store.history(&ch, &p, limit, usize::MAX).unwrap();
            (got.into_iter().map(|s| s.cursor).collect::<Vec<_>>(), more)
        };
        let n = all.len();
        assert_eq!(page(Page::Beginning, n), (all.clone(), false));
        assert_eq!(page(Page::Newest, 4), (all[n - 4..].to_vec(), true));
        for (i, c) in all.iter().enumerate() {
            for limit in [1, 3, n] {
                let before = &all[i.saturating_sub(limit)..i];
                assert_eq!(
                    page(Page::Before(c.clone()), limit),
                    (before.to_vec(), i > limit),
                    "before {c:?}, limit {limit}"
                );
                let after = &all[i + 1..(i + 1 + limit).min(n)];
                assert_eq!(
                    page(Page::After(c.clone()), limit),
                    (after.to_vec(), i + 1 + limit < n),
                    "after {c:?}, limit {limit}"
                );
            }
        }
        // Cursors that name no stored message, as a client may send: one
        // between messages (an origin that sorts after all at the same hlc),
        // one with seq 0, one whose hlc does not match its (origin, seq).
        let strays = [
            Cursor {
                hlc: Hlc(all[5].hlc.0),
                origin: org("zz.example"),
                seq: 1,
            },
            Cursor {
                hlc: Hlc(all[5].hlc.0),
                origin: home.clone(),
                seq: 0,
            },
            Cursor {
                hlc: Hlc(all[8].hlc.0),
                origin: all[3].origin.clone(),
                seq: all[3].seq,
            },
            Cursor {
                hlc: Hlc(0),
                origin: home.clone(),
                seq: 0,
            },
        ];
        for stray in strays {
            let before: Vec<_> = all.iter().filter(|c| **c < stray).cloned().collect();
            let after: Vec<_> = all.iter().filter(|c| **c > stray).cloned().collect();
            assert_eq!(page(Page::Before(stray.clone()), n).0, before, "{stray:?}");
            assert_eq!(page(Page::After(stray.clone()), n).0, after, "{stray:?}");
        }

        assert_eq!(
            store.chain_head(&ch, &home).unwrap().map(|h| h.seq),
            Some(7)
        );
        assert_eq!(store.chain_head(&ch, &org("x.example")).unwrap(), None);
        assert_eq!(
            store.vector(&ch).unwrap(),
            VersionVector::from([
                (origins[0].clone(), 7),
                (origins[1].clone(), 10),
                (origins[2].clone(), 13)
            ])
        );
        let from = store.envelopes_from(&ch, &origins[1], 4, 3).unwrap();
        assert_eq!(
            from.iter().map(|e| e.origin_seq).collect::<Vec<_>>(),
            [4, 5, 6]
        );
        assert_eq!(
            store.envelope(&ch, &home, 7).unwrap().map(|e| e.origin_seq),
            Some(7)
        );
        assert_eq!(store.envelope(&ch, &home, 8).unwrap(), None);
    }
}
