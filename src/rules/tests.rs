use ring::signature::{Ed25519KeyPair, KeyPair as _};

use super::*;
use crate::model::{GENESIS_HASH, Hlc, sign_and_hash};

fn key() -> Ed25519KeyPair {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

fn org(s: &str) -> OrgId {
    OrgId::parse(s).unwrap()
}

struct World {
    home: Ed25519KeyPair,
    b: Ed25519KeyPair,
    c: Ed25519KeyPair,
    record: ChannelRecord,
    channel: ChannelId,
}

impl World {
    /// What c.example (the local org of these tests) pinned: its own key,
    /// the home's and b's.
    fn pins(&self) -> Pinned {
        let keys = [
            ("a.example", self.home.public_key().as_ref()),
            ("b.example", self.b.public_key().as_ref()),
            ("c.example", self.c.public_key().as_ref()),
        ];
        Pinned::new(keys)
    }
}

fn world() -> World {
    let (home, b, c) = (key(), key(), key());
    let record = ChannelRecord {
        id: "a.example/crisis".into(),
        home: "a.example".into(),
        name: "crisis".into(),
        created_unix_ms: 1,
        state: ChannelState::Active as i32,
        participants: vec![
            Participant {
                org: "b.example".into(),
                signing_key: b.public_key().as_ref().to_vec(),
                active: true,
                removed_at: 0,
                last_seq: 0,
                withheld_through: vec![],
            },
            Participant {
                org: "c.example".into(),
                signing_key: c.public_key().as_ref().to_vec(),
                active: true,
                removed_at: 0,
                last_seq: 0,
                withheld_through: vec![],
            },
        ],
        roster_seq: 1,
        incident: None,
    };
    World {
        home,
        b,
        c,
        channel: ChannelId::parse("a.example/crisis").unwrap(),
        record,
    }
}

fn envelope(
    origin: &str,
    seq: u64,
    prev: EnvelopeHash,
    key: &Ed25519KeyPair,
) -> (Envelope, EnvelopeHash) {
    let mut env = Envelope {
        channel: "a.example/crisis".into(),
        origin: origin.into(),
        origin_seq: seq,
        author: "alice".into(),
        hlc: seq << 16,
        kind: Kind::Text as i32,
        priority: 1,
        body: b"hi".to_vec(),
        prev: prev.to_vec(),
        signature: vec![],
        body_sha256: vec![],
        withheld: false,
    };
    env.body_sha256 = crate::model::body_digest(&env.body);
    let hash = sign_and_hash(&mut env, key);
    (env, hash)
}

fn ctx<'a>(
    w: &'a World,
    local: &'a OrgId,
    sender: &'a OrgId,
    head: (u64, EnvelopeHash),
    pinned: &'a Pinned,
) -> Context<'a> {
    Context {
        local,
        sender,
        channel: &w.channel,
        record: &w.record,
        // The envelopes of these tests carry hlc = seq << 16.
        head: ChainHead {
            seq: head.0,
            hash: head.1,
            hlc: Hlc(head.0 << 16),
        },
        pinned,
        held: None,
        max_envelope_bytes: 4096,
        max_hlc: u64::MAX,
        retractions: &[],
    }
}

#[test]
fn accepts_a_chained_signed_envelope_and_each_rule_rejects() {
    let w = world();
    let (local, sender) = (org("c.example"), org("b.example"));
    let pins = w.pins();
    let (e1, h1) = envelope("b.example", 1, GENESIS_HASH, &w.b);
    assert_eq!(
        check(&e1, &ctx(&w, &local, &sender, (0, GENESIS_HASH), &pins)),
        Verdict::Accept
    );
    let (e2, _) = envelope("b.example", 2, h1, &w.b);
    assert_eq!(
        check(&e2, &ctx(&w, &local, &sender, (1, h1), &pins)),
        Verdict::Accept
    );

    let reject = |env: &Envelope, c: Context<'_>| match check(env, &c) {
        Verdict::Reject(r) => r,
        other => panic!("expected a rejection, got {other:?}"),
    };
    // Gap.
    assert!(matches!(
        reject(&e2, ctx(&w, &local, &sender, (0, GENESIS_HASH), &pins)),
        Reject::Gap { .. }
    ));
    // Broken chain.
    let (bad_prev, _) = envelope("b.example", 2, [7; 32], &w.b);
    assert_eq!(
        reject(&bad_prev, ctx(&w, &local, &sender, (1, h1), &pins)),
        Reject::BrokenChain
    );
    // A timestamp that is not later than the origin's previous one, even
    // when correctly chained and signed by the origin.
    for hlc in [1 << 16, 1] {
        let mut back = envelope("b.example", 2, h1, &w.b).0;
        back.hlc = hlc;
        sign_and_hash(&mut back, &w.b);
        assert_eq!(
            reject(&back, ctx(&w, &local, &sender, (1, h1), &pins)),
            Reject::TimeWentBack
        );
    }
    // Bad signature: signed by someone else's key.
    let (forged, _) = envelope("b.example", 1, GENESIS_HASH, &key());
    assert_eq!(
        reject(&forged, ctx(&w, &local, &sender, (0, GENESIS_HASH), &pins)),
        Reject::BadSignature
    );
    // Origin not a participant.
    let (stranger, _) = envelope("x.example", 1, GENESIS_HASH, &w.b);
    assert!(matches!(
        reject(
            &stranger,
            ctx(&w, &local, &sender, (0, GENESIS_HASH), &pins)
        ),
        Reject::OriginNotParticipant(_)
    ));
    // Sender not a participant.
    let outsider = org("x.example");
    assert_eq!(
        reject(&e1, ctx(&w, &local, &outsider, (0, GENESIS_HASH), &pins)),
        Reject::NotSharedWithSender
    );
    // Control envelope not from the home.
    let mut ctl = e1.clone();
    ctl.kind = Kind::Control as i32;
    ctl.author.clear();
    ctl.priority = 0;
    assert_eq!(
        reject(&ctl, ctx(&w, &local, &sender, (0, GENESIS_HASH), &pins)),
        Reject::ControlNotFromHome
    );
    // Oversized.
    let mut c = ctx(&w, &local, &sender, (0, GENESIS_HASH), &pins);
    c.max_envelope_bytes = 10;
    assert!(matches!(reject(&e1, c), Reject::Oversized { .. }));
    // Rewind: a different envelope at a held seq.
    let mut c = ctx(&w, &local, &sender, (1, h1), &pins);
    c.held = Some([9; 32]);
    assert_eq!(reject(&e1, c), Reject::Rewind { seq: 1 });
    // The same envelope again is a duplicate, not an error.
    let mut c = ctx(&w, &local, &sender, (1, h1), &pins);
    c.held = Some(h1);
    assert_eq!(check(&e1, &c), Verdict::Duplicate);
    // Internal channel.
    let mut internal = world();
    internal.record.participants.clear();
    assert_eq!(
        reject(
            &e1,
            ctx(&internal, &local, &sender, (0, GENESIS_HASH), &pins)
        ),
        Reject::NotSharedWithSender
    );
}

#[test]
fn eligibility_follows_the_roster() {
    let mut w = world();
    let (a, b, c, x) = (
        org("a.example"),
        org("b.example"),
        org("c.example"),
        org("x.example"),
    );
    assert_eq!(eligibility(&w.record, &a, &b), Eligibility::Full);
    assert_eq!(
        eligibility(&w.record, &b, &a),
        Eligibility::Full,
        "participants send to the home"
    );
    assert_eq!(
        eligibility(&w.record, &b, &c),
        Eligibility::Full,
        "and to each other"
    );
    assert_eq!(eligibility(&w.record, &a, &x), Eligibility::None);
    w.record.participants = changed_roster(
        &w.record.participants,
        &c,
        RosterEdit::Remove {
            home_seq: 5,
            last_seq: 0,
        },
    );
    assert_eq!(
        eligibility(&w.record, &a, &c),
        Eligibility::UntilRemoval { home_seq: 5 }
    );
    w.record.state = ChannelState::Pending as i32;
    assert_eq!(eligibility(&w.record, &a, &b), Eligibility::None);
    w.record.participants.clear();
    w.record.state = ChannelState::Active as i32;
    assert_eq!(
        eligibility(&w.record, &a, &b),
        Eligibility::None,
        "internal channels go nowhere"
    );
}

