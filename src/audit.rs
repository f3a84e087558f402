//! The audit log's entries and their hash chain. Pure: no I/O.
//!
//! Every trust and sharing change and every rejected federation envelope is
//! one [`Entry`]. Each entry commits to the previous one (`prev` is the
//! previous entry's `hash`), so changing or removing an entry breaks the
//! chain at that point, and [`verify`] says where. Removing entries from the
//! *end* leaves a shorter valid chain: an operator who records the head
//! (`samband audit verify` prints it) elsewhere detects that too.
//!
//! An exported entry is one JSON object per line, exactly the stored form.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};

/// The `prev` of the first entry.
pub const GENESIS: [u8; 32] = [0; 32];

/// One audit record as stored and exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// 1, 2, 3, … with no gaps.
    pub seq: u64,
    /// Wall-clock time of the node, RFC 3339 UTC, milliseconds.
    pub at: String,
    /// What happened, e.g. `peer.added`.
    pub event: String,
    pub details: BTreeMap<String, String>,
    /// Hex SHA-256 of the previous entry (64 zeros for the first).
    pub prev: String,
    /// Hex SHA-256 over all the fields above.
    pub hash: String,
}

/// Something to record: a kind and its details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: &'static str,
    pub details: BTreeMap<String, String>,
}

/// Who made a change the audit log records (its `actor` detail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// An admin member of this org, through the Admin API: their name.
    Member(String),
    /// Someone on the node's host with access to its directory: a command
    /// run with `--dir` while the node was stopped, or SIGHUP.
    Host,
    /// A partner node, by what it sent on its link (an offer, a roster, a
    /// refused envelope): its org.
    Peer(String),
}

impl fmt::Display for Actor {
    /// `member:NAME` or `host`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::Member(name) => write!(f, "member:{name}"),
            Actor::Host => f.write_str("host"),
            Actor::Peer(org) => write!(f, "peer:{org}"),
        }
    }
}

/// The end of the chain: the last entry's number and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
}

/// Where and how a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Break {
    #[error("the log starts at entry {found}, not 1: entries before it were removed")]
    Start { found: u64 },
    #[error(
        "entry {expected} is missing (entry {found} follows entry {after}): entries were removed"
    )]
    Missing {
        after: u64,
        expected: u64,
        found: u64,
    },
    #[error("entry {seq} does not follow from entry {previous}: an entry was changed or removed")]
    Prev { seq: u64, previous: u64 },
    #[error("entry {seq} does not match its hash: it was changed")]
    Hash { seq: u64 },
    #[error("line {line}: {why}")]
    Unreadable { line: usize, why: String },
    #[error(
        "the log ends at entry {ends}, before the recorded head {head}: entries were removed from the end"
    )]
    Truncated { ends: u64, head: u64 },
    #[error("entry {seq} is not the recorded head (another hash): the log was rewritten")]
    NotTheHead { seq: u64 },
}

// === impl Event ===

impl Event {
    pub fn new(kind: &'static str) -> Self {
        Self {
            kind,
            details: BTreeMap::new(),
        }
    }

    /// Adds one detail.
    #[must_use]
    pub fn with(mut self, key: &str, value: impl fmt::Display) -> Self {
        self.details.insert(key.to_owned(), value.to_string());
        self
    }

    /// Records who made the change.
    #[must_use]
    pub fn by(self, actor: &Actor) -> Self {
        self.with("actor", actor)
    }
}

// === impl Head ===

impl Default for Head {
    fn default() -> Self {
        Self {
            seq: 0,
            hash: GENESIS,
        }
    }
}

impl Head {
    /// The head after `entry`, if its hash is well-formed.
    pub fn of(entry: &Entry) -> Option<Self> {
        Some(Self {
            seq: entry.seq,
            hash: decode_hash(&entry.hash)?,
        })
    }

    /// The entry that records `event` at `at` after this head.
    pub fn next(&self, at: String, event: Event) -> Entry {
        let mut entry = Entry {
            seq: self.seq + 1,
            at,
            event: event.kind.to_owned(),
            details: event.details,
            prev: hex::encode(self.hash),
            hash: String::new(),
        };
        entry.hash = hex::encode(digest(&entry));
        entry
    }

    pub fn hash_hex(&self) -> String {
        hex::encode(self.hash)
    }
}

