//! `samband trust export`: this org's trust bundle and its fingerprint, for
//! partner operators.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use samband::config::Config;
use samband::federation;
use samband::pki::OrgPki;

#[derive(Debug, Args)]
pub(crate) struct TrustExportArgs {
    /// Node directory.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Write the bundle here instead of standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub(crate) fn trust_export(args: TrustExportArgs) -> anyhow::Result<()> {
    let config = Config::load(super::node_dir(&args.dir)?)?;
    let bundle = federation::own_bundle(
        &config.org,
        &OrgPki::at(&args.dir),
        &config.federation.advertise,
    )?;
    let fingerprint = bundle.fingerprint();
    if config.federation.advertise.ends_with(":0") {
        eprintln!(
            "note: the bundle names port 0 (federation.advertise): the partner cannot dial this node \
             from it, so it must give the address with `peer add --endpoint`, or this node dials it"
        );
    }
    match &args.out {
        Some(path) => {
            std::fs::write(path, bundle.to_text())
                .with_context(|| format!("writing {}", path.display()))?;
            out!(
                "wrote the trust bundle of {} to {}",
                config.org,
                path.display()
            );
        }
        None => out!("{}", bundle.to_text().trim_end()),
    }
    eprintln!("fingerprint: {}", spaced(&fingerprint));
    eprintln!(
        "Read the fingerprint to the partner's operator over another channel (phone, in person)."
    );
    Ok(())
}

/// 64 hex digits in groups of four, easier to read aloud.
fn spaced(hex: &str) -> String {
    hex.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
