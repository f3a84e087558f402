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
    let file = root.join("upload-1.bin");
    write_file(&file, mib, 1)?;
    let floor = disk_floor(root, mib)?;
    let floor_rate = floor.rate();
    floor.print(args.json);
    let bulk = bulk_tls(root, mib).await?;
    let bulk_rate = bulk.rate();
    bulk.print(args.json);

    let (a, b) = federated_pair(root, args.size).await?;
    let ch = shared_channel(&a, &b, "files").await?;
    let mut home = MessagingClient::new(a.operator().await?);
    let (hash, up) = upload(&mut home, &file).await?;
    let up_rate = up.rate();
    up.note("ratio_to_disk_floor", ratio(up_rate, floor_rate))
        .print(args.json);
    let started = post(&mut home, &ch, &hash, "upload-1.bin").await?;
    let transfer = held_by(&b, &hash, started, mib).await?;
    let transfer_rate = transfer.rate();
    transfer
        .note("ratio_to_bulk_tls", ratio(transfer_rate, bulk_rate))
        .print(args.json);

    let idle = flash_latency(&a, &b, &ch, "idle").await?;
    let idle_p99 = idle.quantile(0.99);
    idle.print(args.json);
    let second = root.join("upload-2.bin");
    write_file(&second, mib, 2)?;
    let (hash, _) = upload(&mut home, &second).await?;
    post(&mut home, &ch, &hash, "upload-2.bin").await?;
    let during = flash_latency(&a, &b, &ch, "during a transfer").await?;
    let overlapped = !holds(&b, &hash);
    let p99 = during.quantile(0.99);
    during
        .note("transfer_still_running_at_end", overlapped)
        .note("p99_ratio_to_idle", ratio(p99.as_secs_f64(), idle_p99.as_secs_f64()))
        .print(args.json);
    held_by(&b, &hash, Instant::now(), mib).await?;

    if args.rss_file_mib > 0 {
        memory(args, root, &b, &ch, &mut home).await?;
    }
    a.stop().await?;
    b.stop().await?;
    Ok(())
}

fn ratio(a: f64, b: f64) -> f64 {
    (a / b.max(1e-9) * 100.0).round() / 100.0
}

/// A file of `mib` MiB whose every MiB differs (`seed` makes files differ).
fn write_file(path: &Path, mib: u64, seed: u8) -> anyhow::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut block: Vec<u8> = (0..CHUNK_BYTES).map(|i| (i as u8).wrapping_mul(seed)).collect();
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
    Ok(mib_run(format!("disk write+fdatasync {mib} MiB"), mib, elapsed))
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
        mib_run(format!("upload {} MiB, durable", size / MIB), size / MIB, elapsed),
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
/// the partner.
async fn flash_latency(a: &LocalNode, b: &LocalNode, ch: &str, when: &str) -> anyhow::Result<Run> {
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
    let sent: Vec<Instant> = Vec::with_capacity(FLASH_POSTS);
    let sent = std::sync::Arc::new(std::sync::Mutex::new(sent));
    let stamps = sent.clone();
    let posting = {
        let (ch, tag) = (ch.to_owned(), tag.clone());
        tokio::spawn(async move {
            for i in 0..FLASH_POSTS {
                stamps.lock().map(|mut s| s.push(Instant::now())).ok();
                let req = proto::PostRequest {
                    channel: ch.clone(),
                    text: format!("{tag}{i}"),
                    priority: Priority::Flash as i32,
                    attachments: Vec::new(),
                };
                poster.post(req).await?;
                tokio::time::sleep(FLASH_EVERY).await;
            }
            Ok::<_, tonic::Status>(())
        })
    };
    let mut latencies = Vec::with_capacity(FLASH_POSTS);
    while latencies.len() < FLASH_POSTS {
        let m = tokio::time::timeout(Duration::from_secs(30), sub.message())
            .await
            .context("FLASH posts did not arrive")??
            .context("the subscription ended")?;
        let Some(i) = m.text.strip_prefix(&tag).and_then(|i| i.parse::<usize>().ok()) else {
            continue;
        };
        let at = sent.lock().ok().and_then(|s| s.get(i).copied());
        if let Some(at) = at {
            latencies.push(at.elapsed());
        }
    }
    posting.await??;
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
