//! `samband bench`: measurements on real components — mutual TLS over
//! loopback, real stores in a temp dir (removed afterwards), real signing.
//! Every figure is printed with the reference it should be read against
//! (the disk's fsync floor, the RPC ceiling) measured in the same run.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use echo::{bench_echo_client::BenchEchoClient, bench_echo_server};
use indicatif::{ProgressBar, ProgressStyle};
use samband::identity::{IdentityError, Member, MemberIdentity, Verified};
use samband::model::OrgId;
use samband::node::{LocalNode, tls_incoming};
use samband::pki::OrgPki;
use samband::proto::{self, admin_client::AdminClient, messaging_client::MessagingClient};
use samband::setup::{self, InitOptions};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

mod attach;
mod flash;
mod picture;
mod proxy;

/// The echo service that measures the RPC ceiling (`proto/samband/bench/`).
#[allow(unreachable_pub)] // generated
mod echo {
    tonic::include_proto!("samband.bench.v1");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Raw append + fdatasync of small writes on this filesystem: the floor under every durable figure.
    Fsync,
    /// The same gRPC server and client over mTLS, store and signing taken out: the RPC ceiling.
    Echo,
    /// Durable posts through Messaging.Post over mTLS (acked after flush), with the echo ratio.
    Post,
    /// Messaging.Publish: many posts per stream, each acked when durable.
    Stream,
    /// Two federated nodes, paced posts on the home, latency to a subscriber on the partner.
    Federation,
    /// Partner offline while messages are posted, then back: time to converge.
    Catchup,
    /// A node holding many messages: cold start, memory, disk per message, deep history reads.
    Scale,
    /// Files: upload against the disk's write floor, a partner's transfer
    /// against bulk mTLS, FLASH latency during a transfer against idle, and
    /// peak memory during a large upload and transfer.
    Attach,
    /// FLASH first through a catch-up: a partner offline while routine
    /// messages and 20 FLASH ones are posted comes back over a throttled
    /// link; time until it shows every FLASH message, against the backlog.
    Flash,
    /// An incident's situational picture of N entries (default 10,000):
    /// `picture show` time and answer size against a history read of as
    /// many messages, and convergence after the partner was cut off.
    Picture,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// What to measure.
    scenario: Scenario,
    /// Messages per run (default depends on the scenario).
    #[arg(long)]
    messages: Option<usize>,
    /// In-flight requests (post, echo) or streams (stream); comma-separated for several runs.
    #[arg(long, value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// For `post`: echo and post run alternately this many times at each
    /// concurrency, and the median rates are reported, so that a noisy
    /// neighbour on the machine weighs on both sides of the ratio.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    rounds: u32,
    /// For `federation`: this many more channels shared with the partner,
    /// idle, beside the measured one (a node's links must not slow down
    /// with the number of channels). For `picture`: this many internal
    /// channels on the home beside the incident's (finding an incident
    /// must not slow down with them).
    #[arg(long, default_value_t = 0)]
    idle_channels: usize,
    /// Offered rates for `federation`, msg/s; comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000u64, 5_000, 10_000])]
    rate: Vec<u64>,
    /// For `attach`: size of the file uploaded and transferred, MiB.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    file_mib: u64,
    /// For `attach`: size of the file during which peak memory is measured, MiB (0: skip).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(0..=65_536))]
    rss_file_mib: u64,
    /// For `flash`: the throttled link's rate each way, KiB/s.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    link_kib_per_second: u64,
    /// Print one JSON object per run instead of the table.
    #[arg(long)]
    json: bool,
}

/// One measured run.
struct Run {
    name: String,
    count: usize,
    elapsed: Duration,
    per_second: f64,
    latencies: Vec<Duration>,
    notes: Vec<(&'static str, serde_json::Value)>,
}

impl Run {
    fn new(name: String, count: usize, elapsed: Duration, latencies: Vec<Duration>) -> Self {
        Self {
            name,
            count,
            elapsed,
            per_second: count as f64 / elapsed.as_secs_f64().max(1e-9),
            latencies,
            notes: Vec::new(),
        }
    }

