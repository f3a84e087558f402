//! `samband serve`: runs the node in the foreground until SIGINT or
//! SIGTERM; SIGHUP reloads its certificate and trust.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use samband::config::{Config, LogFormat};
use samband::node::{Listeners, Node};
use tokio_util::sync::CancellationToken;

use super::init::default_dir;
use super::parse_listen;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Node directory (made by `samband init`). Without it: ./samband-node, created if absent.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Override `client.listen` of the config.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    client_listen: Option<SocketAddr>,
    /// Override `federation.listen` of the config.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen)]
    federation_listen: Option<SocketAddr>,
    /// Override `log.format` of the config: human or json.
    #[arg(long, value_name = "FORMAT", value_parser = ["human", "json"])]
    log_format: Option<String>,
}

pub(crate) fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let dir = match args.dir {
        Some(dir) => dir,
        None => default_dir()?,
    };
    let mut config = Config::load(super::node_dir(&dir)?)?;
    if let Some(addr) = args.client_listen {
        config.client.listen = addr;
    }
    if let Some(addr) = args.federation_listen {
        config.federation.listen = addr;
    }
    let format = match args.log_format.as_deref() {
        Some("json") => LogFormat::Json,
        Some(_) => LogFormat::Human,
        None => config.log.format,
    };
    init_logging(&config, format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let node = Node::open(&dir, config)?;
        let (client, federation) = (node.config().client.listen, node.config().federation.listen);
        let listeners = Listeners {
            client: tokio::net::TcpListener::bind(client)
                .await
                .with_context(|| format!("cannot listen on {client} (client.listen)"))?,
            federation: tokio::net::TcpListener::bind(federation)
                .await
                .with_context(|| format!("cannot listen on {federation} (federation.listen)"))?,
        };
        let (client, federation) = (
            listeners.client.local_addr()?,
            listeners.federation.local_addr()?,
        );
        let org = node.config().org.clone();
        tracing::info!(%org, %client, %federation, "serving");
        // Where the client commands with --dir find a node whose config says port 0.
        let addr_file = samband::layout::client_address_file(&dir);
        if let Err(e) = std::fs::write(&addr_file, client.to_string()) {
            tracing::warn!(error = %e, file = %addr_file.display(), "cannot record the client address");
        }
        // One machine-readable line on stdout for scripts and tests.
        // Watched before the node says it is ready, so that a signal sent
        // right after is handled, never left to its default action.
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate()).context("watching SIGTERM")?;
        let interrupt = signal(SignalKind::interrupt()).context("watching SIGINT")?;
        let hangup = signal(SignalKind::hangup()).context("watching SIGHUP")?;
        println!("ready org={org} client={client} federation={federation}");
        // Under systemd (Type=notify): started. Elsewhere NOTIFY_SOCKET is unset and this does nothing.
        if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
            tracing::warn!(error = %e, "cannot tell the service manager the node is ready");
        }
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(terminate, interrupt, shutdown.clone()));
        tokio::spawn(reload_on_hangup(hangup, node.reload_trigger()));
        node.run(listeners, shutdown).await?;
        Ok(())
    })
}

fn init_logging(config: &Config, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

/// Asks the node to reload its certificate and trust on every SIGHUP.
async fn reload_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    trigger: std::sync::Arc<tokio::sync::Notify>,
) {
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading certificate and trust");
        trigger.notify_one();
    }
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT, and tells the service
/// manager the node is stopping.
async fn stop_on_signal(
    mut terminate: tokio::signal::unix::Signal,
    mut interrupt: tokio::signal::unix::Signal,
    shutdown: CancellationToken,
) {
    tokio::select! {
        _ = terminate.recv() => {},
        _ = interrupt.recv() => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    shutdown.cancel();
}