#[test]
fn a_removed_peer_is_told_only_of_the_home_up_to_its_removal() {
    let mut w = world();
    let home = org("a.example");
    let mine: VersionVector = [
        (home.clone(), 9),
        (org("b.example"), 4),
        (org("d.example"), 2),
    ]
    .into();
    assert_eq!(visible_vector(&w.record, Eligibility::Full, &mine), mine);
    assert_eq!(
        visible_vector(&w.record, Eligibility::UntilRemoval { home_seq: 5 }, &mine),
        [(home.clone(), 5)].into()
    );
    assert!(visible_vector(&w.record, Eligibility::None, &mine).is_empty());
    // b.example removed after its seq 3: its seq 4, taken here before the
    // removal arrived, is neither stated nor sent.
    w.record.participants = changed_roster(
        &w.record.participants,
        &org("b.example"),
        RosterEdit::Remove {
            home_seq: 10,
            last_seq: 3,
        },
    );
    let stated = visible_vector(&w.record, Eligibility::Full, &mine);
    assert_eq!(stated.get(&org("b.example")), Some(&3));
    let theirs: VersionVector = [(org("b.example"), 3)].into();
    assert!(
        to_send(&w.record, Eligibility::Full, &mine, &theirs)
            .iter()
            .all(|(origin, ..)| origin.as_str() != "b.example")
    );
}

#[test]
fn only_origins_of_the_roster_are_kept_of_what_a_partner_states() {
    let w = world();
    let theirs: VersionVector = [
        (org("a.example"), 3),
        (org("b.example"), 1),
        (org("made-up.example"), 7),
    ]
    .into();
    assert_eq!(
        roster_origins(&w.record, theirs),
        [(org("a.example"), 3), (org("b.example"), 1)].into()
    );
}

/// Whether a removed org's message stands is decided by what the home held
/// of it when it removed it, the same on a participant that joined later.
#[test]
fn a_removed_orgs_messages_up_to_its_removal_stand_everywhere() {
    let mut w = world();
    let (local, home) = (org("c.example"), org("a.example"));
    let pins = w.pins();
    w.record.participants = changed_roster(
        &w.record.participants,
        &org("b.example"),
        RosterEdit::Remove {
            home_seq: 3,
            last_seq: 1,
        },
    );
    let (b1, h1) = envelope("b.example", 1, GENESIS_HASH, &w.b);
    let (b2, _) = envelope("b.example", 2, h1, &w.b);
    // Relayed by the home to a participant that never saw b.example active.
    assert_eq!(
        check(&b1, &ctx(&w, &local, &home, (0, GENESIS_HASH), &pins)),
        Verdict::Accept
    );
    assert!(matches!(
        check(&b2, &ctx(&w, &local, &home, (1, h1), &pins)),
        Verdict::Reject(Reject::OriginNotParticipant(_))
    ));
}

#[test]
fn offers_and_roster_changes() {
    let w = world();
    let (a, b, c) = (org("a.example"), org("b.example"), org("c.example"));
    let mut offer = Envelope {
        channel: w.record.id.clone(),
        origin: "a.example".into(),
        origin_seq: 1,
        kind: Kind::Control as i32,
        body: control_body(w.record.participants.clone()),
        prev: GENESIS_HASH.to_vec(),
        ..Default::default()
    };
    sign_and_hash(&mut offer, &w.home);
    let pins = w.pins();
    let record = check_offer(&offer, &c, &b, &pins, 1).unwrap();
    assert_eq!(record.participants.len(), 2);
    assert_eq!(
        check_offer(&offer, &c, &b, &Pinned::default(), 1).unwrap_err(),
        Reject::BadOffer("the channel's home is not a configured peer")
    );
    assert_eq!(
        check_offer(
            &offer,
            &c,
            &b,
            &Pinned::new([("a.example", w.b.public_key().as_ref())]),
            1
        )
        .unwrap_err(),
        Reject::BadSignature
    );
    assert!(matches!(
        check_offer(&offer, &org("x.example"), &b, &pins, 1),
        Err(Reject::BadOffer(_))
    ));

    // Removing c archives c's copy when the control envelope arrives there.
    let mut mine = record.clone();
    let mut removal = offer.clone();
    removal.origin_seq = 2;
    removal.body = control_body(changed_roster(
        &mine.participants,
        &c,
        RosterEdit::Remove {
            home_seq: 2,
            last_seq: 0,
        },
    ));
    apply_control(&mut mine, &removal, &c).unwrap();
    assert_eq!(mine.state, ChannelState::Archived as i32);
    // The same removal, signed by the home, withdraws an offer c holds.
    sign_and_hash(&mut removal, &w.home);
    let withdrawn = removal_of(&removal, &c, &pins, 1).unwrap().unwrap();
    assert_eq!(withdrawn.state, ChannelState::Archived as i32);
    assert_eq!(withdrawn.roster_seq, 2);
    assert!(removal_of(&offer, &c, &pins, 1).is_none(), "c is in it");
    assert!(removal_of(&removal, &b, &pins, 1).is_none(), "b stays");
    let forged = Pinned::new([("a.example", w.b.public_key().as_ref())]);
    assert_eq!(
        removal_of(&removal, &c, &forged, 1).unwrap().unwrap_err(),
        Reject::BadSignature
    );
    // Offered to c, not holding it: the latest roster while c takes part;
    // once removed, the home's roster that removed it, never a later one.
    let home_now = ChannelRecord {
        roster_seq: 7,
        ..mine.clone()
    };
    let never = || Ok::<_, ()>(false);
    assert_eq!(
        roster_to_offer(&home_now, Eligibility::Full, true, never),
        Ok(Some(7))
    );
    let removed = Eligibility::UntilRemoval { home_seq: 2 };
    assert_eq!(
        roster_to_offer(&home_now, removed, true, never),
        Ok(Some(2))
    );
    assert_eq!(
        roster_to_offer(&home_now, removed, true, || Ok::<_, ()>(true)),
        Ok(None),
        "c took some of it: its copy learns of the removal by itself"
    );
    assert_eq!(roster_to_offer(&home_now, removed, false, never), Ok(None));
    // An older snapshot does not undo a newer one.
    apply_control(&mut mine, &offer, &c).unwrap();
    assert_eq!(mine.state, ChannelState::Archived as i32);
    // The home's own record stays active.
    let mut home = record;
    apply_control(&mut home, &removal, &a).unwrap();
    assert_eq!(home.state, ChannelState::Active as i32);
}

