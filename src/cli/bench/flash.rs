//! `samband bench flash`: FLASH first through a catch-up. A partner is
//! offline while the home posts a backlog of routine messages with a few
//! FLASH ones among them; it comes back over a link throttled to a fixed
//! rate (a proxy in this bench). Measured from the moment the link is back
//! (the proxy's first connection): until a subscriber on the partner has
//! seen every FLASH message, until it has them in their place in order
//! (what it would wait without sending them ahead), and until it has the
//! whole backlog.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use samband::node::LocalNode;
use samband::proto::{self, messaging_client::MessagingClient};

use super::proxy::Proxy;
use super::{BenchArgs, Run, new_org, progress, publish, shared_channel};

pub(super) async fn run(args: &BenchArgs, root: &Path) -> anyhow::Result<()> {
    let n = args.messages.unwrap_or(100_000);
    let flashes = 20usize;
    let rate = args.link_kib_per_second * 1024;
    let a = LocalNode::start(&new_org(root, "home.example", args.size)?, None).await?;
    let b = LocalNode::start(&new_org(root, "partner.example", args.size)?, None).await?;
    // The home reaches the partner only through the throttle; the partner
    // never dials.
    let throttle = Proxy::start(b.federation, rate).await?;
    let auto = proto::AcceptPolicy::Auto;
    a.trust(&b, Some(throttle.addr.to_string()), auto).await?;
    b.trust(&a, None, auto).await?;
    let ch = shared_channel(&a, &b, "flash").await?;
    let (b_dir, b_addrs) = (b.dir.clone(), (b.client, b.federation));
    b.stop().await?;

    // The backlog: routine messages, with a FLASH one after each 1/20th.
    let bar = progress(n + flashes, "posting while the partner is offline");
    let mut poster = MessagingClient::new(a.operator().await?);
    let mut flash = HashSet::new();
    for i in 0..flashes {
        let part = n / flashes + usize::from(i < n % flashes);
        publish(
            a.operator().await?,
            ch.clone(),
            part,
            args.size,
            bar.clone(),
            None,
        )
        .await?;
        let req = proto::PostRequest {
            channel: ch.clone(),
            text: format!("FLASH {i}"),
            priority: proto::Priority::Flash as i32,
            ..Default::default()
        };
        flash.insert(poster.post(req).await?.into_inner().cursor);
        bar.inc(1);
    }
    bar.finish_and_clear();

    throttle.reset();
    let b = LocalNode::start(&b_dir, Some(b_addrs)).await?;
    let mut reader = MessagingClient::new(b.operator().await?);
    let mut live = reader
        .subscribe(proto::SubscribeRequest {
            channel: ch.clone(),
            start: None,
        })
        .await?
        .into_inner();
    let total = n + flashes;
    let bar = progress(total, "catching up over the throttled link");
    let (mut in_order, mut flash_seen, mut ahead) = (0usize, HashSet::new(), 0usize);
    let (mut all_flash, mut flash_in_order, mut all_in_order) = (None, 0usize, None);
    let deadline = Instant::now() + Duration::from_secs(3600);
    while in_order < total {
        let m = tokio::time::timeout_at(deadline.into(), live.message())
            .await
            .context("the backlog did not arrive within an hour")??
            .context("the partner ended the stream")?;
        if m.ahead {
            ahead += 1;
        } else {
            in_order += 1;
            bar.inc(1);
            if flash.contains(&m.cursor) {
                flash_in_order += 1;
                if flash_in_order == flashes {
                    all_in_order = Some(Instant::now());
                }
            }
        }
        if flash.contains(&m.cursor) && flash_seen.insert(m.cursor) && flash_seen.len() == flashes {
            all_flash = Some(Instant::now());
        }
    }
    let done = Instant::now();
    bar.finish_and_clear();
    let Some(back) = throttle.accepted() else {
        bail!("the link never came back through the proxy");
    };
    let all_flash = all_flash.context("not every FLASH message arrived")?;
    let all_in_order = all_in_order.context("not every FLASH message arrived in order")?;
    let ms = |t: Instant| (t.saturating_duration_since(back).as_secs_f64() * 1e4).round() / 10.0;
    let (flash_ms, backlog_ms) = (ms(all_flash), ms(done));
    Run::new(
        format!(
            "flash {n}+{flashes} x {}B at {} KiB/s",
            args.size, args.link_kib_per_second
        ),
        total,
        done.saturating_duration_since(back),
        Vec::new(),
    )
    .note("all_flash_ms", flash_ms)
    .note("all_flash_in_order_ms", ms(all_in_order))
    .note("backlog_ms", backlog_ms)
    .note("flash_shown_ahead", ahead)
    .note(
        "flash_share_of_backlog_time",
        (flash_ms / backlog_ms.max(0.1) * 1e6).round() / 1e6,
    )
    .print(args.json);
    a.stop().await?;
    b.stop().await?;
    Ok(())
}
