//! Federation between real nodes over mTLS on loopback: what is shared
//! converges everywhere, and nothing else leaves its organisation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{
    TestNode, contains, converged, create_channel, eventually, post, raw_store_bytes, texts,
};
use samband::model::Role;
use samband::proto::{self, AcceptPolicy};
use tonic::Code;

#[tokio::test]
async fn shared_channel_converges_and_nothing_else_leaves_home() {
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    let c = TestNode::start("region-health.example").await;
    a.peer_with(&b).await;
    a.peer_with(&c).await;
    b.peer_with(&c).await;

    let mut a_op = a.operator().await;
    let crisis = create_channel(&mut a_op, "flood").await;
    let internal = create_channel(&mut a_op, "internal-ops").await;
    let shared = a
        .share("flood", &["rescue.example", "region-health.example"])
        .await;
    assert_eq!(shared.state, "shared");
    assert_eq!(shared.participants.len(), 3);
    let mut b_op = b.operator().await;
    let b_only = create_channel(&mut b_op, "a-and-b").await;
    b.share("a-and-b", &["police.example"]).await;

    post(&mut a_op, &internal, "MARKER-INTERNAL-A").await;
    post(&mut b_op, &b_only, "MARKER-ONLY-A-AND-B").await;
    let mut c_op = c.operator().await;
    let mut alice = a.client("alice", Role::Member).await;
    // Members of every participant post; C must learn of the channel first.
    eventually("C to join the shared channel", || {
        let mut c_op = c_op.clone();
        async move {
            let list = c_op
                .list_channels(proto::ListChannelsRequest {})
                .await
                .ok()?
                .into_inner();
            list.channels
                .iter()
                .any(|ch| ch.id == "police.example/flood")
                .then_some(())
        }
    })
    .await;
    for i in 0..5 {
        post(&mut alice, &crisis, &format!("MARKER-SHARED from A {i}")).await;
        post(&mut b_op, &crisis, &format!("MARKER-SHARED from B {i}")).await;
        post(&mut c_op, &crisis, &format!("MARKER-SHARED from C {i}")).await;
    }
    // 1 control (the roster) + 15 posts.
    let history = converged(&[&a, &b, &c], &crisis, 16).await;
    for origin in ["police.example", "rescue.example", "region-health.example"] {
        let seqs: Vec<u64> = history
            .iter()
            .filter(|h| h.0 == origin && h.2.starts_with("MARKER"))
            .map(|h| h.1)
            .collect();
        assert_eq!(seqs.len(), 5, "{origin}: {history:?}");
    }
    // B got its own A-and-B channel's message to A; that one flows.
    converged(&[&a, &b], &b_only, 2).await;

    // Nothing of the other channels reached C: not in its channel list, and
    // no envelope of them was ever sent to it (C would have rejected it).
    let list = c_op
        .list_channels(proto::ListChannelsRequest {})
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<_> = list.channels.iter().map(|ch| ch.id.as_str()).collect();
    assert_eq!(ids, ["police.example/flood"]);
    for peer in c.peers().await {
        assert_eq!(
            peer.link.unwrap().envelopes_rejected,
            0,
            "something unshared was sent to C by {}",
            peer.org
        );
    }
    let c_tmp = c.stop().await;
    let raw = raw_store_bytes(&common::node_dir(&c_tmp));
    assert!(
        contains(&raw, "MARKER-SHARED from A 4"),
        "the raw check must see what C does hold"
    );
    assert!(
        !contains(&raw, "MARKER-INTERNAL-A"),
        "an internal message reached C's disk"
    );
    assert!(
        !contains(&raw, "MARKER-ONLY-A-AND-B"),
        "a channel shared only with A reached C's disk"
    );
    // And A's internal channel is A's alone.
    let b_list = b_op
        .list_channels(proto::ListChannelsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!b_list.channels.iter().any(|ch| ch.id == internal));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn participants_that_do_not_peer_converge_through_the_home() {
    // A–B and B–C trust each other; A and C do not.
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    let c = TestNode::start("region-health.example").await;
    a.peer_with(&b).await;
    b.peer_with(&c).await;
    let mut b_op = b.operator().await;
    let ch = create_channel(&mut b_op, "bridge").await;
    b.share("bridge", &["police.example", "region-health.example"])
        .await;
    let (mut a_op, mut c_op) = (a.operator().await, c.operator().await);
    for (node, client) in [(&a, &mut a_op), (&c, &mut c_op)] {
        let mut probe = client.clone();
        eventually(&format!("{} to join", node.org), || {
            let mut probe = probe.clone();
            async move {
                let list = probe
                    .list_channels(proto::ListChannelsRequest {})
                    .await
                    .ok()?
                    .into_inner();
                (!list.channels.is_empty()).then_some(())
            }
        })
        .await;
        let _ = &mut probe;
    }
    for i in 0..10 {
        post(&mut a_op, &ch, &format!("from police {i}")).await;
        post(&mut c_op, &ch, &format!("from health {i}")).await;
        post(&mut b_op, &ch, &format!("from rescue {i}")).await;
    }
    let history = converged(&[&a, &b, &c], &ch, 31).await;
    assert!(history.iter().any(|h| h.2 == "from police 9"));
    assert!(history.iter().any(|h| h.2 == "from health 9"));
    for n in [a, b, c] {
        n.stop().await;
    }
}

#[tokio::test]
async fn unshare_stops_flow_both_ways_and_peer_removal_cuts_the_link() {
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    a.peer_with(&b).await;
    let mut a_op = a.operator().await;
    let crisis = create_channel(&mut a_op, "crisis").await;
    a.share("crisis", &["rescue.example"]).await;
    let mut b_op = b.operator().await;
    eventually("B to join", || {
        let mut b_op = b_op.clone();
        async move {
            let l = b_op
                .list_channels(proto::ListChannelsRequest {})
                .await
                .ok()?
                .into_inner();
            (!l.channels.is_empty()).then_some(())
        }
    })
    .await;
    post(&mut a_op, &crisis, "before").await;
    post(&mut b_op, &crisis, "from B before").await;
    converged(&[&a, &b], &crisis, 3).await;

    let req = proto::UnshareChannelRequest {
        channel: "crisis".into(),
        org: "rescue.example".into(),
    };
    let after = a
        .admin()
        .await
        .unshare_channel(req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        after.participants,
        Vec::<String>::new()
            .into_iter()
            .chain(["police.example".to_string()])
            .collect::<Vec<_>>()
    );
    // B learns it was removed: its copy is archived and read-only.
    eventually("B's copy to be archived", || {
        let mut b_op = b_op.clone();
        async move {
            let l = b_op
                .list_channels(proto::ListChannelsRequest {})
                .await
                .ok()?
                .into_inner();
            l.channels
                .iter()
                .any(|ch| ch.id == "police.example/crisis" && ch.state == "archived")
                .then_some(())
        }
    })
    .await;
    let refused = b_op
        .post(proto::PostRequest {
            channel: crisis.clone(),
            text: "after removal".into(),
            priority: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    // A keeps posting; B keeps what it had but gets nothing new. To know that
    // "nothing" is not just "not yet", share a second channel and wait for it:
    // the push that delivers it also passed over the first.
    post(&mut a_op, &crisis, "MARKER-AFTER-UNSHARE").await;
    let later = create_channel(&mut a_op, "later").await;
    a.share("later", &["rescue.example"]).await;
    post(&mut a_op, &later, "later news").await;
    converged(&[&a, &b], &later, 2).await;
    let b_history = texts(&mut b_op, &crisis).await;
    assert!(
        b_history.iter().all(|h| h.2 != "MARKER-AFTER-UNSHARE"),
        "{b_history:?}"
    );
    assert!(
        b_history.iter().any(|h| h.2 == "before"),
        "B keeps what it received"
    );

    // Removing the peer closes the live link at once and refuses new ones.
    assert_eq!(a.peers().await[0].link.clone().unwrap().state, "connected");
    a.admin()
        .await
        .remove_peer(proto::RemovePeerRequest {
            org: "rescue.example".into(),
        })
        .await
        .unwrap();
    assert!(a.peers().await.is_empty());
    eventually("B to see its link refused", || {
        let b = &b;
        async move {
            let peer = b.peers().await.into_iter().next()?;
            let link = peer.link?;
            (link.state != "connected" && !link.last_error.is_empty()).then_some(())
        }
    })
    .await;
    post(&mut a_op, &later, "MARKER-AFTER-REMOVAL").await;
    let b_later = texts(&mut b_op, &later).await;
    assert!(b_later.iter().all(|h| h.2 != "MARKER-AFTER-REMOVAL"));
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_manual_peer_holds_an_offered_channel_until_accepted() {
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    a.trust(&b, Some(b.fed_addr.to_string()), AcceptPolicy::Auto)
        .await;
    b.trust(&a, Some(a.fed_addr.to_string()), AcceptPolicy::Manual)
        .await;
    let mut a_op = a.operator().await;
    let ch = create_channel(&mut a_op, "crisis").await;
    post(&mut a_op, &ch, "posted before sharing").await;
    a.share("crisis", &["rescue.example"]).await;
    let mut b_op = b.operator().await;
    eventually("B to hold the offer", || {
        let mut b_op = b_op.clone();
        async move {
            let l = b_op
                .list_channels(proto::ListChannelsRequest {})
                .await
                .ok()?
                .into_inner();
            l.channels
                .iter()
                .any(|c| c.state == "pending")
                .then_some(())
        }
    })
    .await;
    // Nothing of it is stored until accepted.
    assert!(texts(&mut b_op, &ch).await.is_empty());
    let refused = b_op
        .post(proto::PostRequest {
            channel: ch.clone(),
            text: "x".into(),
            priority: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    b.admin()
        .await
        .accept_channel(proto::AcceptChannelRequest {
            channel: ch.clone(),
        })
        .await
        .unwrap();
    let history = converged(&[&a, &b], &ch, 2).await;
    assert_eq!(history[0].2, "posted before sharing");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn sharing_with_an_org_that_is_not_a_peer_is_refused() {
    let a = TestNode::start("police.example").await;
    let mut a_op = a.operator().await;
    create_channel(&mut a_op, "crisis").await;
    let req = proto::ShareChannelRequest {
        channel: "crisis".into(),
        orgs: vec!["stranger.example".into()],
    };
    let err = a.admin().await.share_channel(req).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("not a configured peer"),
        "{}",
        err.message()
    );
    let list = a_op
        .list_channels(proto::ListChannelsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.channels[0].state, "internal");
    // A member may not administer.
    let mut alice_admin = {
        let bundle = a.bundle("alice", Role::Member);
        let ch = samband::client::connect_channel(&bundle, Some(&a.addr.to_string()))
            .await
            .unwrap();
        proto::admin_client::AdminClient::new(ch)
    };
    let err = alice_admin
        .list_peers(proto::ListPeersRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    a.stop().await;
}
