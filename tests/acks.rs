//! Acknowledgements, replies and receipts across agencies: who holds a
//! message, who confirmed it, and who is overdue, from signed envelopes
//! that federate like messages.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestNode, all_history, create_channel, eventually};
use samband::model::Role;
use samband::proto;

type Client = proto::messaging_client::MessagingClient<tonic::transport::Channel>;

async fn ack(
    c: &mut Client,
    channel: &str,
    cursor: &str,
) -> Result<proto::AcknowledgeResponse, tonic::Status> {
    let req = proto::AcknowledgeRequest {
        channel: channel.into(),
        cursor: cursor.into(),
    };
    Ok(c.acknowledge(req).await?.into_inner())
}

async fn receipts(c: &mut Client, channel: &str, cursor: &str) -> proto::ReceiptsResponse {
    let req = proto::ReceiptsRequest {
        channel: channel.into(),
        cursor: cursor.into(),
    };
    c.receipts(req).await.unwrap().into_inner()
}

fn of<'a>(r: &'a proto::ReceiptsResponse, org: &str) -> &'a proto::AgencyReceipt {
    r.agencies.iter().find(|a| a.org == org).unwrap()
}

async fn overdue(c: &mut Client, channel: &str) -> Vec<proto::OverdueMessage> {
    let req = proto::OverdueRequest {
        channel: channel.into(),
    };
    c.overdue(req).await.unwrap().into_inner().messages
}

