//! Micro-benchmarks of the hot pure functions: envelope encoding, signing
//! and verification, the receive-side check, key encoding, and a history
//! page read from a real store. `cargo bench`; compare runs by ratio.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use samband::model::{
    ChainHead, ChannelId, Cursor, GENESIS_HASH, Hlc, OrgId, body_digest, canonical_bytes,
    chain_hash, sign_and_hash, verify,
};
use samband::proto::{ChannelRecord, ChannelState, Envelope, Kind, Participant};
use samband::rules::{Context, check};
use samband::store::{Page, Store, StoreBatch, keys};

fn key() -> Ed25519KeyPair {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

fn envelope(seq: u64) -> Envelope {
    Envelope {
        channel: "police.example/flood-2026".into(),
        origin: "rescue.example".into(),
        origin_seq: seq,
        author: "duty-officer".into(),
        hlc: (1_800_000_000_000u64 << 16) + seq,
        kind: Kind::Text as i32,
        priority: 1,
        body: vec![b'x'; 1024],
        prev: GENESIS_HASH.to_vec(),
        signature: vec![],
        body_sha256: body_digest(&[b'x'; 1024]),
        withheld: false,
    }
}

fn envelopes(c: &mut Criterion) {
    let k = key();
    let public = k.public_key().as_ref().to_vec();
    let mut signed = envelope(1);
    sign_and_hash(&mut signed, &k);
    c.bench_function("envelope/canonical_bytes 1KiB", |b| {
        b.iter(|| canonical_bytes(black_box(&signed)))
    });
    c.bench_function("envelope/chain_hash 1KiB", |b| {
        b.iter(|| chain_hash(black_box(&signed)))
    });
    c.bench_function("envelope/sign_and_hash 1KiB", |b| {
        b.iter(|| {
            let mut e = envelope(1);
            sign_and_hash(&mut e, &k)
        })
    });
    c.bench_function("envelope/verify 1KiB", |b| {
        b.iter(|| verify(black_box(&signed), &public))
    });

    let record = ChannelRecord {
        id: "police.example/flood-2026".into(),
        home: "police.example".into(),
        name: "flood-2026".into(),
        created_unix_ms: 0,
        state: ChannelState::Active as i32,
        participants: vec![Participant {
            org: "rescue.example".into(),
            signing_key: public.clone(),
            active: true,
            removed_at: 0,
            last_seq: 0,
            withheld_through: vec![],
        }],
        roster_seq: 1,
        incident: None,
    };
    let (local, sender) = (
        OrgId::parse("police.example").unwrap(),
        OrgId::parse("rescue.example").unwrap(),
    );
    let channel = ChannelId::parse(&record.id).unwrap();
    // Police pinned rescue's key when it imported rescue's trust bundle.
    let pinned = samband::rules::Pinned::new([("rescue.example", public.as_slice())]);
    let ctx = Context {
        local: &local,
        sender: &sender,
        channel: &channel,
        record: &record,
        head: ChainHead::GENESIS,
        pinned: &pinned,
        held: None,
        max_envelope_bytes: 70_000,
        max_hlc: u64::MAX,
        retractions: &[],
    };
    c.bench_function("federation/check accept 1KiB", |b| {
        b.iter(|| check(black_box(&signed), &ctx))
    });
}

fn key_encoding(c: &mut Criterion) {
    let channel = ChannelId::parse("police.example/flood-2026").unwrap();
    let cursor = Cursor {
        hlc: Hlc(123_456_789),
        origin: OrgId::parse("rescue.example").unwrap(),
        seq: 42,
    };
    let origin = OrgId::parse("rescue.example").unwrap();
    let prefix_len = keys::channel_messages_prefix(&channel).len();
    let key = keys::message_key(&channel, &origin, 42);
    c.bench_function("keys/message_key", |b| {
        b.iter(|| keys::message_key(black_box(&channel), black_box(&origin), 42))
    });
    c.bench_function("keys/origin_and_seq_of_message", |b| {
        b.iter(|| {
            (
                keys::origin_of_message(prefix_len, black_box(&key)),
                keys::seq_of_message(black_box(&key)),
            )
        })
    });
    c.bench_function("cursor/encode+decode", |b| {
        b.iter(|| Cursor::decode(&black_box(&cursor).encode()))
    });
}

fn history_scan(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let org = OrgId::parse("police.example").unwrap();
    let store = Store::create(tmp.path(), &org, 64 << 20).unwrap();
    let channel = ChannelId::parse("police.example/flood-2026").unwrap();
    let n = 20_000u64;
    let mut batch = StoreBatch::default();
    for seq in 1..=n {
        let mut e = envelope(seq);
        e.origin = org.to_string();
        batch.put_envelope(
            &channel,
            &Cursor {
                hlc: Hlc(e.hlc),
                origin: org.clone(),
                seq,
            },
            &e,
        );
    }
    store.apply(batch).unwrap();
    store.flush().unwrap();
    let (mid, _) = store
        .history(&channel, &Page::Beginning, (n / 2) as usize, usize::MAX)
        .unwrap();
    let mid = mid.last().unwrap().cursor.clone();
    c.bench_function("store/history newest 50 of 20k", |b| {
        b.iter(|| {
            store
                .history(&channel, &Page::Newest, 50, usize::MAX)
                .unwrap()
        })
    });
    c.bench_function("store/history 50 before the middle of 20k", |b| {
        b.iter(|| {
            store
                .history(&channel, &Page::Before(mid.clone()), 50, usize::MAX)
                .unwrap()
        })
    });
}

criterion_group!(benches, envelopes, key_encoding, history_scan);
criterion_main!(benches);
