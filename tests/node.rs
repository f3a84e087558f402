//! One node end to end over real mTLS: posting, history, live streams,
//! durability across restarts, and precise answers to bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::{PATIENCE, TestNode, all_history, create_channel, post};
use samband::model::{ChannelId, GENESIS_HASH, Role, chain_hash, verify};
use samband::pki::OrgPki;
use samband::proto::{self, history_request::Position, subscribe_request::Start};
use samband::store::{Page, Store};
use tonic::Code;

#[tokio::test]
async fn post_history_subscribe_round_trip() {
    let node = TestNode::start("police.example").await;
    let mut op = node.operator().await;
    let ch = create_channel(&mut op, "ops").await;
    assert_eq!(ch, "police.example/ops");
    let mut alice = node.client("alice", Role::Member).await;
    for text in ["one", "two", "three"] {
        post(&mut alice, "ops", text).await;
    }
    let history = all_history(&mut alice, &ch).await;
    let texts: Vec<_> = history.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["one", "two", "three"]);
    assert!(
        history
            .iter()
            .all(|m| m.author == "alice" && m.origin == "police.example")
    );
    assert_eq!(
        history.iter().map(|m| m.origin_seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );

    let req = proto::SubscribeRequest {
        channel: ch.clone(),
        start: Some(Start::FromBeginning(true)),
    };
    let mut stream = alice.subscribe(req).await.unwrap().into_inner();
    for want in ["one", "two", "three"] {
        assert_eq!(stream.message().await.unwrap().unwrap().text, want);
    }
    post(&mut op, &ch, "four, live").await;
    let live = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (live.text.as_str(), live.author.as_str(), live.origin_seq),
        ("four, live", "operator", 4)
    );
    node.stop().await;
}

