//! `samband bench picture`: an incident's situational picture at size.
//! The home sets N entries (points, 64 at a time), beside
//! `--idle-channels` internal channels; then, measured:
//! * `picture show`: the Picture call's time (each of several reads) and
//!   the size of its answer and of its GeoJSON, against a History read of
//!   the same number of messages on the same node, in the same run;
//! * convergence: the home changes a tenth of the entries while the
//!   partner is cut off, once by a network partition (a proxy between the
//!   two cuts the link; both nodes stay up), timed from the heal, and once
//!   by the partner being down, timed from its start; each until the
//!   partner's picture equals the home's.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;
use prost::Message as _;
use samband::node::LocalNode;
use samband::proto::{self, incidents_client::IncidentsClient, messaging_client::MessagingClient};
use tonic::transport::Channel;

use super::proxy::{self, Proxy};
use super::{BenchArgs, Run, new_org, progress};

/// Reads of the picture (and of the history) timed.
const READS: usize = 7;

async fn set_entries(
    client: &IncidentsClient<Channel>,
    incident: &str,
    keys: std::ops::Range<usize>,
    status: &str,
    what: &str,
) -> anyhow::Result<()> {
    let bar = progress(keys.len(), what);
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..64 {
        let (mut c, incident, status, bar) = (
            client.clone(),
            incident.to_owned(),
            status.to_owned(),
            bar.clone(),
        );
        let keys = keys.clone();
        tasks.spawn(async move {
            for i in keys.skip(lane).step_by(64) {
                let lat = 59.0 + (i % 1000) as f64 / 2000.0;
                let lon = 18.0 + (i / 1000) as f64 / 50.0;
                let req = proto::SetEntryRequest {
                    incident: incident.clone(),
                    key: format!("unit-{i}"),
                    kind: "unit".into(),
                    status: status.clone(),
                    geometry: format!(r#"{{"type":"Point","coordinates":[{lon},{lat}]}}"#),
                    ..Default::default()
                };
                c.set_entry(req).await?;
                bar.inc(1);
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    bar.finish_and_clear();
    Ok(())
}

async fn picture(
    c: &mut IncidentsClient<Channel>,
    incident: &str,
) -> anyhow::Result<proto::PictureResponse> {
    let req = proto::PictureRequest {
        incident: incident.into(),
    };
    Ok(c.picture(req).await?.into_inner())
}

/// Waits until `partner` shows `expected` for `incident`: the time since
/// `since`. At most 5 minutes.
async fn converged(
    partner: &mut IncidentsClient<Channel>,
    incident: &str,
    expected: &[proto::PictureEntry],
    since: Instant,
) -> anyhow::Result<Duration> {
    loop {
        if let Ok(p) = picture(partner, incident).await
            && p.entries == expected
        {
            return Ok(since.elapsed());
        }
        if since.elapsed() > Duration::from_secs(300) {
            bail!("the partner's picture did not converge in 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `d` in ms with one decimal.
fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

pub(super) async fn run(args: &BenchArgs, root: &Path) -> anyhow::Result<()> {
    let n = args.messages.unwrap_or(10_000);
    let a = LocalNode::start(&new_org(root, "home.example", args.size)?, None).await?;
    let b = LocalNode::start(&new_org(root, "partner.example", args.size)?, None).await?;
    // The home reaches the partner through a proxy that can cut the link;
    // the partner never dials.
    let proxy = Proxy::start(b.federation, proxy::UNLIMITED).await?;
    let auto = proto::AcceptPolicy::Auto;
    a.trust(&b, Some(proxy.addr.to_string()), auto).await?;
    b.trust(&a, None, auto).await?;
    let mut home = IncidentsClient::new(a.operator().await?);
    let incident = home
        .open_incident(proto::OpenIncidentRequest {
            name: "bench".into(),
            with: vec![b.org.to_string()],
            ..Default::default()
        })
        .await?
        .into_inner()
        .id;
    let mut messaging = MessagingClient::new(a.operator().await?);
    let bar = progress(args.idle_channels, "creating idle channels");
    for i in 0..args.idle_channels {
        let req = proto::CreateChannelRequest {
            name: format!("idle-{i}"),
        };
        messaging.create_channel(req).await?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    set_entries(&home, &incident, 0..n, "ready", "setting entries").await?;

    // `picture show` against a History read of as many messages.
    let mut shown = Vec::new();
    let mut bytes = 0;
    let mut geojson = 0;
    for _ in 0..READS {
        let start = Instant::now();
        let p = picture(&mut home, &incident).await?;
        shown.push(start.elapsed());
        if p.entries.len() != n {
            bail!("the picture holds {} entries, not {n}", p.entries.len());
        }
        bytes = p.encoded_len();
        geojson = p.entries.iter().map(|e| e.geometry.len()).sum::<usize>();
    }
    let mut history = Vec::new();
    for _ in 0..READS {
        let start = Instant::now();
        let mut read = 0;
        let mut position = None;
        while read < n {
            let req = proto::HistoryRequest {
                channel: incident.clone(),
                limit: 1000,
                position: position.clone(),
            };
            let page = messaging.history(req).await?.into_inner();
            read += page.messages.len();
            let Some(first) = page.messages.first() else {
                break;
            };
            position = Some(proto::history_request::Position::Before(
                first.cursor.clone(),
            ));
            if !page.more {
                break;
            }
        }
        history.push(start.elapsed());
    }
    let median = |d: &mut Vec<Duration>| {
        d.sort_unstable();
        d[d.len() / 2]
    };
    let (shown_ms, history_ms) = (median(&mut shown.clone()), median(&mut history.clone()));
    Run::new(
        format!("picture show {n}"),
        READS,
        shown.iter().sum(),
        shown,
    )
    .note("answer_bytes", bytes)
    .note("geometry_bytes", geojson)
    .note("idle_channels", args.idle_channels)
    .note(
        "against_history_of_as_many",
        ((shown_ms.as_secs_f64() / history_ms.as_secs_f64().max(1e-9)) * 100.0).round() / 100.0,
    )
    .print(args.json);
    Run::new(
        format!("history read {n}"),
        READS,
        history.iter().sum(),
        history,
    )
    .print(args.json);

    // Convergence: a tenth of the entries change while the partner is cut
    // off, by a network partition (both nodes up) and by being down.
    let mut partner = IncidentsClient::new(b.operator().await?);
    let deadline = Instant::now() + Duration::from_secs(120);
    while picture(&mut partner, &incident)
        .await
        .map(|p| p.entries.len())
        .unwrap_or(0)
        < n
    {
        if Instant::now() > deadline {
            bail!("the partner never held the whole picture");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let changed = n / 10;
    proxy.cut();
    set_entries(
        &home,
        &incident,
        0..changed,
        "moved",
        "changing while partitioned",
    )
    .await?;
    let expected = picture(&mut home, &incident).await?.entries;
    proxy.reset();
    let healed = Instant::now();
    proxy.heal();
    let elapsed = converged(&mut partner, &incident, &expected, healed).await?;
    let link_back = proxy
        .accepted()
        .map_or(elapsed, |at| at.duration_since(healed));
    Run::new(
        format!("picture converges {changed}/{n} after a partition"),
        changed,
        elapsed,
        Vec::new(),
    )
    .note("after_heal_ms", millis(elapsed))
    .note("link_back_ms", millis(link_back))
    .note(
        "after_link_back_ms",
        millis(elapsed.saturating_sub(link_back)),
    )
    .print(args.json);

    let (b_dir, b_addrs) = (b.dir.clone(), (b.client, b.federation));
    b.stop().await?;
    set_entries(
        &home,
        &incident,
        0..changed,
        "moved again",
        "changing while the partner is down",
    )
    .await?;
    let expected = picture(&mut home, &incident).await?.entries;
    let start = Instant::now();
    let b = LocalNode::start(&b_dir, Some(b_addrs)).await?;
    let mut partner = IncidentsClient::new(b.operator().await?);
    let elapsed = converged(&mut partner, &incident, &expected, start).await?;
    Run::new(
        format!("picture converges {changed}/{n} after a restart"),
        changed,
        elapsed,
        Vec::new(),
    )
    .note("after_start_ms", millis(elapsed))
    .print(args.json);
    a.stop().await?;
    b.stop().await?;
    Ok(())
}