/// A home that lists orgs this node pinned (itself, a peer) with keys it
/// made up cannot speak for them: their pinned keys are the only ones
/// that count, and a roster that disagrees is refused.
#[test]
fn a_roster_never_overrides_a_pinned_key() {
    let mut w = world();
    let (local, sender) = (org("c.example"), org("b.example"));
    let pins = w.pins();
    let evil = key();
    let evil_pub = evil.public_key().as_ref().to_vec();
    // The stored roster lies about c (this node) and b (a pinned peer), and
    // lists x.example, which this node has not pinned.
    for p in &mut w.record.participants {
        p.signing_key = evil_pub.clone();
    }
    w.record.participants.push(Participant {
        org: "x.example".into(),
        signing_key: evil_pub.clone(),
        active: true,
        removed_at: 0,
        last_seq: 0,
        withheld_through: vec![],
    });
    for origin in ["c.example", "b.example"] {
        let (forged, _) = envelope(origin, 1, GENESIS_HASH, &evil);
        assert_eq!(
            check(&forged, &ctx(&w, &local, &sender, (0, GENESIS_HASH), &pins)),
            Verdict::Reject(Reject::BadSignature),
            "{origin} spoken for by the roster"
        );
    }
    // The roster still vouches for an org this node has not pinned.
    let (vouched, _) = envelope("x.example", 1, GENESIS_HASH, &evil);
    assert_eq!(
        check(
            &vouched,
            &ctx(&w, &local, &sender, (0, GENESIS_HASH), &pins)
        ),
        Verdict::Accept
    );
    assert_eq!(
        pins.origin_key(&local, "x.example"),
        OriginKey::VouchedByHome
    );
    assert_eq!(pins.origin_key(&local, "b.example"), OriginKey::Pinned);
    assert_eq!(pins.origin_key(&local, "c.example"), OriginKey::Own);

    // A roster (offer or change) that gives a pinned org another key is refused.
    let honest = world();
    let pins = honest.pins();
    let mut lying = honest.record.participants.clone();
    lying[1].signing_key = evil_pub.clone(); // c.example, this node
    let mut offer = Envelope {
        channel: honest.record.id.clone(),
        origin: "a.example".into(),
        origin_seq: 2,
        hlc: 2 << 16,
        kind: Kind::Control as i32,
        body: control_body(lying),
        prev: GENESIS_HASH.to_vec(),
        ..Default::default()
    };
    sign_and_hash(&mut offer, &honest.home);
    let mismatch = Reject::RosterKeyMismatch {
        org: "c.example".into(),
    };
    assert_eq!(
        check_offer(&offer, &local, &sender, &pins, 1).unwrap_err(),
        mismatch
    );
    offer.origin_seq = 1;
    sign_and_hash(&mut offer, &honest.home);
    assert_eq!(
        check(
            &offer,
            &ctx(&honest, &local, &sender, (0, GENESIS_HASH), &pins)
        ),
        Verdict::Reject(mismatch)
    );
}

/// A roster is bounded before it is decoded, and in what it may list.
#[test]
fn a_roster_is_bounded_before_and_after_decoding() {
    let w = world();
    let pins = w.pins();
    let offer = |body: Vec<u8>| {
        let mut env = Envelope {
            channel: w.record.id.clone(),
            origin: "a.example".into(),
            origin_seq: 1,
            hlc: 1 << 16,
            kind: Kind::Control as i32,
            body,
            prev: GENESIS_HASH.to_vec(),
            ..Default::default()
        };
        sign_and_hash(&mut env, &w.home);
        check_offer(&env, &org("c.example"), &org("b.example"), &pins, 1)
    };
    // Millions of empty participants in one body: refused by its size alone.
    let mut huge = vec![0x0a];
    let empties = [0x0a, 0x00].repeat(1 << 20);
    prost::encoding::encode_varint(empties.len() as u64, &mut huge);
    huge.extend_from_slice(&empties);
    assert!(matches!(offer(huge), Err(Reject::Malformed(m)) if m.contains("limit")));
    let many: Vec<Participant> = (0..=MAX_PARTICIPANTS)
        .map(|i| Participant {
            org: format!("o{i}.example"),
            signing_key: vec![1; 32],
            active: true,
            removed_at: 0,
            last_seq: 0,
            withheld_through: vec![],
        })
        .collect();
    assert!(matches!(
        offer(control_body(many.clone())),
        Err(Reject::Malformed(_))
    ));
    let mut twice = w.record.participants.clone();
    twice.push(twice[0].clone());
    assert!(matches!(
        offer(control_body(twice)),
        Err(Reject::Malformed(_))
    ));
    let mut short_key = w.record.participants.clone();
    short_key[0].signing_key.truncate(31);
    assert!(matches!(
        offer(control_body(short_key)),
        Err(Reject::Malformed(_))
    ));
    // The largest allowed roster fits the byte limit.
    let mut largest = many;
    largest.pop();
    let label = "a".repeat(63);
    for (i, p) in largest.iter_mut().enumerate() {
        // 253 bytes, the longest org id.
        p.org = format!("{label}.{label}.{label}.{:a<61}", format!("o{i}"));
        assert_eq!(p.org.len(), 253);
    }
    assert!(control_body(largest).len() <= MAX_ROSTER_BYTES);
}

/// A received envelope is held to what a local post may be.
#[test]
fn every_field_of_a_received_envelope_is_checked() {
    let w = world();
    let (local, sender) = (org("c.example"), org("b.example"));
    let pins = w.pins();
    type Break = fn(&mut Envelope);
    let cases: [(&str, Break); 9] = [
        ("unknown kind", |e| e.kind = 77),
        ("unspecified kind", |e| e.kind = 0),
        ("unknown priority", |e| e.priority = 99_999),
        ("author with control characters", |e| {
            e.author = "\u{1b}[2J\u{1b}[31mADMIN\u{7}".into()
        }),
        ("author too long", |e| e.author = "a".repeat(65)),
        ("text not UTF-8", |e| e.body = vec![0xff, 0xfe]),
        ("seq 0", |e| e.origin_seq = 0),
        ("short prev", |e| e.prev = vec![0; 5]),
        ("roster change with an author", |e| {
            e.kind = Kind::Control as i32
        }),
    ];
    for (what, break_it) in cases {
        let mut env = envelope("b.example", 1, GENESIS_HASH, &w.b).0;
        break_it(&mut env);
        sign_and_hash(&mut env, &w.b);
        let verdict = check(&env, &ctx(&w, &local, &sender, (0, GENESIS_HASH), &pins));
        assert!(
            matches!(verdict, Verdict::Reject(Reject::Malformed(_))),
            "{what}: {verdict:?}"
        );
    }
    let mut bad_signature = envelope("b.example", 1, GENESIS_HASH, &w.b).0;
    bad_signature.signature.truncate(10);
    assert!(matches!(
        check(
            &bad_signature,
            &ctx(&w, &local, &sender, (0, GENESIS_HASH), &pins)
        ),
        Verdict::Reject(Reject::Malformed(_))
    ));
    // Seq 0 is malformed, not a rewind, whatever the head.
    let mut zero = envelope("b.example", 1, GENESIS_HASH, &w.b).0;
    zero.origin_seq = 0;
    sign_and_hash(&mut zero, &w.b);
    let Verdict::Reject(reason) = check(&zero, &ctx(&w, &local, &sender, (3, [1; 32]), &pins))
    else {
        panic!("seq 0 accepted");
    };
    assert!(reason.to_string().contains("origin_seq is 0"), "{reason}");
}

#[test]
fn a_message_was_shared_with_whoever_was_in_when_it_was_written() {
    let participant = |org: &str, active: bool, removed_at: u64| Participant {
        org: org.into(),
        active,
        removed_at,
        ..Default::default()
    };
    let record = ChannelRecord {
        home: "a.example".into(),
        participants: vec![
            participant("b.example", true, 0),
            // Removed by the home's roster #5 (stamped 500) and #9 (900).
            participant("c.example", false, 5),
            participant("d.example", false, 9),
            // Removed by a roster this node does not hold.
            participant("e.example", false, 12),
        ],
        ..Default::default()
    };
    let stamp = |p: &Participant| match p.removed_at {
        5 => Some(500),
        9 => Some(900),
        _ => None,
    };
    assert_eq!(
        agencies_of_message(&record, 700, stamp),
        ["a.example", "b.example", "d.example"],
        "c was out before the message, d only after it"
    );
    assert_eq!(
        agencies_of_message(&record, 100, stamp),
        ["a.example", "b.example", "c.example", "d.example"]
    );
    let all = agencies_of_message(&record, 100, stamp);
    assert_eq!(
        expected_to_acknowledge(&all, "a.example"),
        ["b.example", "c.example", "d.example"]
    );
    // In a channel of the origin's alone, its own members are asked.
    assert_eq!(
        expected_to_acknowledge(&["a.example".to_owned()], "a.example"),
        ["a.example"]
    );
}