#[tokio::test]
async fn subscribe_resumes_after_a_cursor_without_gap_or_duplicate() {
    let node = TestNode::start("police.example").await;
    let mut op = node.operator().await;
    let ch = create_channel(&mut op, "ops").await;
    let mut cursors = Vec::new();
    for i in 1..=5 {
        cursors.push(post(&mut op, &ch, &format!("m{i}")).await.cursor);
    }
    // Resume after m2: replay m3..m5, then live messages, while posters keep posting.
    let req = proto::SubscribeRequest {
        channel: ch.clone(),
        start: Some(Start::After(cursors[1].clone())),
    };
    let mut stream = op.subscribe(req).await.unwrap().into_inner();
    let mut poster = node.operator().await;
    let posting = tokio::spawn({
        let ch = ch.clone();
        async move {
            for i in 6..=400 {
                post(&mut poster, &ch, &format!("m{i}")).await;
            }
        }
    });
    let mut got = Vec::new();
    while got.len() < 398 {
        let m = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.push(m.origin_seq);
    }
    posting.await.unwrap();
    assert_eq!(
        got,
        (3..=400).collect::<Vec<u64>>(),
        "every message once, in order"
    );

    // History pages forward and backward from a cursor.
    let after = op
        .history(proto::HistoryRequest {
            channel: ch.clone(),
            limit: 2,
            position: Some(Position::After(cursors[0].clone())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        after
            .messages
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>(),
        ["m2", "m3"]
    );
    assert!(after.more);
    let before = op
        .history(proto::HistoryRequest {
            channel: ch,
            limit: 10,
            position: Some(Position::Before(cursors[2].clone())),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        before
            .messages
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>(),
        ["m1", "m2"]
    );
    assert!(!before.more);
    node.stop().await;
}

#[tokio::test]
async fn a_stalled_subscriber_neither_blocks_posters_nor_loses_messages() {
    let node = TestNode::start("police.example").await;
    let mut op = node.operator().await;
    let ch = create_channel(&mut op, "ops").await;
    // A subscriber that reads nothing while far more is posted than any buffer holds.
    let mut slow = node.client("slow", Role::Member).await;
    let mut stream = common::subscribe_live(&mut slow, &ch).await;
    const N: u64 = 5000;
    let mut posters = Vec::new();
    for p in 0..8u64 {
        let mut c = node.operator().await;
        let ch = ch.clone();
        posters.push(tokio::spawn(async move {
            for i in 0..N / 8 {
                post(&mut c, &ch, &format!("p{p}-{i}")).await;
            }
        }));
    }
    for p in posters {
        tokio::time::timeout(PATIENCE, p)
            .await
            .expect("posters finish while the subscriber stalls")
            .unwrap();
    }
    let mut seqs = Vec::new();
    while (seqs.len() as u64) < N {
        let m = tokio::time::timeout(PATIENCE, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seqs.push(m.origin_seq);
    }
    assert_eq!(seqs, (1..=N).collect::<Vec<_>>());
    node.stop().await;
}

#[tokio::test]
async fn many_concurrent_posters_are_all_acked_and_present_gap_free() {
    let node = TestNode::start("police.example").await;
    let mut op = node.operator().await;
    let ch = create_channel(&mut op, "ops").await;
    let (clients, per_client) = (64u64, 20u64);
    // Every task shares one connection, as a gateway would.
    let mut tasks = Vec::new();
    for t in 0..clients {
        let mut c = op.clone();
        let ch = ch.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..per_client {
                acked.push((
                    post(&mut c, &ch, &format!("t{t}-{i}")).await.origin_seq,
                    format!("t{t}-{i}"),
                ));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let history = all_history(&mut op, &ch).await;
    assert_eq!(history.len() as u64, clients * per_client);
    let seqs: Vec<u64> = history.iter().map(|m| m.origin_seq).collect();
    assert_eq!(
        seqs,
        (1..=clients * per_client).collect::<Vec<_>>(),
        "gap-free, in order"
    );
    let stored: BTreeSet<(u64, String)> = history
        .into_iter()
        .map(|m| (m.origin_seq, m.text))
        .collect();
    let acked: BTreeSet<(u64, String)> = acked.into_iter().collect();
    assert_eq!(stored, acked, "every ack names the message stored under it");
    node.stop().await;
}

#[tokio::test]
async fn restart_keeps_everything_and_the_signed_chain_continues() {
    let node = TestNode::start("police.example").await;
    let mut op = node.operator().await;
    let ch = create_channel(&mut op, "ops").await;
    for i in 0..10 {
        post(&mut op, &ch, &format!("before {i}")).await;
    }
    drop(op);
    let node = node.restart().await;
    let mut op = node.operator().await;
    assert_eq!(all_history(&mut op, &ch).await.len(), 10);
    let r = post(&mut op, &ch, "after").await;
    assert_eq!(r.origin_seq, 11, "sequence continues after restart");
    drop(op);
    let tmp = node.stop().await;

    // Read the store directly: every envelope is signed by the org's key and
    // names its predecessor's hash.
    let dir = common::node_dir(&tmp);
    let public = OrgPki::at(&dir).message_public_key().unwrap();
    let org = samband::model::OrgId::parse("police.example").unwrap();
    let store = Store::open(&samband::layout::data_dir(&dir), &org, 1 << 20).unwrap();
    let (stored, more) = store
        .history(
            &ChannelId::parse(&ch).unwrap(),
            &Page::Beginning,
            100,
            usize::MAX,
        )
        .unwrap();
    assert!(!more);
    assert_eq!(stored.len(), 11);
    let mut prev = GENESIS_HASH;
    for s in &stored {
        // Seals verify; the others are vouched for by the chain up to a seal.
        let signed = !s.envelope.signature.is_empty();
        assert!(
            !signed || verify(&s.envelope, &public),
            "signature of #{}",
            s.envelope.origin_seq
        );
        assert_eq!(
            s.envelope.prev,
            prev.to_vec(),
            "chain link of #{}",
            s.envelope.origin_seq
        );
        prev = chain_hash(&s.envelope);
    }
    assert!(
        stored.last().is_some_and(|s| verify(&s.envelope, &public)),
        "the log ends with a seal"
    );
}

#[tokio::test]
async fn bad_input_gets_a_precise_status() {
    let node = TestNode::start("police.example").await;
    let mut op = node.operator().await;
    let ch = create_channel(&mut op, "ops").await;
    let mut alice = node.client("alice", Role::Member).await;

    let post_req = |channel: &str, text: String, priority| proto::PostRequest {
        channel: channel.into(),
        text,
        priority,
        attachments: Vec::new(),
        ..Default::default()
    };
    let cases: Vec<(&str, tonic::Status, Code, &str)> = vec![
        (
            "empty body",
            op.post(post_req("ops", String::new(), 0))
                .await
                .unwrap_err(),
            Code::InvalidArgument,
            "empty",
        ),
        (
            "whitespace only",
            op.post(post_req("ops", " \n\t ".into(), 0))
                .await
                .unwrap_err(),
            Code::InvalidArgument,
            "whitespace",
        ),
        (
            "oversized body",
            op.post(post_req("ops", "x".repeat(65537), 0))
                .await
                .unwrap_err(),
            Code::InvalidArgument,
            "65536",
        ),
        (
            "unknown channel",
            op.post(post_req("nope", "hi".into(), 0)).await.unwrap_err(),
            Code::NotFound,
            "nope",
        ),
        (
            "bad channel name",
            op.post(post_req("Bad Name", "hi".into(), 0))
                .await
                .unwrap_err(),
            Code::InvalidArgument,
            "channel name",
        ),
        (
            "unknown priority",
            op.post(post_req("ops", "hi".into(), 42)).await.unwrap_err(),
            Code::InvalidArgument,
            "priority",
        ),
        (
            "member creates channel",
            alice
                .create_channel(proto::CreateChannelRequest { name: "x".into() })
                .await
                .unwrap_err(),
            Code::PermissionDenied,
            "admin",
        ),
        (
            "duplicate channel",
            op.create_channel(proto::CreateChannelRequest { name: "ops".into() })
                .await
                .unwrap_err(),
            Code::AlreadyExists,
            "exists",
        ),
        (
            "malformed cursor",
            op.history(proto::HistoryRequest {
                channel: ch.clone(),
                limit: 5,
                position: Some(Position::Before("zz".into())),
            })
            .await
            .unwrap_err(),
            Code::InvalidArgument,
            "cursor",
        ),
        (
            "page too large",
            op.history(proto::HistoryRequest {
                channel: ch.clone(),
                limit: 5000,
                position: None,
            })
            .await
            .unwrap_err(),
            Code::InvalidArgument,
            "1000",
        ),
        (
            "malformed subscribe cursor",
            op.subscribe(proto::SubscribeRequest {
                channel: ch.clone(),
                start: Some(Start::After("00".into())),
            })
            .await
            .map(|_| ())
            .unwrap_err(),
            Code::InvalidArgument,
            "cursor",
        ),
    ];
    for (what, status, code, needle) in cases {
        assert_eq!(status.code(), code, "{what}: {status:?}");
        assert!(
            status.message().contains(needle),
            "{what}: {:?} lacks {needle:?}",
            status.message()
        );
    }
    // Far beyond the limit is refused by the transport before it is decoded.
    let huge = op
        .post(post_req("ops", "x".repeat(8 << 20), 0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            huge.code(),
            Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument
        ),
        "{huge:?}"
    );
    // Nothing of the above was stored.
    assert!(all_history(&mut op, &ch).await.is_empty());
    // And the node still works.
    post(&mut op, &ch, "still here").await;
    node.stop().await;
}

#[tokio::test]
async fn foreign_and_missing_client_certificates_are_refused() {
    let node = TestNode::start("police.example").await;
    let other = TestNode::start("rescue.example").await;
    let endpoint = node.addr.to_string();

    let ca = node.bundle("alice", Role::Member).dir.join("ca.pem");

    // A member of another org, with a certificate from that org's CA.
    let foreign = other.bundle("mallory", Role::Admin).dir;
    assert_refused(tls_config(&ca, Some(&foreign)), &endpoint).await;
    // No client certificate at all.
    assert_refused(tls_config(&ca, None), &endpoint).await;

    // The same settings with a member certificate of this org get in.
    let alice = node.bundle("alice", Role::Member).dir;
    let channel = samband::client::dial(tls_config(&ca, Some(&alice)), &endpoint)
        .await
        .unwrap();
    let mut c = proto::messaging_client::MessagingClient::new(channel);
    let me = c
        .status(proto::StatusRequest {})
        .await
        .expect("member accepted")
        .into_inner();
    assert_eq!(me.member, "alice");
    node.stop().await;
    other.stop().await;
}

/// Client TLS that trusts `ca` and presents the certificate of `bundle`, if any.
fn tls_config(ca: &std::path::Path, bundle: Option<&std::path::Path>) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match bundle {
        Some(dir) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(dir.join("cert.pem")).unwrap()],
                PrivateKeyDer::from_pem_file(dir.join("key.pem")).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// A TLS 1.3 server refuses a client certificate after the client considers
/// the handshake done, so the refusal shows on the first call.
async fn assert_refused(tls: Arc<rustls::ClientConfig>, endpoint: &str) {
    let Ok(channel) = samband::client::dial(tls, endpoint).await else {
        return; // refused while connecting
    };
    let mut c = proto::messaging_client::MessagingClient::new(channel);
    let err = c
        .status(proto::StatusRequest {})
        .await
        .expect_err("call must be refused");
    // The node's TLS layer refused us (e.g. "received fatal alert: UnknownCA").
    assert!(format!("{err:?}").contains("fatal alert"), "{err:?}");
}

#[tokio::test]
async fn publish_streams_many_posts_with_one_ack_each_in_order() {
    let node = TestNode::start("police.example").await;
    let mut op = node.operator().await;
    let ch = create_channel(&mut op, "bridge").await;
    const N: u64 = 2000;
    let posts: Vec<proto::PostRequest> = (0..N)
        .map(|i| proto::PostRequest {
            channel: ch.clone(),
            // One refused post in the middle must not end the stream.
            text: if i == 700 {
                String::new()
            } else {
                format!("gateway message {i}")
            },
            priority: 0,
            attachments: Vec::new(),
            ..Default::default()
        })
        .collect();
    let mut acks = op
        .publish(tokio_stream::iter(posts))
        .await
        .unwrap()
        .into_inner();
    let mut seqs = Vec::new();
    let mut refused = Vec::new();
    for expected in 0..N {
        let ack = tokio::time::timeout(PATIENCE, acks.message())
            .await
            .unwrap()
            .unwrap()
            .expect("an ack per post");
        assert_eq!(ack.index, expected, "acks arrive in order");
        match ack.outcome.unwrap() {
            proto::publish_ack::Outcome::Posted(p) => seqs.push(p.origin_seq),
            proto::publish_ack::Outcome::Refused(r) => refused.push((ack.index, r.code, r.message)),
        }
    }
    assert_eq!(refused.len(), 1);
    assert_eq!(
        (refused[0].0, refused[0].1),
        (700, Code::InvalidArgument as i32)
    );
    assert_eq!(seqs, (1..N).collect::<Vec<_>>());
    let history = all_history(&mut op, &ch).await;
    assert_eq!(history.len() as u64, N - 1);
    assert_eq!(
        history.last().unwrap().text,
        format!("gateway message {}", N - 1)
    );
    node.stop().await;
}

#[tokio::test]
async fn subscribers_per_channel_are_bounded_with_a_precise_status() {
    let tmp = common::init_dir_with("police.example", |l| {
        l.member_posts_per_second = 0;
        l.subscribers_per_channel = 2;
    });
    let node = TestNode::start_in(tmp).await;
    let mut op = node.operator().await;
    let ch = create_channel(&mut op, "ops").await;
    let req = || proto::SubscribeRequest {
        channel: ch.clone(),
        start: None,
    };
    let first = op.subscribe(req()).await.unwrap().into_inner();
    let _second = op.subscribe(req()).await.unwrap().into_inner();
    let third = op.subscribe(req()).await.map(|_| ()).unwrap_err();
    assert_eq!(third.code(), Code::ResourceExhausted, "{third:?}");
    assert!(
        third.message().contains("limits.subscribers_per_channel"),
        "{}",
        third.message()
    );
    // A subscriber that leaves frees its place.
    drop(first);
    common::eventually("a place to free up", || {
        let mut op = op.clone();
        let req = req();
        async move { op.subscribe(req).await.ok().map(drop) }
    })
    .await;
    node.stop().await;
}
