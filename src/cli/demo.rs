//! `samband demo`: three agencies on loopback, with real PKI, real mutual
//! trust and real stores in a temp dir; a shared crisis channel converges
//! and an internal one stays home. The nodes keep running until Ctrl-C.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use samband::model::{MemberName, OrgId, Role};
use samband::node::LocalNode;
use samband::pki::IdentityBundle;
use samband::proto::{self, admin_client::AdminClient, messaging_client::MessagingClient};
use samband::setup::{self, InitOptions};
use tonic::transport::Channel;

const AGENCIES: [&str; 3] = ["police.example", "rescue.example", "region-health.example"];

struct Agency {
    org: &'static str,
    dir: PathBuf,
    client: String,
    federation: String,
    admin: AdminClient<Channel>,
    messaging: MessagingClient<Channel>,
    node: LocalNode,
}

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
        admin: AdminClient::new(channel.clone()),
        messaging: MessagingClient::new(channel),
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
        .messaging
        .create_channel(proto::CreateChannelRequest {
            name: "flood-2026".into(),
        })
        .await?
        .into_inner()
        .id;
    let share = proto::ShareChannelRequest {
        channel: crisis.clone(),
        orgs: vec![AGENCIES[1].into(), AGENCIES[2].into()],
        ..Default::default()
    };
    police.admin.share_channel(share).await?;
    out!(
        "{} created {internal} (internal) and {crisis}, shared with {} and {}",
        AGENCIES[0],
        AGENCIES[1],
        AGENCIES[2]
    );
    let post = |text: &str| proto::PostRequest {
        channel: crisis.clone(),
        text: text.into(),
        priority: 0,
        attachments: Vec::new(),
        ..Default::default()
    };
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

    let expected = 1 + 2 * AGENCIES.len();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut views = Vec::new();
        for a in &mut agencies {
            views.push(history(&mut a.messaging, &crisis).await.unwrap_or_default());
        }
        if views.iter().all(|v| v.len() == expected && *v == views[0]) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the shared channel did not converge: {views:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    out!(
        "converged: {crisis} shows the same {expected} messages (the roster and 6 posts) on all three nodes, {} ms after the first post",
        started.elapsed().as_millis()
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
