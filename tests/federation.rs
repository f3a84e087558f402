//! Federation between real nodes over mTLS on loopback: what is shared
//! converges everywhere, and nothing else leaves its organisation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::hand_peer::{HandPeer, frame, holding, next_frame};
use common::{
    TestNode, audit_log, contains, converged, create_channel, eventually, post, raw_store_bytes,
    texts,
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
    // Files too: one attached in A's internal channel, one in B's channel
    // shared with A only, and one in the channel all three share.
    let file = |marker: &str| {
        let mut data = marker.as_bytes().to_vec();
        data.extend(common::files::bytes(200_000, marker.len() as u8));
        data
    };
    let (internal_file, b_only_file, shared_file) = (
        file("MARKER-FILE-INTERNAL-A"),
        file("MARKER-FILE-ONLY-A-AND-B"),
        file("MARKER-FILE-SHARED"),
    );
    common::files::upload(&mut a_op, &internal_file)
        .await
        .unwrap();
    let attach = |data: &[u8]| vec![common::files::attach(data, "photo.jpg")];
    common::files::post_files(&mut a_op, &internal, "", attach(&internal_file))
        .await
        .unwrap();
    common::files::upload(&mut b_op, &b_only_file)
        .await
        .unwrap();
    common::files::post_files(&mut b_op, &b_only, "", attach(&b_only_file))
        .await
        .unwrap();
    let mut c_op = c.operator().await;
    let mut alice = a.client("alice", Role::Member).await;
    // Members of every participant post; C must learn of the channel first.
    eventually("C to join the shared channel", || async {
        common::channel_state(&c_op, "police.example/flood")
            .await
            .map(drop)
    })
    .await;
    for i in 0..5 {
        post(&mut alice, &crisis, &format!("MARKER-SHARED from A {i}")).await;
        post(&mut b_op, &crisis, &format!("MARKER-SHARED from B {i}")).await;
        post(&mut c_op, &crisis, &format!("MARKER-SHARED from C {i}")).await;
    }
    common::files::upload(&mut alice, &shared_file)
        .await
        .unwrap();
    common::files::post_files(&mut alice, &crisis, "", attach(&shared_file))
        .await
        .unwrap();
    // 1 control (the roster) + 15 posts + the one with a file.
    let history = converged(&[&a, &b, &c], &crisis, 17).await;
    for origin in ["police.example", "rescue.example", "region-health.example"] {
        let seqs: Vec<u64> = history
            .iter()
            .filter(|h| h.0 == origin && h.2.starts_with("MARKER"))
            .map(|h| h.1)
            .collect();
        assert_eq!(seqs.len(), 5, "{origin}: {history:?}");
    }
    // B got its own A-and-B channel's message to A; that one flows.
    converged(&[&a, &b], &b_only, 3).await;
    // Each partner fetches the files of what it may read, on its own.
    let holds =
        |node: &TestNode, data: &[u8]| common::files::object_path(&node.dir(), data).exists();
    eventually("A and B to fetch the files shared with them", || async {
        (holds(&a, &b_only_file) && holds(&b, &shared_file) && holds(&c, &shared_file))
            .then_some(())
    })
    .await;

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
    assert!(
        contains(&raw, "MARKER-FILE-SHARED"),
        "the raw check must see the files C does hold"
    );
    for marker in ["MARKER-FILE-INTERNAL-A", "MARKER-FILE-ONLY-A-AND-B"] {
        assert!(!contains(&raw, marker), "{marker} reached C's disk");
    }
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
    eventually("B's copy to be archived", || async {
        let state = common::channel_state(&b_op, "police.example/crisis").await?;
        (state == "archived").then_some(())
    })
    .await;
    let refused = b_op
        .post(proto::PostRequest {
            channel: crisis.clone(),
            text: "after removal".into(),
            priority: 0,
            attachments: Vec::new(),
            ..Default::default()
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

    // Removing a peer that still participates in a channel homed here is
    // refused, naming the channel: the roster would go on listing it.
    assert_eq!(a.peers().await[0].link.clone().unwrap().state, "connected");
    let remove = |unshare| proto::RemovePeerRequest {
        org: "rescue.example".into(),
        unshare,
    };
    let refused = a
        .admin()
        .await
        .remove_peer(remove(false))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains(&later), "{refused:?}");
    // With --unshare: unshared everywhere first, and B learns it before the
    // link closes, so its copy is read-only instead of taking posts that
    // would reach no one.
    a.admin().await.remove_peer(remove(true)).await.unwrap();
    assert!(a.peers().await.is_empty());
    let cut_off = b_op
        .post(proto::PostRequest {
            channel: later.clone(),
            text: "after the home stopped trusting us".into(),
            priority: 0,
            attachments: Vec::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(cut_off.code(), Code::FailedPrecondition, "{cut_off:?}");
    let roster = a_op
        .list_channels(proto::ListChannelsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        roster
            .channels
            .iter()
            .all(|c| !c.participants.contains(&"rescue.example".to_string())),
        "{roster:?}"
    );
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

/// A participant that stops trusting a channel's home sees the channel cut
/// off: a post is refused (it would be acknowledged and reach no one), and
/// what it holds stays readable.
#[tokio::test]
async fn a_channel_whose_home_is_no_longer_a_peer_is_read_only() {
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    a.peer_with(&b).await;
    let mut a_op = a.operator().await;
    let crisis = create_channel(&mut a_op, "crisis").await;
    a.share("crisis", &["rescue.example"]).await;
    post(&mut a_op, &crisis, "from the home").await;
    converged(&[&a, &b], &crisis, 2).await;
    b.admin()
        .await
        .remove_peer(proto::RemovePeerRequest {
            org: "police.example".into(),
            unshare: false,
        })
        .await
        .unwrap();
    let mut b_op = b.operator().await;
    let refused = b_op
        .post(proto::PostRequest {
            channel: crisis.clone(),
            text: "into the void".into(),
            priority: 0,
            attachments: Vec::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("no longer a partner"),
        "{refused:?}"
    );
    let held = texts(&mut b_op, &crisis).await;
    assert!(held.iter().any(|h| h.2 == "from the home"), "{held:?}");
    assert!(held.iter().all(|h| h.2 != "into the void"), "{held:?}");
    a.stop().await;
    b.stop().await;
}

/// A participant that stopped trusting a channel's home takes nothing more
/// of that channel, even relayed by a partner it still trusts: the home's
/// rosters could no longer be checked there.
#[tokio::test]
async fn nothing_of_a_channel_whose_home_is_no_longer_a_peer_is_taken_through_a_relay() {
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    let c = TestNode::start("health.example").await;
    a.peer_with(&b).await;
    a.peer_with(&c).await;
    b.peer_with(&c).await;
    let mut a_op = a.operator().await;
    let crisis = create_channel(&mut a_op, "crisis").await;
    a.share("crisis", &["rescue.example", "health.example"])
        .await;
    post(&mut a_op, &crisis, "before").await;
    converged(&[&a, &b, &c], &crisis, 2).await;
    c.admin()
        .await
        .remove_peer(proto::RemovePeerRequest {
            org: "police.example".into(),
            unshare: false,
        })
        .await
        .unwrap();
    post(&mut a_op, &crisis, "MARKER-AFTER").await;
    // B has it; then a channel B shares with C passes the same link, so C
    // had every chance to take the first one.
    converged(&[&a, &b], &crisis, 3).await;
    let mut b_op = b.operator().await;
    let later = create_channel(&mut b_op, "later").await;
    b.share("later", &["health.example"]).await;
    post(&mut b_op, &later, "later news").await;
    converged(&[&b, &c], &later, 2).await;
    let at_c = texts(&mut c.operator().await, &crisis).await;
    assert!(at_c.iter().all(|h| h.2 != "MARKER-AFTER"), "{at_c:?}");
    // C says the channel is cut off, rather than finding bad signatures
    // in what B relays and asking for it again and again.
    let log = audit_log(&mut c.admin().await).await;
    assert!(
        log.iter()
            .filter(|e| e.event == "federation.rejected")
            .all(|e| !e.details["reason"].contains("signature")),
        "{log:#?}"
    );
    a.stop().await;
    b.stop().await;
    c.stop().await;
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
    // Nothing of it is stored until accepted, and the sender's receipts
    // say why the partner does not have what is posted meanwhile.
    assert!(texts(&mut b_op, &ch).await.is_empty());
    let waiting = post(&mut a_op, &ch, "posted while offered").await;
    let rescue_state = |cursor: String| {
        let (mut a_op, ch) = (a_op.clone(), ch.clone());
        async move {
            let req = proto::ReceiptsRequest {
                channel: ch,
                cursor,
            };
            let r = a_op.receipts(req).await.ok()?.into_inner();
            r.agencies
                .into_iter()
                .find(|x| x.org == "rescue.example")
                .map(|x| x.state)
        }
    };
    assert_eq!(
        rescue_state(waiting.cursor.clone()).await.as_deref(),
        Some("offered"),
        "a partner whose operator has not accepted the channel"
    );
    let refused = b_op
        .post(proto::PostRequest {
            channel: ch.clone(),
            text: "x".into(),
            priority: 0,
            attachments: Vec::new(),
            ..Default::default()
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
    let history = converged(&[&a, &b], &ch, 3).await;
    assert_eq!(history[0].2, "posted before sharing");
    eventually("the receipt to say delivered once accepted", || async {
        rescue_state(waiting.cursor.clone())
            .await
            .filter(|s| s == "delivered")
    })
    .await;
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
        ..Default::default()
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

/// The dialer's side of a link is reset while the accepter's side stays
/// open and silent (a NAT or firewall that lost the connection's state).
/// The dialer's next link replaces the stale one at once: it is never
/// refused as a second link while the accepter waits for its keep-alive.
#[tokio::test]
async fn a_link_lost_on_one_side_only_is_replaced_by_the_next_dial() {
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    let proxy = common::Proxy::start(b.fed_addr).await;
    a.dials(&b, proxy.addr).await;
    let mut a_op = a.operator().await;
    let ch = create_channel(&mut a_op, "crisis").await;
    a.share("crisis", &["rescue.example"]).await;
    post(&mut a_op, &ch, "before").await;
    converged(&[&a, &b], &ch, 2).await;
    let first = a.peers().await[0].link.clone().unwrap().connected_unix_ms;
    // Links younger than two seconds are not replaced (two nodes of one
    // identity must not take turns); a lost link is older than that.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;

    proxy.reset_dialer_side();
    // A redials at once; B must take the new link although the old one
    // looks alive to it. A refusal would show on A until B's keep-alive
    // drops the old link (20 s), so any one seen means the fix is gone.
    let relinked = eventually("A's new link to B", || async {
        let link = a.peers().await[0].link.clone().unwrap();
        assert!(
            !link.last_error.contains("exists already"),
            "B refused A's new link as a second one: {link:?}"
        );
        (link.state == "connected" && link.connected_unix_ms > first).then_some(link)
    })
    .await;
    assert_eq!(relinked.state, "connected");
    post(&mut a_op, &ch, "after").await;
    converged(&[&a, &b], &ch, 3).await;
    // The proxy holds B's side of the old connection open: close it, or B's
    // shutdown waits its grace period for it.
    drop(proxy);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_partition_heals_with_identical_histories_nothing_lost_nothing_twice() {
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    // A reaches B only through a proxy that can cut the link; B does not dial.
    let proxy = common::Proxy::start(b.fed_addr).await;
    a.dials(&b, proxy.addr).await;
    let mut a_op = a.operator().await;
    let ch = create_channel(&mut a_op, "crisis").await;
    a.share("crisis", &["rescue.example"]).await;
    let mut b_op = b.operator().await;
    post(&mut a_op, &ch, "before the cut").await;
    converged(&[&a, &b], &ch, 2).await;

    proxy.cut();
    for i in 0..50 {
        post(&mut a_op, &ch, &format!("A during the cut {i}")).await;
        post(&mut b_op, &ch, &format!("B during the cut {i}")).await;
    }
    // Each side has only its own half while cut.
    assert_eq!(texts(&mut a_op, &ch).await.len(), 52);
    proxy.heal();
    let history = converged(&[&a, &b], &ch, 102).await;
    let mut ids: Vec<(String, u64)> = history.iter().map(|h| (h.0.clone(), h.1)).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 102, "nothing twice");
    for origin in ["police.example", "rescue.example"] {
        let seqs: Vec<u64> = ids.iter().filter(|i| i.0 == origin).map(|i| i.1).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "{origin}: gap-free"
        );
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_stalled_partner_slows_only_its_own_link() {
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    let c = TestNode::start("health.example").await;
    // A dials B directly and C through a proxy that can stall; neither dials A.
    let proxy = common::Proxy::start(c.fed_addr).await;
    a.dials(&b, b.fed_addr).await;
    a.dials(&c, proxy.addr).await;
    let mut a_op = a.operator().await;
    let ch = create_channel(&mut a_op, "crisis").await;
    a.share("crisis", &["rescue.example", "health.example"])
        .await;
    converged(&[&a, &b, &c], &ch, 1).await;

    // C's link moves no bytes; its TCP buffers fill while A posts 3,000 messages.
    proxy.stall();
    const N: usize = 3000;
    let posters: Vec<_> = (0..8)
        .map(|p| {
            let (mut op, ch) = (a_op.clone(), ch.clone());
            tokio::spawn(async move {
                for i in 0..N / 8 {
                    post(&mut op, &ch, &format!("p{p}-{i} {}", "x".repeat(512))).await;
                }
            })
        })
        .collect();
    for p in posters {
        tokio::time::timeout(common::PATIENCE, p)
            .await
            .expect("posters are never held up by a stalled partner")
            .unwrap();
    }
    // B, on its own link, has everything; C does not yet.
    converged(&[&a, &b], &ch, N + 1).await;
    let mut c_op = c.operator().await;
    assert!(
        texts(&mut c_op, &ch).await.len() < N + 1,
        "the stall was real"
    );
    // A's operator sees who lags behind on the channel, and by how much.
    let lags = || async {
        let peers = a.peers().await;
        let lag = |org: &str| -> u64 {
            let link = peers
                .iter()
                .find(|p| p.org == org)
                .and_then(|p| p.link.clone());
            link.map(|l| {
                l.lag
                    .iter()
                    .filter(|c| c.channel == ch)
                    .map(|c| c.messages)
                    .sum()
            })
            .unwrap_or(u64::MAX)
        };
        (lag("rescue.example"), lag("health.example"))
    };
    eventually("B's lag to read 0 and C's to show the stall", || async {
        let (b_lag, c_lag) = lags().await;
        (b_lag == 0 && c_lag > 0 && c_lag <= N as u64).then_some(())
    })
    .await;
    proxy.resume();
    converged(&[&a, &b, &c], &ch, N + 1).await;
    eventually("C's lag to read 0 once it caught up", || async {
        (lags().await == (0, 0)).then_some(())
    })
    .await;
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

/// A peer whose node holds a legitimately pinned certificate but breaks
/// every rule on purpose. Each bad envelope is rejected, counted, never
/// stored or forwarded, and the link and the node's other links go on.
#[tokio::test]
async fn a_hostile_peer_cannot_make_a_node_store_or_forward_what_breaks_a_rule() {
    use samband::model::GENESIS_HASH;
    use samband::proto::{Kind, link_frame::Frame};

    let t = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    t.peer_with(&b).await;
    // Mallory: an org with real PKI that T trusts, driven by this test.
    let mallory = HandPeer::trusted_by(&mut t.admin().await, "mallory.example").await;
    let mut t_op = t.operator().await;
    let crisis = create_channel(&mut t_op, "crisis").await;
    let secret = create_channel(&mut t_op, "secret").await;
    post(&mut t_op, &secret, "MARKER-SECRET").await;
    t.share("crisis", &["rescue.example", "mallory.example"])
        .await;

    // Mallory dials T's federation listener with its node certificate.
    let (tx, mut responses) = mallory.dial(&t.dir(), t.fed_addr).await;
    // Claim to hold the shared channel (empty), and also the internal one.
    let hello = proto::VersionVectors {
        channels: vec![
            proto::ChannelVector {
                channel: crisis.clone(),
                entries: vec![],
            },
            proto::ChannelVector {
                channel: secret.clone(),
                entries: vec![],
            },
        ],
    };
    tx.send(frame(Frame::Hello(hello))).await.unwrap();
    // T sends the shared channel's roster; never anything of the internal one.
    let mut got = Vec::new();
    while got.is_empty() {
        if let Frame::Envelopes(batch) = next_frame(&mut responses).await {
            got.extend(batch.envelopes);
        }
    }
    assert!(
        got.iter().all(|e| e.channel == crisis),
        "T sent Mallory something of another channel"
    );

    let (good1, h1) = mallory.envelope(
        &crisis,
        "mallory.example",
        1,
        GENESIS_HASH,
        "good one",
        Kind::Text,
    );
    let (good2, _) = mallory.envelope(&crisis, "mallory.example", 2, h1, "good two", Kind::Text);
    let mut bad = vec![
        mallory
            .envelope(
                &secret,
                "mallory.example",
                1,
                GENESIS_HASH,
                "MARKER-BAD into internal",
                Kind::Text,
            )
            .0,
        mallory
            .envelope(
                "stranger.example/x",
                "mallory.example",
                1,
                GENESIS_HASH,
                "MARKER-BAD unknown",
                Kind::Text,
            )
            .0,
        mallory
            .envelope(
                &crisis,
                "x.example",
                1,
                GENESIS_HASH,
                "MARKER-BAD stranger origin",
                Kind::Text,
            )
            .0,
        mallory
            .envelope(
                &crisis,
                "mallory.example",
                5,
                h1,
                "MARKER-BAD gap",
                Kind::Text,
            )
            .0,
        mallory
            .envelope(
                &crisis,
                "mallory.example",
                1,
                GENESIS_HASH,
                "MARKER-BAD rewind",
                Kind::Text,
            )
            .0,
        mallory
            .envelope(
                &crisis,
                "mallory.example",
                2,
                h1,
                &"MARKER-BAD oversized beyond the protocol ceiling ".repeat(90_000),
                Kind::Text,
            )
            .0,
        mallory
            .envelope(
                &crisis,
                "mallory.example",
                2,
                h1,
                "MARKER-BAD control",
                Kind::Control,
            )
            .0,
        mallory
            .envelope(
                &crisis,
                "mallory.example",
                2,
                [7; 32],
                "MARKER-BAD broken chain",
                Kind::Text,
            )
            .0,
    ];
    let mut future = mallory
        .envelope(
            &crisis,
            "mallory.example",
            2,
            h1,
            "MARKER-BAD from the future",
            Kind::Text,
        )
        .0;
    future.hlc = u64::MAX - 1;
    samband::model::sign_and_hash(&mut future, &mallory.pki.message_key().unwrap());
    bad.push(future);
    let mut unsigned = mallory
        .envelope(
            &crisis,
            "mallory.example",
            2,
            h1,
            "MARKER-BAD unsigned",
            Kind::Text,
        )
        .0;
    unsigned.signature.clear(); // chained, but no seal will ever vouch for it
    bad.push(unsigned);
    let mut forged = mallory
        .envelope(
            &crisis,
            "mallory.example",
            2,
            h1,
            "MARKER-BAD forged",
            Kind::Text,
        )
        .0;
    forged.signature[0] ^= 1;
    bad.push(forged);
    // Fields outside what a local post may hold, each correctly chained and
    // signed: a kind nobody knows, a priority nobody knows, an author full
    // of terminal escapes, a seq of 0.
    let mut fields = |change: fn(&mut proto::Envelope)| {
        let mut e = mallory
            .envelope(
                &crisis,
                "mallory.example",
                2,
                h1,
                "MARKER-BAD field",
                Kind::Text,
            )
            .0;
        change(&mut e);
        samband::model::sign_and_hash(&mut e, &mallory.pki.message_key().unwrap());
        bad.push(e);
    };
    fields(|e| e.kind = 77);
    fields(|e| e.priority = 99_999);
    fields(|e| e.author = "\u{1b}[2J\u{1b}[31mADMIN\u{7}\0".repeat(200));
    fields(|e| e.origin_seq = 0);
    let bad_count = bad.len() as u64;
    tx.send(frame(Frame::Envelopes(proto::EnvelopeBatch {
        envelopes: vec![good1],
        ..Default::default()
    })))
    .await
    .unwrap();
    for e in bad {
        tx.send(frame(Frame::Envelopes(proto::EnvelopeBatch {
            envelopes: vec![e],
            ..Default::default()
        })))
        .await
        .unwrap();
    }
    tx.send(frame(Frame::Envelopes(proto::EnvelopeBatch {
        envelopes: vec![good2],
        ..Default::default()
    })))
    .await
    .unwrap();

    // Only the two good envelopes are stored, and relayed to B.
    eventually("Mallory's good envelopes at T and B", || {
        let (t, b) = (&t, &b);
        let crisis = crisis.clone();
        async move {
            for n in [t, b] {
                let mut op = n.operator().await;
                let h = texts(&mut op, &crisis).await;
                let from_m: Vec<_> = h
                    .iter()
                    .filter(|x| x.0 == "mallory.example")
                    .map(|x| x.2.as_str())
                    .collect();
                if from_m != ["good one", "good two"] {
                    return None;
                }
            }
            Some(())
        }
    })
    .await;
    let m_link = t
        .peers()
        .await
        .into_iter()
        .find(|p| p.org == "mallory.example")
        .unwrap()
        .link
        .unwrap();
    assert_eq!(m_link.envelopes_rejected, bad_count, "{m_link:?}");
    assert_eq!(
        m_link.state, "connected",
        "a rejected envelope does not poison the link"
    );
    // Every rejection is in T's audit log, with its reason, in an intact chain.
    let log = audit_log(&mut t.admin().await).await;
    samband::audit::verify(&log, Some(samband::audit::Head::default())).unwrap();
    let rejected: Vec<_> = log
        .iter()
        .filter(|e| e.event == "federation.rejected" && e.details["peer"] == "mallory.example")
        .collect();
    // Gaps and unsealed runs happen in every catch-up: counted, not audited.
    // Two of the bad envelopes are of those kinds.
    assert_eq!(rejected.len() as u64, bad_count - 2, "{rejected:#?}");
    assert!(rejected.iter().all(|e| {
        let reason = &e.details["reason"];
        !reason.is_empty() && !reason.starts_with("gap") && !reason.starts_with("unsigned")
    }));
    for why in [
        "unknown kind 77",
        "unknown priority 99999",
        "author is not a member name",
        "origin_seq is 0",
    ] {
        assert!(
            rejected.iter().any(|e| e.details["reason"].contains(why)),
            "no rejection says {why:?}: {rejected:#?}"
        );
    }
    // The internal channel is untouched, and T's link to B still carries traffic.
    assert_eq!(texts(&mut t_op, &secret).await.len(), 1);
    post(&mut t_op, &crisis, "after the attack").await;
    let history = converged(&[&t, &b], &crisis, 4).await;
    assert!(history.iter().all(|h| !h.2.contains("MARKER-BAD")));
    drop(tx);
    t.stop().await;
    b.stop().await;
}

/// A node that receives envelopes ahead of what it holds asks the sender to
/// restate what it holds, so that the sender goes back and sends the rest.
/// Asked again soon after, it restates again once the pacing interval is
/// over: a request it dropped would leave a sender that takes the node to
/// hold a tail it refused, and sends nothing more until the next post.
#[tokio::test]
async fn a_node_that_sees_a_gap_asks_for_the_rest_however_soon_after_the_last_gap() {
    use samband::model::GENESIS_HASH;
    use samband::proto::{EnvelopeBatch, Kind, link_frame::Frame};

    let t = TestNode::start("police.example").await;
    let peer = HandPeer::trusted_by(&mut t.admin().await, "mallory.example").await;
    let mut t_op = t.operator().await;
    let crisis = create_channel(&mut t_op, "crisis").await;
    t.share("crisis", &["mallory.example"]).await;
    let (tx, mut responses) = peer.dial(&t.dir(), t.fed_addr).await;
    tx.send(holding(&crisis)).await.unwrap();
    // T's hello comes first, then the channel's roster.
    while !matches!(next_frame(&mut responses).await, Frame::Envelopes(_)) {}

    // Envelopes 2 and 3 of the peer, whose 1 T never saw: each is a gap.
    let gap = |seq| {
        let (e, _) = peer.envelope(
            &crisis,
            "mallory.example",
            seq,
            GENESIS_HASH,
            "ahead",
            Kind::Text,
        );
        frame(Frame::Envelopes(EnvelopeBatch {
            envelopes: vec![e],
            ..Default::default()
        }))
    };
    let restated = |f: &Frame| match f {
        Frame::Hello(vv) => vv.channels.iter().any(|cv| cv.channel == crisis),
        _ => false,
    };
    tx.send(gap(2)).await.unwrap();
    while !restated(&next_frame(&mut responses).await) {}
    tx.send(gap(3)).await.unwrap();
    while !restated(&next_frame(&mut responses).await) {}
    drop(tx);
    t.stop().await;
}

/// An envelope refused because its timestamp is ahead of this node's clock
/// is asked for again (the node restates what it holds), so that once the
/// clocks agree it is taken without waiting for a later post of its origin.
/// The same envelope, sent again when it is no longer ahead, is stored.
#[tokio::test]
async fn an_envelope_refused_for_a_timestamp_ahead_is_asked_for_again() {
    use samband::model::GENESIS_HASH;
    use samband::proto::{EnvelopeBatch, Kind, link_frame::Frame};

    let t = TestNode::start("police.example").await;
    let peer = HandPeer::trusted_by(&mut t.admin().await, "mallory.example").await;
    let mut t_op = t.operator().await;
    let crisis = create_channel(&mut t_op, "crisis").await;
    t.share("crisis", &["mallory.example"]).await;
    let (tx, mut responses) = peer.dial(&t.dir(), t.fed_addr).await;
    tx.send(holding(&crisis)).await.unwrap();
    while !matches!(next_frame(&mut responses).await, Frame::Envelopes(_)) {}

    // Ten minutes ahead of T's clock: refused, and T restates what it holds.
    let ahead_ms = 10 * 60 * 1000;
    let mut ahead = peer
        .envelope(
            &crisis,
            "mallory.example",
            1,
            GENESIS_HASH,
            "from a fast clock",
            Kind::Text,
        )
        .0;
    ahead.hlc = (peer.now_ms + ahead_ms) << 16;
    samband::model::sign_and_hash(&mut ahead, &peer.pki.message_key().unwrap());
    tx.send(frame(Frame::Envelopes(EnvelopeBatch {
        envelopes: vec![ahead],
        ..Default::default()
    })))
    .await
    .unwrap();
    let restated = |f: &Frame| match f {
        Frame::Hello(vv) => vv.channels.iter().any(|cv| cv.channel == crisis),
        _ => false,
    };
    while !restated(&next_frame(&mut responses).await) {}
    // The clock fixed, the same message (same seq) goes through.
    let (fixed, _) = peer.envelope(
        &crisis,
        "mallory.example",
        1,
        GENESIS_HASH,
        "from a fast clock",
        Kind::Text,
    );
    tx.send(frame(Frame::Envelopes(EnvelopeBatch {
        envelopes: vec![fixed],
        ..Default::default()
    })))
    .await
    .unwrap();
    eventually("the message at T", || async {
        let h = texts(&mut t.operator().await, &crisis).await;
        h.iter().any(|x| x.2 == "from a fast clock").then_some(())
    })
    .await;
    drop(tx);
    t.stop().await;
}

#[tokio::test]
async fn a_subscriber_on_any_participant_sees_every_participant_live() {
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    a.peer_with(&b).await;
    let mut a_op = a.operator().await;
    let ch = create_channel(&mut a_op, "crisis").await;
    a.share("crisis", &["rescue.example"]).await;
    let mut b_op = b.operator().await;
    converged(&[&a, &b], &ch, 1).await;
    // Subscribe on B, live only, then post on A and on B.
    let mut stream = common::subscribe_live(&mut b_op, &ch).await;
    post(&mut a_op, &ch, "live from police").await;
    post(&mut b_op, &ch, "live from rescue").await;
    let mut got = Vec::new();
    while got.len() < 2 {
        let m = tokio::time::timeout(common::PATIENCE, stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got.push((m.origin, m.text));
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("police.example".to_string(), "live from police".to_string()),
            ("rescue.example".to_string(), "live from rescue".to_string())
        ]
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_node_that_is_not_a_trusted_peer_is_refused_at_the_federation_listener() {
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    let stranger = TestNode::start("stranger.example").await;
    a.peer_with(&b).await;
    // The stranger trusts A (it has A's bundle), but A never imported the stranger's.
    stranger
        .trust(&a, Some(a.fed_addr.to_string()), AcceptPolicy::Auto)
        .await;
    eventually("the stranger's dial to be refused", || {
        let stranger = &stranger;
        async move {
            let link = stranger.peers().await.into_iter().next()?.link?;
            (link.state != "connected" && !link.last_error.is_empty()).then_some(link.last_error)
        }
    })
    .await;
    assert!(a.peers().await.iter().all(|p| p.org != "stranger.example"));
    for n in [a, b, stranger] {
        n.stop().await;
    }
}

/// B posts while a participant; the home unshares B, then shares with D.
/// D takes B's message (the roster in force when the home accepted it let
/// B write), so every participant shows the same history, and D lags by
/// nothing.
#[tokio::test]
async fn a_later_participant_takes_an_earlier_participants_messages() {
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    let d = TestNode::start("health.example").await;
    a.peer_with(&b).await;
    a.peer_with(&d).await;
    let mut a_op = a.operator().await;
    let ch = create_channel(&mut a_op, "crisis").await;
    a.share("crisis", &["rescue.example"]).await;
    let mut b_op = b.operator().await;
    eventually("B joined", || {
        let (mut b_op, ch) = (b_op.clone(), ch.clone());
        async move {
            let probe = proto::HistoryRequest {
                channel: ch,
                limit: 1,
                position: None,
            };
            b_op.history(probe).await.ok().map(drop)
        }
    })
    .await;
    post(&mut b_op, &ch, "from B while a participant").await;
    converged(&[&a, &b], &ch, 2).await;
    a.unshare(&ch, "rescue.example").await;
    a.share("crisis", &["health.example"]).await;
    // Rosters: shared with B, B removed, shared with D; and B's message.
    let history = converged(&[&a, &d], &ch, 4).await;
    assert!(
        history.iter().any(|h| h.2 == "from B while a participant"),
        "{history:?}"
    );
    eventually("D to lag by nothing", || async {
        let peers = a.peers().await;
        let lag: u64 = peers
            .iter()
            .find(|p| p.org == "health.example")?
            .link
            .clone()?
            .lag
            .iter()
            .map(|l| l.messages)
            .sum();
        (lag == 0).then_some(())
    })
    .await;
    let log = audit_log(&mut d.admin().await).await;
    assert!(
        log.iter().all(|e| e.event != "federation.rejected"),
        "D rejected something: {log:#?}"
    );
    a.stop().await;
    b.stop().await;
    d.stop().await;
}

#[tokio::test]
async fn an_org_shared_again_after_removal_rejoins_and_catches_up() {
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    a.peer_with(&b).await;
    let mut a_op = a.operator().await;
    let ch = create_channel(&mut a_op, "crisis").await;
    a.share("crisis", &["rescue.example"]).await;
    post(&mut a_op, &ch, "first").await;
    converged(&[&a, &b], &ch, 2).await;
    a.unshare(&ch, "rescue.example").await;
    let mut b_op = b.operator().await;
    eventually("B archived", || async {
        (common::channel_state(&b_op, &ch).await? == "archived").then_some(())
    })
    .await;
    post(&mut a_op, &ch, "while B was out").await;
    // Sharing again must say what B gets of what was posted meanwhile.
    let err = a
        .share_with(
            "crisis",
            &["rescue.example"],
            proto::ShareHistory::Unspecified,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("--history from-now"), "{err:?}");
    a.share_with("crisis", &["rescue.example"], proto::ShareHistory::All)
        .await
        .unwrap();
    eventually("B shared again", || async {
        (common::channel_state(&b_op, &ch).await? == "shared").then_some(())
    })
    .await;
    post(&mut b_op, &ch, "B is back").await;
    // first, unshare roster, while-out, re-share roster, B's post.
    let history = converged(&[&a, &b], &ch, 6).await;
    assert!(
        history.iter().any(|h| h.2 == "while B was out"),
        "{history:?}"
    );
    // A re-share is a normal sequence: B refused nothing on the way (what
    // arrived before the re-sharing roster waited for it, unrecorded).
    let b_log = common::audit_log(&mut b.admin().await).await;
    assert!(
        !b_log.iter().any(|e| e.event == "federation.rejected"),
        "{b_log:?}"
    );
    a.stop().await;
    b.stop().await;
}

/// `channel share --history from-now`: a partner shared with again gets
/// what was posted while it was out as withheld envelopes, from the home and
/// from a participant that relays (their place in each origin's chain, so
/// histories stay identical and nothing is refused on the way; not their
/// text, which is nowhere in its data directory), and what is posted from
/// the share on in full.
#[tokio::test]
async fn a_reshare_from_now_hands_over_the_place_not_the_text_of_what_was_posted_meanwhile() {
    let [a, b, c] = TestNode::mesh(["police.example", "rescue.example", "region.example"]).await;
    let mut a_op = a.operator().await;
    let ch = create_channel(&mut a_op, "crisis").await;
    a.share("crisis", &["rescue.example", "region.example"])
        .await;
    post(&mut a_op, &ch, "before").await;
    converged(&[&a, &b, &c], &ch, 2).await;
    a.unshare(&ch, "rescue.example").await;
    let mut b_op = b.operator().await;
    eventually("B archived", || async {
        (common::channel_state(&b_op, &ch).await? == "archived").then_some(())
    })
    .await;
    let mut c_op = c.operator().await;
    post(&mut a_op, &ch, "secret-of-police while B was out").await;
    post(&mut c_op, &ch, "secret-of-region while B was out").await;
    // before, roster (unshare), A's and C's posts.
    converged(&[&a, &c], &ch, 5).await;
    a.share_with("crisis", &["rescue.example"], proto::ShareHistory::FromNow)
        .await
        .unwrap();
    eventually("B shared again", || async {
        (common::channel_state(&b_op, &ch).await? == "shared").then_some(())
    })
    .await;
    post(&mut a_op, &ch, "after the re-share").await;
    post(&mut b_op, &ch, "B is back").await;
    let count = 8;
    converged(&[&a, &c], &ch, count).await;
    let b_history = eventually("B holds all of it", || async {
        let h = common::all_history(&mut b.operator().await, &ch).await;
        (h.len() == count).then_some(h)
    })
    .await;
    let a_history = common::all_history(&mut a_op, &ch).await;
    let place = |m: &proto::Message| (m.origin.clone(), m.origin_seq, m.hlc);
    assert_eq!(
        b_history.iter().map(place).collect::<Vec<_>>(),
        a_history.iter().map(place).collect::<Vec<_>>(),
        "the same history, in the same order"
    );
    let withheld: Vec<_> = b_history.iter().filter(|m| m.withheld).collect();
    assert_eq!(withheld.len(), 2, "{b_history:?}");
    assert!(withheld.iter().all(|m| m.text.is_empty()));
    let mut origins: Vec<_> = withheld.iter().map(|m| m.origin.as_str()).collect();
    origins.sort();
    assert_eq!(origins, ["police.example", "region.example"]);
    for text in ["before", "after the re-share", "B is back"] {
        assert!(
            b_history.iter().any(|m| m.text == text && !m.withheld),
            "{text} in full on B: {b_history:?}"
        );
    }
    assert!(a_history.iter().all(|m| !m.withheld));
    // Nothing was refused on the way, on any node.
    for n in [&a, &b, &c] {
        let log = common::audit_log(&mut n.admin().await).await;
        assert!(
            !log.iter().any(|e| e.event == "federation.rejected"),
            "{}: {log:?}",
            n.org
        );
    }
    let a_log = common::audit_log(&mut a.admin().await).await;
    assert!(
        a_log.iter().any(|e| e.event == "channel.shared"
            && e.details.get("history").map(String::as_str) == Some("from-now")),
        "{a_log:?}"
    );
    let b_tmp = b.stop().await;
    let raw = raw_store_bytes(&common::node_dir(&b_tmp));
    assert!(
        contains(&raw, "after the re-share"),
        "the raw check must see what B does hold"
    );
    assert!(
        !contains(&raw, "secret-of-"),
        "a withheld text reached B's disk"
    );
    a.stop().await;
    c.stop().await;
}

/// A channel offered to a partner that accepts by hand, and unshared
/// before its operator accepted it, is withdrawn there: archived, empty,
/// no longer to be accepted, and showing nothing of who joined since; the
/// withdrawal is audited and nothing is refused.
#[tokio::test]
async fn an_offer_unshared_before_it_was_accepted_is_withdrawn() {
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("region.example").await;
    let c = TestNode::start("rescue.example").await;
    a.trust(&b, Some(b.fed_addr.to_string()), AcceptPolicy::Auto)
        .await;
    b.trust(&a, Some(a.fed_addr.to_string()), AcceptPolicy::Manual)
        .await;
    a.peer_with(&c).await;
    let mut a_op = a.operator().await;
    let ch = create_channel(&mut a_op, "crisis").await;
    post(&mut a_op, &ch, "for the agencies of the channel").await;
    a.share("crisis", &["region.example"]).await;
    let b_op = b.operator().await;
    eventually("the region to hold the offer", || {
        let b_op = b_op.clone();
        let ch = ch.clone();
        async move {
            common::channel_state(&b_op, &ch)
                .await
                .filter(|s| s == "pending")
        }
    })
    .await;
    a.unshare("crisis", "region.example").await;
    a.share("crisis", &["rescue.example"]).await;
    eventually("the region to see the offer withdrawn", || {
        let b_op = b_op.clone();
        let ch = ch.clone();
        async move {
            common::channel_state(&b_op, &ch)
                .await
                .filter(|s| s == "archived")
        }
    })
    .await;
    let late = b
        .admin()
        .await
        .accept_channel(proto::AcceptChannelRequest {
            channel: ch.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition, "{late:?}");
    assert!(late.message().contains("was withdrawn"), "{late:?}");
    let held = b_op
        .clone()
        .list_channels(proto::ListChannelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .channels
        .into_iter()
        .find(|x| x.id == ch)
        .unwrap();
    assert!(
        !held.participants.iter().any(|o| o == "rescue.example"),
        "nothing of who joined after the removal: {held:?}"
    );
    assert!(texts(&mut b_op.clone(), &ch).await.is_empty());
    let log = common::audit_log(&mut b.admin().await).await;
    assert!(
        log.iter().any(|e| e.event == "channel.withdrawn"),
        "audited"
    );
    assert!(
        !log.iter()
            .any(|e| e.event.starts_with("federation.rejected")),
        "nothing refused: {log:?}"
    );
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

/// The roster that removed an org before it took a channel goes to that
/// org once while the home runs, not with every hello: the org never lists
/// the channel in a hello again, so once per hello would be forever.
#[tokio::test]
async fn a_withdrawal_goes_to_the_removed_org_once_not_with_every_hello() {
    use prost::Message as _;
    use samband::proto::{VersionVectors, link_frame::Frame};
    let t = TestNode::start("police.example").await;
    let peer = HandPeer::trusted_by(&mut t.admin().await, "mallory.example").await;
    let mut t_op = t.operator().await;
    let crisis = create_channel(&mut t_op, "crisis").await;
    t.share("crisis", &["mallory.example"]).await;
    t.unshare("crisis", "mallory.example").await;
    let (tx, mut responses) = peer.dial(&t.dir(), t.fed_addr).await;
    let holding_nothing = || frame(Frame::Hello(VersionVectors::default()));
    tx.send(holding_nothing()).await.unwrap();
    let offered = loop {
        if let Frame::Offer(env) = next_frame(&mut responses).await {
            break env;
        }
    };
    assert_eq!(offered.channel, crisis);
    let control = proto::Control::decode(offered.body.as_slice()).unwrap();
    let Some(proto::control::Action::Roster(roster)) = control.action else {
        panic!("a roster: {control:?}");
    };
    assert!(
        roster
            .participants
            .iter()
            .any(|p| p.org == "mallory.example" && !p.active),
        "the roster that removed it: {roster:?}"
    );
    // Another hello, then a channel shared with it: the next offer is that
    // channel's, not the withdrawal again.
    tx.send(holding_nothing()).await.unwrap();
    let second = create_channel(&mut t_op, "second").await;
    t.share("second", &["mallory.example"]).await;
    let next = loop {
        if let Frame::Offer(env) = next_frame(&mut responses).await {
            break env;
        }
    };
    assert_eq!(next.channel, second, "the withdrawal went once");
    drop(tx);
    t.stop().await;
}

/// A withdrawn offer shared again `--history from-now`, with roster changes
/// in between (another org shared with): accepted, the channel catches up
/// with the roster changes whole and the messages from before the share
/// withheld, and nothing is refused on the way.
#[tokio::test]
async fn a_withdrawn_offer_shared_again_from_now_catches_up_with_its_rosters_whole() {
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("fire.example").await;
    let c = TestNode::start("rescue.example").await;
    a.trust(&b, Some(b.fed_addr.to_string()), AcceptPolicy::Auto)
        .await;
    b.trust(&a, Some(a.fed_addr.to_string()), AcceptPolicy::Manual)
        .await;
    a.peer_with(&c).await;
    let mut a_op = a.operator().await;
    let ch = create_channel(&mut a_op, "plain").await;
    post(&mut a_op, &ch, "before the first share").await;
    a.share("plain", &["fire.example"]).await;
    let b_op = b.operator().await;
    let state_is = |want: &'static str| {
        let (b_op, ch) = (b_op.clone(), ch.clone());
        move || {
            let (b_op, ch) = (b_op.clone(), ch.clone());
            async move {
                common::channel_state(&b_op, &ch)
                    .await
                    .filter(|s| s == want)
            }
        }
    };
    eventually("fire to hold the offer", state_is("pending")).await;
    a.unshare("plain", "fire.example").await;
    a.share("plain", &["rescue.example"]).await;
    eventually("the offer to be withdrawn", state_is("archived")).await;
    post(&mut a_op, &ch, "while fire was out").await;
    a.share_with("plain", &["fire.example"], proto::ShareHistory::FromNow)
        .await
        .unwrap();
    eventually("fire to be offered it again", state_is("pending")).await;
    b.admin()
        .await
        .accept_channel(proto::AcceptChannelRequest {
            channel: ch.clone(),
        })
        .await
        .unwrap();
    post(&mut a_op, &ch, "after the share").await;
    let a_history = common::all_history(&mut a_op, &ch).await;
    let b_history = eventually("fire to hold all of it", || async {
        let h = common::all_history(&mut b.operator().await, &ch).await;
        (h.len() == a_history.len()).then_some(h)
    })
    .await;
    let shown = |h: &[proto::Message]| -> Vec<(u64, bool, String)> {
        h.iter()
            .map(|m| (m.origin_seq, m.withheld, m.text.clone()))
            .collect()
    };
    let withheld: Vec<_> = shown(&b_history)
        .into_iter()
        .filter(|(_, withheld, _)| *withheld)
        .collect();
    assert_eq!(
        withheld.len(),
        2,
        "the two posts before the share: {b_history:?}"
    );
    assert!(
        b_history
            .iter()
            .any(|m| m.text == "after the share" && !m.withheld),
        "{b_history:?}"
    );
    let log = common::audit_log(&mut b.admin().await).await;
    assert!(
        !log.iter().any(|e| e.event == "federation.rejected"),
        "nothing refused: {log:?}"
    );
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

/// A partner that accepts a home's channels by hand (`accept manual`) does
/// so again when the home shares a channel with it again after removing it.
#[tokio::test]
async fn a_reshare_waits_for_a_manual_accept_like_the_first_share() {
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    a.trust(&b, Some(b.fed_addr.to_string()), proto::AcceptPolicy::Auto)
        .await;
    b.trust(
        &a,
        Some(a.fed_addr.to_string()),
        proto::AcceptPolicy::Manual,
    )
    .await;
    let mut a_op = a.operator().await;
    let ch = create_channel(&mut a_op, "crisis").await;
    let b_op = b.operator().await;
    let accept = || async {
        b.admin()
            .await
            .accept_channel(proto::AcceptChannelRequest {
                channel: ch.clone(),
            })
            .await
            .unwrap();
    };
    a.share("crisis", &["rescue.example"]).await;
    eventually("B holds the offer", || async {
        (common::channel_state(&b_op, &ch).await? == "pending").then_some(())
    })
    .await;
    accept().await;
    a.unshare(&ch, "rescue.example").await;
    eventually("B archived", || async {
        (common::channel_state(&b_op, &ch).await? == "archived").then_some(())
    })
    .await;
    a.share_with("crisis", &["rescue.example"], proto::ShareHistory::All)
        .await
        .unwrap();
    eventually("B holds the new offer, not joined", || async {
        (common::channel_state(&b_op, &ch).await? == "pending").then_some(())
    })
    .await;
    post(&mut a_op, &ch, "posted while B decides").await;
    accept().await;
    eventually("B shared again", || async {
        (common::channel_state(&b_op, &ch).await? == "shared").then_some(())
    })
    .await;
    // share, unshare, share again, and the post: nothing lost while pending.
    let history = converged(&[&a, &b], &ch, 4).await;
    assert!(
        history.iter().any(|h| h.2 == "posted while B decides"),
        "{history:?}"
    );
    a.stop().await;
    b.stop().await;
}

/// Messages relayed after a partition carry older timestamps than what a
/// live subscriber already saw; more of them arrive than its buffer holds.
/// It must still receive every one, in seq order per origin.
#[tokio::test]
async fn a_live_subscriber_gets_a_healed_partitions_backlog_with_older_timestamps() {
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    let proxy = common::Proxy::start(b.fed_addr).await;
    a.dials(&b, proxy.addr).await;
    let mut a_op = a.operator().await;
    let ch = create_channel(&mut a_op, "crisis").await;
    a.share("crisis", &["rescue.example"]).await;
    converged(&[&a, &b], &ch, 1).await;
    let mut sub = common::subscribe_live(&mut a_op.clone(), &ch).await;

    proxy.cut();
    let mut b_op = b.operator().await;
    const BACKLOG: u64 = 3000;
    let posts: Vec<_> = (0..BACKLOG)
        // Large enough that the backlog overflows every buffer on the way to the subscriber.
        .map(|i| proto::PostRequest {
            channel: ch.clone(),
            text: format!("b{i} {}", "x".repeat(4000)),
            priority: 0,
            attachments: Vec::new(),
            ..Default::default()
        })
        .collect();
    let mut acks = b_op
        .publish(tokio_stream::iter(posts))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..BACKLOG {
        acks.message().await.unwrap().unwrap();
    }
    // Newer than all of B's backlog, and seen by the subscriber first.
    post(&mut a_op, &ch, "a after the backlog").await;
    let first = tokio::time::timeout(common::PATIENCE, sub.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.text, "a after the backlog");
    proxy.heal();
    converged(&[&a, &b], &ch, BACKLOG as usize + 2).await;
    let mut seqs = Vec::new();
    while (seqs.len() as u64) < BACKLOG {
        let m = tokio::time::timeout(common::PATIENCE, sub.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(m.origin, "rescue.example");
        seqs.push(m.origin_seq);
    }
    assert_eq!(seqs, (1..=BACKLOG).collect::<Vec<_>>());
    a.stop().await;
    b.stop().await;
}

/// What a partner sent is never sent back to it.
#[tokio::test]
async fn envelopes_are_not_echoed_to_the_partner_that_sent_them() {
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    a.peer_with(&b).await;
    let mut a_op = a.operator().await;
    let ch = create_channel(&mut a_op, "crisis").await;
    a.share("crisis", &["rescue.example"]).await;
    converged(&[&a, &b], &ch, 1).await;
    let mut b_op = b.operator().await;
    for i in 0..100 {
        post(&mut b_op, &ch, &format!("from B {i}")).await;
    }
    post(&mut a_op, &ch, "from A").await;
    converged(&[&a, &b], &ch, 102).await;
    // Let any echo that was coming arrive and be counted.
    post(&mut a_op, &ch, "from A again").await;
    converged(&[&a, &b], &ch, 103).await;
    let link = a.peers().await.into_iter().next().unwrap().link.unwrap();
    // A sent its roster and its own two posts; B's hundred came from B.
    assert!(
        link.envelopes_sent <= 3,
        "A sent {} envelopes to B",
        link.envelopes_sent
    );
    assert_eq!(link.envelopes_received, 100);
    a.stop().await;
    b.stop().await;
}

/// A frame that breaks the link protocol ends the link with a status that
/// says why (the limit's name where one was passed), the refusal is
/// audited, and the partner's next link is accepted at once.
#[tokio::test]
async fn a_frame_that_breaks_the_protocol_ends_the_link_with_a_status_saying_why() {
    use prost::Message as _;
    use samband::federation::wire::{MAX_FRAME_BYTES, MAX_FRAME_ENVELOPES};
    use samband::proto::link_frame::Frame;

    let t = TestNode::start("police.example").await;
    let mallory = HandPeer::trusted_by(&mut t.admin().await, "mallory.example").await;
    create_channel(&mut t.operator().await, "crisis").await;
    t.share("crisis", &["mallory.example"]).await;

    // A hello naming a channel in bytes that are not UTF-8.
    let mut not_utf8 = holding("police.example/crisis").encode_to_vec();
    let at = not_utf8.iter().rposition(|&b| b == b's').unwrap();
    not_utf8[at] = 0xff;
    let too_many = frame(Frame::Envelopes(proto::EnvelopeBatch {
        envelopes: vec![proto::Envelope::default(); MAX_FRAME_ENVELOPES + 1],
        ..Default::default()
    }))
    .encode_to_vec();
    let too_large = vec![0u8; MAX_FRAME_BYTES + 1];
    for (bytes, code, says) in [
        (
            not_utf8,
            Code::InvalidArgument,
            "not a valid samband.v1.LinkFrame",
        ),
        (too_many, Code::ResourceExhausted, "MAX_FRAME_ENVELOPES"),
        (too_large, Code::ResourceExhausted, "MAX_FRAME_BYTES"),
    ] {
        let (tx, mut responses) = mallory.dial_raw(&t.dir(), t.fed_addr).await;
        tx.send(bytes).await.unwrap();
        let status = common::hand_peer::end_status(&mut responses).await;
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(says), "{status:?}");
    }
    // Each refusal released the link: a well-behaved link is taken at once.
    let (tx, mut responses) = mallory.dial(&t.dir(), t.fed_addr).await;
    tx.send(frame(Frame::Hello(proto::VersionVectors::default())))
        .await
        .unwrap();
    assert!(matches!(next_frame(&mut responses).await, Frame::Hello(_)));
    let log = audit_log(&mut t.admin().await).await;
    let refused: Vec<_> = log
        .iter()
        .filter(|e| e.event == "federation.link_refused" && e.details["peer"] == "mallory.example")
        .collect();
    assert_eq!(refused.len(), 3, "{refused:#?}");
    drop(tx);
    t.stop().await;
}

/// What a partner can observe never depends on channels not shared with
/// it: an offer of an internal channel, or of one shared with another
/// partner, is met with the same silence as one of a channel that does not
/// exist. Only an offer of a channel shared with it is answered.
#[tokio::test]
async fn offers_of_channels_not_shared_with_a_partner_are_answered_like_unknown_ones() {
    use samband::model::GENESIS_HASH;
    use samband::proto::link_frame::Frame;

    let t = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    t.peer_with(&b).await;
    let mallory = HandPeer::trusted_by(&mut t.admin().await, "mallory.example").await;
    let mut t_op = t.operator().await;
    let internal = create_channel(&mut t_op, "internal").await;
    let others = create_channel(&mut t_op, "with-rescue").await;
    let mine = create_channel(&mut t_op, "with-mallory").await;
    t.share("with-rescue", &["rescue.example"]).await;
    t.share("with-mallory", &["mallory.example"]).await;

    let (tx, mut responses) = mallory.dial(&t.dir(), t.fed_addr).await;
    // Mallory states it holds the channel shared with it, so nothing is pending.
    tx.send(holding(&mine)).await.unwrap();
    // T's hello, then the roster of the shared channel.
    assert!(matches!(next_frame(&mut responses).await, Frame::Hello(_)));
    assert!(matches!(
        next_frame(&mut responses).await,
        Frame::Envelopes(_)
    ));
    let offer = |channel: &str| {
        let (e, _) = mallory.envelope(
            channel,
            "police.example",
            1,
            GENESIS_HASH,
            "",
            proto::Kind::Control,
        );
        frame(Frame::Offer(e))
    };
    for channel in [
        &internal,
        &others,
        &"police.example/no-such-channel".to_owned(),
    ] {
        tx.send(offer(channel)).await.unwrap();
        // A restatement would come at once (the first is never deferred).
        let answer =
            tokio::time::timeout(std::time::Duration::from_millis(1500), responses.message()).await;
        assert!(
            answer.is_err(),
            "an offer of {channel} was answered: {answer:?}"
        );
    }
    // The channel shared with Mallory is answered: T restates what it holds.
    tx.send(offer(&mine)).await.unwrap();
    assert!(matches!(next_frame(&mut responses).await, Frame::Hello(_)));
    drop(tx);
    t.stop().await;
    b.stop().await;
}

/// After a partition, the FLASH messages of the backlog reach the
/// partner's members before the bulk of it: shown ahead (each signed on
/// its own), then again in their place, with each origin's history still
/// gap-free and identical on both nodes.
#[tokio::test]
async fn flash_messages_of_a_backlog_reach_members_ahead_of_it_after_a_partition() {
    let a = TestNode::start("police.example").await;
    let b = TestNode::start("rescue.example").await;
    let proxy = common::Proxy::start(b.fed_addr).await;
    a.dials(&b, proxy.addr).await;
    let mut a_op = a.operator().await;
    let ch = create_channel(&mut a_op, "crisis").await;
    a.share("crisis", &["rescue.example"]).await;
    converged(&[&a, &b], &ch, 1).await;
    let mut reader = b.client("reader", Role::Member).await;
    let mut live = common::subscribe_live(&mut reader, &ch).await;

    proxy.cut();
    let posters = a_op.clone();
    let normal = |n: usize, tag: &'static str| {
        let (op, ch) = (posters.clone(), ch.clone());
        (0..8)
            .map(move |p| {
                let (mut op, ch) = (op.clone(), ch.clone());
                tokio::spawn(async move {
                    for i in 0..n / 8 {
                        post(&mut op, &ch, &format!("{tag} {p}-{i}")).await;
                    }
                })
            })
            .collect::<Vec<_>>()
    };
    // 2,400 routine messages, three FLASH, 600 more: in order, the first
    // FLASH comes after 2,400 others.
    for task in normal(2400, "early") {
        task.await.unwrap();
    }
    let mut flash = Vec::new();
    for i in 0..3 {
        let req = proto::PostRequest {
            channel: ch.clone(),
            text: format!("FLASH {i}"),
            priority: proto::Priority::Flash as i32,
            ..Default::default()
        };
        flash.push(a_op.post(req).await.unwrap().into_inner().cursor);
    }
    for task in normal(600, "late") {
        task.await.unwrap();
    }
    proxy.heal();

    // Routine messages received before each FLASH message was seen.
    let (mut routine, mut ahead_at, mut in_order) = (0usize, Vec::new(), Vec::new());
    while routine < 3000 || in_order.len() < 3 {
        let m = tokio::time::timeout(common::PATIENCE, live.message())
            .await
            .expect("the backlog to arrive")
            .unwrap()
            .unwrap();
        match (m.priority == proto::Priority::Flash as i32, m.ahead) {
            (true, true) => ahead_at.push((m.cursor, routine)),
            (true, false) => in_order.push(m.cursor),
            (false, ahead) => {
                assert!(!ahead, "only FLASH and URGENT go ahead: {m:?}");
                routine += 1;
            }
        }
    }
    let seen: Vec<_> = ahead_at.iter().map(|(c, _)| c.clone()).collect();
    assert_eq!(seen, flash, "each FLASH once ahead, oldest first");
    assert!(
        ahead_at.iter().all(|(_, before)| *before < 1000),
        "FLASH ahead of the bulk: routine messages before each: {ahead_at:?}"
    );
    assert_eq!(in_order, flash, "and again in their place");
    converged(&[&a, &b], &ch, 3004).await;
    a.stop().await;
    b.stop().await;
}
