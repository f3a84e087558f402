//! Retraction: an org takes back one of its messages, and every agency of
//! the channel drops its text and files (even one that was offline when it
//! was posted, and never sees the text), shows who retracted it, and says
//! in receipts that it applied the retraction.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::files::{attach, bytes, object_path, upload};
use common::{TestNode, all_history, create_channel, eventually};
use samband::model::Role;
use samband::proto;

type Client = proto::messaging_client::MessagingClient<tonic::transport::Channel>;

async fn retract(
    c: &mut Client,
    channel: &str,
    cursor: &str,
) -> Result<proto::RetractResponse, tonic::Status> {
    let req = proto::RetractRequest {
        channel: channel.into(),
        cursor: cursor.into(),
    };
    Ok(c.retract(req).await?.into_inner())
}

/// Rescue posts a message with a file in police's channel, shared with the
/// region too (which reaches rescue only through police), then retracts
/// it. On every node the message shows as retracted by its author, without
/// its text or file, and the file's bytes are gone; police's receipts say
/// each agency applied the retraction. Only the author or an admin of the
/// message's org may retract; a retracted message cannot be acknowledged.
#[tokio::test]
async fn a_retraction_drops_the_text_and_files_everywhere_and_shows_who() {
    let (police, rescue, region, ch) = common::three_agencies().await;
    let mut bo = rescue.client("bo", Role::Member).await;
    let photo = bytes(300_000, 41);
    upload(&mut bo, &photo).await.unwrap();
    let posted = bo
        .post(proto::PostRequest {
            channel: ch.clone(),
            text: "wrong address: Storgatan 12".into(),
            attachments: vec![attach(&photo, "map.jpg")],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for node in [&police, &region] {
        eventually("the file on every node", || async {
            object_path(&node.dir(), &photo).exists().then_some(())
        })
        .await;
    }

    // Not the author, not an admin; another org's member.
    let mut cy = rescue.client("cy", Role::Member).await;
    let err = retract(&mut cy, &ch, &posted.cursor).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let mut al = police.client("al", Role::Admin).await;
    let err = retract(&mut al, &ch, &posted.cursor).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("rescue.example"), "{err:?}");

    let first = retract(&mut bo, &ch, &posted.cursor).await.unwrap();
    assert!(!first.already);
    let again = retract(&mut bo, &ch, &posted.cursor).await.unwrap();
    assert!(again.already);
    assert_eq!(again.retraction, first.retraction);

    for node in [&rescue, &police, &region] {
        let mut c = node.client("reader", Role::Member).await;
        let shown = eventually("the retraction on every node", || async {
            let history = all_history(&mut c.clone(), &ch).await;
            history
                .into_iter()
                .find(|m| m.cursor == posted.cursor && m.retracted.is_some())
        })
        .await;
        let by = shown.retracted.as_ref().unwrap();
        assert_eq!(
            (by.member.as_str(), by.org.as_str()),
            ("bo", "rescue.example")
        );
        assert!(
            shown.text.is_empty() && shown.attachments.is_empty(),
            "{shown:?}"
        );
        let history = all_history(&mut c, &ch).await;
        assert!(
            history.iter().all(|m| !m.text.contains("Storgatan")),
            "the text is gone from history"
        );
        let retraction = history.iter().find(|m| m.kind == "retraction").unwrap();
        assert_eq!(retraction.retracts.as_ref().unwrap().cursor, posted.cursor);
        eventually("the file's bytes removed", || async {
            (!object_path(&node.dir(), &photo).exists()).then_some(())
        })
        .await;
        let err = c
            .acknowledge(proto::AcknowledgeRequest {
                channel: ch.clone(),
                cursor: posted.cursor.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    }

    // Police, linked to both, knows that each applied it.
    let reader = police.client("reader", Role::Member).await;
    eventually("each agency to have applied the retraction", || async {
        let r = reader
            .clone()
            .receipts(proto::ReceiptsRequest {
                channel: ch.clone(),
                cursor: posted.cursor.clone(),
            })
            .await
            .ok()?
            .into_inner();
        (r.agencies.len() == 3 && r.agencies.iter().all(|a| a.retraction_applied)).then_some(())
    })
    .await;
    for node in [police, rescue] {
        node.stop().await;
    }
    // The region's store holds the message without its body. (The bytes
    // it replaced stay in sled's log until sled reuses that space.)
    let tmp = region.stop().await;
    let region_org = samband::model::OrgId::parse("region.example").unwrap();
    let data = samband::layout::data_dir(&common::node_dir(&tmp));
    let store = samband::store::Store::open(&data, &region_org, 1 << 20).unwrap();
    let at = samband::model::Cursor::decode(&posted.cursor).unwrap();
    let channel = samband::model::ChannelId::parse(&ch).unwrap();
    let kept = store
        .envelope(&channel, &at.origin, at.seq)
        .unwrap()
        .unwrap();
    assert!(kept.withheld && kept.body.is_empty(), "{kept:?}");
}

/// A partner that was cut off while a message was posted and retracted
/// gets it as a copy without its body, with the signed retraction that
/// lets it take it so: its history is the same, and the text never
/// reaches its disk.
#[tokio::test]
async fn a_partner_away_during_post_and_retraction_never_gets_the_text() {
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    let proxy = common::Proxy::start(b.fed_addr).await;
    a.dials(&b, proxy.addr).await;
    let mut a_op = a.operator().await;
    let ch = create_channel(&mut a_op, "crisis").await;
    a.share("crisis", &["rescue.example"]).await;
    let b_op = b.operator().await;
    eventually("the channel at rescue", || async {
        common::channel_state(&b_op, &ch).await
    })
    .await;
    proxy.cut();
    let marker = "name and number of a witness: 0701234567";
    let posted = common::post(&mut a_op, &ch, marker).await;
    retract(&mut a_op, &ch, &posted.cursor).await.unwrap();
    common::post(&mut a_op, &ch, "after").await;
    proxy.heal();
    let reader = b.client("reader", Role::Member).await;
    let shown = eventually("the retracted message at rescue", || async {
        let history = all_history(&mut reader.clone(), &ch).await;
        (history.len() >= 4).then_some(history)
    })
    .await;
    let message = shown.iter().find(|m| m.cursor == posted.cursor).unwrap();
    assert!(
        message.retracted.is_some() && message.text.is_empty(),
        "{message:?}"
    );
    assert!(shown.iter().any(|m| m.text == "after"));
    let b_tmp = b.stop().await;
    let raw = common::raw_store_bytes(&common::node_dir(&b_tmp));
    assert!(
        !raw.windows(marker.len()).any(|w| w == marker.as_bytes()),
        "the retracted text reached the partner's disk"
    );
    a.stop().await;
    drop(proxy);
}