// Property test of the replication decisions: 3–5 orgs sharing one
// channel over a random topology, with random posts, pushes that drop,
// duplicate, reverse or cut short what they carry, links that restart
// (forgetting what they knew of the peer), and forged envelopes. Whatever
// happens, no node stores an envelope that breaks a rule, and once every
// link has run cleanly the nodes hold identical logs with nothing lost.
//
// The model uses the real `check`, `to_send` and `eligibility`; only the
// store and the network are replaced by maps and loops.
mod simulation {
    use std::collections::{BTreeMap, HashMap, HashSet};

    use proptest::prelude::*;
    use ring::signature::{Ed25519KeyPair, KeyPair as _};

    use prost::Message as _;

    use super::super::*;
    use crate::model::{GENESIS_HASH, Hlc, HlcClock, sign_and_hash};
    use crate::proto::ChannelState;

    const ORGS: [&str; 5] = [
        "a.example",
        "b.example",
        "c.example",
        "d.example",
        "e.example",
    ];
    const CHANNEL: &str = "a.example/crisis";

    struct Node {
        org: OrgId,
        key: Ed25519KeyPair,
        logs: BTreeMap<OrgId, Vec<(Envelope, EnvelopeHash)>>,
        clock: HlcClock,
    }

    #[derive(Debug, Clone)]
    enum Fault {
        None,
        /// Deliver only every other envelope.
        DropAlternate,
        Duplicate,
        Reverse,
        /// Deliver only the first one.
        CutShort,
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Node posts k messages in one round.
        Post(usize, usize),
        /// The receiver states what it holds (a link's hello).
        Hello {
            from: usize,
            to: usize,
        },
        Push {
            from: usize,
            to: usize,
            fault: Fault,
        },
        /// Links of this node go down: what senders knew of it is forgotten.
        Restart(usize),
        Forge {
            to: usize,
            kind: u8,
        },
        /// Node acknowledges the message the index picks among those it holds.
        Ack(usize, usize),
        /// Node retracts the message of its own the index picks.
        Retract(usize, usize),
        /// Node sets (or, when the flag says, removes) its picture entry of
        /// that key.
        Picture(usize, usize, bool),
    }

    struct World {
        nodes: Vec<Node>,
        record: ChannelRecord,
        channel: ChannelId,
        edges: Vec<(usize, usize)>,
        /// What `from` believes `to` holds, as a link sender does.
        known: HashMap<(usize, usize), VersionVector>,
        posts: BTreeMap<OrgId, u64>,
        wall: u64,
    }

    fn key() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    impl Node {
        fn vector(&self) -> VersionVector {
            self.logs
                .iter()
                .map(|(o, l)| (o.clone(), l.len() as u64))
                .collect()
        }

        fn head(&self, origin: &OrgId) -> ChainHead {
            self.logs
                .get(origin)
                .and_then(|l| l.last())
                .map_or(ChainHead::GENESIS, |(e, h)| ChainHead::after(e, *h))
        }
    }

    impl World {
        fn new(n: usize, extra_edges: &[(usize, usize)], spanning: &[usize]) -> Self {
            let nodes: Vec<Node> = ORGS[..n]
                .iter()
                .map(|o| Node {
                    org: OrgId::parse(o).unwrap(),
                    key: key(),
                    logs: BTreeMap::new(),
                    clock: HlcClock::default(),
                })
                .collect();
            let record = ChannelRecord {
                id: CHANNEL.into(),
                home: ORGS[0].into(),
                name: "crisis".into(),
                created_unix_ms: 0,
                state: ChannelState::Active as i32,
                participants: nodes[1..]
                    .iter()
                    .map(|n| Participant {
                        org: n.org.to_string(),
                        signing_key: n.key.public_key().as_ref().to_vec(),
                        active: true,
                        removed_at: 0,
                        last_seq: 0,
                        withheld_through: vec![],
                    })
                    .collect(),
                roster_seq: 0,
                // An incident's channel, so its picture entries are taken.
                incident: Some(crate::proto::Incident {
                    name: "crisis".into(),
                    opened_unix_ms: 1,
                    ..Default::default()
                }),
            };
            // A connected topology: node i links to some earlier node, plus extra edges.
            let mut edges: Vec<(usize, usize)> = (1..n).map(|i| (spanning[i - 1] % i, i)).collect();
            edges.extend(
                extra_edges
                    .iter()
                    .map(|&(a, b)| (a % n, b % n))
                    .filter(|(a, b)| a != b),
            );
            World {
                nodes,
                record,
                channel: ChannelId::parse(CHANNEL).unwrap(),
                edges,
                known: HashMap::new(),
                posts: BTreeMap::new(),
                wall: 1_000,
            }
        }

        fn linked(&self, a: usize, b: usize) -> bool {
            self.edges
                .iter()
                .any(|&(x, y)| (x, y) == (a, b) || (x, y) == (b, a))
        }

        /// What node `i` pinned: its own key, the home's, and those of the
        /// nodes it links to. The others it knows only from the home's roster.
        fn pinned_by(&self, i: usize) -> Pinned {
            let keys: Vec<(&str, Vec<u8>)> = (0..self.nodes.len())
                .filter(|&j| j == i || j == 0 || self.linked(i, j))
                .map(|j| {
                    let org = self.nodes[j].org.as_str();
                    (org, self.public_key(org))
                })
                .collect();
            Pinned::new(keys.iter().map(|(o, k)| (*o, k.as_slice())))
        }

        fn public_key(&self, org: &str) -> Vec<u8> {
            let node = self.nodes.iter().find(|n| n.org.as_str() == org).unwrap();
            node.key.public_key().as_ref().to_vec()
        }

        /// Node `i` writes one signed envelope of `kind` with `body`.
        fn originate(&mut self, i: usize, kind: Kind, body: Vec<u8>) {
            self.wall += 1;
            let node = &mut self.nodes[i];
            let ChainHead {
                seq, hash: prev, ..
            } = node.head(&node.org);
            let mut env = Envelope {
                channel: CHANNEL.into(),
                origin: node.org.to_string(),
                origin_seq: seq + 1,
                author: "m".into(),
                hlc: node.clock.tick(self.wall).0,
                kind: kind as i32,
                priority: 1,
                body,
                prev: prev.to_vec(),
                signature: vec![],
                body_sha256: vec![],
                withheld: false,
            };
            env.body_sha256 = crate::model::body_digest(&env.body);
            let hash = sign_and_hash(&mut env, &node.key);
            let org = node.org.clone();
            node.logs
                .entry(org.clone())
                .or_default()
                .push((env.clone(), hash));
            *self.posts.entry(org).or_default() += 1;
            retract_in(&mut self.nodes[i], &env);
        }

        /// Node `i` acknowledges a message it holds (any origin's, the
        /// `pick`-th of all it holds), if it holds one.
        fn ack(&mut self, i: usize, pick: usize) {
            let held: Vec<(String, u64)> = self.nodes[i]
                .logs
                .values()
                .flatten()
                .filter(|(e, _)| e.kind == Kind::Text as i32)
                .map(|(e, _)| (e.origin.clone(), e.origin_seq))
                .collect();
            if held.is_empty() {
                return;
            }
            let (origin, seq) = held[pick % held.len()].clone();
            let body = Ack {
                message: Some(MessageId { origin, seq }),
            };
            self.originate(i, Kind::Ack, body.encode_to_vec());
        }