/// Police shares a channel with rescue and the region; rescue and the
/// region do not know each other, so each reaches the other only through
/// police. Rescue posts a FLASH order with a deadline: it asks for
/// acknowledgement without being told to; the region's member sees that
/// it waits for them, acknowledges, and rescue's receipts show it (relayed
/// by police); once the deadline passes, police, which did not
/// acknowledge, is overdue there and in `Overdue`, and is no longer once it
/// does. A reply names the order, with its cursor, on every node.
#[tokio::test]
async fn acknowledgements_cross_agencies_and_overdue_ones_are_named() {
    let (police, rescue, region, ch) = common::three_agencies().await;
    let mut bo = rescue.client("bo", Role::Member).await;
    let deadline_ms = 10_000;
    let order = bo
        .post(proto::PostRequest {
            channel: ch.clone(),
            text: "Close road 73 now".into(),
            priority: proto::Priority::Flash as i32,
            ack_deadline_ms: deadline_ms,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // The sender watches the receipts live.
    let mut live = bo
        .watch_receipts(proto::ReceiptsRequest {
            channel: ch.clone(),
            cursor: order.cursor.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut cy = region.client("cy", Role::Member).await;
    let seen = eventually("the order at the region", || async {
        let history = all_history(&mut cy.clone(), &ch).await;
        history.into_iter().find(|m| m.cursor == order.cursor)
    })
    .await;
    assert!(seen.ack_required && seen.needs_my_ack, "{seen:?}");
    assert_eq!(seen.ack_deadline_unix_ms, seen.unix_ms + deadline_ms);
    let first = ack(&mut cy, &ch, &order.cursor).await.unwrap();
    assert!(!first.already);
    let again = ack(&mut cy, &ch, &order.cursor).await.unwrap();
    assert!(again.already);
    assert_eq!(again.acknowledgement, first.acknowledgement);
    let history = all_history(&mut cy, &ch).await;
    let order_here = history.iter().find(|m| m.cursor == order.cursor).unwrap();
    assert!(!order_here.needs_my_ack, "acknowledged: {order_here:?}");
    let acks: Vec<_> = history.iter().filter(|m| m.kind == "ack").collect();
    assert_eq!(
        acks.len(),
        1,
        "one acknowledgement, however often asked: {acks:?}"
    );
    assert_eq!(acks[0].acknowledges.as_ref().unwrap().cursor, order.cursor);

    // The region's reply names the order, and each node finds it.
    let reply = cy
        .post(proto::PostRequest {
            channel: ch.clone(),
            text: "Road 73 closed at the bridge".into(),
            reply_to: order.cursor.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // At the sender: the region acknowledged (through police), police has
    // it but did not acknowledge.
    let r = eventually("the region's acknowledgement at rescue", || async {
        let r = receipts(&mut bo.clone(), &ch, &order.cursor).await;
        (!of(&r, "region.example").acknowledged_by.is_empty()).then_some(r)
    })
    .await;
    assert!(r.ack_required);
    // The live stream told it too, without being asked again.
    loop {
        let update = tokio::time::timeout(common::PATIENCE, live.message())
            .await
            .expect("a live update")
            .unwrap()
            .unwrap();
        if !of(&update, "region.example").acknowledged_by.is_empty() {
            break;
        }
    }
    // Delivered to police (linked, its progress after the post): with the
    // time this node learned it, not before the post.
    let police_row = of(&r, "police.example");
    assert!(
        police_row.delivered_unix_ms >= seen.unix_ms,
        "{police_row:?}"
    );
    let region_row = of(&r, "region.example");
    assert_eq!(region_row.acknowledged_by[0].member, "cy");
    assert_eq!(
        region_row.state, "delivered",
        "its org signed the acknowledgement: {region_row:?}"
    );
    assert_eq!(of(&r, "police.example").state, "delivered");
    assert!(of(&r, "rescue.example").acknowledged_by.is_empty());
    for node in [&police, &rescue] {
        let c = node.client("reader", Role::Member).await;
        let found = eventually("the reply", || async {
            let h = all_history(&mut c.clone(), &ch).await;
            h.into_iter().find(|m| m.cursor == reply.cursor)
        })
        .await;
        assert_eq!(found.reply_to.unwrap().cursor, order.cursor);
    }

    // The deadline passes: police alone is overdue.
    let due = eventually("the deadline to pass", || async {
        let list = overdue(&mut bo.clone(), &ch).await;
        (!list.is_empty()).then_some(list)
    })
    .await;
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].agencies, ["police.example"]);
    assert_eq!(due[0].message.as_ref().unwrap().cursor, order.cursor);
    // `status` counts it (the watch looks every few seconds).
    eventually("status to count the overdue message", || async {
        let status = rescue
            .operator()
            .await
            .status(proto::StatusRequest {})
            .await
            .ok()?
            .into_inner();
        status
            .workers
            .iter()
            .any(|w| w.name == "overdue watch" && w.status == "overdue now: 1 messages")
            .then_some(())
    })
    .await;
    let r = receipts(&mut bo, &ch, &order.cursor).await;
    assert!(of(&r, "police.example").overdue);
    assert!(!of(&r, "region.example").overdue && !of(&r, "rescue.example").overdue);

    // Late, but acknowledged: no longer overdue.
    let mut al = police.client("al", Role::Member).await;
    ack(&mut al, &ch, &order.cursor).await.unwrap();
    eventually("police's acknowledgement at rescue", || async {
        overdue(&mut bo.clone(), &ch).await.is_empty().then_some(())
    })
    .await;
    let r = receipts(&mut bo, &ch, &order.cursor).await;
    assert!(!of(&r, "police.example").overdue);
    assert_eq!(of(&r, "police.example").acknowledged_by[0].member, "al");
    for node in [police, rescue, region] {
        node.stop().await;
    }
}

/// What cannot be acknowledged or answered is refused: NOT_FOUND for no
/// message at the cursor, FAILED_PRECONDITION for an acknowledgement (it is
/// not a member's message), saying so; a deadline needs an
/// acknowledgement request; a FLASH message can opt out; and the author is
/// never asked to acknowledge their own message.
#[tokio::test]
async fn what_cannot_be_acknowledged_is_refused_with_the_reason() {
    let node = TestNode::start("police.example").await;
    let mut op = node.operator().await;
    let ch = create_channel(&mut op, "ops").await;
    let mut al = node.client("al", Role::Member).await;
    let mut bo = node.client("bo", Role::Member).await;
    let posted = al
        .post(proto::PostRequest {
            channel: ch.clone(),
            text: "report in".into(),
            ack_required: Some(true),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let history = all_history(&mut al, &ch).await;
    let mine = history.iter().find(|m| m.cursor == posted.cursor).unwrap();
    assert!(mine.ack_required && !mine.needs_my_ack, "{mine:?}");
    let theirs = all_history(&mut bo, &ch).await;
    assert!(
        theirs
            .iter()
            .any(|m| m.cursor == posted.cursor && m.needs_my_ack)
    );

    let ackd = ack(&mut bo, &ch, &posted.cursor).await.unwrap();
    let ack_cursor = ackd.acknowledgement.unwrap().cursor;
    let roster_or_none = samband::model::Cursor {
        hlc: samband::model::Hlc(1 << 16),
        origin: samband::model::OrgId::parse("police.example").unwrap(),
        seq: 99,
    }
    .encode();
    for (cursor, code) in [
        (ack_cursor.as_str(), tonic::Code::FailedPrecondition),
        (roster_or_none.as_str(), tonic::Code::NotFound),
    ] {
        let err = ack(&mut bo, &ch, cursor).await.unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
        let err = bo
            .post(proto::PostRequest {
                channel: ch.clone(),
                text: "re".into(),
                reply_to: cursor.into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{err:?}");
    }
    let err = ack(&mut bo, "police.example/nowhere", &posted.cursor)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let err = al
        .post(proto::PostRequest {
            channel: ch.clone(),
            text: "when?".into(),
            ack_required: Some(false),
            ack_deadline_ms: 60_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("ack_required"), "{err:?}");
    let flash = al
        .post(proto::PostRequest {
            channel: ch.clone(),
            text: "FYI only".into(),
            priority: proto::Priority::Flash as i32,
            ack_required: Some(false),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let history = all_history(&mut bo, &ch).await;
    let shown = history.iter().find(|m| m.cursor == flash.cursor).unwrap();
    assert!(!shown.ack_required, "{shown:?}");
    // Own org only: the author's colleagues are who is asked.
    let r = receipts(&mut al, &ch, &posted.cursor).await;
    assert_eq!(r.agencies.len(), 1);
    assert_eq!(r.agencies[0].acknowledged_by[0].member, "bo");
    node.stop().await;
}
