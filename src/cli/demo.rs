//! `samband demo`: three agencies on loopback, with real PKI, real mutual
//! trust and real stores in a temp dir. Police opens a flood incident with
//! the other two; every agency posts and maps its units and closures, a
//! CAP warning is imported, and the picture converges on all three while an
//! internal channel stays home. An exercise variant is marked everywhere
//! and closed, archiving it on every participant. The nodes keep running
//! until Ctrl-C.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use samband::model::{MemberName, OrgId, Role};
use samband::node::LocalNode;
use samband::pki::IdentityBundle;
use samband::proto::{self, incidents_client::IncidentsClient, messaging_client::MessagingClient};
use samband::setup::{self, InitOptions};
use tonic::transport::Channel;

const AGENCIES: [&str; 3] = ["police.example", "rescue.example", "region-health.example"];

struct Agency {
    org: &'static str,
    dir: PathBuf,
    client: String,
    federation: String,
    messaging: MessagingClient<Channel>,
    incidents: IncidentsClient<Channel>,
    node: LocalNode,
}

/// The CAP 1.2 warning police imports into the incident.
const FLOOD_WARNING: &str = include_str!("demo/flood-warning.cap.xml");

/// The demo's member.p12 files are for trying the console on this machine.
const DEMO_P12_PASSPHRASE: &str = "samband-demo";

async fn start(org: &'static str, root: &Path) -> anyhow::Result<Agency> {
    let dir = root.join(org);
    let opts = InitOptions::loopback(OrgId::parse(org)?);
    setup::init(&dir, &opts)?;
    let node = LocalNode::start(&dir, None).await?;
    let (client, federation) = (node.client.to_string(), node.federation.to_string());
    // So that `--dir` commands find this node (its config says port 0).
    std::fs::write(samband::layout::client_address_file(&dir), &client)?;
    let channel = node.operator().await?;
    let bundle = setup::add_user(
        &dir,
        &MemberName::parse("duty-officer")?,
        Role::Member,
        &dir.join("duty-officer"),
        samband::pki::Validity::days(samband::pki::MEMBER_DAYS),
    )?;
    // For the web console: a browser imports this file.
    bundle.write_p12(DEMO_P12_PASSPHRASE)?;
    Ok(Agency {
        org,
        dir,
        client,
        federation,
        messaging: MessagingClient::new(channel.clone()),
        incidents: IncidentsClient::new(channel),
        node,
    })
}

async fn as_member(agency: &Agency) -> anyhow::Result<MessagingClient<Channel>> {
    let bundle = IdentityBundle::load(&agency.dir.join("duty-officer"))?;
    Ok(MessagingClient::new(
        samband::client::connect_channel(&bundle, Some(&agency.client)).await?,
    ))
}

async fn history(m: &mut MessagingClient<Channel>, channel: &str) -> Option<Vec<(String, u64)>> {
    let req = proto::HistoryRequest {
        channel: channel.into(),
        limit: 1000,
        position: None,
    };
    let page = m.history(req).await.ok()?.into_inner();
    Some(
        page.messages
            .into_iter()
            .map(|m| (m.origin, m.origin_seq))
            .collect(),
    )
}

fn post_to(channel: &str, text: &str) -> proto::PostRequest {
    proto::PostRequest {
        channel: channel.into(),
        text: text.into(),
        ..Default::default()
    }
}

/// The picture as (owner, key, status), or empty while not held.
async fn picture(
    c: &mut IncidentsClient<Channel>,
    incident: &str,
) -> Vec<(String, String, String)> {
    let req = proto::PictureRequest {
        incident: incident.into(),
    };
    match c.picture(req).await {
        Ok(p) => p
            .into_inner()
            .entries
            .into_iter()
            .map(|e| (e.owner, e.key, e.status))
            .collect(),
        Err(_) => Vec::new(),
    }
}

pub(crate) fn run() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(demo())
}