        /// Node `i` retracts one of its own messages (the `pick`-th).
        fn retract(&mut self, i: usize, pick: usize) {
            let org = self.nodes[i].org.clone();
            let own: Vec<u64> = self.nodes[i]
                .logs
                .get(&org)
                .into_iter()
                .flatten()
                .filter(|(e, _)| e.kind == Kind::Text as i32 && !e.withheld)
                .map(|(e, _)| e.origin_seq)
                .collect();
            if own.is_empty() {
                return;
            }
            let body = Retraction {
                message: Some(MessageId {
                    origin: org.to_string(),
                    seq: own[pick % own.len()],
                }),
            };
            self.originate(i, Kind::Retract, body.encode_to_vec());
        }

        /// Node `i` posts `k` envelopes in one round: chained, only the last signed (the seal).
        fn post(&mut self, i: usize, k: usize) {
            for j in 0..k {
                self.wall += 1;
                let node = &mut self.nodes[i];
                let ChainHead {
                    seq, hash: prev, ..
                } = node.head(&node.org);
                let mut env = Envelope {
                    channel: CHANNEL.into(),
                    origin: node.org.to_string(),
                    origin_seq: seq + 1,
                    author: "m".into(),
                    hlc: node.clock.tick(self.wall).0,
                    kind: Kind::Text as i32,
                    priority: 1,
                    body: format!("{} #{}", node.org, seq + 1).into_bytes(),
                    prev: prev.to_vec(),
                    signature: vec![],
                    body_sha256: vec![],
                    withheld: false,
                };
                env.body_sha256 = crate::model::body_digest(&env.body);
                let hash = if j + 1 == k {
                    sign_and_hash(&mut env, &node.key)
                } else {
                    chain_hash(&env)
                };
                node.logs
                    .entry(node.org.clone())
                    .or_default()
                    .push((env, hash));
                *self.posts.entry(node.org.clone()).or_default() += 1;
            }
        }

        /// Offers a batch from `from` to node `to`, as the writer decides it:
        /// unsigned, chained envelopes wait for a seal later in the same batch.
        fn deliver(&mut self, from: &OrgId, to: usize, batch: Vec<Envelope>) -> Vec<Verdict> {
            self.deliver_with(from, to, batch, &[])
        }

        /// [`World::deliver`], with retractions that prove withheld copies.
        fn deliver_with(
            &mut self,
            from: &OrgId,
            to: usize,
            batch: Vec<Envelope>,
            retractions: &[Envelope],
        ) -> Vec<Verdict> {
            let pinned = self.pinned_by(to);
            let mut admission = Admission::default();
            for env in batch {
                let node = &self.nodes[to];
                let origin = OrgId::parse(&env.origin).ok();
                let head = match (admission.head(&env), &origin) {
                    (Some(head), _) => head,
                    (None, Some(o)) => node.head(o),
                    (None, None) => ChainHead::GENESIS,
                };
                let held = admission.held(&env).or_else(|| {
                    let i = usize::try_from(env.origin_seq).ok()?.checked_sub(1)?;
                    node.logs.get(origin.as_ref()?)?.get(i).map(|(_, h)| *h)
                });
                let ctx = Context {
                    local: &node.org,
                    sender: from,
                    channel: &self.channel,
                    record: &self.record,
                    head,
                    pinned: &pinned,
                    held,
                    max_envelope_bytes: 4096,
                    max_hlc: u64::MAX,
                    retractions,
                };
                let verdict = check(&env, &ctx);
                let node = &mut self.nodes[to];
                for (envelope, hash) in admission.admit(env, verdict) {
                    node.clock.observe(Hlc(envelope.hlc));
                    let origin = OrgId::parse(&envelope.origin).unwrap();
                    node.logs
                        .entry(origin)
                        .or_default()
                        .push((envelope.clone(), hash));
                    retract_in(node, &envelope);
                }
            }
            admission.finish()
        }

        /// A link push from `from` to `to`: what `from` believes `to` lacks.
        /// Returns whether anything new was stored.
        fn push(&mut self, from: usize, to: usize, fault: &Fault) -> bool {
            let Some(theirs) = self.known.get(&(from, to)).cloned() else {
                return false;
            };
            let sender = self.nodes[from].org.clone();
            let eligibility = eligibility(&self.record, &sender, &self.nodes[to].org);
            let mine = self.nodes[from].vector();
            let mut batch = Vec::new();
            let receiver = self.nodes[to].org.clone();
            for (origin, first, last) in to_send(&self.record, eligibility, &mine, &theirs) {
                let log = &self.nodes[from].logs[&origin];
                let mut run: Vec<Envelope> = log[(first - 1) as usize..last as usize]
                    .iter()
                    .map(|(e, _)| e.clone())
                    .collect();
                // As the link does: a retracted message goes withheld with
                // its retraction; one held withheld without it (its
                // retraction not here yet) ends the run.
                let retracted: HashSet<u64> = log
                    .iter()
                    .filter_map(|(e, _)| retraction_of(e).map(|m| m.seq))
                    .collect();
                ready_for(&self.record, &receiver, &mut run, &retracted);
                let Some(sent) = run.last().map(|e| e.origin_seq) else {
                    continue;
                };
                batch.extend(run);
                self.known
                    .get_mut(&(from, to))
                    .unwrap()
                    .insert(origin, sent);
            }
            // A retracted message goes withheld, with its signed retraction.
            let sender_logs = &self.nodes[from].logs;
            let proofs: Vec<Envelope> = batch
                .iter()
                .filter(|e| e.withheld)
                .filter_map(|e| {
                    let log = sender_logs.get(&OrgId::parse(&e.origin).ok()?)?;
                    log.iter()
                        .map(|(r, _)| r)
                        .find(|r| retraction_of(r).is_some_and(|m| m.seq == e.origin_seq))
                        .cloned()
                })
                .collect();
            match fault {
                Fault::None => {}
                Fault::DropAlternate => batch = batch.into_iter().step_by(2).collect(),
                Fault::Duplicate => batch = batch.iter().chain(batch.iter()).cloned().collect(),
                Fault::Reverse => batch.reverse(),
                Fault::CutShort => batch.truncate(1),
            }
            let mut gap = false;
            let mut stored = false;
            for verdict in self.deliver_with(&sender, to, batch, &proofs) {
                match verdict {
                    Verdict::Accept => stored = true,
                    Verdict::Duplicate => {}
                    // A cut-short or reordered batch leaves gaps and unsealed runs: resent later.
                    Verdict::Reject(r) if r.is_out_of_order() => gap = true,
                    other => panic!("an honest push was answered {other:?}"),
                }
            }
            if gap {
                // The receiver restates what it holds (the link's resend request).
                self.known.insert((from, to), self.nodes[to].vector());
            }
            stored
        }

