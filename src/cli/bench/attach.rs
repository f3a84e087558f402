//! `samband bench attach`: files, each figure beside the reference it is
//! read against, measured in the same run:
//! * an upload, durable, against this disk's sequential write with
//!   `fdatasync` (the floor);
//! * a partner's transfer of that file against bulk mutual TLS over
//!   loopback (the ceiling), from the post until the partner holds it;
//! * FLASH latency to a subscriber on the partner while a file transfers,
//!   against the same with no transfer;
//! * the peak memory of this process (both nodes and the client) during a
//!   larger upload and transfer: an upper bound for each node's.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use samband::model::{CHUNK_BYTES, FileHash, Priority};
use samband::node::LocalNode;
use samband::proto::{self, messaging_client::MessagingClient};
use tonic::transport::Channel;

use super::echo::bench_echo_client::BenchEchoClient;
use super::{BenchArgs, Run, federated_pair, operator_channel, shared_channel, start_echo};

const MIB: u64 = 1 << 20;

/// FLASH posts per latency run, and their pace.
const FLASH_POSTS: usize = 200;
const FLASH_EVERY: Duration = Duration::from_millis(10);

pub(super) async fn run(args: &BenchArgs, root: &Path) -> anyhow::Result<()> {
    let mib = args.file_mib;
    let rounds = args.rounds as usize;
    let bulk = bulk_tls(root, mib).await?;
    let bulk_rate = bulk.rate();
    bulk.print(args.json);

    let (a, b) = federated_pair(root, args.size).await?;
    let ch = shared_channel(&a, &b, "files").await?;
    let mut home = MessagingClient::new(a.operator().await?);
    // Files are paced for a while after messages
    // (limits.file_bytes_per_second_during_messages): the channel's roster
    // was one. Throughput is measured with none flowing.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The disk's floor and the upload, alternately: a noisy minute weighs
    // on both sides of the ratio.
    let (mut floors, mut uploads, mut hashes) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        floors.push(disk_floor(root, mib)?);
        let file = root.join(format!("upload-{round}.bin"));
        write_file(&file, mib, round as u8)?;
        let (hash, up) = upload(&mut home, &file).await?;
        std::fs::remove_file(&file)?;
        uploads.push(up);
        hashes.push(hash);
    }
    let floor =
        Run::median_of(format!("disk write+fdatasync {mib} MiB"), floors).note("unit", "MiB/s");
    let floor_rate = floor.rate();
    floor.print(args.json);
    let up = Run::median_of(format!("upload {mib} MiB, durable"), uploads).note("unit", "MiB/s");
    let up_rate = up.rate();
    up.note("ratio_to_disk_floor", ratio(up_rate, floor_rate))
        .note("ratio_to_bulk_tls", ratio(up_rate, bulk_rate))
        .print(args.json);

    let started = post(&mut home, &ch, &hashes[0], "upload-1.bin").await?;
    let transfer = held_by(&b, &hashes[0], started, mib).await?;
    let transfer_rate = transfer.rate();
    transfer
        .note("ratio_to_bulk_tls", ratio(transfer_rate, bulk_rate))
        .print(args.json);

    // Each latency phase starts with the disk's write-back done, so that
    // it measures its own load, not what the phases before it left behind.
    settle();
    let idle = flash_latency(&a, &b, &ch, "idle", None).await?;
    let idle_p99 = idle.quantile(0.99);
    idle.print(args.json);
    // A file four times as large, so that the transfer lasts through many
    // FLASH posts; only those posted while it ran count.
    let large = root.join("upload-large.bin");
    write_file(&large, 4 * mib, 99)?;
    let (hash, _) = upload(&mut home, &large).await?;
    settle();
    post(&mut home, &ch, &hash, "upload-large.bin").await?;
    let during = flash_latency(&a, &b, &ch, "during a transfer", Some(&hash)).await?;
    let p99 = during.quantile(0.99);
    during
        .note(
            "p99_ratio_to_idle",
            ratio(p99.as_secs_f64(), idle_p99.as_secs_f64()),
        )
        .print(args.json);
    held_by(&b, &hash, Instant::now(), 4 * mib).await?;

    if args.rss_file_mib > 0 {
        memory(args, root, &b, &ch, &mut home).await?;
    }
    a.stop().await?;
    b.stop().await?;
    Ok(())
}

