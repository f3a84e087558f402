//! `samband bench`: measurements on real components (mTLS over loopback,
//! real sled in a temp dir). Scenarios so far: `fsync` (the disk's floor)
//! and `post` (durable posts through the Messaging API).

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use samband::config::Config;
use samband::model::OrgId;
use samband::node::{Listeners, Node};
use samband::proto;
use samband::setup::{self, InitOptions};
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Scenario {
    /// Raw append + fdatasync rate of small writes on the temp dir's filesystem.
    Fsync,
    /// Durable posts through the Messaging API over mTLS, acked after flush.
    Post,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    scenario: Scenario,
    /// Messages (or appends) per measured run.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// In-flight requests on one connection; repeat or comma-separate for several runs.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 64])]
    concurrency: Vec<usize>,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Print one JSON object per run.
    #[arg(long)]
    json: bool,
}

/// Latency summary of one run.
struct Run {
    name: String,
    count: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn quantile(&self, q: f64) -> Duration {
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies.get(i).copied().unwrap_or_default()
    }

    fn print(&mut self, json: bool) {
        self.latencies.sort_unstable();
        let rate = self.count as f64 / self.elapsed.as_secs_f64();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let qs = [0.0, 0.5, 0.9, 0.99, 1.0].map(|q| us(self.quantile(q)));
        if json {
            let v = json!({
                "run": self.name, "count": self.count, "seconds": self.elapsed.as_secs_f64(), "per_second": rate,
                "latency_us": {"min": qs[0], "p50": qs[1], "p90": qs[2], "p99": qs[3], "max": qs[4]},
            });
            println!("{v}");
        } else {
            println!(
                "{:<22} {:>9.0}/s   latency µs  min {:>7.0}  p50 {:>7.0}  p90 {:>7.0}  p99 {:>7.0}  max {:>8.0}",
                self.name, rate, qs[0], qs[1], qs[2], qs[3], qs[4]
            );
        }
    }
}

pub(crate) fn run(args: BenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir().context("creating a temp dir")?;
    match args.scenario {
        Scenario::Fsync => fsync(&args, tmp.path()),
        Scenario::Post => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(post(&args, tmp.path()))
        }
    }
}

fn fsync(args: &BenchArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let mut file = std::fs::File::create(dir.join("fsync.bin"))?;
    let block = vec![0x5a; args.size];
    let mut latencies = Vec::with_capacity(args.messages);
    let start = Instant::now();
    for _ in 0..args.messages {
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        latencies.push(t.elapsed());
    }
    let name = format!("fsync {}B", args.size);
    Run {
        name,
        count: args.messages,
        elapsed: start.elapsed(),
        latencies,
    }
    .print(args.json);
    Ok(())
}

async fn post(args: &BenchArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let node_dir = dir.join("node");
    let opts = InitOptions {
        org: OrgId::parse("bench.example")?,
        client_listen: "127.0.0.1:0".parse()?,
        federation_listen: "127.0.0.1:0".parse()?,
        hosts: vec![],
    };
    setup::init(&node_dir, &opts)?;
    let mut config = Config::load(&node_dir)?;
    config.limits.max_body_bytes = config.limits.max_body_bytes.max(args.size);
    let node = Node::open(&node_dir, config)?;
    let listeners = Listeners::bind(node.config()).await?;
    let addr = listeners.client.local_addr()?.to_string();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(node.run(listeners, shutdown.clone()));

    let bundle = samband::pki::IdentityBundle::load(&node_dir.join(setup::OPERATOR_DIR))?;
    let client = samband::client::connect(&bundle, Some(&addr)).await?;
    let ch = client
        .clone()
        .create_channel(proto::CreateChannelRequest {
            name: "bench".into(),
        })
        .await?
        .into_inner()
        .id;
    let text: Arc<str> = "x".repeat(args.size).into();
    for &c in &args.concurrency {
        let c = c.max(1);
        let per_task = args.messages.div_ceil(c);
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(c);
        for _ in 0..c {
            let (mut client, ch, text) = (client.clone(), ch.clone(), text.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    let t = Instant::now();
                    let req = proto::PostRequest {
                        channel: ch.clone(),
                        text: text.to_string(),
                        priority: 0,
                    };
                    client.post(req).await?;
                    lat.push(t.elapsed());
                }
                Ok::<_, tonic::Status>(lat)
            }));
        }
        let mut latencies = Vec::with_capacity(per_task * c);
        for t in tasks {
            latencies.extend(t.await??);
        }
        let elapsed = start.elapsed();
        let name = format!("post c={c} {}B", args.size);
        Run {
            name,
            count: latencies.len(),
            elapsed,
            latencies,
        }
        .print(args.json);
    }
    shutdown.cancel();
    server.await??;
    Ok(())
}
