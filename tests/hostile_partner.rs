//! A legitimately pinned but hostile partner against a real `samband serve`
//! process, over the real Federation protocol: it cannot speak for this
//! node or its other partners, and nothing it sends costs the node more
//! than a bounded amount of memory or disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::hand_peer::{HandPeer, end_status, frame, invented_key, link_on, next_frame};
use common::{
    ServeProcess, all_history, audit_log, contains, create_channel, eventually, init_dir, node_dir,
    post, raw_store_bytes,
};
use ring::signature::KeyPair as _;
use samband::model::GENESIS_HASH;
use samband::proto::{self, link_frame::Frame};

fn participant(org: &str, key: &[u8]) -> proto::Participant {
    proto::Participant {
        org: org.into(),
        signing_key: key.to_vec(),
        active: true,
        removed_at: 0,
        last_seq: 0,
        withheld_through: vec![],
    }
}

/// The bundle of `org` (its PKI made in a fresh directory), and the
/// directory that keeps it alive.
fn bundle_of(org: &str) -> (tempfile::TempDir, samband::trust::TrustBundle) {
    let tmp = init_dir(org);
    let pki = samband::pki::OrgPki::at(&node_dir(&tmp));
    let id = samband::model::OrgId::parse(org).unwrap();
    let bundle = samband::federation::own_bundle(&id, &pki, "127.0.0.1:1").unwrap();
    (tmp, bundle)
}

/// The hostile partner is home of `mallory.example/ops` and offers it to
/// police with rosters that list police and rescue (which police pinned)
/// with keys it made up. Police refuses those rosters; a roster that keeps
/// their pinned keys is joined, and then no envelope in police's or
/// rescue's name is accepted unless it verifies against the pinned key.
/// An org police never pinned is shown as vouched for by the home.
#[tokio::test]
async fn a_partner_whose_roster_lies_cannot_speak_for_this_node_or_its_peers() {
    let tmp = init_dir("police.example");
    let dir = node_dir(&tmp);
    let police = ServeProcess::start(&dir).await;
    let mut admin = police.admin(&dir).await;
    let (_rescue_tmp, rescue) = bundle_of("rescue.example");
    admin
        .add_peer(proto::AddPeerRequest {
            bundle: rescue.to_text(),
            fingerprint: rescue.fingerprint(),
            endpoint: String::new(),
            accept: proto::AcceptPolicy::Auto as i32,
        })
        .await
        .unwrap();
    let mallory = HandPeer::trusted_by(&mut admin, "mallory.example").await;
    let police_text = admin
        .export_trust(proto::ExportTrustRequest {})
        .await
        .unwrap()
        .into_inner()
        .text;
    let police_key = samband::trust::TrustBundle::parse(&police_text)
        .unwrap()
        .signing_key;
    let (invented, x_key) = (invented_key(), invented_key());
    let invented_pub = invented.public_key().as_ref().to_vec();

    let (tx, mut responses) = mallory.dial(&dir, police.fed_addr).await;
    tx.send(frame(Frame::Hello(proto::VersionVectors::default())))
        .await
        .unwrap();
    assert!(matches!(next_frame(&mut responses).await, Frame::Hello(_)));
    let ops = "mallory.example/ops";
    let lies = [
        vec![
            participant("police.example", &invented_pub),
            participant("rescue.example", &invented_pub),
        ],
        vec![
            participant("police.example", &police_key),
            participant("rescue.example", &invented_pub),
        ],
    ];
    for roster in lies {
        let (offer, _) = mallory.roster(ops, 1, GENESIS_HASH, roster);
        tx.send(frame(Frame::Offer(offer))).await.unwrap();
    }
    let honest_about_pinned = vec![
        participant("police.example", &police_key),
        participant("x.example", x_key.public_key().as_ref()),
    ];
    let (roster, r1) = mallory.roster(ops, 1, GENESIS_HASH, honest_about_pinned.clone());
    tx.send(frame(Frame::Offer(roster.clone()))).await.unwrap();
    let mut operator = police.operator(&dir).await;
    eventually("police to join the honest offer", || async {
        common::channel_state(&operator, ops).await.map(drop)
    })
    .await;

    // Into the joined channel: the roster, then envelopes in the names of
    // police, rescue and x, and of Mallory itself.
    let forged = |origin: &str, body: &str| {
        mallory
            .envelope_with(
                &invented,
                ops,
                origin,
                1,
                GENESIS_HASH,
                body.into(),
                proto::Kind::Text,
            )
            .0
    };
    let (x_says, _) = mallory.envelope_with(
        &x_key,
        ops,
        "x.example",
        1,
        GENESIS_HASH,
        b"x reporting".to_vec(),
        proto::Kind::Text,
    );
    let (own, _) = mallory.envelope(
        ops,
        "mallory.example",
        2,
        r1,
        "mallory reporting",
        proto::Kind::Text,
    );
    // A roster change that swaps police's key for the invented one.
    let mut swapped = honest_about_pinned.clone();
    swapped[0].signing_key = invented_pub.clone();
    let (swap, _) = mallory.roster(ops, 2, r1, swapped);
    let batches = vec![
        vec![roster],
        vec![forged("police.example", "MARKER-FORGED stand down")],
        vec![forged("rescue.example", "MARKER-FORGED rescue withdraws")],
        vec![swap],
        vec![x_says],
        vec![own],
    ];
    for envelopes in batches {
        tx.send(frame(Frame::Envelopes(proto::EnvelopeBatch {
            envelopes,
            ..Default::default()
        })))
        .await
        .unwrap();
    }
    let history = eventually("x's and mallory's messages at police", || {
        let mut operator = operator.clone();
        async move {
            let h = all_history(&mut operator, ops).await;
            (h.iter().filter(|m| m.kind == "text").count() >= 2).then_some(h)
        }
    })
    .await;
    // Police's own post is its seq 1: nothing forged was chained before it.
    let posted = post(&mut operator, ops, "police reporting").await;
    assert_eq!(posted.origin_seq, 1);
    let history = {
        let mut h = all_history(&mut operator, ops).await;
        assert!(h.len() > history.len());
        h.retain(|m| m.kind == "text");
        h
    };
    let shown: Vec<(&str, &str, i32)> = history
        .iter()
        .map(|m| (m.origin.as_str(), m.text.as_str(), m.origin_key))
        .collect();
    assert_eq!(
        shown,
        [
            (
                "x.example",
                "x reporting",
                proto::OriginKey::VouchedByHome as i32
            ),
            (
                "mallory.example",
                "mallory reporting",
                proto::OriginKey::Pinned as i32
            ),
            (
                "police.example",
                "police reporting",
                proto::OriginKey::Own as i32
            ),
        ]
    );
    let log = audit_log(&mut admin).await;
    let reasons: Vec<&str> = log
        .iter()
        .filter(|e| e.event == "federation.rejected" && e.details["peer"] == "mallory.example")
        .map(|e| e.details["reason"].as_str())
        .collect();
    for (what, needle, times) in [
        // An offer, and a roster change of the joined channel.
        (
            "a roster lying about police",
            "roster lists police.example",
            2,
        ),
        (
            "a roster lying about rescue",
            "roster lists rescue.example",
            1,
        ),
        (
            "an envelope in police's name",
            "signature does not verify",
            1,
        ),
        (
            "an envelope in rescue's name",
            "origin rescue.example is not a participant",
            1,
        ),
    ] {
        assert_eq!(
            reasons.iter().filter(|r| r.contains(needle)).count(),
            times,
            "{what}: {reasons:#?}"
        );
    }
    drop(tx);
    drop(police);
    let raw = raw_store_bytes(&dir);
    assert!(
        !contains(&raw, "MARKER-FORGED"),
        "a forgery reached the store"
    );
}

