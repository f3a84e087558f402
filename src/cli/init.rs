//! `samband init`: a new node directory on this host (and the default one
//! `serve` makes when given no `--dir`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use samband::model::OrgId;
use samband::setup;
use samband::setup::InitOptions;

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
    out!("created the node of {} in {dir}", opts.org);
    out!("  config:   {dir}/config.toml");
    out!("  operator: {dir}/operator (admin identity for the client commands: --dir {dir})");
    out!("next: samband serve --dir {dir}");
    Ok(())
}

pub(crate) fn default_dir() -> anyhow::Result<PathBuf> {
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
