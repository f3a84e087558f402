//! `samband user add|renew`: issues a member's identity bundle from the
//! org CA, or a new one before the old one expires, on the node's host.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use samband::model::{MemberName, Role};
use samband::setup;

#[derive(Debug, Args)]
pub(crate) struct UserAddArgs {
    /// Member name: 1-64 of a-z 0-9 . _ -
    name: String,
    /// Node directory whose CA signs the certificate.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Directory to write the bundle to (ca.pem, cert.pem, key.pem,
    /// identity.toml, and member.p12 for a browser).
    #[arg(long, value_name = "BUNDLE_DIR")]
    out: PathBuf,
    /// Give the member the admin role (create channels, later manage sharing).
    #[arg(long)]
    admin: bool,
    /// How many days the certificate is valid (e.g. 14 for a volunteer
    /// during one incident).
    #[arg(long, default_value_t = samband::pki::MEMBER_DAYS, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
    /// The passphrase of member.p12 (the bundle for a browser), read from
    /// this file (its first line). Without it, one is made and printed once.
    #[arg(long, value_name = "FILE")]
    p12_passphrase_file: Option<PathBuf>,
}

/// The passphrase for member.p12: the first line of `file`, or a new one
/// (five groups of five letters and digits, about 125 bits) and whether it
/// was made here.
fn p12_passphrase(file: Option<&std::path::Path>) -> anyhow::Result<(String, bool)> {
    if let Some(file) = file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the passphrase from {}", file.display()))?;
        let line = text.lines().next().unwrap_or("").to_owned();
        if line.is_empty() {
            anyhow::bail!("{} holds no passphrase on its first line", file.display());
        }
        return Ok((line, false));
    }
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut bytes = [0u8; 25];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("no randomness for a passphrase"))?;
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect();
    let groups: Vec<String> = chars.chunks(5).map(|c| c.iter().collect()).collect();
    Ok((groups.join("-"), true))
}

#[derive(Debug, Args)]
pub(crate) struct UserRenewArgs {
    /// Member name (`operator` renews DIR/operator, the identity samband's
    /// admin commands use).
    name: String,
    /// Node directory whose CA signs the certificate.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Directory to write the new bundle to; a bundle there is replaced
    /// whole. Not needed for `operator`.
    #[arg(long, value_name = "BUNDLE_DIR")]
    out: Option<PathBuf>,
    /// How many days the new certificate is valid.
    #[arg(long, default_value_t = samband::pki::MEMBER_DAYS, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
}

/// Has the issue of a certificate recorded in the node's audit log: by the
/// running node (its reload records what `pki/issued` holds), or in the
/// stopped node's store.
fn record_issue(dir: &std::path::Path) -> anyhow::Result<()> {
    super::connection::run(async {
        match super::running_node(&super::NodeTarget::at(dir)).await {
            Ok(Some(mut admin)) => {
                admin
                    .reload(samband::proto::ReloadRequest {})
                    .await
                    .map_err(super::connection::rpc)?;
            }
            // Not running (or its operator identity cannot reach it): the
            // data dir, if the node is stopped; else it records it itself
            // at its next start, reload, or daily look.
            _ => {
                if let Ok((_, store)) = super::offline_store(dir) {
                    let pki = samband::pki::OrgPki::at(dir);
                    samband::engine::record_issued(&pki, &store, &samband::audit::Actor::Host)?;
                }
            }
        }
        Ok(())
    })
}

pub(crate) fn user_renew(args: UserRenewArgs) -> anyhow::Result<()> {
    super::node_dir(&args.dir)?;
    let name = MemberName::parse(&args.name)?;
    let is_operator = name.as_str() == samband::layout::OPERATOR_NAME;
    let out = match (&args.out, is_operator) {
        (_, true) => samband::layout::operator_dir(&args.dir),
        (Some(out), false) => out.clone(),
        (None, false) => anyhow::bail!(
            "give --out BUNDLE_DIR: where {name}'s new bundle goes (a bundle there is replaced)"
        ),
    };
    let bundle = setup::renew_user(
        &args.dir,
        &name,
        &out,
        samband::pki::Validity::days(args.days),
    )?;
    let cert = bundle.certificate()?;
    record_issue(&args.dir)?;
    out!(
        "renewed {} ({}) of {}: serial {}, valid until {}; bundle in {}",
        bundle.info.member,
        bundle.info.role,
        bundle.info.org,
        cert.serial,
        samband::model::rfc3339(cert.not_after),
        out.display()
    );
    if !is_operator {
        out!(
            "hand the new bundle to {name}; the old certificate works until it expires (revoke it early with: samband pki revoke-user {name} --dir {})",
            args.dir.display()
        );
    }
    Ok(())
}

pub(crate) fn user_add(args: UserAddArgs) -> anyhow::Result<()> {
    super::node_dir(&args.dir)?;
    let name = MemberName::parse(&args.name)?;
    let role = if args.admin {
        Role::Admin
    } else {
        Role::Member
    };
    // Read first: a bad passphrase file issues nothing.
    let (passphrase, made) = p12_passphrase(args.p12_passphrase_file.as_deref())?;
    let bundle = setup::add_user(
        &args.dir,
        &name,
        role,
        &args.out,
        samband::pki::Validity::days(args.days),
    )?;
    record_issue(&args.dir)?;
    let p12 = bundle.write_p12(&passphrase)?;
    out!(
        "issued {} ({}) of {}; bundle in {}, connects to {}",
        bundle.info.member,
        bundle.info.role,
        bundle.info.org,
        args.out.display(),
        bundle.info.endpoint
    );
    if made {
        out!(
            "for a browser: {} (import it, see the README's \"Web console\"); its passphrase, shown only now: {passphrase}",
            p12.display()
        );
    } else {
        out!(
            "for a browser: {} (its passphrase is the one in the file given)",
            p12.display()
        );
    }
    out!(
        "use it with: samband status --identity {}",
        args.out.display()
    );
    Ok(())
}
