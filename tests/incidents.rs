//! Incidents across real nodes: opened with two partners, each agency
//! putting its own entries in the shared situational picture, the picture
//! converging on all three (also after a partition), closing archiving it
//! on every participant, the end (`until`) passing with the home down, the
//! exercise marking, and the refusals of bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{Client, Proxy, TestNode, eventually, operator_channel};
use samband::proto::{self, incidents_client::IncidentsClient};
use tonic::transport::Channel;

type Incidents = IncidentsClient<Channel>;

async fn incidents(node: &TestNode) -> Incidents {
    IncidentsClient::new(operator_channel(&node.dir(), node.addr).await)
}

async fn open(
    c: &mut Incidents,
    name: &str,
    with: &[&str],
    exercise: bool,
    until_unix_ms: u64,
) -> Result<proto::IncidentInfo, tonic::Status> {
    let req = proto::OpenIncidentRequest {
        name: name.into(),
        with: with.iter().map(|s| s.to_string()).collect(),
        exercise,
        until_unix_ms,
        channels: Vec::new(),
    };
    Ok(c.open_incident(req).await?.into_inner())
}

fn point(lat: f64, lon: f64) -> String {
    format!(r#"{{"type":"Point","coordinates":[{lon},{lat}]}}"#)
}

async fn set(
    c: &mut Incidents,
    incident: &str,
    key: &str,
    kind: &str,
    status: &str,
    geometry: &str,
) -> Result<proto::PictureEntry, tonic::Status> {
    let req = proto::SetEntryRequest {
        incident: incident.into(),
        key: key.into(),
        kind: kind.into(),
        status: status.into(),
        geometry: geometry.into(),
        fields: HashMap::from([("crew".to_string(), "4".to_string())]),
        owner: String::new(),
    };
    Ok(c.set_entry(req).await?.into_inner())
}

/// The picture as (owner, key, status) triples, or None while the node
/// does not hold the incident.
async fn picture(c: &mut Incidents, incident: &str) -> Option<Vec<(String, String, String)>> {
    let req = proto::PictureRequest {
        incident: incident.into(),
    };
    let entries = c.picture(req).await.ok()?.into_inner().entries;
    Some(
        entries
            .into_iter()
            .map(|e| (e.owner, e.key, e.status))
            .collect(),
    )
}

/// Waits until every node shows `expected` as the incident's picture.
async fn pictures_are(nodes: &mut [Incidents], incident: &str, expected: &[(&str, &str, &str)]) {
    let expected: Vec<(String, String, String)> = expected
        .iter()
        .map(|(o, k, s)| (o.to_string(), k.to_string(), s.to_string()))
        .collect();
    for (i, c) in nodes.iter_mut().enumerate() {
        let what = format!("node {i} to show the picture {expected:?}");
        eventually(&what, || {
            let mut c = c.clone();
            let expected = expected.clone();
            async move { picture(&mut c, incident).await.filter(|p| *p == expected) }
        })
        .await;
    }
}

async fn incident_state(c: &mut Incidents, id: &str) -> Option<proto::IncidentInfo> {
    let list = c
        .list_incidents(proto::ListIncidentsRequest {})
        .await
        .ok()?
        .into_inner();
    list.incidents.into_iter().find(|i| i.id == id)
}

async fn post(c: &mut Client, channel: &str, text: &str) -> Result<(), tonic::Status> {
    c.post(common::post_request(channel, text))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_three_agency_incident_shares_one_picture_also_after_a_partition_and_closes_everywhere() {
    let police = TestNode::start("police.example").await;
    let rescue = TestNode::start("rescue.example").await;
    let region = TestNode::start("region.example").await;
    // Rescue behind a proxy that partitions it; the region reaches rescue
    // only through police (the home relays).
    let proxy = Proxy::start(rescue.fed_addr).await;
    police.dials(&rescue, proxy.addr).await;
    police.peer_with(&region).await;
    let mut p = incidents(&police).await;
    let info = open(
        &mut p,
        "flood",
        &["rescue.example", "region.example"],
        false,
        0,
    )
    .await
    .unwrap();
    assert_eq!(info.id, "police.example/flood");
    assert_eq!(info.state, "active");
    let id = info.id.clone();
    let (mut r, mut g) = (incidents(&rescue).await, incidents(&region).await);
    for (c, who) in [(&mut r, "rescue"), (&mut g, "region")] {
        eventually(&format!("{who} to join the incident"), || {
            let mut c = c.clone();
            let id = id.clone();
            async move { incident_state(&mut c, &id).await }
        })
        .await;
    }
    // Each agency maps its own units and closures.
    set(
        &mut p,
        &id,
        "patrol-1",
        "unit",
        "on scene",
        &point(59.33, 18.07),
    )
    .await
    .unwrap();
    set(
        &mut r,
        &id,
        "boat-3",
        "unit",
        "en route",
        &point(59.34, 18.10),
    )
    .await
    .unwrap();
    let polygon =
        r#"{"type":"Polygon","coordinates":[[[18.0,59.3],[18.1,59.3],[18.1,59.4],[18.0,59.3]]]}"#;
    set(&mut g, &id, "school", "shelter", "open", polygon)
        .await
        .unwrap();
    let mut all = [p.clone(), r.clone(), g.clone()];
    pictures_are(
        &mut all,
        &id,
        &[
            ("police.example", "patrol-1", "on scene"),
            ("region.example", "school", "open"),
            ("rescue.example", "boat-3", "en route"),
        ],
    )
    .await;

    // Partitioned, police and rescue each change their own entries.
    proxy.cut();
    set(
        &mut r,
        &id,
        "boat-3",
        "unit",
        "on scene",
        &point(59.33, 18.08),
    )
    .await
    .unwrap();
    p.remove_entry(proto::RemoveEntryRequest {
        incident: id.clone(),
        key: "patrol-1".into(),
        owner: String::new(),
    })
    .await
    .unwrap();
    set(&mut g, &id, "school", "shelter", "full", polygon)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        picture(&mut r, &id).await.unwrap(),
        [
            (
                "police.example".into(),
                "patrol-1".into(),
                "on scene".into()
            ),
            ("region.example".into(), "school".into(), "open".into()),
            ("rescue.example".into(), "boat-3".into(), "on scene".into()),
        ],
        "rescue sees only its own change while cut off"
    );
    let healed = std::time::Instant::now();
    proxy.heal();
    pictures_are(
        &mut all,
        &id,
        &[
            ("region.example", "school", "full"),
            ("rescue.example", "boat-3", "on scene"),
        ],
    )
    .await;
    eprintln!(
        "picture converged on all three {} ms after the partition healed",
        healed.elapsed().as_millis()
    );

    // Only an entry's owner changes it.
    let theirs = r
        .remove_entry(proto::RemoveEntryRequest {
            incident: id.clone(),
            key: "school".into(),
            owner: "region.example".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(theirs.code(), tonic::Code::PermissionDenied, "{theirs:?}");
    assert!(theirs.message().contains("only its owner"), "{theirs:?}");

    // Closing archives it on every participant, keeping what each holds.
    let mut rescue_member = rescue.operator().await;
    post(&mut rescue_member, &id, "Boat 3 returning")
        .await
        .unwrap();
    // (What the home holds when it closes stands everywhere: wait for it
    // there, or the line it draws leaves the message at rescue alone.)
    let region_member = region.operator().await;
    eventually("rescue's message at the region", || {
        let mut c = region_member.clone();
        let id = id.clone();
        async move {
            let t = common::texts(&mut c, &id).await;
            t.iter()
                .any(|(_, _, t)| t == "Boat 3 returning")
                .then_some(())
        }
    })
    .await;
    let closed = close(&mut p, "flood").await.unwrap();
    assert_eq!(closed.state, "closed");
    let again = close(&mut p, "flood").await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
    assert!(again.message().contains("closed already"), "{again:?}");
    for (node, who) in [
        (&rescue, "rescue"),
        (&region, "region"),
        (&police, "police"),
    ] {
        let c = node.operator().await;
        eventually(&format!("{who} to archive the incident"), || {
            let c = c.clone();
            let id = id.clone();
            async move {
                common::channel_state(&c, &id)
                    .await
                    .filter(|s| s == "archived")
            }
        })
        .await;
        let refused = post(&mut c.clone(), &id, "after the end")
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::FailedPrecondition,
            "{who}: {refused:?}"
        );
        let texts = common::texts(&mut c.clone(), &id).await;
        assert!(
            texts.iter().any(|(_, _, t)| t == "Boat 3 returning"),
            "{who} keeps what it received"
        );
    }
    let late = set(&mut g, &id, "school", "shelter", "closed", polygon)
        .await
        .unwrap_err();
    assert_eq!(late.code(), tonic::Code::FailedPrecondition, "{late:?}");
    for (c, who) in [(&mut r, "rescue"), (&mut g, "region")] {
        let shown = eventually(&format!("{who} to show it closed"), || {
            let mut c = c.clone();
            let id = id.clone();
            async move {
                incident_state(&mut c, &id)
                    .await
                    .filter(|i| i.state == "closed")
            }
        })
        .await;
        assert_eq!(
            shown.participants,
            ["police.example", "rescue.example", "region.example"],
            "{who}"
        );
    }
    // Closing removed every partner from the roster, with the home's lines
    // (what unsharing does): a partner that kept sending would be refused.
    let channels = police
        .operator()
        .await
        .list_channels(proto::ListChannelsRequest {})
        .await
        .unwrap()
        .into_inner()
        .channels;
    let flood = channels.iter().find(|c| c.id == id).unwrap();
    assert_eq!(flood.participants, ["police.example"], "{flood:?}");
    let log = common::audit_log(&mut police.admin().await).await;
    for event in ["incident.opened", "incident.closed"] {
        assert!(log.iter().any(|e| e.event == event), "{event} audited");
    }
    police.stop().await;
    rescue.stop().await;
    region.stop().await;
}

#[tokio::test]
async fn an_exercise_is_marked_everywhere_and_ends_at_until_on_each_participant_even_with_the_home_down()
 {
    let police = TestNode::start("police.example").await;
    let rescue = TestNode::start("rescue.example").await;
    police.peer_with(&rescue).await;
    let mut p = incidents(&police).await;
    let until = samband::model::unix_ms() + 4_000;
    let info = open(&mut p, "drill", &["rescue.example"], true, until)
        .await
        .unwrap();
    assert!(info.exercise);
    let id = info.id;
    let mut r = incidents(&rescue).await;
    let shown = eventually("rescue to join the exercise", || {
        let mut r = r.clone();
        let id = id.clone();
        async move { incident_state(&mut r, &id).await }
    })
    .await;
    assert!(shown.exercise && shown.until_unix_ms == until, "{shown:?}");
    let mut police_member = police.operator().await;
    post(&mut police_member, &id, "Drill: dam breach at Kvarnholmen")
        .await
        .unwrap();
    let entry = set(&mut r, &id, "boat-1", "unit", "ready", "")
        .await
        .unwrap();
    assert!(entry.exercise, "the entry is marked at its owner");
    let mut rescue_member = rescue.operator().await;
    let history = eventually("the drill message at rescue", || {
        let mut c = rescue_member.clone();
        let id = id.clone();
        async move {
            let h = common::all_history(&mut c, &id).await;
            h.iter().any(|m| m.text.starts_with("Drill")).then_some(h)
        }
    })
    .await;
    assert!(
        history.iter().all(|m| m.exercise),
        "every message of an exercise is marked: {history:?}"
    );
    let entries = eventually("rescue's entry at police", || {
        let mut p = p.clone();
        let id = id.clone();
        async move {
            let req = proto::PictureRequest { incident: id };
            let got = p.picture(req).await.ok()?.into_inner();
            (!got.entries.is_empty()).then_some(got)
        }
    })
    .await;
    assert!(entries.exercise && entries.entries.iter().all(|e| e.exercise));
    // The home goes down; the end passes anyway, at rescue.
    let police_dir = police.stop().await;
    let wait = until.saturating_sub(samband::model::unix_ms()) + 200;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let refused = post(&mut rescue_member, &id, "too late").await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(refused.message().contains("past its end"), "{refused:?}");
    let ended = incident_state(&mut r, &id).await.unwrap();
    assert_eq!(ended.state, "ended");
    assert_eq!(
        common::channel_state(&rescue_member, &id).await.as_deref(),
        Some("archived")
    );
    drop(police_dir);
    rescue.stop().await;
}

/// A participant that was down when the incident closed still states the
/// incident's channel to the others it is peered with when it is back, and
/// offers them the roster it last had. That is a partner lagging behind, not a hostile
/// one: nothing of it is audited as a rejection, and once it reaches the
/// home it archives the incident like everyone else.
#[tokio::test]
async fn a_participant_down_at_the_close_is_not_taken_for_a_hostile_one() {
    let police = TestNode::start("police.example").await;
    let rescue = TestNode::start("rescue.example").await;
    let region = TestNode::start("region.example").await;
    police.peer_with(&rescue).await;
    rescue.peer_with(&region).await;
    let proxy = Proxy::start(region.fed_addr).await;
    police.dials(&region, proxy.addr).await;
    let mut p = incidents(&police).await;
    let id = open(
        &mut p,
        "dam",
        &["rescue.example", "region.example"],
        false,
        0,
    )
    .await
    .unwrap()
    .id;
    for node in [&rescue, &region] {
        let op = node.operator().await;
        eventually("the partners to join", || async {
            common::channel_state(&op, &id)
                .await
                .filter(|s| s == "shared")
        })
        .await;
    }
    // The region is down while police closes the incident, and comes back
    // still cut off from police: it states the channel to rescue, and
    // offers it, for a while (hellos go several times a second).
    proxy.cut();
    let addrs = (region.addr, region.fed_addr);
    let region_dir = region.stop().await;
    close(&mut p, &id).await.unwrap();
    archived_at(&rescue, &id).await;
    let region = TestNode::start_at(region_dir, Some(addrs)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.heal();
    archived_at(&region, &id).await;
    let rejected: Vec<_> = common::audit_log(&mut rescue.admin().await)
        .await
        .into_iter()
        .filter(|e| e.event == "federation.rejected")
        .collect();
    assert!(
        rejected.is_empty(),
        "rescue audited a lagging partner: {rejected:?}"
    );
    police.stop().await;
    rescue.stop().await;
    region.stop().await;
}

/// Closing an incident removes every partner from its channels, but what
/// was posted before was theirs: the receipts of an order still list each
/// agency with what it held and who acknowledged (an agency cut off before
/// the order reached it shows "removed"), and nobody is asked any more to
/// acknowledge in the read-only channel, the home for its own order
/// included.
#[tokio::test]
async fn closing_an_incident_keeps_who_received_and_acknowledged_its_orders() {
    let police = TestNode::start("police.example").await;
    let rescue = TestNode::start("rescue.example").await;
    let region = TestNode::start("region.example").await;
    police.peer_with(&rescue).await;
    let proxy = Proxy::start(region.fed_addr).await;
    police.dials(&region, proxy.addr).await;
    let mut p = incidents(&police).await;
    let id = open(
        &mut p,
        "bridge",
        &["rescue.example", "region.example"],
        false,
        0,
    )
    .await
    .unwrap()
    .id;
    for node in [&rescue, &region] {
        let c = incidents(node).await;
        eventually("the partners to join", || {
            let mut c = c.clone();
            let id = id.clone();
            async move { incident_state(&mut c, &id).await }
        })
        .await;
    }
    let mut al = police.client("al", samband::model::Role::Member).await;
    let mut bo = rescue.client("bo", samband::model::Role::Member).await;
    let cy = region.client("cy", samband::model::Role::Member).await;
    let order = |text: &str| proto::PostRequest {
        channel: id.clone(),
        text: text.into(),
        priority: proto::Priority::Flash as i32,
        ..Default::default()
    };
    let first = al
        .post(order("Evacuate the bridge"))
        .await
        .unwrap()
        .into_inner();
    let asked = |c: &Client, cursor: String| {
        let (c, id) = (c.clone(), id.clone());
        async move {
            common::all_history(&mut c.clone(), &id)
                .await
                .into_iter()
                .find(|m| m.cursor == cursor)
                .map(|m| m.needs_my_ack)
        }
    };
    for c in [&bo, &cy] {
        let needs = eventually("the order at each partner", || {
            asked(c, first.cursor.clone())
        })
        .await;
        assert!(needs, "a partner is asked to acknowledge");
    }
    bo.acknowledge(proto::AcknowledgeRequest {
        channel: id.clone(),
        cursor: first.cursor.clone(),
    })
    .await
    .unwrap();
    // The region is cut off: the second order never reaches it.
    proxy.cut();
    let second = al.post(order("Close road 73")).await.unwrap().into_inner();
    let needs = eventually("the second order at rescue", || {
        asked(&bo, second.cursor.clone())
    })
    .await;
    assert!(needs, "rescue is asked before the close");
    let receipt = |c: &Client, cursor: String| {
        let (mut c, id) = (c.clone(), id.clone());
        async move {
            let req = proto::ReceiptsRequest {
                channel: id,
                cursor,
            };
            let r = c.receipts(req).await.unwrap().into_inner();
            r.agencies
                .into_iter()
                .map(|a| {
                    let acked: Vec<String> =
                        a.acknowledged_by.into_iter().map(|m| m.member).collect();
                    (a.org, a.state, acked)
                })
                .collect::<Vec<_>>()
        }
    };
    eventually("rescue's acknowledgement at police", || async {
        let r = receipt(&al, first.cursor.clone()).await;
        r.iter().any(|(_, _, acked)| acked == &["bo"]).then_some(())
    })
    .await;
    close(&mut p, &id).await.unwrap();
    archived_at(&rescue, &id).await;

    let d = |org: &str, state: &str, acked: &[&str]| {
        (
            org.to_owned(),
            state.to_owned(),
            acked.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        receipt(&al, first.cursor.clone()).await,
        [
            d("police.example", "delivered", &[]),
            d("region.example", "delivered", &[]),
            d("rescue.example", "delivered", &["bo"]),
        ],
        "the first order's receipts at police, after the close"
    );
    assert_eq!(
        receipt(&al, second.cursor.clone()).await,
        [
            d("police.example", "delivered", &[]),
            d("region.example", "removed", &[]),
            d("rescue.example", "delivered", &[]),
        ],
        "the second order never reached the region, and never will"
    );
    let at_rescue = receipt(&bo, first.cursor.clone()).await;
    let orgs: Vec<&str> = at_rescue.iter().map(|(o, _, _)| o.as_str()).collect();
    assert_eq!(
        orgs,
        ["police.example", "region.example", "rescue.example"],
        "rescue's view keeps every agency too"
    );
    for (c, who) in [(&al, "police"), (&bo, "rescue")] {
        for cursor in [&first.cursor, &second.cursor] {
            let needs = asked(c, cursor.clone()).await;
            assert_eq!(
                needs,
                Some(false),
                "{who} is not asked in a closed incident"
            );
        }
    }
    police.stop().await;
    rescue.stop().await;
    region.stop().await;
}

/// Closes `incident` at `c`.
/// Every partner keeps what it learned of the others' delivery after the
/// incident closes: in a full mesh, rescue's receipts of police's order
/// show the region delivered before the close, after it, and after rescue
/// restarts (a link's start prunes what it keeps of channels no longer
/// shared with its peer, but not of one the peer took part in).
#[tokio::test]
async fn a_partners_receipts_keep_the_others_delivery_after_the_close_and_a_restart() {
    let police = TestNode::start("police.example").await;
    let rescue = TestNode::start("rescue.example").await;
    let region = TestNode::start("region.example").await;
    police.peer_with(&rescue).await;
    police.peer_with(&region).await;
    rescue.peer_with(&region).await;
    let mut p = incidents(&police).await;
    let id = open(
        &mut p,
        "quay",
        &["rescue.example", "region.example"],
        false,
        0,
    )
    .await
    .unwrap()
    .id;
    let al = police.client("al", samband::model::Role::Member).await;
    let order = eventually("the partners to join", || {
        let (mut al, id) = (al.clone(), id.clone());
        async move {
            let req = proto::PostRequest {
                channel: id,
                text: "Clear the quay".into(),
                ..Default::default()
            };
            al.post(req).await.ok().map(tonic::Response::into_inner)
        }
    })
    .await;
    let region_at = |node: &TestNode| {
        let (id, cursor) = (id.clone(), order.cursor.clone());
        let (dir, addr) = (node.dir(), node.addr);
        async move {
            let mut c = Client::new(operator_channel(&dir, addr).await);
            let req = proto::ReceiptsRequest {
                channel: id,
                cursor,
            };
            let r = c.receipts(req).await.unwrap().into_inner();
            r.agencies
                .into_iter()
                .find(|a| a.org == "region.example")
                .map(|a| a.state)
        }
    };
    eventually("rescue to know the region holds the order", || async {
        region_at(&rescue).await.filter(|s| s == "delivered")
    })
    .await;
    close(&mut p, &id).await.unwrap();
    archived_at(&rescue, &id).await;
    archived_at(&region, &id).await;
    assert_eq!(
        region_at(&rescue).await.as_deref(),
        Some("delivered"),
        "after the close"
    );
    let rescue = rescue.restart().await;
    archived_at(&rescue, &id).await;
    tokio::time::sleep(Duration::from_secs(1)).await; // its links are up again
    assert_eq!(
        region_at(&rescue).await.as_deref(),
        Some("delivered"),
        "after a restart"
    );
    police.stop().await;
    rescue.stop().await;
    region.stop().await;
}

/// Waits until `node` shows the channel `id` archived.
async fn archived_at(node: &TestNode, id: &str) {
    let op = node.operator().await;
    eventually(&format!("{id} archived"), || async {
        common::channel_state(&op, id)
            .await
            .filter(|s| s == "archived")
    })
    .await;
}

async fn close(c: &mut Incidents, incident: &str) -> Result<proto::IncidentInfo, tonic::Status> {
    let req = proto::CloseIncidentRequest {
        incident: incident.into(),
    };
    Ok(c.close_incident(req).await?.into_inner())
}

/// Opens `name` at `c` in `channels`, with `with`.
async fn open_in(
    c: &mut Incidents,
    name: &str,
    channels: &[&str],
    with: &[&str],
) -> Result<proto::IncidentInfo, tonic::Status> {
    let req = proto::OpenIncidentRequest {
        name: name.into(),
        with: with.iter().map(|s| s.to_string()).collect(),
        channels: channels.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    Ok(c.open_incident(req).await?.into_inner())
}

/// The incident named `home/name` as `c`'s node lists it.
async fn listed(c: &mut Incidents, home: &str, name: &str) -> Option<proto::IncidentInfo> {
    let list = c
        .list_incidents(proto::ListIncidentsRequest {})
        .await
        .ok()?
        .into_inner();
    list.incidents
        .into_iter()
        .find(|i| i.home == home && i.name == name)
}

async fn picture_of(
    c: &mut Incidents,
    incident: &str,
) -> Result<proto::PictureResponse, tonic::Status> {
    let req = proto::PictureRequest {
        incident: incident.into(),
    };
    Ok(c.picture(req).await?.into_inner())
}

fn channel_states(info: &proto::IncidentInfo) -> Vec<(String, String)> {
    info.channels
        .iter()
        .map(|c| (c.id.clone(), c.state.clone()))
        .collect()
}

/// An incident in two channels of its own: opened and closed together (or
/// refused as a whole), listed once by each partner with each channel's
/// state, one picture, messages in both; a partner that accepts by hand
/// sees its pending channels, and after the close the incident closed and
/// the offer it never accepted withdrawn.
#[tokio::test]
async fn an_incident_in_several_channels_opens_and_closes_them_together() {
    use proto::AcceptPolicy::{Auto, Manual};
    let police = TestNode::start("police.example").await;
    let rescue = TestNode::start("rescue.example").await;
    let region = TestNode::start("region.example").await;
    police.peer_with(&rescue).await;
    police
        .trust(&region, Some(region.fed_addr.to_string()), Auto)
        .await;
    region
        .trust(&police, Some(police.fed_addr.to_string()), Manual)
        .await;
    let mut p = incidents(&police).await;
    let (ops, medical) = ("police.example/storm-ops", "police.example/storm-medical");
    let with = ["rescue.example", "region.example"];

    // Refused as a whole: nothing of it is made.
    let mut op = police.operator().await;
    common::create_channel(&mut op, "logistics").await;
    let taken = open_in(&mut p, "storm", &["storm-ops", "logistics"], &with)
        .await
        .unwrap_err();
    assert_eq!(taken.code(), tonic::Code::AlreadyExists, "{taken:?}");
    assert!(taken.message().contains("logistics"), "{taken:?}");
    assert_eq!(
        common::channel_state(&op, ops).await,
        None,
        "no channel of a refused incident is made"
    );
    let nine: Vec<String> = (0..9).map(|i| format!("c{i}")).collect();
    let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
    for (channels, why) in [(&nine[..], "nine"), (&["a", "a"][..], "twice")] {
        let bad = open_in(&mut p, "storm", channels, &with).await.unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{why}: {bad:?}");
    }
    let named = open_in(&mut p, "Storm!", &["storm-ops"], &with)
        .await
        .unwrap_err();
    assert!(named.message().starts_with("incident name"), "{named:?}");

    let info = open_in(&mut p, "storm", &["storm-ops", "storm-medical"], &with)
        .await
        .unwrap();
    assert_eq!(info.id, "police.example/storm");
    assert_eq!(
        channel_states(&info),
        [
            (ops.to_string(), "shared".to_string()),
            (medical.to_string(), "shared".to_string())
        ]
    );
    // `police.example/storm` names the incident, and nothing else.
    let again = open_in(&mut p, "storm", &["storm-x"], &with)
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists, "{again:?}");
    let clash = open_in(&mut p, "squall", &["storm"], &with)
        .await
        .unwrap_err();
    assert_eq!(clash.code(), tonic::Code::AlreadyExists, "{clash:?}");
    let clash = op
        .create_channel(proto::CreateChannelRequest {
            name: "storm".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(clash.code(), tonic::Code::AlreadyExists, "{clash:?}");
    assert!(
        clash.message().contains("names a channel or an incident"),
        "{clash:?}"
    );
    let mut member = rescue.operator().await;
    let wrong = post(&mut op, "police.example/storm", "x")
        .await
        .unwrap_err();
    assert!(
        wrong.message().contains("is an incident, not a channel"),
        "{wrong:?}"
    );

    // The partner holds both channels as one incident.
    let mut r = incidents(&rescue).await;
    let shown = eventually("rescue to hold both channels of the incident", || {
        let mut r = r.clone();
        async move {
            listed(&mut r, "police.example", "storm")
                .await
                .filter(|i| i.channels.iter().all(|c| c.state == "shared"))
        }
    })
    .await;
    assert_eq!(shown.id, "police.example/storm");
    assert_eq!(shown.channels.len(), 2, "{shown:?}");
    // The region accepts by hand: both wait, and its picture with them.
    let mut g = incidents(&region).await;
    eventually("the region to be offered both channels", || {
        let mut g = g.clone();
        async move {
            listed(&mut g, "police.example", "storm")
                .await
                .filter(|i| i.channels.iter().all(|c| c.state == "pending"))
        }
    })
    .await;
    let waiting = picture_of(&mut g, "police.example/storm")
        .await
        .unwrap_err();
    assert!(waiting.message().contains("accept it first"), "{waiting:?}");
    let nothing = g
        .export_cap(proto::ExportCapRequest {
            incident: "police.example/storm".into(),
        })
        .await
        .unwrap_err();
    assert!(
        nothing.message().contains("accept them first"),
        "{nothing:?}"
    );
    region
        .admin()
        .await
        .accept_channel(proto::AcceptChannelRequest {
            channel: medical.into(),
        })
        .await
        .unwrap();

    // One picture, named by the incident or by any of its channels.
    set(
        &mut r,
        "police.example/storm",
        "boat-3",
        "unit",
        "en route",
        &point(59.34, 18.10),
    )
    .await
    .unwrap();
    set(&mut p, medical, "ward-2", "resource", "12 beds", "")
        .await
        .unwrap();
    pictures_are(
        &mut [p.clone(), r.clone()],
        "police.example/storm",
        &[
            ("police.example", "ward-2", "12 beds"),
            ("rescue.example", "boat-3", "en route"),
        ],
    )
    .await;

    // Messages flow in each channel, and the export covers both.
    post(
        &mut member,
        medical,
        "Two casualties to the region hospital",
    )
    .await
    .unwrap();
    post(&mut member, ops, "Boat 3 at the bridge")
        .await
        .unwrap();
    for channel in [medical, ops] {
        eventually(
            &format!("police to receive rescue's post in {channel}"),
            || {
                let mut op = op.clone();
                async move {
                    let texts = common::texts(&mut op, channel).await;
                    texts
                        .iter()
                        .any(|(org, _, _)| org == "rescue.example")
                        .then_some(())
                }
            },
        )
        .await;
    }
    let exported = p
        .export_cap(proto::ExportCapRequest {
            incident: "storm".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(exported.incident, "police.example/storm");
    let texts: Vec<bool> = ["Two casualties", "Boat 3 at the bridge"]
        .iter()
        .map(|t| exported.alerts.iter().any(|a| a.xml.contains(t)))
        .collect();
    assert_eq!(texts, [true, true], "both channels exported: {exported:?}");

    // Closing takes the incident's name, and ends both channels at once.
    let by_channel = close(&mut p, "storm-medical").await.unwrap_err();
    assert!(
        by_channel.message().contains("is a channel of incident"),
        "{by_channel:?}"
    );
    let closed = close(&mut p, "storm").await.unwrap();
    assert_eq!(closed.state, "closed");
    assert_eq!(
        channel_states(&closed),
        [
            (ops.to_string(), "archived".to_string()),
            (medical.to_string(), "archived".to_string())
        ]
    );
    let twice = close(&mut p, "storm").await.unwrap_err();
    assert!(twice.message().contains("closed already"), "{twice:?}");
    let at_rescue = rescue.operator().await;
    for channel in [ops, medical] {
        eventually(&format!("rescue to archive {channel}"), || {
            let c = at_rescue.clone();
            async move {
                common::channel_state(&c, channel)
                    .await
                    .filter(|s| s == "archived")
            }
        })
        .await;
        let refused = post(&mut member, channel, "after the end")
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            tonic::Code::FailedPrecondition,
            "{channel}: {refused:?}"
        );
    }
    // The region lists it closed, the channel it never accepted withdrawn.
    eventually("the region to list the incident closed", || {
        let mut g = g.clone();
        async move {
            listed(&mut g, "police.example", "storm")
                .await
                .filter(|i| i.state == "closed")
        }
    })
    .await;
    eventually("the offer of the other channel to be withdrawn", || {
        let mut g = g.clone();
        async move {
            listed(&mut g, "police.example", "storm")
                .await
                .filter(|i| i.channels.iter().all(|c| c.state == "archived"))
        }
    })
    .await;
    let late = region
        .admin()
        .await
        .accept_channel(proto::AcceptChannelRequest {
            channel: ops.into(),
        })
        .await
        .unwrap_err();
    assert!(
        late.message().contains("is closed or past its end"),
        "an offer its incident's close withdrew says so: {late:?}"
    );
    police.stop().await;
    rescue.stop().await;
    region.stop().await;
}

/// An incident is shared with exactly the agencies it was opened with: a
/// partner of the home that is not one of them gets none of its channels,
/// no offer, no message, no picture, though its link carries a channel
/// shared with it meanwhile.
#[tokio::test]
async fn an_incident_reaches_only_the_agencies_it_was_opened_with() {
    let police = TestNode::start("police.example").await;
    let rescue = TestNode::start("rescue.example").await;
    let region = TestNode::start("region.example").await;
    police.peer_with(&rescue).await;
    police.peer_with(&region).await;
    let mut p = incidents(&police).await;
    open_in(
        &mut p,
        "storm",
        &["storm-ops", "storm-medical"],
        &["rescue.example"],
    )
    .await
    .unwrap();
    set(&mut p, "storm", "ward-2", "resource", "12 beds", "")
        .await
        .unwrap();
    let mut op = police.operator().await;
    for channel in ["police.example/storm-ops", "police.example/storm-medical"] {
        post(&mut op, channel, "for rescue only").await.unwrap();
    }
    let mut r = incidents(&rescue).await;
    pictures_are(
        std::slice::from_mut(&mut r),
        "police.example/storm",
        &[("police.example", "ward-2", "12 beds")],
    )
    .await;
    // A barrier: a channel shared with the region reaches it over the same
    // link, after everything of the incident.
    let open = common::create_channel(&mut op, "open").await;
    police.share("open", &["region.example"]).await;
    post(&mut op, &open, "for the region").await.unwrap();
    let region_op = region.operator().await;
    eventually("the region to get its own channel's message", || {
        let mut c = region_op.clone();
        let open = open.clone();
        async move {
            common::texts(&mut c, &open)
                .await
                .iter()
                .any(|(_, _, t)| t == "for the region")
                .then_some(())
        }
    })
    .await;
    let mut g = incidents(&region).await;
    assert_eq!(listed(&mut g, "police.example", "storm").await, None);
    for channel in ["police.example/storm-ops", "police.example/storm-medical"] {
        assert_eq!(
            common::channel_state(&region_op, channel).await,
            None,
            "{channel}"
        );
    }
    police.stop().await;
    rescue.stop().await;
    region.stop().await;
}

/// A channel created while an incident that wants its name opens: the
/// writer decides both, so exactly one of them gets the name, whether the
/// name is one of the incident's channels or the incident's own.
#[tokio::test]
async fn a_channel_and_an_incident_that_want_one_name_get_it_once() {
    let police = TestNode::start("police.example").await;
    let rescue = TestNode::start("rescue.example").await;
    police.peer_with(&rescue).await;
    let (p, op) = (incidents(&police).await, police.operator().await);
    for i in 0..20 {
        let (incident, channel) = (format!("incident-{i}"), format!("channel-{i}"));
        // Even: both want the channel's name; odd: the channel wants the
        // incident's.
        let wanted = if i % 2 == 0 { &channel } else { &incident };
        let (mut p, mut op) = (p.clone(), op.clone());
        let channels = [channel.as_str()];
        let opened = open_in(&mut p, &incident, &channels, &["rescue.example"]);
        let created = op.create_channel(proto::CreateChannelRequest {
            name: wanted.clone(),
        });
        let (opened, created) = tokio::join!(opened, created);
        assert!(
            opened.is_ok() != created.is_ok(),
            "{i}: exactly one gets {wanted}: {opened:?} {created:?}"
        );
        let refused = opened.err().or(created.err()).unwrap();
        assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
    }
    police.stop().await;
    rescue.stop().await;
}

#[tokio::test]
async fn bad_incidents_and_entries_are_refused_with_what_to_do() {
    let police = TestNode::start("police.example").await;
    let rescue = TestNode::start("rescue.example").await;
    police.peer_with(&rescue).await;
    let mut p = incidents(&police).await;
    let past = samband::model::unix_ms() - 60_000;
    let e = open(&mut p, "late", &["rescue.example"], false, past)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("lies in the past"), "{e:?}");
    let e = open(&mut p, "lonely", &["nobody.example"], false, 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("not a configured peer"), "{e:?}");
    let e = open(&mut p, "short", &["rescue"], false, 0)
        .await
        .unwrap_err();
    assert!(
        e.message().contains("did you mean rescue.example?"),
        "{e:?}"
    );
    let id = open(&mut p, "fire", &["rescue.example"], false, 0)
        .await
        .unwrap()
        .id;
    // The partner names police's incident without its home.
    let mut r = incidents(&rescue).await;
    let e = eventually("rescue to hold the fire", || {
        let mut r = r.clone();
        async move {
            close(&mut r, "fire")
                .await
                .err()
                .filter(|e| e.message().contains("did you mean"))
        }
    })
    .await;
    assert!(
        e.message().contains("did you mean police.example/fire?"),
        "{e:?}"
    );
    let e = close(&mut r, "police.example/fire").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let e = open(&mut p, "fire", &["rescue.example"], false, 0)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    for (geometry, why) in [
        (r#"{"type":"Point","coordinates":[18.07,95.0]}"#, "latitude"),
        (
            r#"{"type":"Polygon","coordinates":[[[18,59],[18.1,59],[18.1,59.1],[18.2,59.1]]]}"#,
            "not closed",
        ),
        (
            r#"{"type":"Polygon","coordinates":[[[18,59],[18.1,59],[18.1,59.1]]]}"#,
            "it needs at least 4, its first repeated as its last",
        ),
        ("{}", "not a GeoJSON geometry"),
    ] {
        let e = set(&mut p, &id, "zone", "hazard", "", geometry)
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(why), "{why}: {e:?}");
    }
    let e = set(&mut p, &id, "zone", "Hazard Zone", "", "")
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    // A channel that runs no incident has no picture.
    let mut op = police.operator().await;
    let plain = common::create_channel(&mut op, "ops").await;
    let e = set(&mut p, &plain, "x", "unit", "", "").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    // A member cannot open one.
    let alice = police.bundle("alice", samband::model::Role::Member);
    let channel = samband::client::connect_channel(&alice, Some(&police.addr.to_string()))
        .await
        .unwrap();
    let e = open(
        &mut IncidentsClient::new(channel),
        "mine",
        &["rescue.example"],
        false,
        0,
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    police.stop().await;
    rescue.stop().await;
}

const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cap-samples");

/// Checks that every file of `files` validates against the CAP 1.2 schema
/// (`cap12.xsd` of the samples), with libxml2's `xmllint`: what the node
/// writes, held to the schema rather than only to its own reader.
fn valid_cap(files: &[std::path::PathBuf]) {
    let xmllint = std::process::Command::new("xmllint")
        .arg("--version")
        .output();
    if !xmllint.is_ok_and(|o| o.status.success()) {
        // CI installs it (see .ci/run); there the check must run, not skip.
        assert!(std::env::var_os("CI").is_none(), "xmllint missing in CI");
        eprintln!("schema check skipped: apt-get install libxml2-utils");
        return;
    }
    let schema = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/cap-samples/cap12.xsd"
    );
    let out = std::process::Command::new("xmllint")
        .args(["--noout", "--schema", schema])
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "not valid CAP 1.2: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sample(name: &str) -> String {
    std::fs::read_to_string(format!("{SAMPLES}/{name}")).unwrap()
}

async fn import(
    c: &mut Incidents,
    incident: &str,
    alert: &str,
) -> Result<proto::ImportCapResponse, tonic::Status> {
    let req = proto::ImportCapRequest {
        incident: incident.into(),
        alert: alert.into(),
    };
    Ok(c.import_cap(req).await?.into_inner())
}

/// Police and rescue, peered, with police's real incident `storm` shared
/// with rescue: the nodes, police's Incidents client and the incident's id.
async fn storm() -> (TestNode, TestNode, Incidents, String) {
    let police = TestNode::start("police.example").await;
    let rescue = TestNode::start("rescue.example").await;
    police.peer_with(&rescue).await;
    let mut p = incidents(&police).await;
    let id = open(&mut p, "storm", &["rescue.example"], false, 0)
        .await
        .unwrap()
        .id;
    (police, rescue, p, id)
}

#[tokio::test]
async fn every_cap_sample_imports_reaches_the_partner_and_exports_again_as_the_same_alert() {
    let (police, rescue, mut p, id) = storm().await;
    let mut names: Vec<String> = std::fs::read_dir(SAMPLES)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".xml"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 7);
    let mut imported = Vec::new();
    for name in &names {
        let xml = sample(name);
        let done = import(&mut p, &id, &xml)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        imported.push((name.clone(), xml, done));
    }
    // The thunderstorm warning's polygon is an area of police's picture.
    let storm = &imported
        .iter()
        .find(|(n, ..)| n.contains("adot2"))
        .unwrap()
        .2;
    assert_eq!(storm.entries.len(), 1, "{storm:?}");
    // The IPAWS alert's embedded MP3 became a file of its message.
    let mp3 = &imported
        .iter()
        .find(|(n, ..)| n.contains("5e6dd964"))
        .unwrap()
        .2;
    assert_eq!(mp3.attachments.len(), 1, "{mp3:?}");
    let mut r = incidents(&rescue).await;
    let area_key = storm.entries[0].clone();
    let shown = eventually("the storm's area at rescue", || {
        let mut r = r.clone();
        let id = id.clone();
        let key = area_key.clone();
        async move {
            let req = proto::PictureRequest { incident: id };
            let got = r.picture(req).await.ok()?.into_inner();
            got.entries.into_iter().find(|e| e.key == key)
        }
    })
    .await;
    assert_eq!(shown.owner, "police.example");
    assert!(shown.geometry.contains("Polygon"), "{shown:?}");
    // Exported again (at rescue, once the alerts' files arrived), each
    // alert reads as the one imported.
    let exported = eventually("every alert exportable at rescue", || {
        let mut r = r.clone();
        let id = id.clone();
        async move {
            let req = proto::ExportCapRequest { incident: id };
            let got = r.export_cap(req).await.ok()?.into_inner().alerts;
            (got.iter().filter(|a| a.imported).count() == 7).then_some(got)
        }
    })
    .await;
    for (name, xml, _) in &imported {
        let original = samband::cap::parse(xml).unwrap();
        let again = exported
            .iter()
            .filter(|a| a.imported)
            .find(|a| {
                a.identifier == original.identifier.as_str() && a.sender == original.sender.as_str()
            })
            .unwrap_or_else(|| panic!("{name} not exported"));
        // Byte for byte: a signature in the alert (the IPAWS ones carry
        // XML signatures) still verifies.
        assert!(again.xml == *xml, "{name} exports as it came");
    }
    // An alert is imported once.
    let twice = import(&mut p, &id, &imported[0].1).await.unwrap_err();
    assert_eq!(twice.code(), tonic::Code::AlreadyExists, "{twice:?}");
    assert!(
        twice.message().contains("an agency imports an alert once"),
        "{twice:?}"
    );
    // A message exports as an alert of its origin org.
    let mut rescue_member = rescue.operator().await;
    post(&mut rescue_member, &id, "Boats ready at the harbour")
        .await
        .unwrap();
    let alerts = r
        .export_cap(proto::ExportCapRequest {
            incident: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .alerts;
    let made = alerts
        .iter()
        .find(|a| !a.imported && a.xml.contains("Boats ready"))
        .unwrap();
    let alert = samband::cap::parse(&made.xml).unwrap();
    assert_eq!(alert.sender.as_str(), "rescue.example");
    assert_eq!(samband::cap::status_word(&alert.status), "Actual");
    police.stop().await;
    rescue.stop().await;
}

#[tokio::test]
async fn an_update_replaces_and_a_cancel_removes_what_the_alert_made_and_exercise_never_mixes() {
    let (police, rescue, mut p, id) = storm().await;
    let warning = sample("v1dot2_appendix_adot2.xml");
    let first = import(&mut p, &id, &warning).await.unwrap();
    // An Update of it (made from the sample in memory, written by oasiscap).
    let original = samband::cap::parse(&warning).unwrap();
    let mut update = original.clone();
    update.identifier = "KSTO1055887204".parse().unwrap();
    update.message_type = oasiscap::v1dot2::MessageType::Update;
    let reference = format!(
        "{},{},{}",
        original.sender, original.identifier, original.sent
    );
    update.references = Some(reference.parse().unwrap());
    let updated = import(&mut p, &id, &samband::cap::write(update.clone()))
        .await
        .unwrap();
    assert_eq!(
        updated.removed, first.entries,
        "the update replaces the warning's area"
    );
    assert_eq!(updated.entries.len(), 1);
    let mut cancel = update.clone();
    cancel.identifier = "KSTO1055887205".parse().unwrap();
    cancel.message_type = oasiscap::v1dot2::MessageType::Cancel;
    let reference = format!("{},{},{}", update.sender, update.identifier, update.sent);
    cancel.references = Some(reference.parse().unwrap());
    let cancel = samband::cap::write(cancel);
    // Rescue imports the Cancel first: it owns none of the update's
    // entries, so it removes nothing, and police, once it holds rescue's
    // import, still imports the Cancel itself.
    let r = incidents(&rescue).await;
    let theirs = eventually("rescue to import the cancel", || {
        let (mut r, id, cancel) = (r.clone(), id.clone(), cancel.clone());
        async move { import(&mut r, &id, &cancel).await.ok() }
    })
    .await;
    assert!(theirs.removed.is_empty(), "{theirs:?}");
    let police_op = police.operator().await;
    eventually("rescue's import at police", || async {
        let texts = common::texts(&mut police_op.clone(), &id).await;
        texts
            .iter()
            .any(|(origin, _, text)| origin == "rescue.example" && text.starts_with("CAP Cancel"))
            .then_some(())
    })
    .await;
    let cancelled = import(&mut p, &id, &cancel).await.unwrap();
    assert_eq!(cancelled.removed, updated.entries);
    let again = import(&mut p, &id, &cancel).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists, "{again:?}");
    let cancels = |alerts: &[proto::ExportedAlert]| {
        alerts
            .iter()
            .filter(|a| a.imported && a.identifier == "KSTO1055887205")
            .count()
    };
    let alerts = p
        .export_cap(proto::ExportCapRequest {
            incident: id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert_eq!(
        cancels(&alerts),
        1,
        "an alert two agencies imported exports once"
    );

    assert!(cancelled.entries.is_empty());
    let left = picture(&mut p, &id).await.unwrap();
    assert!(left.is_empty(), "{left:?}");
    // Exercise content never goes into a real incident, nor the reverse.
    let drill = warning.replace("<status>Actual</status>", "<status>Exercise</status>");
    let e = import(&mut p, &id, &drill).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("never mixed into a real incident"),
        "{e:?}"
    );
    let exercise = open(&mut p, "drill", &["rescue.example"], true, 0)
        .await
        .unwrap()
        .id;
    let e = import(&mut p, &exercise, &warning).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    import(&mut p, &exercise, &drill).await.unwrap();
    let alerts = p
        .export_cap(proto::ExportCapRequest { incident: exercise })
        .await
        .unwrap()
        .into_inner()
        .alerts;
    assert!(alerts.iter().all(|a| {
        let status = samband::cap::parse(&a.xml).unwrap().status;
        samband::cap::status_word(&status) == "Exercise"
    }));
    // Not CAP, and too large: refused saying so.
    let e = import(&mut p, &id, "<html/>").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    let huge = format!("{warning}{}", " ".repeat(10 << 20));
    let e = import(&mut p, &id, &huge).await.unwrap_err();
    assert!(
        matches!(
            e.code(),
            tonic::Code::ResourceExhausted | tonic::Code::OutOfRange
        ),
        "{e:?}"
    );
    police.stop().await;
    rescue.stop().await;
}

/// The command line, as the README shows it: open, map, import CAP, show
/// as GeoJSON, export with an Atom index, close; and its refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_runs_an_incident_end_to_end() {
    use common::{arg, cli, cli_ok};
    let police = TestNode::start("police.example").await;
    let rescue = TestNode::start("rescue.example").await;
    police.peer_with(&rescue).await;
    let dir = police.dir();
    let endpoint = police.addr.to_string();
    let at = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend([
            "--dir".into(),
            arg(&dir).into(),
            "--endpoint".into(),
            endpoint.clone(),
        ]);
        all
    };
    let run = |args: &[&str]| {
        let all = at(args);
        cli_ok(&all.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let fail = |args: &[&str]| {
        let all = at(args);
        let out = cli(&all.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!out.success, "{args:?} succeeded: {}", out.stdout);
        out.stderr
    };
    let opened = run(&["incident", "open", "storm", "--with", "rescue.example"]).stdout;
    assert!(opened.contains("opened police.example/storm"), "{opened}");
    let past = fail(&[
        "incident",
        "open",
        "late",
        "--with",
        "rescue.example",
        "--until",
        "2000-01-01T00:00:00Z",
    ]);
    assert!(past.contains("lies in the past"), "{past}");
    run(&[
        "picture",
        "set",
        "storm",
        "unit-1",
        "--kind",
        "unit",
        "--point",
        "59.33,18.07",
        "--field",
        "crew=4",
    ]);
    let off = fail(&[
        "picture", "set", "storm", "unit-2", "--kind", "unit", "--point", "95,18.07",
    ]);
    let far = fail(&[
        "incident",
        "open",
        "forever",
        "--with",
        "rescue.example",
        "--until",
        "999999999999days",
    ]);
    assert!(far.contains("too far ahead"), "{far}");
    let files = tempfile::tempdir().unwrap();
    let empty = files.path().join("empty.json");
    std::fs::write(&empty, "").unwrap();
    let nothing = fail(&[
        "picture",
        "set",
        "storm",
        "z",
        "--kind",
        "area",
        "--geojson",
        arg(&empty),
    ]);
    assert!(nothing.contains("is empty"), "{nothing}");
    // A `crs` (which RFC 7946 dropped) is not signed, nor shown.
    let with_crs = files.path().join("crs.json");
    std::fs::write(
        &with_crs,
        r#"{"type":"Point","coordinates":[18.0,59.0],"crs":{"type":"name","properties":{"name":"EPSG:3006"}}}"#,
    )
    .unwrap();
    run(&[
        "picture",
        "set",
        "storm",
        "zone",
        "--kind",
        "area",
        "--geojson",
        arg(&with_crs),
    ]);
    assert!(off.contains("latitude 95"), "{off}");
    let warning = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/cap-samples/v1dot2_appendix_adot2.xml"
    );
    let imported = run(&["cap", "import", warning, "--incident", "storm"]).stdout;
    assert!(imported.contains("1 picture entry set"), "{imported}");
    let huge = files.path().join("huge.xml");
    let padded = std::fs::read_to_string(warning).unwrap() + &" ".repeat(10 << 20);
    std::fs::write(&huge, padded).unwrap();
    let big = fail(&["cap", "import", arg(&huge), "--incident", "storm"]);
    assert!(
        big.contains("is larger than 4194304 bytes") && big.contains("samband post --file"),
        "{big}"
    );
    let geojson = run(&["picture", "show", "police.example/storm", "--geojson"]).stdout;
    let collection: serde_json::Value = serde_json::from_str(&geojson).unwrap();
    assert_eq!(collection["type"], "FeatureCollection");
    let features = collection["features"].as_array().unwrap();
    assert_eq!(features.len(), 3, "{geojson}");
    assert!(
        !geojson.contains("crs") && !geojson.contains("bbox"),
        "{geojson}"
    );
    assert!(
        features
            .iter()
            .all(|f| f["properties"]["owner"] == "police.example")
    );
    let unit = features
        .iter()
        .find(|f| f["properties"]["key"] == "unit-1")
        .unwrap();
    assert_eq!(
        unit["geometry"]["coordinates"],
        serde_json::json!([18.07, 59.33]),
        "[longitude, latitude]"
    );
    run(&[
        "post",
        "police.example/storm",
        "Road 12 closed at the bridge <north> & Älvsjö \"x\"",
    ]);
    let out = tempfile::tempdir().unwrap();
    run(&["cap", "export", "storm", "--out", arg(out.path())]);
    let feed = atom_syndication::Feed::read_from(std::io::BufReader::new(
        std::fs::File::open(out.path().join("index.atom")).unwrap(),
    ))
    .unwrap();
    assert_eq!(
        feed.entries.len(),
        2,
        "the imported alert, and police's message"
    );
    let mut written = Vec::new();
    for entry in &feed.entries {
        let src = entry.content.as_ref().and_then(|c| c.src.clone()).unwrap();
        let xml = std::fs::read_to_string(out.path().join(&src)).unwrap();
        samband::cap::parse(&xml).unwrap_or_else(|e| panic!("{src}: {e}"));
        written.push(out.path().join(&src));
    }
    valid_cap(&written);
    run(&["incident", "close", "storm"]);
    let twice = fail(&["incident", "close", "storm"]);
    assert!(twice.contains("closed already"), "{twice}");
    let listed = run(&["incident", "list", "--json"]).stdout;
    let storm: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(storm["state"], "closed", "{listed}");

    // An incident in channels of its own.
    let opened = run(&[
        "incident",
        "open",
        "gale",
        "--with",
        "rescue.example",
        "--channel",
        "gale-ops",
        "--channel",
        "gale-medical",
    ])
    .stdout;
    assert!(
        opened.contains("channels police.example/gale-ops, police.example/gale-medical"),
        "{opened}"
    );
    let shown = run(&["incident", "show", "gale"]).stdout;
    for channel in ["police.example/gale-ops", "police.example/gale-medical"] {
        assert!(
            shown
                .lines()
                .any(|l| l.contains(channel) && l.trim_end().ends_with("shared")),
            "{channel}: {shown}"
        );
    }
    let by_channel = run(&["incident", "show", "gale-medical"]).stdout;
    assert!(
        by_channel.starts_with("police.example/gale "),
        "{by_channel}"
    );
    let listed = run(&["incident", "list", "--json"]).stdout;
    let gale: serde_json::Value = listed
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|i: &serde_json::Value| i["name"] == "gale")
        .unwrap();
    assert_eq!(
        gale["channels"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    let bad = fail(&[
        "incident",
        "open",
        "squall",
        "--with",
        "rescue.example",
        "--channel",
        "gale-ops",
    ]);
    assert!(bad.contains("gale-ops exists already"), "{bad}");
    police.stop().await;
    rescue.stop().await;
}
