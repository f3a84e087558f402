//! A node tells a partner which of its envelopes it refused, and why; the
//! partner marks its message for its author and tells its operator why
//! that agency is behind, until the agency holds it after all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::hand_peer::{HandPeer, frame, holding, next_frame};
use common::{TestNode, create_channel, eventually, post};
use samband::proto::{self, link_frame::Frame};

/// Police refuses a partner's envelope stamped an hour ahead of its clock,
/// and says so on the link, as a refusal time may cure.
#[tokio::test]
async fn a_refused_envelope_is_named_to_its_sender_with_the_reason() {
    let police = TestNode::start("police.example").await;
    let mut admin = police.admin().await;
    let rescue = HandPeer::trusted_by(&mut admin, "rescue.example").await;
    let police_key = common::signing_key(&mut admin).await;
    let participant = |org: &str, key: &[u8]| proto::Participant {
        org: org.into(),
        signing_key: key.to_vec(),
        active: true,
        removed_at: 0,
        last_seq: 0,
        withheld_through: vec![],
    };
    let ops = "rescue.example/ops";
    let (tx, mut responses) = rescue.dial(&police.dir(), police.fed_addr).await;
    tx.send(frame(Frame::Hello(proto::VersionVectors::default())))
        .await
        .unwrap();
    assert!(matches!(next_frame(&mut responses).await, Frame::Hello(_)));
    let roster = vec![participant("police.example", &police_key)];
    let (offer, r1) = rescue.roster(ops, 1, samband::model::GENESIS_HASH, roster);
    tx.send(frame(Frame::Offer(offer))).await.unwrap();
    let operator = police.operator().await;
    eventually("police to join rescue's channel", || async {
        common::channel_state(&operator, ops).await.map(drop)
    })
    .await;

    let (mut ahead, _) = rescue.envelope(
        ops,
        "rescue.example",
        2,
        r1,
        "from later",
        proto::Kind::Text,
    );
    ahead.hlc = (rescue.now_ms + 3_600_000) << 16;
    samband::model::sign_and_hash(&mut ahead, &rescue.pki.message_key().unwrap());
    tx.send(frame(Frame::Envelopes(proto::EnvelopeBatch {
        envelopes: vec![ahead],
        ..Default::default()
    })))
    .await
    .unwrap();
    let refusal = loop {
        if let Frame::Refusals(r) = next_frame(&mut responses).await {
            break r.refusals;
        }
    };
    assert_eq!(refusal.len(), 1, "{refusal:?}");
    let r = &refusal[0];
    assert_eq!(
        (r.channel.as_str(), r.origin.as_str(), r.origin_seq),
        (ops, "rescue.example", 2)
    );
    assert!(r.reason.contains("future"), "{r:?}");
    assert!(r.retrying, "a clock ahead is cured by time: {r:?}");
    police.stop().await;
}

/// Rescue refuses police's message: police's history marks it for its
/// author and `peer list` says why rescue is behind; a refusal of what
/// rescue may not see or police does not hold is not kept; once rescue
/// holds the message, the mark goes.
#[tokio::test]
async fn a_message_a_partner_refused_is_marked_until_the_partner_holds_it() {
    let police = TestNode::start("police.example").await;
    let mut admin = police.admin().await;
    let rescue = HandPeer::trusted_by(&mut admin, "rescue.example").await;
    let mut operator = police.operator().await;
    let ops = create_channel(&mut operator, "ops").await;
    let internal = create_channel(&mut operator, "internal").await;
    let private = post(&mut operator, &internal, "not for partners").await;
    police.share("ops", &["rescue.example"]).await;
    let posted = post(&mut operator, &ops, "evacuate block 4").await;

    let (tx, mut responses) = rescue.dial(&police.dir(), police.fed_addr).await;
    tx.send(holding(&ops)).await.unwrap();
    loop {
        if let Frame::Envelopes(batch) = next_frame(&mut responses).await
            && batch
                .envelopes
                .iter()
                .any(|e| e.origin_seq == posted.origin_seq)
        {
            break;
        }
    }
    // Sent, but rescue has not said it holds it: waiting, not delivered.
    let receipts = |operator: &common::Client| {
        let mut operator = operator.clone();
        let (ops, cursor) = (ops.clone(), posted.cursor.clone());
        async move {
            operator
                .receipts(proto::ReceiptsRequest {
                    channel: ops,
                    cursor,
                })
                .await
                .unwrap()
                .into_inner()
                .agencies
                .into_iter()
                // This node's own row: the partner's is the point here.
                .filter(|a| a.link != "this node")
                .collect::<Vec<_>>()
        }
    };
    let r = receipts(&operator).await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(
        (r[0].org.as_str(), r[0].state.as_str()),
        ("rescue.example", "waiting")
    );
    assert_eq!(r[0].link, "connected");

    let reason = "body is over rescue.example's limit (max_body_bytes)";
    let refusal = |channel: &str, seq| proto::EnvelopeRefusal {
        channel: channel.into(),
        origin: "police.example".into(),
        origin_seq: seq,
        reason: reason.into(),
        retrying: false,
        file_sha256: Vec::new(),
    };
    tx.send(frame(Frame::Refusals(proto::EnvelopeRefusals {
        refusals: vec![
            refusal(&ops, posted.origin_seq),
            // Not rescue's to see, and not held here: neither is kept.
            refusal(&internal, private.origin_seq),
            refusal(&ops, 99),
        ],
    })))
    .await
    .unwrap();

    let refused_by = |operator: &common::Client| {
        let mut operator = operator.clone();
        let ops = ops.clone();
        async move {
            common::all_history(&mut operator, &ops)
                .await
                .into_iter()
                .find(|m| m.origin_seq == posted.origin_seq)
                .unwrap()
                .refused_by
        }
    };
    let marks = eventually("the refusal to reach the author's history", || async {
        let marks = refused_by(&operator).await;
        (!marks.is_empty()).then_some(marks)
    })
    .await;
    assert_eq!(marks.len(), 1, "{marks:?}");
    assert_eq!(
        (marks[0].org.as_str(), marks[0].reason.as_str()),
        ("rescue.example", reason)
    );
    assert!(!marks[0].retrying);
    let r = receipts(&operator).await;
    assert_eq!(
        (r[0].state.as_str(), r[0].reason.as_str()),
        ("refused", reason)
    );
    let link = police.peers().await[0].link.clone().unwrap();
    assert_eq!(
        link.refused_by_peer, 1,
        "only what rescue may see and police holds: {link:?}"
    );
    assert_eq!(link.last_refusal, reason);

    // Rescue takes it after all (say its operator raised the limit).
    tx.send(frame(Frame::Progress(proto::VersionVectors {
        channels: vec![proto::ChannelVector {
            channel: ops.clone(),
            entries: vec![proto::VectorEntry {
                origin: "police.example".into(),
                seq: posted.origin_seq,
            }],
        }],
    })))
    .await
    .unwrap();
    eventually("the mark to go", || async {
        refused_by(&operator).await.is_empty().then_some(())
    })
    .await;
    let link = police.peers().await[0].link.clone().unwrap();
    assert_eq!(link.refused_by_peer, 0);
    // Delivered: from rescue's own durable progress.
    let r = receipts(&operator).await;
    assert_eq!(r[0].state, "delivered", "{r:?}");
    police.stop().await;
}