fn decode_hash(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

/// SHA-256 over every field but `hash`, each length-prefixed so that no two
/// different entries have the same input.
fn digest(entry: &Entry) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut field = |bytes: &[u8]| {
        ctx.update(&(bytes.len() as u64).to_be_bytes());
        ctx.update(bytes);
    };
    field(&entry.seq.to_be_bytes());
    field(entry.at.as_bytes());
    field(entry.event.as_bytes());
    field(&(entry.details.len() as u64).to_be_bytes());
    for (key, value) in &entry.details {
        field(key.as_bytes());
        field(value.as_bytes());
    }
    field(entry.prev.as_bytes());
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Checks a run of entries. `after` is the head they must continue
/// (`Some(Head::default())` for a whole log; `None` to start wherever the
/// first entry says, for a partial export). Returns the last head.
pub fn verify<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
    after: Option<Head>,
) -> Result<Head, Break> {
    let mut head = after;
    let mut last = after.unwrap_or_default();
    for entry in entries {
        if decode_hash(&entry.hash) != Some(digest(entry)) {
            return Err(Break::Hash { seq: entry.seq });
        }
        if let Some(h) = head {
            if h.seq.checked_add(1) != Some(entry.seq) {
                return Err(if h.seq == 0 {
                    Break::Start { found: entry.seq }
                } else {
                    Break::Missing {
                        after: h.seq,
                        expected: h.seq.saturating_add(1),
                        found: entry.seq,
                    }
                });
            }
            if decode_hash(&entry.prev) != Some(h.hash) {
                return Err(Break::Prev {
                    seq: entry.seq,
                    previous: h.seq,
                });
            }
        }
        last = Head {
            seq: entry.seq,
            hash: decode_hash(&entry.hash).unwrap_or(GENESIS),
        };
        head = Some(last);
    }
    Ok(last)
}

impl From<Entry> for crate::proto::AuditEntry {
    fn from(e: Entry) -> Self {
        Self {
            seq: e.seq,
            at: e.at,
            event: e.event,
            details: e.details.into_iter().collect(),
            prev: e.prev,
            hash: e.hash,
        }
    }
}

impl From<crate::proto::AuditEntry> for Entry {
    fn from(e: crate::proto::AuditEntry) -> Self {
        Self {
            seq: e.seq,
            at: e.at,
            event: e.event,
            details: e.details.into_iter().collect(),
            prev: e.prev,
            hash: e.hash,
        }
    }
}

/// Checks that a verified log still holds a head recorded earlier
/// (`samband audit verify` prints it): entry `seq` with hash `hash`.
pub fn check_head(entries: &[Entry], seq: u64, hash: &str) -> Result<(), Break> {
    match entries.iter().find(|e| e.seq == seq) {
        Some(e) if e.hash.eq_ignore_ascii_case(hash) => Ok(()),
        Some(_) => Err(Break::NotTheHead { seq }),
        None => Err(Break::Truncated {
            ends: entries.last().map_or(0, |e| e.seq),
            head: seq,
        }),
    }
}

/// `text` cut to a length fit for an audit entry; what came from a peer
/// may be megabytes long. Longer text keeps its start and says its length.
pub fn clip(text: &str) -> String {
    const KEEP: usize = 80;
    match text.char_indices().nth(KEEP) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()),
    }
}

/// Entries one source (a peer) may add per minute. A hostile peer could
/// otherwise fill the disk through the audit log of its own rejections.
pub const PER_SOURCE_PER_MINUTE: u32 = 60;

/// Rate-caps audit entries per source; what is left out is counted, and the
/// source's next admitted entry says how many were left out before it.
#[derive(Debug, Default)]
pub struct Budget {
    windows: HashMap<String, Window>,
}

#[derive(Debug, Default)]
struct Window {
    started_ms: u64,
    used: u32,
    left_out: u64,
}

impl Budget {
    /// `Some(n)` if `source` may add an entry at `now_ms`, `n` being how many
    /// of its entries were left out since its last admitted one.
    pub fn admit(&mut self, source: &str, now_ms: u64) -> Option<u64> {
        let w = self.windows.entry(source.to_owned()).or_default();
        if now_ms.saturating_sub(w.started_ms) >= 60_000 {
            w.started_ms = now_ms;
            w.used = 0;
        }
        if w.used >= PER_SOURCE_PER_MINUTE {
            w.left_out += 1;
            return None;
        }
        w.used += 1;
        Some(std::mem::take(&mut w.left_out))
    }
}

