//! `samband pki renew|revoke-user|reload`: certificates over time.
//!
//! Each acts on the running node through the Admin API, or on the data
//! directory when the node is stopped.

use anyhow::bail;
use clap::Args;
use samband::config::Config;
use samband::model::{MemberName, rfc3339};
use samband::pki::{NODE_DAYS, OrgPki, Validity};
use samband::{audit, proto};

use super::connection::rpc;
use super::{NodeTarget, offline_store, running_node};

#[derive(Debug, Args)]
pub(crate) struct RenewArgs {
    #[command(flatten)]
    node: NodeTarget,
    /// Days the new node certificate is valid.
    #[arg(long, default_value_t = NODE_DAYS, value_parser = clap::value_parser!(u32).range(1..=3650))]
    days: u32,
}

#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// The member whose certificates stop working.
    name: String,
    #[command(flatten)]
    node: NodeTarget,
}

#[derive(Debug, Args)]
pub(crate) struct ReloadArgs {
    #[command(flatten)]
    node: NodeTarget,
}

pub(crate) async fn renew(args: RenewArgs) -> anyhow::Result<()> {
    let config = Config::load(super::node_dir(args.node.dir()?)?)?;
    let cert = OrgPki::at(args.node.dir()?).renew_node(&config.org, Validity::days(args.days))?;
    let not_after = rfc3339(cert.not_after);
    out!(
        "renewed the node certificate of {}: serial {}, valid until {not_after}",
        config.org,
        cert.serial
    );
    // The operator identity too, before the node is asked to reload: the
    // admin commands need it, and it may be what expired.
    let operator = samband::setup::renew_operator(args.node.dir()?)?.certificate()?;
    out!(
        "renewed the operator identity ({}): serial {}, valid until {}",
        samband::layout::operator_dir(args.node.dir()?).display(),
        operator.serial,
        rfc3339(operator.not_after)
    );
    match running_node(&args.node).await? {
        // The running node audits the reload, with the new serial.
        Some(admin) => reload_running(admin).await,
        None => {
            let (_, store) = offline_store(args.node.dir()?)?;
            store.audit(
                audit::Event::new("node.renewed")
                    .with("node_cert_serial", &cert.serial)
                    .with("node_cert_not_after", &not_after)
                    .by(&audit::Actor::Host),
            )?;
            store.flush()?;
            out!("the node is not running; it uses the new certificate when it starts");
            Ok(())
        }
    }
}

pub(crate) async fn reload(args: ReloadArgs) -> anyhow::Result<()> {
    match running_node(&args.node).await? {
        Some(admin) => reload_running(admin).await,
        None => bail!("the node in {} is not running", args.node.dir()?.display()),
    }
}

/// Makes the running node pick up its certificate and trust.
async fn reload_running(
    mut admin: proto::admin_client::AdminClient<tonic::transport::Channel>,
) -> anyhow::Result<()> {
    let r = admin
        .reload(proto::ReloadRequest {})
        .await
        .map_err(rpc)?
        .into_inner();
    out!(
        "the running node now uses serial {} (valid until {}) for new connections",
        r.node_cert_serial,
        r.node_cert_not_after
    );
    Ok(())
}

pub(crate) async fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    let member = MemberName::parse(&args.name)?;
    let revoked: Vec<(String, String)> = match running_node(&args.node).await? {
        Some(mut admin) => admin
            .revoke_member(proto::RevokeMemberRequest {
                member: member.to_string(),
            })
            .await
            .map_err(rpc)?
            .into_inner()
            .certificates
            .into_iter()
            .map(|c| (c.serial, c.revoked_at))
            .collect(),
        None => {
            let (_, store) = offline_store(args.node.dir()?)?;
            samband::engine::revoke_member(
                &OrgPki::at(args.node.dir()?),
                &store,
                &member,
                &samband::audit::Actor::Host,
            )?
            .into_iter()
            .map(|r| (r.serial, r.at))
            .collect()
        }
    };
    for (serial, at) in &revoked {
        out!("revoked {member}: certificate {serial} (since {at})");
    }
    Ok(())
}