        fn forge(&mut self, to: usize, kind: u8) {
            let n = self.nodes.len();
            let from_i = (to + 1) % n;
            let from = self.nodes[from_i].org.clone();
            let kind = kind % 12;
            // A hostile home's roster speaks for an org `to` pinned: `to`
            // itself, or one of the nodes it links to.
            let neighbour = (0..n)
                .find(|&j| j != to && self.linked(to, j))
                .unwrap_or(from_i);
            let origin_i = match kind {
                7 => to,
                8 => neighbour,
                9 if to != 0 => 0,
                _ => from_i,
            };
            let head = self.nodes[to].head(&self.nodes[origin_i].org);
            let mut env = Envelope {
                channel: CHANNEL.into(),
                origin: self.nodes[origin_i].org.to_string(),
                origin_seq: head.seq + 1,
                author: "mallory".into(),
                // Later than the head, so only the fault below is wrong.
                hlc: head.hlc.0 + 1,
                kind: Kind::Text as i32,
                priority: 1,
                body: b"forged".to_vec(),
                prev: head.hash.to_vec(),
                signature: vec![],
                body_sha256: vec![],
                withheld: false,
            };
            env.body_sha256 = crate::model::body_digest(&env.body);
            let evil = key();
            let lying_roster = |record: &ChannelRecord, org: &str| {
                let mut participants = record.participants.clone();
                for p in participants.iter_mut().filter(|p| p.org == org) {
                    p.signing_key = evil.public_key().as_ref().to_vec();
                }
                participants
            };
            let mut record = None;
            match kind {
                0 => {
                    sign_and_hash(&mut env, &key()); // signed by a key that is not the origin's
                }
                1 => {
                    env.origin = "x.example".into();
                    sign_and_hash(&mut env, &self.nodes[origin_i].key);
                }
                2 => {
                    env.origin_seq += 3;
                    sign_and_hash(&mut env, &self.nodes[origin_i].key);
                }
                3 => {
                    env.kind = Kind::Control as i32;
                    if origin_i == 0 {
                        env.origin = ORGS[1].into();
                    }
                    sign_and_hash(&mut env, &self.nodes[origin_i].key);
                }
                4 => {
                    env.prev = vec![9; 32];
                    sign_and_hash(&mut env, &self.nodes[origin_i].key);
                }
                5 => {
                    // The origin itself, with a timestamp that goes back.
                    env.hlc = head.hlc.0;
                    sign_and_hash(&mut env, &self.nodes[origin_i].key);
                }
                7 | 8 => {
                    // The channel's roster, as a hostile home would have it,
                    // lists a pinned org with the home's own key for it.
                    let origin = self.nodes[origin_i].org.to_string();
                    let mut lying = self.record.clone();
                    lying.participants = lying_roster(&lying, &origin);
                    record = Some(lying);
                    sign_and_hash(&mut env, &evil);
                }
                9 => {
                    // The home itself signs a roster that gives `to` another key.
                    env.kind = Kind::Control as i32;
                    env.author.clear();
                    env.priority = 0;
                    let target = self.nodes[to].org.to_string();
                    env.body = control_body(lying_roster(&self.record, &target));
                    sign_and_hash(&mut env, &self.nodes[0].key);
                }
                10 => {
                    // The origin "retracts" a message of another org.
                    let other = self.nodes[(origin_i + 1) % n].org.to_string();
                    env.kind = Kind::Retract as i32;
                    env.body = Retraction {
                        message: Some(MessageId {
                            origin: other,
                            seq: 1,
                        }),
                    }
                    .encode_to_vec();
                    env.body_sha256 = crate::model::body_digest(&env.body);
                    sign_and_hash(&mut env, &self.nodes[origin_i].key);
                }
                11 => {
                    // A copy without its body that nothing withholds or retracts.
                    sign_and_hash(&mut env, &self.nodes[origin_i].key);
                    env = crate::model::withheld_copy(&env).unwrap();
                }
                _ => {} // unsigned, correctly chained: no seal ever vouches for it
            }
            let honest = record.map(|r| std::mem::replace(&mut self.record, r));
            let verdict = self.deliver(&from, to, vec![env]).remove(0);
            if let Some(honest) = honest {
                self.record = honest;
            }
            assert!(
                matches!(verdict, Verdict::Reject(_)),
                "forged envelope {kind} was {verdict:?}"
            );
        }

        fn apply(&mut self, op: &Op) {
            let n = self.nodes.len();
            match *op {
                Op::Post(i, k) => self.post(i % n, k),
                Op::Hello { from, to } => {
                    let (from, to) = (from % n, to % n);
                    if from != to && self.linked(from, to) {
                        self.known.insert((from, to), self.nodes[to].vector());
                    }
                }
                Op::Push {
                    from,
                    to,
                    ref fault,
                } => {
                    let (from, to) = (from % n, to % n);
                    if from != to && self.linked(from, to) {
                        self.push(from, to, fault);
                    }
                }
                Op::Restart(i) => self.known.retain(|&(a, b), _| a != i % n && b != i % n),
                Op::Forge { to, kind } => self.forge(to % n, kind),
                Op::Ack(i, pick) => self.ack(i % n, pick),
                Op::Retract(i, pick) => self.retract(i % n, pick),
                Op::Picture(i, key, removed) => {
                    self.wall += 1;
                    let body = crate::proto::PictureBody {
                        key: format!("k{key}"),
                        kind: "unit".into(),
                        status: format!("at {}", self.wall),
                        removed,
                        ..Default::default()
                    };
                    self.originate(i % n, Kind::Picture, body.encode_to_vec());
                }
            }
        }

        /// The picture node `i` shows: the fold over its picture entries,
        /// read in the order given.
        fn picture(&self, i: usize, reversed: bool) -> picture::Picture {
            let mut stated: Vec<picture::Stated> = self.nodes[i]
                .logs
                .values()
                .flatten()
                .filter_map(|(e, _)| {
                    Some(picture::Stated {
                        owner: e.origin.clone(),
                        seq: e.origin_seq,
                        hlc: e.hlc,
                        author: e.author.clone(),
                        body: picture::entry_of(e)?,
                    })
                })
                .collect();
            if reversed {
                stated.reverse();
            }
            picture::Picture::fold(stated)
        }

        /// Runs every link cleanly (hello, then push) until nothing changes.
        fn heal(&mut self) {
            for _ in 0..100 {
                let mut changed = false;
                for (a, b) in self.edges.clone() {
                    for (from, to) in [(a, b), (b, a)] {
                        self.known.insert((from, to), self.nodes[to].vector());
                        changed |= self.push(from, to, &Fault::None);
                    }
                }
                if !changed {
                    return;
                }
            }
            panic!("the network did not settle");
        }

        /// Every node shows the same picture, in whatever order it reads
        /// its entries, and of each (owner, key) the last its owner stated.
        fn assert_same_picture(&self) {
            let reference = self.picture(0, false);
            for i in 0..self.nodes.len() {
                assert_eq!(self.picture(i, false), reference, "{}", self.nodes[i].org);
                assert_eq!(
                    self.picture(i, true),
                    reference,
                    "{} reversed",
                    self.nodes[i].org
                );
            }
            for node in &self.nodes {
                let own = node.logs.get(&node.org).into_iter().flatten();
                let mut last = BTreeMap::new();
                for (e, _) in own {
                    if let Some(body) = picture::entry_of(e) {
                        last.insert(body.key.clone(), body);
                    }
                }
                for (key, body) in last {
                    let shown = reference.get(node.org.as_str(), &key).expect("stated");
                    assert_eq!(shown.body, body, "{}'s {key}", node.org);
                }
            }
        }