/// Writes back every file system's dirty data (sync(2)).
fn settle() {
    rustix::fs::sync();
}

fn ratio(a: f64, b: f64) -> f64 {
    (a / b.max(1e-9) * 100.0).round() / 100.0
}

/// A file of `mib` MiB whose every MiB differs (`seed` makes files differ).
fn write_file(path: &Path, mib: u64, seed: u8) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut block: Vec<u8> = (0..CHUNK_BYTES)
        .map(|i| (i as u8).wrapping_mul(seed))
        .collect();
    for i in 0..mib {
        block[..8].copy_from_slice(&i.to_be_bytes());
        block[8] = seed;
        file.write_all(&block)?;
    }
    file.flush()?;
    Ok(())
}

/// Sequential 1 MiB writes of `mib` MiB, then `fdatasync`: the floor.
fn disk_floor(root: &Path, mib: u64) -> anyhow::Result<Run> {
    let path = root.join("floor.bin");
    let block = vec![0x5a; CHUNK_BYTES];
    let start = Instant::now();
    let mut file = std::fs::File::create(&path)?;
    for _ in 0..mib {
        file.write_all(&block)?;
    }
    file.sync_data()?;
    let elapsed = start.elapsed();
    std::fs::remove_file(&path)?;
    Ok(mib_run(
        format!("disk write+fdatasync {mib} MiB"),
        mib,
        elapsed,
    ))
}

/// A run whose rate is MiB per second.
fn mib_run(name: String, mib: u64, elapsed: Duration) -> Run {
    Run::new(name, mib as usize, elapsed, Vec::new()).note("unit", "MiB/s")
}

/// `mib` MiB streamed in 1 MiB chunks to a sink over mutual TLS: the ceiling.
async fn bulk_tls(root: &Path, mib: u64) -> anyhow::Result<Run> {
    let dir = super::new_org(root, "echo.example", 1024)?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let addr = start_echo(&dir, "echo.example", shutdown.clone()).await?;
    let mut sink = BenchEchoClient::new(operator_channel(&dir, &addr).await?);
    let chunk = vec![0x5a; CHUNK_BYTES];
    let chunks = (0..mib).map(move |_| proto::UploadChunk {
        data: chunk.clone(),
        ..Default::default()
    });
    let start = Instant::now();
    let got = sink.sink(tokio_stream::iter(chunks)).await?.into_inner();
    let elapsed = start.elapsed();
    shutdown.cancel();
    if got.size != mib * MIB {
        bail!("the sink took {} bytes, not {}", got.size, mib * MIB);
    }
    Ok(mib_run(format!("mTLS bulk {mib} MiB"), mib, elapsed))
}

/// Uploads `path`: its hash and the run of the Upload call alone (the file
/// is hashed before, as a client does).
async fn upload(
    client: &mut MessagingClient<Channel>,
    path: &Path,
) -> anyhow::Result<(FileHash, Run)> {
    let (hash, size) = super::super::files::hash_file(path)?;
    let start = Instant::now();
    super::super::files::send(client, path, hash, size, 0, "bench").await?;
    let elapsed = start.elapsed();
    Ok((
        hash,
        mib_run(
            format!("upload {} MiB, durable", size / MIB),
            size / MIB,
            elapsed,
        ),
    ))
}

async fn post(
    client: &mut MessagingClient<Channel>,
    ch: &str,
    hash: &FileHash,
    name: &str,
) -> anyhow::Result<Instant> {
    let start = Instant::now();
    client
        .post(proto::PostRequest {
            channel: ch.to_owned(),
            text: String::new(),
            priority: 0,
            attachments: vec![proto::AttachmentRef {
                sha256: hash.to_hex(),
                name: name.to_owned(),
                media_type: String::new(),
            }],
            ..Default::default()
        })
        .await?;
    Ok(start)
}

fn object(node: &LocalNode, hash: &FileHash) -> PathBuf {
    let hex = hash.to_hex();
    node.dir
        .join("data/files/objects")
        .join(&hex[..2])
        .join(hex)
}

fn holds(node: &LocalNode, hash: &FileHash) -> bool {
    object(node, hash).exists()
}