    /// Several runs of the same thing as one: all latencies, the median rate.
    fn median_of(name: String, runs: Vec<Run>) -> Self {
        let mut rates: Vec<f64> = runs.iter().map(Run::rate).collect();
        rates.sort_by(f64::total_cmp);
        Self {
            name,
            count: runs.iter().map(|r| r.count).sum(),
            elapsed: runs.iter().map(|r| r.elapsed).sum(),
            per_second: rates.get(rates.len() / 2).copied().unwrap_or(0.0),
            latencies: runs.into_iter().flat_map(|r| r.latencies).collect(),
            notes: Vec::new(),
        }
    }

    fn rate(&self) -> f64 {
        self.per_second
    }

    /// The `q` quantile of the latencies (0 when there are none).
    fn quantile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let i = ((sorted.len().max(1) - 1) as f64 * q).round() as usize;
        sorted.get(i).copied().unwrap_or_default()
    }

    fn note(mut self, key: &'static str, value: impl Into<serde_json::Value>) -> Self {
        self.notes.push((key, value.into()));
        self
    }

    fn print(mut self, json: bool) {
        self.latencies.sort_unstable();
        let q = |q: f64| {
            let i = ((self.latencies.len().max(1) - 1) as f64 * q).round() as usize;
            self.latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
        };
        let qs = [q(0.0), q(0.5), q(0.9), q(0.99), q(1.0)];
        if json {
            let mut v = json!({
                "run": self.name, "count": self.count, "seconds": self.elapsed.as_secs_f64(), "per_second": self.rate(),
            });
            if !self.latencies.is_empty() {
                v["latency_us"] =
                    json!({"min": qs[0], "p50": qs[1], "p90": qs[2], "p99": qs[3], "max": qs[4]});
            }
            for (k, val) in self.notes {
                v[k] = val;
            }
            out!("{v}");
            return;
        }
        let lat = if self.latencies.is_empty() {
            String::from("                                                        ")
        } else {
            format!(
                "{:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>9.0}",
                qs[0], qs[1], qs[2], qs[3], qs[4]
            )
        };
        let notes: Vec<String> = self.notes.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out!(
            "{:<30} {:>9} {:>10.0}  {lat}  {}",
            self.name,
            self.count,
            self.rate(),
            notes.join(" ")
        );
    }
}

fn header(json: bool) {
    if !json {
        out!(
            "{:<30} {:>9} {:>10}  {:>8} {:>8} {:>8} {:>8} {:>9}  notes",
            "run",
            "count",
            "per s",
            "min µs",
            "p50 µs",
            "p90 µs",
            "p99 µs",
            "max µs"
        );
    }
}

fn progress(total: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    if let Ok(style) = ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} {per_sec}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

pub(crate) fn run(args: BenchArgs) -> anyhow::Result<()> {
    let root = tempfile::Builder::new()
        .prefix("samband-bench-")
        .tempdir()
        .context("creating a temp dir")?;
    header(args.json);
    if args.scenario == Scenario::Fsync {
        return fsync(&args, root.path());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match args.scenario {
            Scenario::Fsync => Ok(()),
            Scenario::Echo => echo_runs(&args, root.path(), false).await,
            Scenario::Post => echo_runs(&args, root.path(), true).await,
            Scenario::Stream => stream(&args, root.path()).await,
            Scenario::Federation => federation(&args, root.path()).await,
            Scenario::Catchup => catchup(&args, root.path()).await,
            Scenario::Scale => scale(&args, root.path()).await,
            Scenario::Attach => attach::run(&args, root.path()).await,
            Scenario::Flash => flash::run(&args, root.path()).await,
            Scenario::Picture => picture::run(&args, root.path()).await,
        }
    })
}

fn fsync(args: &BenchArgs, dir: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    let n = args.messages.unwrap_or(5_000);
    let mut file = std::fs::File::create(dir.join("fsync.bin"))?;
    let block = vec![0x5a; args.size];
    let bar = progress(n, "append+fdatasync");
    let mut latencies = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        latencies.push(t.elapsed());
        bar.inc(1);
    }
    bar.finish_and_clear();
    Run::new(
        format!("fsync {}B", args.size),
        n,
        start.elapsed(),
        latencies,
    )
    .print(args.json);
    Ok(())
}