/// Bytes a process holds in memory now (VmRSS).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    total
}

/// The bounds `docs/ARCHITECTURE.md` states for a flood of every frame type.
const FLOOD_RSS_GROWTH: u64 = 64 << 20;
const FLOOD_DISK_GROWTH: u64 = 4 << 20;

/// A pinned partner floods every frame type, past its pace's burst: hellos
/// and progress frames naming 54,000 made-up channels, 120,000 made-up
/// origins of a shared channel, that channel named 10,000 times in one
/// frame, empty hellos back to back, envelopes for channels that do not
/// exist and from origins that are not participants, and one frame of
/// 4,000,000 empty envelopes. None of the
/// names reaches the disk, the node's memory and data directory grow by
/// less than the stated bounds, the oversized frame ends the link with
/// RESOURCE_EXHAUSTED, and the partner's next link is taken at once.
#[tokio::test]
async fn a_flood_of_every_frame_type_costs_a_bounded_amount() {
    let tmp = init_dir("police.example");
    let dir = node_dir(&tmp);
    let police = ServeProcess::start(&dir).await;
    let pid = police.child.id().unwrap();
    let mut admin = police.admin(&dir).await;
    let mallory = HandPeer::trusted_by(&mut admin, "mallory.example").await;
    let mut operator = police.operator(&dir).await;
    let crisis = create_channel(&mut operator, "crisis").await;
    admin
        .share_channel(proto::ShareChannelRequest {
            channel: "crisis".into(),
            orgs: vec!["mallory.example".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    post(&mut operator, &crisis, "before the flood").await;
    // Idle, with one link up and down once, so that its buffers count as idle.
    let (tx, mut responses) = mallory.dial(&dir, police.fed_addr).await;
    tx.send(frame(Frame::Hello(proto::VersionVectors::default())))
        .await
        .unwrap();
    next_frame(&mut responses).await;
    let (idle_rss, idle_disk) = (rss_bytes(pid), dir_bytes(&samband::layout::data_dir(&dir)));

    let made_up = |i: usize| format!("police.example/made-up-{i:06}-{}", "x".repeat(40));
    let vectors = |from: usize| proto::VersionVectors {
        channels: (from..from + 9_000)
            .map(|i| proto::ChannelVector {
                channel: made_up(i),
                entries: vec![proto::VectorEntry {
                    origin: "police.example".into(),
                    seq: 1,
                }],
            })
            .collect(),
    };
    for round in 0..3 {
        tx.send(frame(Frame::Hello(vectors(round * 9_000))))
            .await
            .unwrap();
        tx.send(frame(Frame::Progress(vectors(45_000 + round * 9_000))))
            .await
            .unwrap();
    }
    for round in 0..20 {
        let envelopes = (0..1_000)
            .map(|i| {
                mallory
                    .envelope(
                        &made_up(200_000 + round * 1_000 + i),
                        "mallory.example",
                        1,
                        GENESIS_HASH,
                        &"b".repeat(4_000),
                        proto::Kind::Text,
                    )
                    .0
            })
            .collect();
        tx.send(frame(Frame::Envelopes(proto::EnvelopeBatch {
            envelopes,
            ..Default::default()
        })))
        .await
        .unwrap();
    }
    // Of the shared channel: made-up origins, the channel named 10,000
    // times in one frame, empty hellos back to back, and envelopes from
    // made-up origins.
    let crisis_vector = |entries: Vec<proto::VectorEntry>| proto::ChannelVector {
        channel: crisis.clone(),
        entries,
    };
    for round in 0..2 {
        let entries = (0..60_000)
            .map(|i| proto::VectorEntry {
                origin: format!("made-up-origin-{round}-{i}.example"),
                seq: 1,
            })
            .collect();
        tx.send(frame(Frame::Progress(proto::VersionVectors {
            channels: vec![crisis_vector(entries)],
        })))
        .await
        .unwrap();
    }
    tx.send(frame(Frame::Progress(proto::VersionVectors {
        channels: vec![crisis_vector(vec![]); 10_000],
    })))
    .await
    .unwrap();
    for _ in 0..50 {
        tx.send(frame(Frame::Hello(proto::VersionVectors::default())))
            .await
            .unwrap();
    }
    for round in 0..5 {
        let envelopes = (0..1_000)
            .map(|i| {
                let origin = format!("made-up-origin-{round}-{i}.example");
                mallory
                    .envelope(&crisis, &origin, 1, GENESIS_HASH, "x", proto::Kind::Text)
                    .0
            })
            .collect();
        tx.send(frame(Frame::Envelopes(proto::EnvelopeBatch {
            envelopes,
            ..Default::default()
        })))
        .await
        .unwrap();
    }
    // The link is still up and answers: the floods above were paced, not fatal.
    let marker = mallory
        .envelope(
            &crisis,
            "mallory.example",
            1,
            GENESIS_HASH,
            "after the flood",
            proto::Kind::Text,
        )
        .0;
    tx.send(frame(Frame::Envelopes(proto::EnvelopeBatch {
        envelopes: vec![marker],
        ..Default::default()
    })))
    .await
    .unwrap();
    while !matches!(next_frame(&mut responses).await, Frame::Progress(_)) {}
    drop(tx);
    drop(responses);

    // 4,000,000 empty envelopes in one 8 MB frame.
    // (The node notices the dropped link above in its own time.)
    let (raw_tx, mut raw_responses) = eventually("the previous link to be released", || async {
        mallory.try_dial_raw(&dir, police.fed_addr).await.ok()
    })
    .await;
    // EnvelopeBatch.envelopes is field 1: tag 0x0a, each of length 0.
    let empties = [0x0au8, 0x00].repeat(4_000_000);
    let mut huge = vec![0x12u8];
    prost::encoding::encode_varint(empties.len() as u64, &mut huge);
    huge.extend_from_slice(&empties);
    raw_tx.send(huge).await.unwrap();
    let status = end_status(&mut raw_responses).await;
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    // Released at once: the next link is not refused as a second one.
    let (tx, mut responses) = mallory.dial(&dir, police.fed_addr).await;
    tx.send(frame(Frame::Hello(proto::VersionVectors::default())))
        .await
        .unwrap();
    assert!(matches!(next_frame(&mut responses).await, Frame::Hello(_)));

    let (rss, disk) = (rss_bytes(pid), dir_bytes(&samband::layout::data_dir(&dir)));
    eprintln!(
        "flood: rss {} -> {} MiB, data dir {} -> {} KiB",
        idle_rss >> 20,
        rss >> 20,
        idle_disk >> 10,
        disk >> 10
    );
    assert!(
        rss < idle_rss + FLOOD_RSS_GROWTH,
        "memory grew from {idle_rss} to {rss} bytes"
    );
    assert!(
        disk < idle_disk + FLOOD_DISK_GROWTH,
        "the data directory grew from {idle_disk} to {disk} bytes"
    );
    drop(tx);
    drop(police);
    // Names from hellos and progress (made-up-0…) are never stored; those
    // of refused envelopes (made-up-2…) appear only in the capped audit log.
    let raw = raw_store_bytes(&dir);
    assert!(
        !contains(&raw, "made-up-0"),
        "a made-up channel name of a hello or progress frame reached the disk"
    );
}

/// A connection is identified once, at its TLS handshake; whether that peer
/// is still configured is asked at every link call, so a connection that
/// outlived `peer remove` cannot open a link on it.
#[tokio::test]
async fn a_connection_that_outlived_its_peers_removal_cannot_open_a_link() {
    let node = common::TestNode::start("police.example").await;
    let mut admin = node.admin().await;
    let hand = HandPeer::trusted_by(&mut admin, "rescue.example").await;
    let connection = hand.channel(&node.dir(), node.fed_addr).await;
    let (_tx, first) = link_on(connection.clone()).await;
    let mut first = first.expect("a configured peer opens a link").into_inner();
    next_frame(&mut first).await; // the node's hello: the link is up

    admin
        .remove_peer(proto::RemovePeerRequest {
            org: "rescue.example".into(),
            unshare: false,
        })
        .await
        .expect("remove the peer");
    // The removal ends the link (with OK: nothing was wrong with it).
    let ended = tokio::time::timeout(common::PATIENCE, async {
        while let Ok(Some(_)) = first.message().await {}
    });
    ended.await.expect("the removal ends the link");

    let (_tx, second) = link_on(connection).await;
    let refused = second.expect_err("no link for a removed peer");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("no longer a configured peer"),
        "{refused:?}"
    );
}

/// The same for a connection that outlived the replacement of the peer's
/// CA (the operator imported a new bundle): the peer as pinned now decides
/// at every link call, not the CA that verified the connection.
#[tokio::test]
async fn a_connection_verified_by_a_replaced_ca_cannot_open_a_link() {
    let node = common::TestNode::start("police.example").await;
    let mut admin = node.admin().await;
    let old = HandPeer::trusted_by(&mut admin, "rescue.example").await;
    let connection = old.channel(&node.dir(), node.fed_addr).await;
    let (_tx, first) = link_on(connection.clone()).await;
    let mut first = first.expect("a configured peer opens a link").into_inner();
    next_frame(&mut first).await;

    // A new bundle of the same org, with another CA, replaces the old one.
    let _new = HandPeer::trusted_by(&mut admin, "rescue.example").await;
    let ended = tokio::time::timeout(common::PATIENCE, async {
        while let Ok(Some(_)) = first.message().await {}
    });
    ended.await.expect("the replacement ends the old link");

    let (_tx, second) = link_on(connection).await;
    let refused = second.expect_err("no link on the old CA's connection");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    node.stop().await;
}

/// A partner gets a file only through a message of a channel shared with it
/// that references it: asking by hash through an internal channel's
/// message, through a message that does not reference it, or for a hash no
/// message it may see references, gets the same NOT_FOUND, even when the
/// same bytes are attached in the shared channel too. The same holds on
/// either way a partner asks: FetchFile on a call of its own, or requests on
/// the ServeFiles call this node opens to a partner that cannot dial it.
#[tokio::test]
async fn a_partner_gets_a_file_only_through_a_message_shared_with_it() {
    only_through_a_shared_message(false).await;
}

#[tokio::test]
async fn a_partner_this_node_serves_over_its_own_call_gets_a_file_only_through_a_shared_message() {
    only_through_a_shared_message(true).await;
}

/// How a test partner asks for files.
enum Asker {
    Fetch(proto::federation_client::FederationClient<tonic::transport::Channel>),
    Served(common::hand_peer::ServedCall),
}

impl Asker {
    async fn ask(&mut self, req: proto::FileRequest) -> Result<Vec<u8>, tonic::Status> {
        match self {
            Asker::Fetch(client) => {
                let mut stream = client.fetch_file(req).await?.into_inner();
                let mut out = Vec::new();
                while let Some(chunk) = stream.message().await? {
                    out.extend(chunk.data);
                }
                Ok(out)
            }
            Asker::Served(call) => call.ask(req).await,
        }
    }
}

async fn only_through_a_shared_message(served: bool) {
    use common::files::{attach, bytes, post_files, sha, upload};
    let node = common::TestNode::start("police.example").await;
    let mut admin = node.admin().await;
    let (hand, mut server) = if served {
        let (hand, server) = HandPeer::serving(&mut admin, "rescue.example", &node.dir()).await;
        (hand, Some(server))
    } else {
        (
            HandPeer::trusted_by(&mut admin, "rescue.example").await,
            None,
        )
    };
    let mut op = node.operator().await;
    let crisis = create_channel(&mut op, "crisis").await;
    let secret = create_channel(&mut op, "secret").await;
    node.share("crisis", &["rescue.example"]).await;
    // Both in the internal channel; one of them also in the shared one.
    let (both, internal_only) = (bytes(70_000, 1), bytes(70_000, 2));
    upload(&mut op, &both).await.unwrap();
    upload(&mut op, &internal_only).await.unwrap();
    let in_secret = post_files(
        &mut op,
        &secret,
        "",
        vec![attach(&both, "a.jpg"), attach(&internal_only, "b.jpg")],
    )
    .await
    .unwrap();
    let in_crisis = post_files(&mut op, &crisis, "", vec![attach(&both, "a.jpg")])
        .await
        .unwrap();
    let mut asker = match server.as_mut() {
        Some(server) => Asker::Served(server.next_call().await),
        None => Asker::Fetch(proto::federation_client::FederationClient::new(
            hand.channel(&node.dir(), node.fed_addr).await,
        )),
    };
    let ask = |channel: &str, seq: u64, data: &[u8]| proto::FileRequest {
        channel: channel.into(),
        origin: "police.example".into(),
        seq,
        sha256: hex::decode(sha(data)).unwrap(),
        offset: 0,
    };
    // Through the shared message: the check below is not vacuous.
    let got = asker
        .ask(ask(&crisis, in_crisis.origin_seq, &both))
        .await
        .unwrap();
    assert!(got == both);
    let refusals = [
        ask(&secret, in_secret.origin_seq, &both),
        ask(&secret, in_secret.origin_seq, &internal_only),
        ask(&crisis, in_crisis.origin_seq, &internal_only),
        ask(&crisis, in_crisis.origin_seq + 7, &both),
        ask(&crisis, 1, &both),
    ];
    let mut words = std::collections::HashSet::new();
    for req in refusals {
        // (Only the length shows if it was served.)
        let err = asker.ask(req.clone()).await.map(|b| b.len()).unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound, "{req:?}: {err:?}");
        words.insert(err.message().to_owned());
    }
    assert_eq!(words.len(), 1, "every refusal reads the same: {words:?}");
    // Removed from the channel, the partner keeps what it has and fetches
    // nothing more through it.
    let unshare = proto::UnshareChannelRequest {
        channel: crisis.clone(),
        org: "rescue.example".into(),
    };
    admin.unshare_channel(unshare).await.unwrap();
    let err = asker
        .ask(ask(&crisis, in_crisis.origin_seq, &both))
        .await
        .map(|b| b.len())
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    node.stop().await;
}

/// A partner that names, in its own signed post, the hash of a file this
/// node holds for an internal channel gets nothing by asking for it through
/// that post: the bytes count for a message of an origin only when they
/// were posted here or came from a transfer for that origin's message.
#[tokio::test]
async fn a_partner_naming_a_hash_it_lacks_in_its_own_post_gets_nothing() {
    use common::files::{attach, bytes, post_files, upload};
    use prost::Message as _;
    let node = common::TestNode::start("police.example").await;
    let mut admin = node.admin().await;
    let mallory = HandPeer::trusted_by(&mut admin, "rescue.example").await;
    let police_key = common::signing_key(&mut admin).await;
    let mut op = node.operator().await;
    let secret = create_channel(&mut op, "secret").await;
    let plan = bytes(100_000, 7);
    upload(&mut op, &plan).await.unwrap();
    post_files(&mut op, &secret, "", vec![attach(&plan, "plan.pdf")])
        .await
        .unwrap();
    let hash = samband::model::FileHash::of(&plan);

    // Mallory's own channel, shared with police, and a post in it that
    // names the secret file's hash and size.
    let ops = "rescue.example/ops";
    let (tx, mut responses) = mallory.dial(&node.dir(), node.fed_addr).await;
    tx.send(frame(Frame::Hello(proto::VersionVectors::default())))
        .await
        .unwrap();
    assert!(matches!(next_frame(&mut responses).await, Frame::Hello(_)));
    let roster = vec![proto::Participant {
        org: "police.example".into(),
        signing_key: police_key,
        active: true,
        ..Default::default()
    }];
    let (offer, r1) = mallory.roster(ops, 1, GENESIS_HASH, roster);
    tx.send(frame(Frame::Offer(offer.clone()))).await.unwrap();
    eventually("police to join mallory's channel", || async {
        common::channel_state(&op, ops).await.map(drop)
    })
    .await;
    let body = proto::PostBody {
        text: "look".into(),
        files: vec![proto::FileRef {
            sha256: hash.0.to_vec(),
            size: plan.len() as u64,
            name: "plan.pdf".into(),
            media_type: "application/pdf".into(),
        }],
        ..Default::default()
    };
    let key = mallory.pki.message_key().unwrap();
    let (post, _) = mallory.envelope_with(
        &key,
        ops,
        "rescue.example",
        2,
        r1,
        body.encode_to_vec(),
        proto::Kind::Post,
    );
    tx.send(frame(Frame::Envelopes(proto::EnvelopeBatch {
        envelopes: vec![offer, post],
        ..Default::default()
    })))
    .await
    .unwrap();
    let answer = loop {
        match next_frame(&mut responses).await {
            Frame::Progress(p)
                if p.channels
                    .iter()
                    .any(|c| c.channel == ops && c.entries.iter().any(|e| e.seq >= 2)) =>
            {
                break None;
            }
            Frame::Refusals(r) => break Some(r),
            _ => {}
        }
    };
    assert!(answer.is_none(), "{answer:?}");
    let stored = eventually("police to store mallory's post", || async {
        let h = all_history(&mut op.clone(), ops).await;
        h.into_iter().find(|m| m.origin_seq == 2)
    })
    .await;
    assert!(!stored.attachments[0].held, "not held for mallory's post");

    let mut client = proto::federation_client::FederationClient::new(
        mallory.channel(&node.dir(), node.fed_addr).await,
    );
    let req = proto::FileRequest {
        channel: ops.into(),
        origin: "rescue.example".into(),
        seq: 2,
        sha256: hash.0.to_vec(),
        offset: 0,
    };
    let err = match client.fetch_file(req).await {
        Ok(stream) => {
            let mut stream = stream.into_inner();
            let mut got = 0;
            loop {
                match stream.message().await {
                    Ok(Some(chunk)) => got += chunk.data.len(),
                    Ok(None) => panic!("the secret file was served: {got} bytes"),
                    Err(e) => break e,
                }
            }
        }
        Err(e) => e,
    };
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    // A member reading mallory's post does not get it either.
    let download = op
        .download(proto::DownloadRequest {
            channel: ops.into(),
            cursor: stored.cursor.clone(),
            sha256: hash.to_hex(),
            offset: 0,
        })
        .await;
    assert!(download.is_err(), "served through mallory's post");

    // Mallory, which police cannot dial, serves "the file" on a call of its
    // own: other bytes than the signed hash are refused and audited, never
    // kept, and the call is dropped.
    let (pushes, rx) = tokio::sync::mpsc::channel(4);
    let mut requests = client
        .serve_files(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let asked = tokio::time::timeout(common::PATIENCE, requests.message())
        .await
        .expect("police to ask mallory for the file")
        .unwrap()
        .unwrap();
    assert_eq!((asked.sha256, asked.offset), (hash.0.to_vec(), 0));
    use proto::file_push::Push;
    let fake = bytes(plan.len(), 8);
    for push in [
        Push::Chunk(proto::FileChunk {
            offset: 0,
            data: fake.clone(),
            size: plan.len() as u64,
        }),
        Push::Done(true),
    ] {
        pushes
            .send(proto::FilePush { push: Some(push) })
            .await
            .unwrap();
    }
    let after = tokio::time::timeout(common::PATIENCE, requests.message())
        .await
        .expect("police to drop the call");
    assert!(!matches!(after, Ok(Some(_))), "{after:?}");
    let log = common::audit_log(&mut admin).await;
    assert!(
        log.iter().any(|e| e.event == "federation.file_rejected"
            && e.details.get("peer").map(String::as_str) == Some("rescue.example")),
        "{log:?}"
    );
    let fake_hash = samband::model::FileHash::of(&fake).to_hex();
    assert!(
        !common::raw_store_bytes(&node.dir())
            .windows(fake.len())
            .any(|w| w == fake)
    );
    assert!(
        !common::files::object_path(&node.dir(), &fake).exists(),
        "{fake_hash}"
    );
    node.stop().await;
}

/// A partner that opens file streams and reads none holds at most a few
/// of them (each costs the node up to 5 MiB): the next is refused with
/// RESOURCE_EXHAUSTED, and one closed frees its place.
#[tokio::test]
async fn a_partner_cannot_hold_more_than_a_few_file_streams_open() {
    use common::files::{MIB, attach, bytes, post_files, upload};
    let node = common::TestNode::start("police.example").await;
    let mut admin = node.admin().await;
    let hand = HandPeer::trusted_by(&mut admin, "rescue.example").await;
    let mut op = node.operator().await;
    let crisis = create_channel(&mut op, "crisis").await;
    node.share("crisis", &["rescue.example"]).await;
    let video = bytes(12 * MIB, 3);
    upload(&mut op, &video).await.unwrap();
    let posted = post_files(&mut op, &crisis, "", vec![attach(&video, "v.mp4")])
        .await
        .unwrap();
    let mut client = proto::federation_client::FederationClient::new(
        hand.channel(&node.dir(), node.fed_addr).await,
    );
    let req = proto::FileRequest {
        channel: crisis.clone(),
        origin: "police.example".into(),
        seq: posted.origin_seq,
        sha256: samband::model::FileHash::of(&video).0.to_vec(),
        offset: 0,
    };
    // Opened, never read.
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(client.fetch_file(req.clone()).await.unwrap().into_inner());
    }
    let err = match client.fetch_file(req.clone()).await {
        Ok(stream) => stream.into_inner().message().await.map(drop).unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    drop(open.pop());
    eventually("a closed stream to free its place", || async {
        let mut c = client.clone();
        c.fetch_file(req.clone()).await.ok().map(drop)
    })
    .await;
    node.stop().await;
}

/// A hostile home, `rescue.example`, that police's node trusts: linked to
/// it (hellos exchanged), with police's key for the rosters of its
/// channels.
struct HostileHome {
    mallory: HandPeer,
    tx: tokio::sync::mpsc::Sender<proto::LinkFrame>,
    responses: tonic::Streaming<proto::LinkFrame>,
    /// A roster sharing a channel with police.
    roster: Vec<proto::Participant>,
}

impl HostileHome {
    async fn link(node: &common::TestNode) -> Self {
        let mut admin = node.admin().await;
        let mallory = HandPeer::trusted_by(&mut admin, "rescue.example").await;
        let police_key = common::signing_key(&mut admin).await;
        let (tx, mut responses) = mallory.dial(&node.dir(), node.fed_addr).await;
        tx.send(frame(Frame::Hello(proto::VersionVectors::default())))
            .await
            .unwrap();
        assert!(matches!(next_frame(&mut responses).await, Frame::Hello(_)));
        let roster = vec![proto::Participant {
            org: "police.example".into(),
            signing_key: police_key,
            active: true,
            ..Default::default()
        }];
        Self {
            mallory,
            tx,
            responses,
            roster,
        }
    }
}

/// A partner cannot acknowledge in another org's name, nor slip in an
/// acknowledgement that names no message: both are rejected and audited,
/// and no acknowledgement shows; its message in the same batch is taken.
/// Nor can it retract another org's message, or pass off a copy without
/// its body with a retraction its origin did not sign; its own retraction
/// of its own message is taken.
#[tokio::test]
async fn forged_acknowledgements_and_retractions_are_rejected_and_audited() {
    use prost::Message as _;
    let node = common::TestNode::start("police.example").await;
    let HostileHome {
        mallory,
        tx,
        responses: _responses,
        roster,
    } = HostileHome::link(&node).await;
    let op = node.operator().await;
    let ops = "rescue.example/ops";
    let (offer, r1) = mallory.roster(ops, 1, GENESIS_HASH, roster);
    tx.send(frame(Frame::Offer(offer.clone()))).await.unwrap();
    eventually("police to join mallory's channel", || async {
        common::channel_state(&op, ops).await.map(drop)
    })
    .await;
    let key = mallory.pki.message_key().unwrap();
    let (order, o2) = mallory.envelope_with(
        &key,
        ops,
        "rescue.example",
        2,
        r1,
        b"report".to_vec(),
        proto::Kind::Text,
    );
    let ack_of = |origin: &str, seq: u64| {
        proto::Ack {
            message: Some(proto::MessageId {
                origin: origin.into(),
                seq,
            }),
        }
        .encode_to_vec()
    };
    // Police's "acknowledgement", signed with mallory's key.
    let (forged, _) = mallory.envelope_with(
        &key,
        ops,
        "police.example",
        1,
        GENESIS_HASH,
        ack_of("rescue.example", 2),
        proto::Kind::Ack,
    );
    let (empty, _) = mallory.envelope_with(
        &key,
        ops,
        "rescue.example",
        3,
        o2,
        proto::Ack { message: None }.encode_to_vec(),
        proto::Kind::Ack,
    );
    tx.send(frame(Frame::Envelopes(proto::EnvelopeBatch {
        envelopes: vec![offer, order, forged, empty],
        ..Default::default()
    })))
    .await
    .unwrap();
    let log = eventually("both rejections audited", || async {
        let log = common::audit_log(&mut node.admin().await).await;
        let rejected = log
            .iter()
            .filter(|e| e.event == "federation.rejected")
            .count();
        (rejected >= 2).then_some(log)
    })
    .await;
    let reasons: Vec<_> = log
        .iter()
        .filter(|e| e.event == "federation.rejected")
        .filter_map(|e| e.details.get("reason").cloned())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("names no message")),
        "{reasons:?}"
    );
    let history = all_history(&mut op.clone(), ops).await;
    assert!(
        history
            .iter()
            .any(|m| m.origin_seq == 2 && m.origin == "rescue.example")
    );
    assert!(!history.iter().any(|m| m.kind == "ack"), "{history:?}");

    // Retractions: of another org's message, and a copy without its body
    // "proven" by a retraction the origin did not sign, are rejected and
    // audited; a retraction of its own message is taken.
    let retraction_of = |origin: &str, seq: u64| {
        proto::Retraction {
            message: Some(proto::MessageId {
                origin: origin.into(),
                seq,
            }),
        }
        .encode_to_vec()
    };
    let (of_police, _) = mallory.envelope_with(
        &key,
        ops,
        "rescue.example",
        3,
        o2,
        retraction_of("police.example", 1),
        proto::Kind::Retract,
    );
    let (secret, s3) = mallory.envelope_with(
        &key,
        ops,
        "rescue.example",
        3,
        o2,
        b"a secret".to_vec(),
        proto::Kind::Text,
    );
    let (fake_proof, _) = mallory.envelope_with(
        &invented_key(),
        ops,
        "rescue.example",
        4,
        s3,
        retraction_of("rescue.example", 3),
        proto::Kind::Retract,
    );
    let unproven = samband::model::withheld_copy(&secret).unwrap();
    for (envelopes, retractions) in [
        (vec![of_police], vec![]),
        (vec![unproven], vec![fake_proof]),
    ] {
        tx.send(frame(Frame::Envelopes(proto::EnvelopeBatch {
            envelopes,
            retractions,
        })))
        .await
        .unwrap();
    }
    let reasons = eventually("both retractions' rejections audited", || async {
        let log = common::audit_log(&mut node.admin().await).await;
        let reasons: Vec<String> = log
            .iter()
            .filter(|e| e.event == "federation.rejected")
            .filter_map(|e| e.details.get("reason").cloned())
            .collect();
        (reasons.len() >= 4).then_some(reasons)
    })
    .await;
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("a retraction by rescue.example names police.example#1")),
        "{reasons:?}"
    );
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    let (own, _) = mallory.envelope_with(
        &key,
        ops,
        "rescue.example",
        3,
        o2,
        retraction_of("rescue.example", 2),
        proto::Kind::Retract,
    );
    tx.send(frame(Frame::Envelopes(proto::EnvelopeBatch {
        envelopes: vec![own],
        retractions: vec![],
    })))
    .await
    .unwrap();
    let retracted = eventually("its own retraction taken", || async {
        let history = all_history(&mut op.clone(), ops).await;
        history
            .into_iter()
            .find(|m| m.origin_seq == 2 && m.retracted.is_some())
    })
    .await;
    assert!(retracted.text.is_empty(), "{retracted:?}");
    node.stop().await;
}