/// Waits until `node` holds the file: the run from `start`.
async fn held_by(
    node: &LocalNode,
    hash: &FileHash,
    start: Instant,
    mib: u64,
) -> anyhow::Result<Run> {
    let deadline = start + Duration::from_secs(60 + mib);
    while !holds(node, hash) {
        if Instant::now() > deadline {
            bail!("the partner did not get the file in time");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(mib_run(
        format!("partner transfer {mib} MiB"),
        mib,
        start.elapsed(),
    ))
}

/// FLASH posts on the home, paced, and their latency to a subscriber on
/// the partner. With `transfer`, posting stops once the partner holds that
/// file, and only posts made before count.
async fn flash_latency(
    a: &LocalNode,
    b: &LocalNode,
    ch: &str,
    when: &str,
    transfer: Option<&FileHash>,
) -> anyhow::Result<Run> {
    let mut sub = MessagingClient::new(b.operator().await?)
        .subscribe(proto::SubscribeRequest {
            channel: ch.to_owned(),
            start: None,
        })
        .await?
        .into_inner();
    let mut poster = MessagingClient::new(a.operator().await?);
    let tag = format!("flash {when} ");
    let start = Instant::now();
    let mut sent = Vec::with_capacity(FLASH_POSTS);
    let mut latencies = Vec::with_capacity(FLASH_POSTS);
    for i in 0..FLASH_POSTS {
        if transfer.is_some_and(|h| holds(b, h)) {
            break;
        }
        sent.push(Instant::now());
        let req = proto::PostRequest {
            channel: ch.to_owned(),
            text: format!("{tag}{i}"),
            priority: Priority::Flash as i32,
            attachments: Vec::new(),
            ..Default::default()
        };
        poster.post(req).await?;
        // Take what arrived meanwhile, then wait for the next post's turn.
        let next = Instant::now() + FLASH_EVERY;
        while let Ok(m) = tokio::time::timeout_at(next.into(), sub.message()).await {
            let m = m?.context("the subscription ended")?;
            if let Some(at) = m
                .text
                .strip_prefix(&tag)
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| sent.get(i))
            {
                latencies.push(at.elapsed());
            }
        }
    }
    while latencies.len() < sent.len() {
        let m = tokio::time::timeout(Duration::from_secs(30), sub.message())
            .await
            .context("FLASH posts did not arrive")??
            .context("the subscription ended")?;
        if let Some(at) = m
            .text
            .strip_prefix(&tag)
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| sent.get(i))
        {
            latencies.push(at.elapsed());
        }
    }
    Ok(Run::new(
        format!("FLASH to partner, {when}"),
        latencies.len(),
        start.elapsed(),
        latencies,
    ))
}

/// Peak memory of this process (VmHWM, reset first) during an upload and a
/// partner's transfer of a file of `--rss-file-mib`.
async fn memory(
    args: &BenchArgs,
    root: &Path,
    b: &LocalNode,
    ch: &str,
    home: &mut MessagingClient<Channel>,
) -> anyhow::Result<()> {
    let mib = args.rss_file_mib;
    let file = root.join("upload-rss.bin");
    write_file(&file, mib, 3)?;
    // Reset the high-water mark to what is resident now (Linux).
    std::fs::write("/proc/self/clear_refs", "5").context("resetting the peak RSS")?;
    let before = status_kib("VmRSS:")?;
    let start = Instant::now();
    let (hash, _) = upload(home, &file).await?;
    let after_upload = status_kib("VmHWM:")?;
    post(home, ch, &hash, "upload-rss.bin").await?;
    held_by(b, &hash, Instant::now(), mib).await?;
    let peak = status_kib("VmHWM:")?;
    Run::new(
        format!("peak memory, {mib} MiB up and across"),
        mib as usize,
        start.elapsed(),
        Vec::new(),
    )
    .note("rss_before_mib", before / 1024)
    .note("peak_after_upload_mib", after_upload / 1024)
    .note("peak_after_transfer_mib", peak / 1024)
    .note("growth_mib", peak.saturating_sub(before) / 1024)
    .print(args.json);
    Ok(())
}

/// A `/proc/self/status` line's value, KiB.
fn status_kib(key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("{key} in /proc/self/status"))
}