async fn demo() -> anyhow::Result<()> {
    let root = tempfile::Builder::new()
        .prefix("samband-demo-")
        .tempdir()
        .context("creating the demo directory")?;
    out!(
        "samband demo: three agencies on 127.0.0.1, state in {}",
        root.path().display()
    );
    let mut agencies = Vec::new();
    for org in AGENCIES {
        let a = start(org, root.path()).await?;
        out!(
            "  {:<24} members {:<17} partners {}",
            a.org,
            a.client,
            a.federation
        );
        agencies.push(a);
    }

    // Every operator imports every other's bundle, checking the fingerprint.
    for i in 0..agencies.len() {
        for j in (0..agencies.len()).filter(|&j| j != i) {
            let (them, us) = (&agencies[i], &agencies[j]);
            let endpoint = Some(them.federation.clone());
            us.node
                .trust(&them.node, endpoint, proto::AcceptPolicy::Auto)
                .await?;
        }
    }
    out!(
        "trust: each operator imported the other two bundles (fingerprints checked); links are up"
    );

    let police = &mut agencies[0];
    let internal = police
        .messaging
        .create_channel(proto::CreateChannelRequest {
            name: "internal-ops".into(),
        })
        .await?
        .into_inner()
        .id;
    let crisis = police
        .incidents
        .open_incident(proto::OpenIncidentRequest {
            name: "flood".into(),
            with: vec![AGENCIES[1].into(), AGENCIES[2].into()],
            ..Default::default()
        })
        .await?
        .into_inner()
        .id;
    out!(
        "{} created {internal} (internal) and opened the incident {crisis} with {} and {}",
        AGENCIES[0],
        AGENCIES[1],
        AGENCIES[2]
    );
    let post = |text: &str| post_to(&crisis, text);
    police
        .messaging
        .post(proto::PostRequest {
            channel: internal.clone(),
            text: "Staffing plan: internal only".into(),
            priority: 0,
            attachments: Vec::new(),
            ..Default::default()
        })
        .await?;

    let started = Instant::now();
    let lines = [
        [
            "Water over road 12 at the bridge; road closed",
            "Evacuating blocks C and D",
        ],
        [
            "Two boats launched from the north harbour",
            "Pumping station 3 needs power",
        ],
        [
            "Field hospital opening at the school gym",
            "Ambulance 7 rerouted via road 9",
        ],
    ];
    for (i, agency) in agencies.iter().enumerate() {
        let mut member = as_member(agency).await?;
        // A partner's node learns of the channel from the home: wait for it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while history(&mut member, &crisis).await.is_none() {
            if Instant::now() > deadline {
                bail!("{} never joined {crisis}", agency.org);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for text in lines[i] {
            member.post(post(text)).await?;
        }
    }
    out!("posted two messages from a duty officer of each agency");

    // Each agency maps what it answers for.
    let entries = [
        (
            "roadblock-12",
            "road-closure",
            "closed",
            r#"{"type":"LineString","coordinates":[[18.050,59.332],[18.062,59.336]]}"#,
        ),
        (
            "boat-2",
            "unit",
            "on scene",
            r#"{"type":"Point","coordinates":[18.071,59.338]}"#,
        ),
        (
            "school-gym",
            "shelter",
            "open",
            r#"{"type":"Polygon","coordinates":[[[18.080,59.350],[18.084,59.350],[18.084,59.352],[18.080,59.352],[18.080,59.350]]]}"#,
        ),
    ];
    for (agency, (key, kind, status, geometry)) in agencies.iter_mut().zip(entries) {
        let req = proto::SetEntryRequest {
            incident: crisis.clone(),
            key: key.into(),
            kind: kind.into(),
            status: status.into(),
            geometry: geometry.into(),
            ..Default::default()
        };
        agency.incidents.set_entry(req).await?;
    }
    let imported = agencies[0]
        .incidents
        .import_cap(proto::ImportCapRequest {
            incident: crisis.clone(),
            alert: FLOOD_WARNING.into(),
        })
        .await?
        .into_inner();
    out!(
        "mapped a road closure, a boat and a shelter (one per agency), and imported a CAP flood warning ({} area)",
        imported.entries.len()
    );

    // The roster, the posts, the alert's message and every entry set.
    let pictured = entries.len() + imported.entries.len();
    let expected = 1 + 2 * AGENCIES.len() + 1 + pictured;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut views = Vec::new();
        let mut pictures = Vec::new();
        for a in &mut agencies {
            views.push(history(&mut a.messaging, &crisis).await.unwrap_or_default());
            pictures.push(picture(&mut a.incidents, &crisis).await);
        }
        let messages = views.iter().all(|v| v.len() == expected && *v == views[0]);
        let same = pictures
            .iter()
            .all(|p| p.len() == pictured && *p == pictures[0]);
        if messages && same {
            break;
        }
        if Instant::now() > deadline {
            bail!("the incident did not converge: {views:?} {pictures:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    out!(
        "converged: {crisis} shows the same {expected} messages and the same picture ({pictured} entries) on all three nodes, {} ms after the first post",
        started.elapsed().as_millis()
    );

    // The exercise variant: marked everywhere, then closed everywhere.
    let drill = agencies[0]
        .incidents
        .open_incident(proto::OpenIncidentRequest {
            name: "flood-drill".into(),
            with: vec![AGENCIES[1].into(), AGENCIES[2].into()],
            exercise: true,
            ..Default::default()
        })
        .await?
        .into_inner()
        .id;
    let mut rescue = as_member(&agencies[1]).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while rescue
        .post(post_to(&drill, "Drill: boat 2 launched"))
        .await
        .is_err()
    {
        if Instant::now() > deadline {
            bail!("{} never joined {drill}", AGENCIES[1]);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let req = proto::HistoryRequest {
            channel: drill.clone(),
            limit: 10,
            position: None,
        };
        let page = agencies[2]
            .messaging
            .history(req)
            .await
            .map(|r| r.into_inner());
        if let Ok(page) = page
            && page.messages.iter().any(|m| m.text.starts_with("Drill"))
        {
            if !page.messages.iter().all(|m| m.exercise) {
                bail!(
                    "a message of {drill} is not marked EXERCISE at {}",
                    AGENCIES[2]
                );
            }
            break;
        }
        if Instant::now() > deadline {
            bail!("the drill message never reached {}", AGENCIES[2]);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agencies[0]
        .incidents
        .close_incident(proto::CloseIncidentRequest {
            incident: drill.clone(),
        })
        .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    for a in &mut agencies {
        loop {
            let list = a
                .incidents
                .list_incidents(proto::ListIncidentsRequest {})
                .await?;
            let state = list
                .into_inner()
                .incidents
                .into_iter()
                .find(|i| i.id == drill);
            if state.is_some_and(|i| i.state == "closed") {
                break;
            }
            if Instant::now() > deadline {
                bail!("{drill} was not archived at {}", a.org);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    out!(
        "exercise: {drill} was marked EXERCISE on every node, then closed and archived on all three"
    );

    for a in &mut agencies[1..] {
        let list = a
            .messaging
            .list_channels(proto::ListChannelsRequest {})
            .await?
            .into_inner();
        if list.channels.iter().any(|c| c.id == internal) {
            bail!("{internal} leaked to {}", a.org);
        }
    }
    out!("contained: {internal} exists only on {}", AGENCIES[0]);

    let dir = |i: usize| agencies[i].dir.display().to_string();
    out!("\nThe nodes keep running until Ctrl-C. Try, in another terminal:");
    out!("  samband tail {crisis} --follow --dir {}", dir(1));
    out!(
        "  samband post {crisis} \"Ambulance 12 en route\" --dir {}",
        dir(2)
    );
    out!(
        "  samband post {crisis} \"Road 12 reopened\" --priority urgent --identity {}/duty-officer --endpoint {}",
        dir(0),
        agencies[0].client
    );
    out!(
        "  samband history {internal} --dir {}     # internal: only here",
        dir(0)
    );
    out!("  samband incident show {crisis} --dir {}", dir(2));
    out!("  samband picture show {crisis} --geojson --dir {}", dir(1));
    out!(
        "  samband picture set {crisis} boat-5 --kind unit --point 59.34,18.06 --dir {}",
        dir(1)
    );
    out!(
        "  samband cap export flood --out flood-cap/ --dir {}",
        dir(0)
    );
    out!(
        "  samband status --dir {}                # partner links and lag",
        dir(0)
    );
    out!(
        "\nWeb console of each agency (import the duty officer's member.p12, passphrase \"{DEMO_P12_PASSPHRASE}\", and trust its ca.pem):"
    );
    for a in &agencies {
        out!(
            "  {:<24} https://{}/   {}/duty-officer/member.p12",
            a.org,
            a.client,
            a.dir.display()
        );
    }
    tokio::signal::ctrl_c().await?;
    out!(
        "\nstopping the nodes and removing {}",
        root.path().display()
    );
    for agency in agencies {
        agency.node.stop().await?;
    }
    Ok(())
}