/// A hostile home of an incident: its forged picture entry in another
/// org's name, its entry with a latitude off the globe, and its roster
/// that turns the exercise into the real thing are each rejected and
/// audited; its own valid entry is taken.
#[tokio::test]
async fn forged_picture_entries_and_an_incident_rewritten_are_rejected_and_audited() {
    use prost::Message as _;
    let node = common::TestNode::start("police.example").await;
    let HostileHome {
        mallory,
        tx,
        responses: _responses,
        roster,
    } = HostileHome::link(&node).await;
    let op = node.operator().await;
    let flood = "rescue.example/flood";
    let drill = proto::Incident {
        name: "flood".into(),
        exercise: true,
        opened_unix_ms: 1,
        ..Default::default()
    };
    let key = mallory.pki.message_key().unwrap();
    let snapshot =
        |incident: proto::Incident| samband::rules::snapshot_body(roster.clone(), Some(incident));
    let (offer, r1) = mallory.envelope_with(
        &key,
        flood,
        "rescue.example",
        1,
        GENESIS_HASH,
        snapshot(drill.clone()),
        proto::Kind::Control,
    );
    tx.send(frame(Frame::Offer(offer.clone()))).await.unwrap();
    eventually("police to join mallory's exercise", || async {
        common::channel_state(&op, flood).await.map(drop)
    })
    .await;
    let entry = |key: &str, geometry: &str| {
        proto::PictureBody {
            key: key.into(),
            kind: "unit".into(),
            geometry: geometry.into(),
            ..Default::default()
        }
        .encode_to_vec()
    };
    let (own, o2) = mallory.envelope_with(
        &key,
        flood,
        "rescue.example",
        2,
        r1,
        entry("boat-1", r#"{"type":"Point","coordinates":[18.07,59.33]}"#),
        proto::Kind::Picture,
    );
    // Police's "entry", signed with mallory's key.
    let (forged, _) = mallory.envelope_with(
        &key,
        flood,
        "police.example",
        1,
        GENESIS_HASH,
        entry("patrol-1", ""),
        proto::Kind::Picture,
    );
    let (off_globe, _) = mallory.envelope_with(
        &key,
        flood,
        "rescue.example",
        3,
        o2,
        entry("boat-2", r#"{"type":"Point","coordinates":[18.07,95.0]}"#),
        proto::Kind::Picture,
    );
    tx.send(frame(Frame::Envelopes(proto::EnvelopeBatch {
        envelopes: vec![offer, own, forged, off_globe],
        ..Default::default()
    })))
    .await
    .unwrap();
    // The exercise turned real, in a later snapshot.
    let real = proto::Incident {
        exercise: false,
        ..drill
    };
    let (flip, _) = mallory.envelope_with(
        &key,
        flood,
        "rescue.example",
        3,
        o2,
        snapshot(real),
        proto::Kind::Control,
    );
    tx.send(frame(Frame::Envelopes(proto::EnvelopeBatch {
        envelopes: vec![flip],
        ..Default::default()
    })))
    .await
    .unwrap();
    let reasons = eventually("the three rejections audited", || async {
        let log = common::audit_log(&mut node.admin().await).await;
        let reasons: Vec<String> = log
            .iter()
            .filter(|e| e.event == "federation.rejected")
            .filter_map(|e| e.details.get("reason").cloned())
            .collect();
        (reasons.len() >= 3).then_some(reasons)
    })
    .await;
    for why in ["signature", "latitude", "exercise turned real"] {
        assert!(
            reasons.iter().any(|r| r.contains(why)),
            "{why} not among {reasons:?}"
        );
    }
    let mut incidents = proto::incidents_client::IncidentsClient::new(
        common::operator_channel(&node.dir(), node.addr).await,
    );
    let picture = incidents
        .picture(proto::PictureRequest {
            incident: flood.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<_> = picture
        .entries
        .iter()
        .map(|e| (e.owner.as_str(), e.key.as_str()))
        .collect();
    assert_eq!(
        keys,
        [("rescue.example", "boat-1")],
        "only mallory's own valid entry"
    );
    assert!(picture.exercise, "still an exercise here");
    node.stop().await;
}
