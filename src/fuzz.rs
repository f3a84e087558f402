//! Entry points for the fuzz targets (`fuzz/`) and for the corpus replay in
//! `cargo test`: every decoder that takes bytes from outside the node. Each
//! function must return for any input, never panic.
//!
//! * [`link_frame`] — what a partner node sends: a federation frame, its
//!   envelopes checked against a channel (signature, chain, roster rules),
//!   offers and control envelopes decoded.
//! * [`trust_bundle`], [`config`], [`cursor`], [`audit_lines`] — files and
//!   strings an operator or member hands to samband.

use ring::signature::{Ed25519KeyPair, KeyPair as _};

use crate::model::{ChainHead, ChannelId, OrgId};
use crate::proto::{ChannelRecord, ChannelState, Participant, link_frame::Frame};
use crate::rules::{self, Context, Verdict};

/// The channel the fuzzed envelopes are checked against.
pub const CHANNEL: &str = "home.example/crisis";
/// Its home; the local node is [`LOCAL`] and the sender [`PEER`].
pub const HOME: &str = "home.example";
pub const LOCAL: &str = "local.example";
pub const PEER: &str = "peer.example";

/// A fixed signing key per org (seeded by the org's name), so that seeds
/// can carry valid signatures and the fuzzer reaches past the signature check.
pub fn signing_key(org: &str) -> Ed25519KeyPair {
    let seed = ring::digest::digest(&ring::digest::SHA256, org.as_bytes());
    // A 32-byte seed always makes a key.
    Ed25519KeyPair::from_seed_unchecked(seed.as_ref()).unwrap_or_else(|_| unreachable!())
}

fn record() -> ChannelRecord {
    let participant = |org: &str, key: Vec<u8>| Participant {
        org: org.into(),
        signing_key: key,
        active: true,
        removed_at: 0,
        last_seq: 0,
        withheld_through: vec![],
    };
    ChannelRecord {
        id: CHANNEL.into(),
        home: HOME.into(),
        name: "crisis".into(),
        created_unix_ms: 1,
        state: ChannelState::Active as i32,
        participants: vec![
            participant(LOCAL, signing_key(LOCAL).public_key().as_ref().to_vec()),
            participant(PEER, signing_key(PEER).public_key().as_ref().to_vec()),
        ],
        roster_seq: 1,
        incident: None,
    }
}

fn org(text: &str) -> OrgId {
    OrgId::parse(text).unwrap_or_else(|_| unreachable!("a valid constant"))
}

/// A federation frame as a partner sends it.
pub fn link_frame(data: &[u8]) {
    admitted(data);
}

/// [`link_frame`], returning how many envelopes passed every check (so a
/// test can confirm that the seeds reach past the signature check).
pub fn admitted(data: &[u8]) -> usize {
    let mut admitted = 0;
    let Ok(frame) = crate::federation::wire::decode_frame(data) else {
        return admitted;
    };
    let (local, peer) = (org(LOCAL), org(PEER));
    let keys: Vec<(&str, Vec<u8>)> = [HOME, LOCAL, PEER]
        .into_iter()
        .map(|o| (o, signing_key(o).public_key().as_ref().to_vec()))
        .collect();
    let pinned = rules::Pinned::new(keys.iter().map(|(o, k)| (*o, k.as_slice())));
    let Ok(channel) = ChannelId::parse(CHANNEL) else {
        return admitted;
    };
    match frame.frame {
        Some(Frame::Envelopes(batch)) => {
            let mut record = record();
            // Each origin's stored chain, as the receiver advances it.
            let mut stored: std::collections::HashMap<String, ChainHead> =
                std::collections::HashMap::new();
            let mut admission = rules::Admission::default();
            let retractions = batch.retractions;
            for env in batch.envelopes {
                let head = admission
                    .head(&env)
                    .or_else(|| stored.get(&env.origin).copied())
                    .unwrap_or(ChainHead::GENESIS);
                let ctx = Context {
                    local: &local,
                    sender: &peer,
                    channel: &channel,
                    record: &record,
                    head,
                    pinned: &pinned,
                    held: admission.held(&env),
                    max_envelope_bytes: crate::config::MAX_ENVELOPE_BYTES,
                    max_hlc: u64::MAX / 2,
                    retractions: &retractions,
                };
                let verdict = rules::check(&env, &ctx);
                if verdict == Verdict::Accept {
                    let _ = rules::apply_control(&mut record, &env, &local);
                }
                for (env, hash) in admission.admit(env, verdict) {
                    stored.insert(env.origin.clone(), ChainHead::after(&env, hash));
                }
            }
            admitted = admission
                .finish()
                .iter()
                .filter(|v| **v == Verdict::Accept)
                .count();
        }
        Some(Frame::Ahead(batch)) => {
            let record = record();
            for env in batch.envelopes {
                let ctx = Context {
                    local: &local,
                    sender: &peer,
                    channel: &channel,
                    record: &record,
                    head: ChainHead::GENESIS,
                    pinned: &pinned,
                    held: None,
                    max_envelope_bytes: crate::config::MAX_ENVELOPE_BYTES,
                    max_hlc: u64::MAX / 2,
                    retractions: &[],
                };
                admitted += usize::from(rules::check_ahead(&env, &ctx) == Ok(rules::Ahead::Show));
            }
        }
        Some(Frame::Offer(env)) => {
            admitted += usize::from(rules::check_offer(&env, &local, &peer, &pinned, 1).is_ok());
        }
        Some(Frame::Hello(vv) | Frame::Progress(vv)) => {
            for cv in &vv.channels {
                let _ = ChannelId::parse(&cv.channel);
                for entry in &cv.entries {
                    let _ = OrgId::parse(&entry.origin);
                }
            }
        }
        // What the link keeps of a refusal: parsed names, bounded words.
        Some(Frame::Refusals(r)) => {
            let refusals = crate::federation::Refusals::default();
            for refusal in &r.refusals {
                if let (Ok(_), Ok(origin)) = (
                    ChannelId::parse(&refusal.channel),
                    OrgId::parse(&refusal.origin),
                ) {
                    let reason: String = refusal.reason.chars().take(200).collect();
                    refusals.record(
                        &peer,
                        &refusal.channel,
                        &origin,
                        refusal.origin_seq,
                        &reason,
                        refusal.retrying,
                    );
                }
            }
        }
        None => {}
    }
    admitted
}

/// A trust bundle file.
pub fn trust_bundle(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(bundle) = crate::trust::TrustBundle::parse(text) {
        let _ = bundle.check_fingerprint(&bundle.fingerprint());
        let _ = crate::trust::TrustBundle::parse(&bundle.to_text());
    }
}

/// A `config.toml`.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::Config::parse(text, std::path::Path::new("config.toml"));
    }
}

/// A history cursor as a member sends it.
pub fn cursor(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(cursor) = crate::model::Cursor::decode(text)
    {
        let _ = crate::model::Cursor::decode(&cursor.encode());
    }
}

/// An audit export (`samband audit verify --file`).
pub fn audit_lines(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(entries) = crate::audit::parse_lines(text)
    {
        let _ = crate::audit::verify(&entries, None);
        let _ = crate::audit::verify(&entries, Some(crate::audit::Head::default()));
    }
}

/// A fuzz target: takes any bytes, must return.
pub type Target = fn(&[u8]);

/// The fuzz targets by name, as in `fuzz/fuzz_targets/` and `fuzz/corpus/`.
pub const TARGETS: [(&str, Target); 5] = [
    ("link_frame", link_frame),
    ("trust_bundle", trust_bundle),
    ("config", config),
    ("cursor", cursor),
    ("audit_lines", audit_lines),
];