/// A fresh org directory on loopback ports, accepting bodies of `size`.
/// The bench posts as one gateway member and measures the machine, so the
/// per-member and per-peer rate limits are off.
fn new_org(root: &Path, org: &str, size: usize) -> anyhow::Result<PathBuf> {
    let dir = root.join(org);
    let mut opts = InitOptions::loopback(OrgId::parse(org)?);
    let limits = &mut opts.limits;
    limits.max_body_bytes = size.max(limits.max_body_bytes);
    limits.member_posts_per_second = 0;
    limits.peer_envelopes_per_second = 0;
    limits.member_upload_bytes_per_second = 0;
    limits.max_file_bytes = 1 << 40;
    setup::init(&dir, &opts)?;
    Ok(dir)
}

fn body(size: usize, tag: u64) -> String {
    let mut s = format!("{tag}|");
    s.extend(std::iter::repeat_n(
        'x',
        size.saturating_sub(s.len()).max(1),
    ));
    s
}

/// Runs `n` calls with `c` in flight, each made by `call`, behind a progress bar labelled `label`.
async fn closed_loop<F, Fut>(label: &str, n: usize, c: usize, call: F) -> anyhow::Result<Run>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send,
{
    let bar = progress(n, label);
    let per_task = n.div_ceil(c);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(c);
    for _ in 0..c {
        let (call, bar) = (call.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let t = Instant::now();
                call().await?;
                lat.push(t.elapsed());
                bar.inc(1);
            }
            Ok::<_, tonic::Status>(lat)
        }));
    }
    let mut latencies = Vec::with_capacity(per_task * c);
    for t in tasks {
        latencies.extend(t.await??);
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok(Run::new(
        label.to_owned(),
        latencies.len(),
        elapsed,
        latencies,
    ))
}

#[derive(Debug)]
struct Echo;

#[tonic::async_trait]
impl bench_echo_server::BenchEcho for Echo {
    async fn echo(
        &self,
        request: tonic::Request<proto::PostRequest>,
    ) -> Result<tonic::Response<proto::PostResponse>, tonic::Status> {
        // The same identity check as a real post (made once per
        // connection, at its handshake); then nothing.
        Verified::<MemberIdentity>::of(&request)
            .ok_or_else(|| tonic::Status::unauthenticated("no certificate"))?
            .clone()
            .map_err(|e| tonic::Status::permission_denied(e.to_string()))?;
        Ok(tonic::Response::new(proto::PostResponse::default()))
    }

    async fn sink(
        &self,
        request: tonic::Request<tonic::Streaming<proto::UploadChunk>>,
    ) -> Result<tonic::Response<proto::UploadResponse>, tonic::Status> {
        let mut chunks = request.into_inner();
        let mut size = 0;
        while let Some(chunk) = chunks.message().await? {
            size += chunk.data.len() as u64;
        }
        Ok(tonic::Response::new(proto::UploadResponse {
            sha256: String::new(),
            size,
        }))
    }
}

/// Serves BenchEcho with the node's own TLS settings on loopback.
async fn start_echo(dir: &Path, org: &str, shutdown: CancellationToken) -> anyhow::Result<String> {
    let tls = Arc::new(OrgPki::at(dir).client_listener_tls()?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let max_connections = samband::config::Limits::default().connections_per_listener;
    let org = OrgId::parse(org)?;
    let incoming = tls_incoming(
        listener,
        move || Some(tls.clone()),
        move |chain| {
            let leaf = chain.first().ok_or(IdentityError::NoCertificate)?;
            Member::from_certificate(leaf, &org)
        },
        max_connections,
        shutdown.clone(),
    );
    let service = bench_echo_server::BenchEchoServer::new(Echo)
        .max_decoding_message_size(samband::model::CHUNK_BYTES + (64 << 10));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()),
    );
    Ok(addr)
}

async fn operator_channel(dir: &Path, addr: &str) -> anyhow::Result<Channel> {
    let bundle = samband::pki::IdentityBundle::load(&samband::layout::operator_dir(dir))?;
    Ok(samband::client::connect_channel(&bundle, Some(addr)).await?)
}

