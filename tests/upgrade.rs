//! A data dir written by an earlier samband opens in this one, with every
//! message where it was.
//!
//! `fixtures/store-schema1.tar.gz` is the `data/` dir of a `police.example`
//! node written by samband with store schema version 1 (two keys per
//! message): a channel `crisis` shared with `rescue.example`, where the two
//! orgs posted "police N" and "rescue N" in turn (N = 1..12), and an internal
//! channel `internal` with "internal 1" .. "internal 12".
//! `fixtures/store-schema2.tar.gz` is the same data dir after a samband
//! with store schema version 2 (one key per message) opened it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use samband::model::{ChannelId, OrgId};
use samband::store::{Page, SCHEMA_VERSION, Store};

const SCHEMA_1: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/store-schema1.tar.gz"
);
const SCHEMA_2: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/store-schema2.tar.gz"
);

fn unpack(fixture: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("tar")
        .args(["xzf", fixture, "-C"])
        .arg(tmp.path())
        .status()
        .expect("run tar");
    assert!(status.success(), "unpack {fixture}");
    tmp
}

/// Every message of `channel`, paged through in pages of 4 from the newest
/// back and from the oldest on: both must equal one page of all of it.
fn page_both_ways(store: &Store, channel: &ChannelId) -> Vec<samband::store::Stored> {
    let all = store
        .history(channel, &Page::Beginning, 1000, usize::MAX)
        .unwrap()
        .0;
    let mut backward = Vec::new();
    let (mut page, mut more) = store
        .history(channel, &Page::Newest, 4, usize::MAX)
        .unwrap();
    loop {
        let first = page.first().map(|m| m.cursor.clone());
        backward.splice(0..0, page);
        let Some(first) = first.filter(|_| more) else {
            break;
        };
        (page, more) = store
            .history(channel, &Page::Before(first), 4, usize::MAX)
            .unwrap();
    }
    let mut forward = Vec::new();
    let (mut page, mut more) = store
        .history(channel, &Page::Beginning, 4, usize::MAX)
        .unwrap();
    loop {
        let last = page.last().map(|m| m.cursor.clone());
        forward.extend(page);
        let Some(last) = last.filter(|_| more) else {
            break;
        };
        (page, more) = store
            .history(channel, &Page::After(last), 4, usize::MAX)
            .unwrap();
    }
    let cursors =
        |v: &[samband::store::Stored]| v.iter().map(|m| m.cursor.clone()).collect::<Vec<_>>();
    assert_eq!(cursors(&backward), cursors(&all), "paging back");
    assert_eq!(cursors(&forward), cursors(&all), "paging forward");
    all
}

/// (origin, seq, text) of every message of `channel`, in history order.
fn history(store: &Store, channel: &str) -> Vec<(String, u64, String)> {
    let channel = ChannelId::parse(channel).unwrap();
    let (page, more) = store
        .history(&channel, &Page::Beginning, 1000, usize::MAX)
        .unwrap();
    assert!(!more);
    page.into_iter()
        .map(|m| {
            let text = String::from_utf8_lossy(&m.envelope.body).into_owned();
            (m.cursor.origin.to_string(), m.cursor.seq, text)
        })
        .collect()
}

#[test]
fn a_schema_1_store_is_upgraded_in_place_and_keeps_every_message() {
    upgraded_in_place_with_every_message(SCHEMA_1);
}

#[test]
fn a_schema_2_store_is_upgraded_in_place_and_keeps_every_message() {
    upgraded_in_place_with_every_message(SCHEMA_2);
}

fn upgraded_in_place_with_every_message(fixture: &str) {
    assert_eq!(
        SCHEMA_VERSION, 3,
        "these fixtures test the upgrades from 1 and from 2 to 3"
    );
    let tmp = unpack(fixture);
    let data = tmp.path().join("data");
    let police = OrgId::parse("police.example").unwrap();
    for open in ["upgrade", "reopen"] {
        let store = Store::open(&data, &police, 1 << 20).unwrap();
        let crisis = history(&store, "police.example/crisis");
        assert_eq!(crisis.len(), 25, "{open}: {crisis:?}");
        // The roster change that shared it comes first (its body is not text).
        assert_eq!(crisis[0].0, "police.example");
        assert_eq!(crisis[0].1, 1);
        let mut expected = Vec::new();
        for n in 1..=12u64 {
            expected.push(("police.example".to_string(), n + 1, format!("police {n}")));
            expected.push(("rescue.example".to_string(), n, format!("rescue {n}")));
        }
        assert_eq!(crisis[1..], expected, "{open}");
        let internal = history(&store, "police.example/internal");
        let expected: Vec<_> = (1..=12u64)
            .map(|n| ("police.example".to_string(), n, format!("internal {n}")))
            .collect();
        assert_eq!(internal, expected, "{open}");
        // Chains continue where they ended.
        let crisis_id = ChannelId::parse("police.example/crisis").unwrap();
        let rescue = OrgId::parse("rescue.example").unwrap();
        assert_eq!(
            store.chain_head(&crisis_id, &police).unwrap().unwrap().seq,
            13
        );
        assert_eq!(
            store.chain_head(&crisis_id, &rescue).unwrap().unwrap().seq,
            12
        );
        assert_eq!(
            store
                .envelopes_from(&crisis_id, &rescue, 5, 100)
                .unwrap()
                .len(),
            8
        );
        assert_eq!(
            store.peers().unwrap().len(),
            1,
            "{open}: the partner is kept"
        );
        // Paging through the upgraded history, both ways, in pages of 4.
        assert_eq!(page_both_ways(&store, &crisis_id).len(), 25, "{open}");
        drop(store);
    }

    // What this version writes (runs of several messages under one key)
    // reads along with what the older one wrote, both ways and by seq.
    let store = Store::open(&data, &police, 1 << 20).unwrap();
    let crisis = ChannelId::parse("police.example/crisis").unwrap();
    let last = store
        .history(&crisis, &Page::Newest, 1, usize::MAX)
        .unwrap()
        .0;
    let mut hlc = last[0].cursor.hlc.0;
    let mut batch = samband::store::StoreBatch::default();
    for seq in 14..=40u64 {
        hlc += 1;
        let envelope = samband::proto::Envelope {
            channel: crisis.to_string(),
            origin: police.to_string(),
            origin_seq: seq,
            hlc,
            body: format!("police {} {}", seq - 1, "x".repeat(1000)).into_bytes(),
            ..Default::default()
        };
        let cursor = samband::model::Cursor {
            hlc: samband::model::Hlc(hlc),
            origin: police.clone(),
            seq,
        };
        batch.put_envelope(&crisis, &cursor, &envelope);
    }
    store.apply(batch).unwrap();
    store.flush().unwrap();
    let all = page_both_ways(&store, &crisis);
    assert_eq!(all.len(), 25 + 27);
    for seq in 1..=40u64 {
        let envelope = store.envelope(&crisis, &police, seq).unwrap().unwrap();
        assert_eq!(envelope.origin_seq, seq);
    }
    assert!(store.envelope(&crisis, &police, 41).unwrap().is_none());
    let from: Vec<u64> = store
        .envelopes_from(&crisis, &police, 12, 9)
        .unwrap()
        .iter()
        .map(|e| e.origin_seq)
        .collect();
    assert_eq!(from, (12..=20).collect::<Vec<_>>());
    assert_eq!(store.chain_head(&crisis, &police).unwrap().unwrap().seq, 40);
    assert_eq!(store.vector(&crisis).unwrap()[&police], 40);
}