        fn assert_converged(&self) {
            let reference: Vec<_> = self.nodes[0]
                .logs
                .iter()
                .map(|(o, l)| (o.clone(), l.iter().map(|x| x.1).collect::<Vec<_>>()))
                .collect();
            for node in &self.nodes {
                let logs: Vec<_> = node
                    .logs
                    .iter()
                    .map(|(o, l)| (o.clone(), l.iter().map(|x| x.1).collect::<Vec<_>>()))
                    .collect();
                assert_eq!(
                    logs, reference,
                    "{} differs from {}",
                    node.org, self.nodes[0].org
                );
                for (origin, log) in &node.logs {
                    assert_eq!(
                        log.len() as u64,
                        self.posts[origin],
                        "{}: posts of {origin} lost",
                        node.org
                    );
                    // Withheld exactly what its origin retracted.
                    let retracted: Vec<u64> = log
                        .iter()
                        .filter_map(|(e, _)| retraction_of(e).map(|m| m.seq))
                        .collect();
                    for (env, _) in log {
                        assert_eq!(
                            env.withheld,
                            retracted.contains(&env.origin_seq),
                            "{}: {origin}#{} withheld {}",
                            node.org,
                            env.origin_seq,
                            env.withheld
                        );
                        assert_eq!(env.body.is_empty(), env.withheld);
                    }
                    let public = self.public_key(origin.as_str());
                    let mut prev = GENESIS_HASH;
                    for (i, (env, hash)) in log.iter().enumerate() {
                        assert_eq!(env.origin_seq, i as u64 + 1);
                        assert_eq!(env.prev, prev.to_vec());
                        // Seals verify; the others are vouched for by the chain up to one.
                        assert!(env.signature.is_empty() || verify(env, &public));
                        prev = *hash;
                    }
                }
            }
        }
    }

    /// What a node's store does when it stores `env`: a retraction
    /// replaces the message it names (held here: same origin, lower seq)
    /// by its withheld copy.
    fn retract_in(node: &mut Node, env: &Envelope) {
        let Some(target) = retraction_of(env) else {
            return;
        };
        let Ok(origin) = OrgId::parse(&target.origin) else {
            return;
        };
        let Some(log) = node.logs.get_mut(&origin) else {
            return;
        };
        let Some(i) = usize::try_from(target.seq)
            .ok()
            .and_then(|s| s.checked_sub(1))
        else {
            return;
        };
        if let Some((held, _)) = log.get_mut(i)
            && let Some(copy) = crate::model::withheld_copy(held)
        {
            *held = copy;
        }
    }