async fn create_channel(channel: &Channel, name: &str) -> anyhow::Result<String> {
    let req = proto::CreateChannelRequest { name: name.into() };
    Ok(MessagingClient::new(channel.clone())
        .create_channel(req)
        .await?
        .into_inner()
        .id)
}

/// `echo`, or `post` with the echo ceiling measured beside it.
async fn echo_runs(args: &BenchArgs, root: &Path, with_post: bool) -> anyhow::Result<()> {
    let dir = new_org(root, "bench.example", args.size)?;
    let shutdown = CancellationToken::new();
    let echo_addr = start_echo(&dir, "bench.example", shutdown.clone()).await?;
    let echo = BenchEchoClient::new(operator_channel(&dir, &echo_addr).await?);
    let node = if with_post {
        Some(LocalNode::start(&dir, None).await?)
    } else {
        None
    };
    let (post_client, ch) = match &node {
        Some(node) => {
            let channel = node.operator().await?;
            let ch = create_channel(&channel, "bench").await?;
            (Some(MessagingClient::new(channel)), ch)
        }
        None => (None, String::new()),
    };
    let concurrency = if args.concurrency.is_empty() {
        vec![1, 16, 64]
    } else {
        args.concurrency.clone()
    };
    for c in concurrency {
        let c = c.max(1);
        let n = args.messages.unwrap_or(if c == 1 { 5_000 } else { 20_000 });
        let request = proto::PostRequest {
            channel: ch.clone(),
            text: body(args.size, 0),
            priority: 0,
            attachments: Vec::new(),
            ..Default::default()
        };
        let echo_call = {
            let (echo, request) = (echo.clone(), request.clone());
            move || {
                let (mut echo, request) = (echo.clone(), request.clone());
                async move { echo.echo(request).await.map(drop) }
            }
        };
        let post_call = post_client.clone().map(|client| {
            let request = request.clone();
            move || {
                let (mut client, request) = (client.clone(), request.clone());
                async move { client.post(request).await.map(drop) }
            }
        });
        let rounds = args.rounds as usize;
        let per_round = n.div_ceil(rounds);
        let (mut echo_runs, mut post_runs) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            let label = format!("echo c={c} ({round}/{rounds})");
            echo_runs.push(closed_loop(&label, per_round, c, echo_call.clone()).await?);
            let Some(post_call) = &post_call else {
                continue;
            };
            let label = format!("post c={c} ({round}/{rounds})");
            post_runs.push(closed_loop(&label, per_round, c, post_call.clone()).await?);
        }
        let ratios: Vec<String> = echo_runs
            .iter()
            .zip(&post_runs)
            .map(|(e, p)| format!("{:.2}", p.rate() / e.rate()))
            .collect();
        let echo_run = Run::median_of(format!("echo c={c} {}B", args.size), echo_runs);
        let echo_rate = echo_run.rate();
        echo_run.print(args.json);
        if post_runs.is_empty() {
            continue;
        }
        let run = Run::median_of(format!("post c={c} {}B", args.size), post_runs);
        let ratio = run.rate() / echo_rate;
        run.note("ratio_to_echo", (ratio * 100.0).round() / 100.0)
            .note("per_round", ratios.join("/"))
            .print(args.json);
    }
    if let Some(node) = node {
        node.stop().await?;
    }
    shutdown.cancel();
    Ok(())
}

