//! The web console in a real browser: Debian's Chromium driven by Python
//! Playwright against real nodes (`tests/python/console.py`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::{TestNode, create_channel, eventually};
use samband::model::Role;

fn browser_available() -> bool {
    std::path::Path::new("/usr/bin/chromium").exists()
        && Command::new("python3")
            .args(["-c", "import playwright.sync_api"])
            .status()
            .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn a_member_uses_the_console_in_a_browser_and_a_partner_sees_it_live() {
    if !browser_available() {
        // CI installs them (see .ci/run); there the test must run, not skip.
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium or playwright missing in CI"
        );
        eprintln!("skipped: apt-get install chromium; pip install playwright");
        return;
    }
    let police = TestNode::start("police.example").await;
    let rescue = TestNode::start("rescue.example").await;
    police.peer_with(&rescue).await;
    let mut op = police.operator().await;
    let ch = create_channel(&mut op, "flood").await;
    police.share("flood", &["rescue.example"]).await;
    let rescue_op = rescue.operator().await;
    eventually("rescue to join", || async {
        common::channel_state(&rescue_op, &ch)
            .await
            .filter(|s| s == "shared")
    })
    .await;
    // The region accepts police's offers by hand: its operator does, in
    // the console.
    let region = TestNode::start("region.example").await;
    let manual = samband::proto::AcceptPolicy::Manual;
    region
        .trust(&police, Some(police.fed_addr.to_string()), manual)
        .await;
    police
        .trust(
            &region,
            Some(region.fed_addr.to_string()),
            samband::proto::AcceptPolicy::Auto,
        )
        .await;
    let drill = create_channel(&mut op, "drill").await;
    police.share("drill", &["region.example"]).await;
    let region_op = region.operator().await;
    eventually("the offer at the region", || async {
        common::channel_state(&region_op, &drill)
            .await
            .filter(|s| s == "pending")
    })
    .await;
    // An exercise incident of police's with rescue, in two channels, each
    // agency with an entry in its picture; police adds one more once the
    // browser watches.
    let mut police_incidents = samband::proto::incidents_client::IncidentsClient::new(
        common::operator_channel(&police.dir(), police.addr).await,
    );
    let drill_incident = police_incidents
        .open_incident(samband::proto::OpenIncidentRequest {
            name: "drill-flood".into(),
            with: vec!["rescue.example".into()],
            exercise: true,
            channels: vec!["drill-flood".into(), "drill-medical".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let entry = |key: &str, kind: &str, geometry: &str| samband::proto::SetEntryRequest {
        incident: drill_incident.clone(),
        key: key.into(),
        kind: kind.into(),
        status: "ready".into(),
        geometry: geometry.into(),
        ..Default::default()
    };
    police_incidents
        .set_entry(entry(
            "patrol-1",
            "unit",
            r#"{"type":"Point","coordinates":[18.07,59.33]}"#,
        ))
        .await
        .unwrap();
    let mut rescue_incidents = samband::proto::incidents_client::IncidentsClient::new(
        common::operator_channel(&rescue.dir(), rescue.addr).await,
    );
    eventually("rescue to join the drill", || async {
        common::channel_state(&rescue_op, &drill_incident)
            .await
            .filter(|s| s == "shared")
    })
    .await;
    rescue_incidents
        .set_entry(entry(
            "closure-73",
            "road-closure",
            r#"{"type":"Polygon","coordinates":[[[18.0,59.30],[18.1,59.30],[18.1,59.36],[18.0,59.30]]]}"#,
        ))
        .await
        .unwrap();
    let ready = std::env::temp_dir().join(format!("console-picture-{}", std::process::id()));
    let _ = std::fs::remove_file(&ready);
    let late = tokio::spawn({
        let ready = ready.clone();
        let request = entry(
            "late-unit",
            "unit",
            r#"{"type":"Point","coordinates":[18.05,59.35]}"#,
        );
        let mut client = police_incidents.clone();
        async move {
            while !ready.exists() {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            client.set_entry(request).await.unwrap();
        }
    });
    // Enough history for a second page, and unread at rescue.
    for i in 0..60 {
        common::post(&mut op, &ch, &format!("log line {i}")).await;
    }
    let chief = region.bundle("chief", Role::Admin);
    let police_chief = police.bundle("chief", Role::Admin);
    // A region member whom the region's operator revokes in the console.
    let dana = region.bundle("dana", Role::Member);
    let (alice, bo) = (
        police.bundle("alice", Role::Member),
        rescue.bundle("bo", Role::Member),
    );
    // Police's member's browser holds the PKCS#12 file `user add` writes.
    let p12 = alice.write_p12("correct horse battery").unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/console.py");
    // Screenshots for docs/console.md when asked (SAMBAND_CONSOLE_SHOTS=docs/console).
    let shots_tmp = tempfile::tempdir().unwrap();
    let shots = std::env::var("SAMBAND_CONSOLE_SHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| shots_tmp.path().to_owned());
    let shots = shots.to_str().unwrap().to_owned();
    let ca = police.dir().join("pki/ca.pem");
    let rescue_ca = rescue.dir().join("pki/ca.pem");
    let region_ca = region.dir().join("pki/ca.pem");
    // Playwright's certificate proxy checks each node against these CAs.
    let cas = std::env::temp_dir().join(format!("console-cas-{}.pem", std::process::id()));
    std::fs::write(
        &cas,
        [&ca, &rescue_ca, &region_ca]
            .map(|p| std::fs::read(p).unwrap())
            .concat(),
    )
    .unwrap();
    let (police_url, rescue_url, region_url) = (
        format!("https://{}", police.addr),
        format!("https://{}", rescue.addr),
        format!("https://{}", region.addr),
    );
    let (offer, flood) = (drill.clone(), ch.clone());
    let drill_id = drill_incident.clone();
    let mut browser = Command::new("python3");
    browser
        .arg(script)
        .args([&police_url, alice.dir.to_str().unwrap(), &rescue_url])
        .env("POLICE_P12", &p12)
        .env("REGION_URL", &region_url)
        .env("REGION_ADMIN", &chief.dir)
        .env("POLICE_ADMIN", &police_chief.dir)
        .env("REGION_MEMBER", &dana.dir)
        .env("DRILL", &drill_id)
        .env("PICTURE_READY", &ready)
        .env("REGION_OFFER", &offer)
        .env("POLICE_P12_PASSPHRASE", "correct horse battery")
        .args([bo.dir.to_str().unwrap(), &flood, &shots])
        .env("NODE_EXTRA_CA_CERTS", &cas);
    let stdout = common::python(browser, "console ok").await;
    late.await.unwrap();
    eprintln!("{stdout}");
    // Rescue's acknowledgement, made in the browser, reached police.
    let acked = eventually("rescue's acknowledgement at police", || async {
        let history = common::all_history(&mut op.clone(), &ch).await;
        history
            .into_iter()
            .find(|m| m.kind == "ack" && m.author == "bo")
    })
    .await;
    assert_eq!(acked.origin, "rescue.example");
    assert_eq!(
        common::channel_state(&region_op, &drill).await.as_deref(),
        Some("shared"),
        "accepted in the console"
    );
    let log = common::audit_log(&mut region.admin().await).await;
    assert!(
        log.iter().any(|e| e.event == "channel.accepted"),
        "the acceptance is audited"
    );
    assert!(
        log.iter()
            .any(|e| e.event == "member.revoked"
                && e.details.get("member").is_some_and(|m| m == "dana")),
        "the revocation is audited"
    );
    let police_log = common::audit_log(&mut police.admin().await).await;
    assert!(
        police_log.iter().any(|e| e.event == "incident.closed"
            && e.details.get("actor").is_some_and(|a| a == "member:chief")),
        "the close in the console is audited with who closed it"
    );
    // The photo posted in the browser reached rescue's node whole.
    let history = common::all_history(&mut op.clone(), &ch).await;
    let photo = history
        .iter()
        .flat_map(|m| &m.attachments)
        .find(|a| a.name == "bridge.png")
        .expect("the photo's message");
    assert_eq!(photo.media_type, "image/png");
    police.stop().await;
    rescue.stop().await;
    region.stop().await;
}