    fn fault() -> impl Strategy<Value = Fault> {
        prop_oneof![
            4 => Just(Fault::None),
            1 => Just(Fault::DropAlternate),
            1 => Just(Fault::Duplicate),
            1 => Just(Fault::Reverse),
            1 => Just(Fault::CutShort),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..5usize, 1..4usize).prop_map(|(i, k)| Op::Post(i, k)),
            2 => (0..5usize, 0..5usize).prop_map(|(from, to)| Op::Hello { from, to }),
            5 => (0..5usize, 0..5usize, fault()).prop_map(|(from, to, fault)| Op::Push { from, to, fault }),
            1 => (0..5usize).prop_map(Op::Restart),
            1 => (0..5usize, any::<u8>()).prop_map(|(to, kind)| Op::Forge { to, kind }),
            1 => (0..5usize, any::<usize>()).prop_map(|(i, pick)| Op::Ack(i, pick)),
            1 => (0..5usize, any::<usize>()).prop_map(|(i, pick)| Op::Retract(i, pick)),
            2 => (0..5usize, 0..3usize, proptest::bool::weighted(0.2))
                .prop_map(|(i, key, removed)| Op::Picture(i, key, removed)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        #[test]
        fn any_interleaving_converges_and_admits_nothing_invalid(
            n in 3..=5usize,
            spanning in proptest::collection::vec(0..5usize, 4),
            extra in proptest::collection::vec((0..5usize, 0..5usize), 0..4),
            ops in proptest::collection::vec(op(), 1..120),
        ) {
            let mut world = World::new(n, &extra, &spanning);
            for op in &ops {
                world.apply(op);
            }
            world.heal();
            world.assert_converged();
            world.assert_same_picture();
        }
    }
}

/// `--history from-now`: the roster draws, per origin, the line up to which
/// an org gets envelopes withheld; a sender withholds them, cuts a run where
/// it cannot, a receiver keeps them withheld, and refuses a withheld copy
/// of what it may read.
#[test]
fn bodies_up_to_the_line_a_from_now_share_drew_are_withheld_and_only_they() {
    let mut w = world();
    let (c, b) = (org("c.example"), org("b.example"));
    let line = [
        OriginSeq {
            origin: "b.example".into(),
            seq: 2,
        },
        OriginSeq {
            origin: "c.example".into(),
            seq: 9,
        },
    ];
    // c is removed, then shared with again from now on.
    let removed = changed_roster(
        &w.record.participants,
        &c,
        RosterEdit::Remove {
            home_seq: 2,
            last_seq: 0,
        },
    );
    w.record.participants = changed_roster(
        &removed,
        &c,
        RosterEdit::Share {
            signing_key: w.c.public_key().as_ref(),
            withheld_through: &line,
        },
    );
    assert!(withheld_from(&w.record, &c, "b.example", 2));
    assert!(!withheld_from(&w.record, &c, "b.example", 3));
    assert!(
        !withheld_from(&w.record, &c, "a.example", 1),
        "no line drawn"
    );
    assert!(
        !withheld_from(&w.record, &c, "c.example", 1),
        "an org's own messages are never withheld from it"
    );
    assert!(!withheld_from(&w.record, &b, "b.example", 1));
    // Sharing with an org already in keeps its line.
    let again = changed_roster(
        &w.record.participants,
        &c,
        RosterEdit::Share {
            signing_key: w.c.public_key().as_ref(),
            withheld_through: &[],
        },
    );
    assert_eq!(again, w.record.participants);

    let (e1, h1) = envelope("b.example", 1, GENESIS_HASH, &w.b);
    let (e2, h2) = envelope("b.example", 2, h1, &w.b);
    let (e3, _) = envelope("b.example", 3, h2, &w.b);
    // The sender: withheld up to the line, whole after it.
    let mut run = vec![e1.clone(), e2.clone(), e3.clone()];
    assert!(!ready_for(&w.record, &c, &mut run, &HashSet::new()));
    assert_eq!(
        run.iter().map(|e| e.withheld).collect::<Vec<_>>(),
        [true, true, false]
    );
    assert!(run[0].body.is_empty() && run[2].body == e3.body);
    // ... and to an org without a line, as held; a run held withheld here is
    // cut where the peer may read it whole.
    let mut whole = vec![e1.clone(), e2.clone()];
    assert!(!ready_for(&w.record, &b, &mut whole, &HashSet::new()));
    assert!(whole.iter().all(|e| !e.withheld));
    let mut held_withheld = run.clone();
    let a = org("a.example");
    assert!(ready_for(
        &w.record,
        &a,
        &mut held_withheld,
        &HashSet::new()
    ));
    assert!(held_withheld.is_empty());
    // A body signed as is (before the digest form) cannot be withheld: cut.
    let mut legacy = e1.clone();
    legacy.body_sha256.clear();
    let mut legacy_run = vec![legacy];
    assert!(ready_for(&w.record, &c, &mut legacy_run, &HashSet::new()));
    assert!(legacy_run.is_empty());

    // The receiver keeps it withheld, even if a sender sent it whole.
    let kept = as_kept(&w.record, &c, e1.clone());
    assert!(kept.withheld && kept.body.is_empty());
    assert_eq!(as_kept(&w.record, &b, e1.clone()), e1);
    let pins = w.pins();
    let home = org("a.example");
    assert_eq!(
        check(&run[0], &ctx(&w, &c, &home, (0, GENESIS_HASH), &pins)),
        Verdict::Accept,
        "a withheld copy verifies"
    );
    let stranger_copy = run[0].clone();
    assert_eq!(
        check(
            &stranger_copy,
            &ctx(&w, &b, &home, (0, GENESIS_HASH), &pins)
        ),
        Verdict::Reject(Reject::WithheldNotForUs),
        "b may read it, so a withheld copy is not what it takes"
    );
    let mut smuggled = run[0].clone();
    smuggled.body = b"not what was signed".to_vec();
    assert!(matches!(
        check(&smuggled, &ctx(&w, &c, &home, (0, GENESIS_HASH), &pins)),
        Verdict::Reject(Reject::Malformed(_))
    ));
}

#[test]
fn only_a_flash_or_urgent_message_signed_by_its_origin_goes_ahead_of_its_run() {
    let w = world();
    let (local, sender) = (org("c.example"), org("b.example"));
    let pins = w.pins();
    let urgent = |seq: u64, priority: i32, key: &Ed25519KeyPair| {
        let (mut env, _) = envelope("b.example", seq, [9; 32], key);
        env.priority = priority;
        sign_and_hash(&mut env, key);
        env
    };
    // Far past the head: no chain to check, the signature stands alone.
    let head = (3, [1; 32]);
    let flash = urgent(40, Priority::Flash as i32, &w.b);
    assert_eq!(
        check_ahead(&flash, &ctx(&w, &local, &sender, head, &pins)),
        Ok(Ahead::Show)
    );
    assert_eq!(
        check_ahead(
            &urgent(41, Priority::Urgent as i32, &w.b),
            &ctx(&w, &local, &sender, head, &pins)
        ),
        Ok(Ahead::Show)
    );
    // Held already: nothing to show.
    assert_eq!(
        check_ahead(
            &urgent(2, Priority::Flash as i32, &w.b),
            &ctx(&w, &local, &sender, head, &pins)
        ),
        Ok(Ahead::Held)
    );
    // Routine traffic, an unsigned one, a forged one, one of a stranger.
    assert!(matches!(
        check_ahead(
            &urgent(40, Priority::Normal as i32, &w.b),
            &ctx(&w, &local, &sender, head, &pins)
        ),
        Err(Reject::Malformed(_))
    ));
    let mut unsigned = flash.clone();
    unsigned.signature.clear();
    assert_eq!(
        check_ahead(&unsigned, &ctx(&w, &local, &sender, head, &pins)),
        Err(Reject::BadSignature)
    );
    assert_eq!(
        check_ahead(
            &urgent(40, Priority::Flash as i32, &key()),
            &ctx(&w, &local, &sender, head, &pins)
        ),
        Err(Reject::BadSignature)
    );
    let mut stranger = flash.clone();
    stranger.origin = "x.example".into();
    sign_and_hash(&mut stranger, &w.b);
    assert!(matches!(
        check_ahead(&stranger, &ctx(&w, &local, &sender, head, &pins)),
        Err(Reject::OriginNotParticipant(_))
    ));
    // From an org not in the channel.
    let outsider = org("x.example");
    assert_eq!(
        check_ahead(&flash, &ctx(&w, &local, &outsider, head, &pins)),
        Err(Reject::NotSharedWithSender)
    );
    // A roster change never goes ahead.
    let mut control = flash.clone();
    control.kind = Kind::Control as i32;
    sign_and_hash(&mut control, &w.b);
    assert!(matches!(
        check_ahead(&control, &ctx(&w, &local, &sender, head, &pins)),
        Err(Reject::Malformed(_))
    ));
}

/// An incident's end is judged by each message's own timestamp: stamped
/// before `until`, taken; at or after it, refused, by every node alike. A
/// picture entry is taken only in the channel that carries an incident's
/// picture.
#[test]
fn a_message_stamped_after_the_incidents_end_is_refused_and_entries_need_an_incident() {
    let mut w = world();
    let (local, sender) = (org("c.example"), org("b.example"));
    let pins = w.pins();
    // These envelopes carry hlc = seq << 16: wall time seq ms.
    w.record.incident = Some(crate::proto::Incident {
        name: "crisis".into(),
        opened_unix_ms: 1,
        until_unix_ms: 2,
        ..Default::default()
    });
    let (e1, h1) = envelope("b.example", 1, GENESIS_HASH, &w.b);
    assert_eq!(
        check(&e1, &ctx(&w, &local, &sender, (0, GENESIS_HASH), &pins)),
        Verdict::Accept
    );
    let (e2, _) = envelope("b.example", 2, h1, &w.b);
    assert_eq!(
        check(&e2, &ctx(&w, &local, &sender, (1, h1), &pins)),
        Verdict::Reject(Reject::IncidentEnded)
    );
    let mut entry = envelope("b.example", 1, GENESIS_HASH, &w.b).0;
    entry.kind = Kind::Picture as i32;
    entry.body = crate::proto::PictureBody {
        key: "boat-1".into(),
        kind: "unit".into(),
        ..Default::default()
    }
    .encode_to_vec();
    entry.body_sha256 = crate::model::body_digest(&entry.body);
    sign_and_hash(&mut entry, &w.b);
    assert_eq!(
        check(&entry, &ctx(&w, &local, &sender, (0, GENESIS_HASH), &pins)),
        Verdict::Accept
    );
    // The home's roster may state an incident only under its channel's name.
    let mut misnamed = envelope("a.example", 1, GENESIS_HASH, &w.home).0;
    misnamed.kind = Kind::Control as i32;
    misnamed.author = String::new();
    misnamed.priority = 0;
    misnamed.body = snapshot_body(
        w.record.participants.clone(),
        Some(crate::proto::Incident {
            name: "another".into(),
            opened_unix_ms: 1,
            ..Default::default()
        }),
    );
    misnamed.body_sha256 = crate::model::body_digest(&misnamed.body);
    sign_and_hash(&mut misnamed, &w.home);
    let home = org("a.example");
    assert!(matches!(
        check(&misnamed, &ctx(&w, &local, &home, (0, GENESIS_HASH), &pins)),
        Verdict::Reject(Reject::IncidentChanged(_))
    ));
    // Only in the incident's first channel, which carries the picture.
    w.record.incident = Some(crate::proto::Incident {
        name: "crisis".into(),
        opened_unix_ms: 1,
        channels: vec!["crisis-ops".into(), w.record.name.clone()],
        ..Default::default()
    });
    assert!(matches!(
        check(&entry, &ctx(&w, &local, &sender, (0, GENESIS_HASH), &pins)),
        Verdict::Reject(Reject::Malformed(_))
    ));
    w.record.incident = None;
    assert!(matches!(
        check(&entry, &ctx(&w, &local, &sender, (0, GENESIS_HASH), &pins)),
        Verdict::Reject(Reject::Malformed(_))
    ));
}

/// A post that carries a CAP alert names one of its own files as the
/// alert's XML, in short printable fields.
#[test]
fn a_cap_alert_reference_must_name_one_of_the_posts_files() {
    let file = FileRef {
        sha256: vec![7; 32],
        size: 10,
        name: "a.cap.xml".into(),
        media_type: "application/xml".into(),
    };
    let cap = crate::proto::CapAlert {
        identifier: "KSTO1055887203".into(),
        sender: "KSTO@NWS.NOAA.GOV".into(),
        sha256: vec![7; 32],
        ..Default::default()
    };
    let post = |files: Vec<FileRef>, cap: crate::proto::CapAlert| {
        let body = PostBody {
            text: "CAP Alert".into(),
            files,
            cap: Some(cap),
            ..Default::default()
        };
        let mut env = envelope("b.example", 1, GENESIS_HASH, &world().b).0;
        env.kind = Kind::Post as i32;
        env.body = body.encode_to_vec();
        env.body_sha256 = crate::model::body_digest(&env.body);
        env
    };
    assert!(check_post_body(&post(vec![file.clone()], cap.clone())).is_ok());
    assert!(
        check_post_body(&post(Vec::new(), cap.clone())).is_err(),
        "no such file"
    );
    let forged = crate::proto::CapAlert {
        identifier: "x\u{1b}[2J".into(),
        ..cap
    };
    assert!(
        check_post_body(&post(vec![file], forged)).is_err(),
        "control characters"
    );
}
