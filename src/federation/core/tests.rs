use ring::signature::{Ed25519KeyPair, KeyPair as _};

use super::*;
use crate::model::{GENESIS_HASH, sign_and_hash};

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
    record: ChannelRecord,
    channel: ChannelId,
}

fn world() -> World {
    let (home, b) = (key(), key());
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
            },
            Participant {
                org: "c.example".into(),
                signing_key: key().public_key().as_ref().to_vec(),
                active: true,
                removed_at: 0,
            },
        ],
        roster_seq: 1,
    };
    World {
        home,
        b,
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
    };
    let hash = sign_and_hash(&mut env, key);
    (env, hash)
}

fn ctx<'a>(
    w: &'a World,
    local: &'a OrgId,
    sender: &'a OrgId,
    head: (u64, EnvelopeHash),
    home_key: &'a [u8],
) -> Context<'a> {
    Context {
        local,
        sender,
        channel: &w.channel,
        record: &w.record,
        head,
        home_key: Some(home_key),
        held: None,
        max_envelope_bytes: 4096,
    }
}

#[test]
fn accepts_a_chained_signed_envelope_and_each_rule_rejects() {
    let w = world();
    let (local, sender) = (org("c.example"), org("b.example"));
    let home_pub = w.home.public_key().as_ref().to_vec();
    let (e1, h1) = envelope("b.example", 1, GENESIS_HASH, &w.b);
    assert_eq!(
        check(&e1, &ctx(&w, &local, &sender, (0, GENESIS_HASH), &home_pub)),
        Verdict::Accept
    );
    let (e2, _) = envelope("b.example", 2, h1, &w.b);
    assert_eq!(
        check(&e2, &ctx(&w, &local, &sender, (1, h1), &home_pub)),
        Verdict::Accept
    );

    let reject = |env: &Envelope, c: Context<'_>| match check(env, &c) {
        Verdict::Reject(r) => r,
        other => panic!("expected a rejection, got {other:?}"),
    };
    // Gap.
    assert!(matches!(
        reject(&e2, ctx(&w, &local, &sender, (0, GENESIS_HASH), &home_pub)),
        Reject::Gap { .. }
    ));
    // Broken chain.
    let (bad_prev, _) = envelope("b.example", 2, [7; 32], &w.b);
    assert_eq!(
        reject(&bad_prev, ctx(&w, &local, &sender, (1, h1), &home_pub)),
        Reject::BrokenChain
    );
    // Bad signature: signed by someone else's key.
    let (forged, _) = envelope("b.example", 1, GENESIS_HASH, &key());
    assert_eq!(
        reject(
            &forged,
            ctx(&w, &local, &sender, (0, GENESIS_HASH), &home_pub)
        ),
        Reject::BadSignature
    );
    // Origin not a participant.
    let (stranger, _) = envelope("x.example", 1, GENESIS_HASH, &w.b);
    assert!(matches!(
        reject(
            &stranger,
            ctx(&w, &local, &sender, (0, GENESIS_HASH), &home_pub)
        ),
        Reject::OriginNotParticipant(_)
    ));
    // Sender not a participant.
    let outsider = org("x.example");
    assert_eq!(
        reject(
            &e1,
            ctx(&w, &local, &outsider, (0, GENESIS_HASH), &home_pub)
        ),
        Reject::NotSharedWithSender
    );
    // Control envelope not from the home.
    let mut ctl = e1.clone();
    ctl.kind = Kind::Control as i32;
    assert_eq!(
        reject(&ctl, ctx(&w, &local, &sender, (0, GENESIS_HASH), &home_pub)),
        Reject::ControlNotFromHome
    );
    // Oversized.
    let mut c = ctx(&w, &local, &sender, (0, GENESIS_HASH), &home_pub);
    c.max_envelope_bytes = 10;
    assert!(matches!(reject(&e1, c), Reject::Oversized { .. }));
    // Rewind: a different envelope at a held seq.
    let mut c = ctx(&w, &local, &sender, (1, h1), &home_pub);
    c.held = Some([9; 32]);
    assert_eq!(reject(&e1, c), Reject::Rewind { seq: 1 });
    // The same envelope again is a duplicate, not an error.
    let mut c = ctx(&w, &local, &sender, (1, h1), &home_pub);
    c.held = Some(h1);
    assert_eq!(check(&e1, &c), Verdict::Duplicate);
    // Internal channel.
    let mut internal = world();
    internal.record.participants.clear();
    assert_eq!(
        reject(
            &e1,
            ctx(&internal, &local, &sender, (0, GENESIS_HASH), &home_pub)
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
    w.record.participants = changed_roster(&w.record.participants, &c, None, 5);
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
    let home_pub = w.home.public_key().as_ref().to_vec();
    let record = check_offer(&offer, &c, &b, Some(&home_pub), 1).unwrap();
    assert_eq!(record.participants.len(), 2);
    assert_eq!(
        check_offer(&offer, &c, &b, None, 1).unwrap_err(),
        Reject::BadOffer("the channel's home is not a configured peer")
    );
    assert_eq!(
        check_offer(&offer, &c, &b, Some(w.b.public_key().as_ref()), 1).unwrap_err(),
        Reject::BadSignature
    );
    assert!(matches!(
        check_offer(&offer, &org("x.example"), &b, Some(&home_pub), 1),
        Err(Reject::BadOffer(_))
    ));

    // Removing c archives c's copy when the control envelope arrives there.
    let mut mine = record.clone();
    let mut removal = offer.clone();
    removal.origin_seq = 2;
    removal.body = control_body(changed_roster(&mine.participants, &c, None, 2));
    apply_control(&mut mine, &removal, &c).unwrap();
    assert_eq!(mine.state, ChannelState::Archived as i32);
    // An older snapshot does not undo a newer one.
    apply_control(&mut mine, &offer, &c).unwrap();
    assert_eq!(mine.state, ChannelState::Archived as i32);
    // The home's own record stays active.
    let mut home = record;
    apply_control(&mut home, &removal, &a).unwrap();
    assert_eq!(home.state, ChannelState::Active as i32);
}