/// Parses JSON lines (an export); blank lines are skipped.
pub fn parse_lines(text: &str) -> Result<Vec<Entry>, Break> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Break::Unreadable {
                line: i + 1,
                why: e.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<Entry> {
        let mut head = Head::default();
        (0..n)
            .map(|i| {
                let e = head.next(
                    format!("2026-11-29T00:00:{i:02}.000Z"),
                    Event::new("peer.added").with("org", format!("org{i}.example")),
                );
                head = Head::of(&e).unwrap();
                e
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_reports_its_head() {
        let log = chain(5);
        let head = verify(&log, Some(Head::default())).unwrap();
        assert_eq!(head, Head::of(&log[4]).unwrap());
        // A partial export verifies on its own, from its first entry.
        assert_eq!(verify(&log[2..], None).unwrap(), head);
    }

    #[test]
    fn a_changed_detail_is_found() {
        let mut log = chain(5);
        log[2].details.insert("org".into(), "evil.example".into());
        assert_eq!(
            verify(&log, Some(Head::default())),
            Err(Break::Hash { seq: 3 })
        );
    }

    #[test]
    fn a_changed_entry_with_a_recomputed_hash_breaks_the_next_link() {
        let mut log = chain(5);
        log[2].event = "peer.removed".into();
        log[2].hash = hex::encode(digest(&log[2]));
        assert_eq!(
            verify(&log, Some(Head::default())),
            Err(Break::Prev {
                seq: 4,
                previous: 3
            })
        );
    }

    #[test]
    fn a_removed_entry_is_found() {
        let mut log = chain(5);
        log.remove(1);
        assert_eq!(
            verify(&log, Some(Head::default())),
            Err(Break::Missing {
                after: 1,
                expected: 2,
                found: 3
            })
        );
        let mut renumbered = chain(5);
        renumbered.remove(0);
        assert_eq!(
            verify(&renumbered, Some(Head::default())),
            Err(Break::Start { found: 2 })
        );
    }

    #[test]
    fn the_budget_caps_each_source_per_minute_and_counts_the_rest() {
        let mut budget = Budget::default();
        let admitted = (0..100)
            .filter(|_| budget.admit("evil.example", 1_000).is_some())
            .count();
        assert_eq!(admitted, PER_SOURCE_PER_MINUTE as usize);
        // Another source has its own allowance.
        assert_eq!(budget.admit("good.example", 1_000), Some(0));
        // A minute later: admitted again, with the count of what was left out.
        assert_eq!(budget.admit("evil.example", 61_000), Some(40));
        assert_eq!(budget.admit("evil.example", 61_001), Some(0));
    }

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text() {
        assert_eq!(clip("police.example/ops"), "police.example/ops");
        let long = "ä".repeat(1_000_000);
        let clipped = clip(&long);
        assert!(clipped.len() < 200, "{}", clipped.len());
        assert!(clipped.ends_with("… (2000000 bytes)"), "{clipped}");
    }

    #[test]
    fn a_recorded_head_finds_a_cut_or_rewritten_log() {
        let log = chain(5);
        let head = Head::of(&log[3]).unwrap().hash_hex();
        assert_eq!(check_head(&log, 4, &head), Ok(()));
        assert_eq!(
            check_head(&log[..3], 4, &head),
            Err(Break::Truncated { ends: 3, head: 4 })
        );
        // A whole log rewritten with valid hashes passes `verify` but not the head.
        let mut h = Head::default();
        let rewritten: Vec<Entry> = (0..5)
            .map(|_| {
                let e = h.next("2030-01-01T00:00:00.000Z".into(), Event::new("peer.added"));
                h = Head::of(&e).unwrap();
                e
            })
            .collect();
        assert!(verify(&rewritten, Some(Head::default())).is_ok());
        assert_eq!(
            check_head(&rewritten, 4, &head),
            Err(Break::NotTheHead { seq: 4 })
        );
    }

    #[test]
    fn json_lines_round_trip() {
        let log = chain(3);
        let text: String = log
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect();
        assert_eq!(parse_lines(&text).unwrap(), log);
        assert!(matches!(
            parse_lines("{\"seq\": 1}\n"),
            Err(Break::Unreadable { line: 1, .. })
        ));
    }
}