/// Publishes `n` posts on one stream as fast as the stream takes them;
/// returns the ack latency of each and the cursor of the post at `mark`.
async fn publish(
    channel: Channel,
    ch: String,
    n: usize,
    size: usize,
    bar: ProgressBar,
    mark: Option<usize>,
) -> anyhow::Result<(Vec<Duration>, Option<String>)> {
    let (tx, rx) = mpsc::channel(1024);
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel();
    let mut acks = MessagingClient::new(channel)
        .publish(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let sender = tokio::spawn(async move {
        for i in 0..n {
            let req = proto::PostRequest {
                channel: ch.clone(),
                text: body(size, i as u64),
                priority: 0,
                attachments: Vec::new(),
                ..Default::default()
            };
            let _ = sent_tx.send(Instant::now());
            if tx.send(req).await.is_err() {
                break;
            }
        }
    });
    let mut latencies = Vec::with_capacity(n);
    let mut marked = None;
    while let Some(ack) = acks.next().await {
        let ack = ack?;
        let sent = sent_rx.recv().await.context("an ack without a post")?;
        latencies.push(sent.elapsed());
        bar.inc(1);
        match ack.outcome {
            Some(proto::publish_ack::Outcome::Posted(p)) if Some(ack.index as usize) == mark => {
                marked = Some(p.cursor)
            }
            Some(proto::publish_ack::Outcome::Posted(_)) => {}
            other => bail!("post {} refused: {other:?}", ack.index),
        }
        if latencies.len() == n {
            break;
        }
    }
    sender.await?;
    Ok((latencies, marked))
}

async fn stream(args: &BenchArgs, root: &Path) -> anyhow::Result<()> {
    let dir = new_org(root, "bench.example", args.size)?;
    let node = LocalNode::start(&dir, None).await?;
    let channel = node.operator().await?;
    let concurrency = if args.concurrency.is_empty() {
        vec![1, 4]
    } else {
        args.concurrency.clone()
    };
    for streams in concurrency {
        let streams = streams.max(1);
        let n = args.messages.unwrap_or(100_000);
        let ch = create_channel(&channel, &format!("stream-{streams}")).await?;
        let bar = progress(n, &format!("publish streams={streams}"));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..streams {
            // One connection per stream, as separate gateways would have.
            let conn = node.operator().await?;
            tasks.push(tokio::spawn(publish(
                conn,
                ch.clone(),
                n / streams,
                args.size,
                bar.clone(),
                None,
            )));
        }
        let mut latencies = Vec::new();
        for t in tasks {
            latencies.extend(t.await??.0);
        }
        bar.finish_and_clear();
        Run::new(
            format!("stream streams={streams} {}B", args.size),
            latencies.len(),
            start.elapsed(),
            latencies,
        )
        .print(args.json);
    }
    node.stop().await?;
    Ok(())
}

/// Two nodes that trust each other and dial each other.
async fn federated_pair(root: &Path, size: usize) -> anyhow::Result<(LocalNode, LocalNode)> {
    let a = LocalNode::start(&new_org(root, "home.example", size)?, None).await?;
    let b = LocalNode::start(&new_org(root, "partner.example", size)?, None).await?;
    a.peer_with(&b).await?;
    Ok((a, b))
}

/// Creates a channel on `a`, shares it with `b`'s org, and waits until `b` holds it.
async fn shared_channel(a: &LocalNode, b: &LocalNode, name: &str) -> anyhow::Result<String> {
    let channel = a.operator().await?;
    let ch = create_channel(&channel, name).await?;
    let req = proto::ShareChannelRequest {
        channel: ch.clone(),
        orgs: vec!["partner.example".into()],
        ..Default::default()
    };
    AdminClient::new(channel).share_channel(req).await?;
    let mut partner = MessagingClient::new(b.operator().await?);
    let deadline = Instant::now() + Duration::from_secs(10);
    while newest_seq(&mut partner, &ch).await.is_none() {
        if Instant::now() > deadline {
            bail!("the partner never joined {ch}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(ch)
}

/// origin_seq of the newest message of `ch`, if the channel is held.
async fn newest_seq(c: &mut MessagingClient<Channel>, ch: &str) -> Option<u64> {
    let req = proto::HistoryRequest {
        channel: ch.into(),
        limit: 1,
        position: None,
    };
    let page = c.history(req).await.ok()?.into_inner();
    Some(page.messages.last().map_or(0, |m| m.origin_seq))
}

async fn federation(args: &BenchArgs, root: &Path) -> anyhow::Result<()> {
    let cap = samband::config::Limits::default().channels_per_partner;
    if args.idle_channels + args.rate.len() > cap {
        bail!(
            "--idle-channels {} and {} measured channel(s) exceed the partner's limits.channels_per_partner ({cap})",
            args.idle_channels,
            args.rate.len()
        );
    }
    let (a, b) = federated_pair(root, args.size).await?;
    let bar = progress(args.idle_channels, "idle shared channels");
    for i in 0..args.idle_channels {
        shared_channel(&a, &b, &format!("idle-{i}")).await?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    for &rate in &args.rate {
        let n = args.messages.unwrap_or((rate * 3) as usize);
        let ch = shared_channel(&a, &b, &format!("rate-{rate}")).await?;
        let mut sub = MessagingClient::new(b.operator().await?)
            .subscribe(proto::SubscribeRequest {
                channel: ch.clone(),
                start: None,
            })
            .await?
            .into_inner();
        let bar = progress(n, &format!("federation {rate}/s"));
        let (tx, rx) = mpsc::channel(4096);
        let mut acks = MessagingClient::new(a.operator().await?)
            .publish(ReceiverStream::new(rx))
            .await?
            .into_inner();
        tokio::spawn(async move { while let Some(Ok(_)) = acks.next().await {} });
        let start = Instant::now();
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let (size, ch_post) = (args.size, ch.clone());
        // When each post was handed to the stream, in µs since `start`.
        let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
        let stamps = sent_at.clone();
        let poster = tokio::spawn(async move {
            let mut sent = 0usize;
            while sent < n {
                // Send everything due by now, then wait a tick: pacing at a fixed offered rate.
                let due = ((start.elapsed().as_secs_f64() * rate as f64) as usize + 1).min(n);
                while sent < due {
                    let req = proto::PostRequest {
                        channel: ch_post.clone(),
                        text: body(size, sent as u64),
                        priority: 0,
                        attachments: Vec::new(),
                        ..Default::default()
                    };
                    stamps[sent].store(start.elapsed().as_micros() as u64, Ordering::Relaxed);
                    if tx.send(req).await.is_err() {
                        return sent;
                    }
                    sent += 1;
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            sent
        });
        let mut latencies = Vec::with_capacity(n);
        let mut final_lag = Duration::MAX;
        let deadline =
            start + Duration::from_secs_f64(n as f64 / rate as f64) + Duration::from_secs(10);
        while latencies.len() < n {
            let m = match tokio::time::timeout_at(deadline.into(), sub.message()).await {
                Ok(next) => match next? {
                    Some(m) => m,
                    None => break,
                },
                Err(_) => break, // not all arrived in time: reported as not sustained
            };
            let Some((i, stamp)) = m
                .text
                .split('|')
                .next()
                .and_then(|s| s.parse::<u32>().ok())
                .and_then(|i| Some((i, sent_at.get(i as usize)?)))
            else {
                continue;
            };
            // Latency from when the post was sent; how late it is against
            // when it was due shows whether the offered rate is kept up.
            let now = start.elapsed();
            let sent = Duration::from_micros(stamp.load(Ordering::Relaxed));
            latencies.push(now.saturating_sub(sent));
            final_lag = now.saturating_sub(interval * i);
            bar.inc(1);
        }
        let elapsed = start.elapsed();
        bar.finish_and_clear();
        poster.await?;
        let received = latencies.len();
        // Kept up: everything arrived, and the last message no later than
        // 100 ms after it was due (a growing backlog shows as a late end).
        let sustained = received == n && final_lag < Duration::from_millis(100);
        Run::new(
            format!("federation offered={rate}/s {}B", args.size),
            received,
            elapsed,
            latencies,
        )
        .note("offered", rate)
        .note("idle_channels", args.idle_channels)
        .note("sustained", sustained)
        .note(
            "final_lag_ms",
            (final_lag.as_secs_f64() * 1e4).round() / 10.0,
        )
        .print(args.json);
    }
    a.stop().await?;
    b.stop().await?;
    Ok(())
}

async fn catchup(args: &BenchArgs, root: &Path) -> anyhow::Result<()> {
    let n = args.messages.unwrap_or(100_000);
    let (a, b) = federated_pair(root, args.size).await?;
    let ch = shared_channel(&a, &b, "catchup").await?;
    let (b_dir, b_addrs) = (b.dir.clone(), (b.client, b.federation));
    b.stop().await?;
    let bar = progress(n, "posting while offline");
    publish(
        a.operator().await?,
        ch.clone(),
        n,
        args.size,
        bar.clone(),
        None,
    )
    .await?;
    bar.finish_and_clear();
    // The roster is A:1, the posts A:2 ..= A:n+1.
    let last = n as u64 + 1;
    let bar = progress(n, "catching up");
    let start = Instant::now();
    let b = LocalNode::start(&b_dir, Some(b_addrs)).await?;
    let mut partner = MessagingClient::new(b.operator().await?);
    let mut first = None;
    loop {
        let seq = newest_seq(&mut partner, &ch).await.unwrap_or(0);
        if seq > 1 && first.is_none() {
            first = Some(start.elapsed());
        }
        bar.set_position(seq.saturating_sub(1));
        if seq >= last {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("catch-up did not finish in 10 minutes (at {seq} of {last})");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    let first_ms = first.unwrap_or(elapsed).as_secs_f64() * 1e3;
    Run::new(
        format!("catchup {n} x {}B", args.size),
        n,
        elapsed,
        Vec::new(),
    )
    .note("first_message_ms", (first_ms * 10.0).round() / 10.0)
    .print(args.json);
    a.stop().await?;
    b.stop().await?;
    Ok(())
}

/// A `samband serve` process of this very binary, for memory figures of the node alone.
struct Served {
    child: tokio::process::Child,
    addr: String,
}

async fn serve_process(dir: &Path) -> anyhow::Result<Served> {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .args(["serve", "--dir"])
        .arg(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let line = tokio::io::BufReader::new(stdout)
        .lines()
        .next_line()
        .await?
        .context("serve did not start")?;
    let addr = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("client="))
        .context("no client address")?
        .to_owned();
    Ok(Served { child, addr })
}

/// A figure from /proc/PID/status, in KiB (Linux).
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        l.strip_prefix(field)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

async fn stop_process(mut served: Served) -> anyhow::Result<()> {
    if let Some(pid) = served.child.id() {
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
    }
    served.child.wait().await?;
    Ok(())
}

async fn scale(args: &BenchArgs, root: &Path) -> anyhow::Result<()> {
    let n = args.messages.unwrap_or(1_000_000);
    let dir = new_org(root, "bench.example", args.size)?;
    let served = serve_process(&dir).await?;
    let pid = served.child.id().context("no pid")?;
    let channel = operator_channel(&dir, &served.addr).await?;
    let ch = create_channel(&channel, "scale").await?;
    let bar = progress(n, "loading");
    let start = Instant::now();
    let (_, mid) = publish(channel, ch.clone(), n, args.size, bar.clone(), Some(n / 2)).await?;
    let load = start.elapsed();
    bar.finish_and_clear();
    let peak_kib = proc_status_kib(pid, "VmHWM:").unwrap_or(0);
    Run::new(
        format!("scale load {n} x {}B", args.size),
        n,
        load,
        Vec::new(),
    )
    .note("peak_rss_mib", peak_kib / 1024)
    .print(args.json);
    stop_process(served).await?;
    let disk = dir_bytes(&samband::layout::data_dir(&dir));

    let start = Instant::now();
    let served = serve_process(&dir).await?;
    let pid = served.child.id().context("no pid")?;
    let mut client = MessagingClient::new(operator_channel(&dir, &served.addr).await?);
    client.status(proto::StatusRequest {}).await?;
    let cold = start.elapsed();
    let rss_kib = proc_status_kib(pid, "VmRSS:").unwrap_or(0);
    let mid = mid.context("no cursor for the middle of the log")?;
    let mut latencies = Vec::new();
    let reads = 200;
    let start = Instant::now();
    for _ in 0..reads {
        let req = proto::HistoryRequest {
            channel: ch.clone(),
            limit: 50,
            position: Some(proto::history_request::Position::Before(mid.clone())),
        };
        let t = Instant::now();
        client.history(req).await?;
        latencies.push(t.elapsed());
    }
    Run::new(
        format!("scale history page (50) at {}", n / 2),
        reads,
        start.elapsed(),
        latencies,
    )
    .note("cold_start_ms", (cold.as_secs_f64() * 1e4).round() / 10.0)
    .note("rss_after_restart_mib", rss_kib / 1024)
    .note("disk_bytes_per_message", disk / n.max(1) as u64)
    .print(args.json);
    stop_process(served).await?;
    Ok(())
}
