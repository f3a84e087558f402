//! Commands that act on a node directory on this host: init, serve, user add.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use samband::config::{Config, LogFormat};
use samband::model::{MemberName, OrgId, Role};
use samband::node::{Listeners, Node};
use samband::setup::{self, InitOptions};
use tokio_util::sync::CancellationToken;

use super::{DEFAULT_NODE_DIR, parse_listen};

/// Org of the node `serve` creates when started without --dir on a fresh machine.
const DEFAULT_ORG: &str = "local.example";

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Organisation id: lower-case DNS-style name, e.g. police.example.
    #[arg(long)]
    org: String,
    /// Node directory to create (must not exist, or be empty).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Address members connect to.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7443", value_parser = parse_listen)]
    client_listen: SocketAddr,
    /// Address partner nodes connect to.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7444", value_parser = parse_listen)]
    federation_listen: SocketAddr,
    /// Extra host name or IP for the node certificate (repeatable); the first is what members dial
    /// when --client-listen is a wildcard address.
    #[arg(long = "host", value_name = "NAME")]
    hosts: Vec<String>,
}

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

#[derive(Debug, Args)]
pub(crate) struct UserAddArgs {
    /// Member name: 1-64 of a-z 0-9 . _ -
    name: String,
    /// Node directory whose CA signs the certificate.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Directory to write the bundle to (ca.pem, cert.pem, key.pem, identity.toml).
    #[arg(long, value_name = "BUNDLE_DIR")]
    out: PathBuf,
    /// Give the member the admin role (create channels, later manage sharing).
    #[arg(long)]
    admin: bool,
    /// How many days the certificate is valid (e.g. 14 for a volunteer
    /// during one incident).
    #[arg(long, default_value_t = samband::pki::MEMBER_DAYS, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
}

pub(crate) fn init(args: InitArgs) -> anyhow::Result<()> {
    let opts = InitOptions {
        org: OrgId::parse(&args.org)?,
        client_listen: args.client_listen,
        federation_listen: args.federation_listen,
        hosts: args.hosts,
        limits: Default::default(),
    };
    setup::init(&args.dir, &opts)?;
    let dir = args.dir.display();
    out!("created node {} for {} in {dir}", opts.org, opts.org);
    out!("  config:   {dir}/config.toml");
    out!("  operator: {dir}/operator (admin identity for the client commands: --dir {dir})");
    out!("next: samband serve --dir {dir}");
    Ok(())
}

pub(crate) fn user_add(args: UserAddArgs) -> anyhow::Result<()> {
    let name = MemberName::parse(&args.name)?;
    let role = if args.admin {
        Role::Admin
    } else {
        Role::Member
    };
    let bundle = setup::add_user(
        &args.dir,
        &name,
        role,
        &args.out,
        samband::pki::Validity::days(args.days),
    )?;
    out!(
        "issued {} ({}) of {}; bundle in {}, connects to {}",
        bundle.info.member,
        bundle.info.role,
        bundle.info.org,
        args.out.display(),
        bundle.info.endpoint
    );
    out!(
        "use it with: samband status --identity {}",
        args.out.display()
    );
    Ok(())
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

fn default_dir() -> anyhow::Result<PathBuf> {
    let dir = Path::new(DEFAULT_NODE_DIR).to_owned();
    if !samband::layout::config_file(&dir).exists() {
        let opts = InitOptions {
            org: OrgId::parse(DEFAULT_ORG)?,
            client_listen: parse_listen("127.0.0.1:7443").map_err(anyhow::Error::msg)?,
            federation_listen: parse_listen("127.0.0.1:7444").map_err(anyhow::Error::msg)?,
            hosts: Vec::new(),
            limits: Default::default(),
        };
        setup::init(&dir, &opts)
            .with_context(|| format!("creating the default node in {}", dir.display()))?;
        eprintln!(
            "created node {DEFAULT_ORG} in ./{DEFAULT_NODE_DIR} (operator identity: ./{DEFAULT_NODE_DIR}/operator)"
        );
    }
    Ok(dir)
}

pub(crate) fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let dir = match args.dir {
        Some(dir) => dir,
        None => default_dir()?,
    };
    let mut config = Config::load(&dir)?;
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
        println!("ready org={org} client={client} federation={federation}");
        let shutdown = CancellationToken::new();
        tokio::spawn(stop_on_signal(shutdown.clone()));
        #[cfg(unix)]
        tokio::spawn(reload_on_hangup(node.reload_trigger()));
        node.run(listeners, shutdown).await?;
        Ok(())
    })
}

/// Asks the node to reload its certificate and trust on every SIGHUP.
#[cfg(unix)]
async fn reload_on_hangup(trigger: std::sync::Arc<tokio::sync::Notify>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP; reload with `samband pki reload` instead");
            return;
        }
    };
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading certificate and trust");
        trigger.notify_one();
    }
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the node");
                    let _ = ctrl_c.await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing in-flight requests");
    shutdown.cancel();
}
