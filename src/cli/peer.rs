//! `samband peer add|remove|list`: partner organisations this node trusts.
//!
//! Each acts on the running node through the Admin API (no restart
//! needed); when the node is not running, on its data directory.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;
use samband::model::OrgId;
use samband::proto::AcceptPolicy;
use samband::proto::admin_client::AdminClient;
use samband::{federation, proto};
use serde_json::json;
use tonic::transport::Channel;

use super::connection::rpc;
use super::{NodeTarget, offline_store, running_node};

#[derive(Debug, Args)]
pub(crate) struct PeerAddArgs {
    /// The partner's trust bundle file (from their `samband trust export`).
    bundle: PathBuf,
    /// The fingerprint the partner's operator read out to you (not copied from the file).
    #[arg(long, value_name = "HEX")]
    fingerprint: String,
    #[command(flatten)]
    node: NodeTarget,
    /// The partner's federation address to dial. Without it this node never
    /// dials: the partner dials in (e.g. this node accepts no outbound traffic
    /// to them, or they sit behind a firewall that allows only outbound).
    #[arg(long, value_name = "HOST:PORT")]
    endpoint: Option<String>,
    /// What to do with channels this partner shares: store them at once
    /// (auto) or hold them until `samband channel accept` (manual).
    #[arg(long, default_value = "auto", value_parser = ["auto", "manual"])]
    accept: String,
    /// Print the new peer as one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PeerRemoveArgs {
    /// Org id of the partner.
    org: String,
    #[command(flatten)]
    node: NodeTarget,
    /// Also unshare every channel of this node the partner participates in
    /// (needs the node running). Without it, removing a partner that still
    /// participates in one is refused, naming the channels.
    #[arg(long)]
    unshare: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PeerListArgs {
    #[command(flatten)]
    node: NodeTarget,
    /// Print one JSON object per peer.
    #[arg(long)]
    json: bool,
}

fn peer_line(p: &proto::Peer, json: bool) -> String {
    let accept = if p.accept == AcceptPolicy::Manual as i32 {
        "manual"
    } else {
        "auto"
    };
    let link = p.link.clone().unwrap_or_default();
    if json {
        let lag: Vec<_> = link
            .lag
            .iter()
            .map(|l| json!({"channel": l.channel, "messages": l.messages}))
            .collect();
        return json!({
            "org": p.org, "fingerprint": p.fingerprint, "endpoint": p.endpoint, "accept": accept,
            "link": link.state, "last_error": link.last_error, "lag": lag,
            "envelopes_sent": link.envelopes_sent, "envelopes_received": link.envelopes_received,
            "envelopes_rejected": link.envelopes_rejected,
            "refused_by_peer": link.refused_by_peer, "last_refusal": link.last_refusal,
        })
        .to_string();
    }
    // The org and endpoint come from a partner's trust bundle.
    let printable = super::output::printable;
    let endpoint = if p.endpoint.is_empty() {
        "(they dial us)".to_owned()
    } else {
        printable(&p.endpoint)
    };
    let mut line = format!(
        "{:<28} {:<12} {:<24} accept={accept}",
        printable(&p.org),
        link.state,
        endpoint
    );
    if !link.last_error.is_empty() {
        // It may quote what the partner said (a status it ended the link with).
        let error = super::output::printable(&link.last_error);
        line.push_str(&format!("  last error: {error}"));
    }
    if link.refused_by_peer > 0 {
        line.push_str(&format!(
            "\n    refused {} of this node's messages: {}",
            link.refused_by_peer,
            super::output::printable(&link.last_refusal)
        ));
    }
    for lag in link.lag.iter().filter(|l| l.messages > 0) {
        let plural = if lag.messages == 1 { "" } else { "s" };
        line.push_str(&format!(
            "\n    {} behind by {} message{plural}",
            printable(&lag.channel),
            lag.messages
        ));
    }
    line
}

pub(crate) async fn peer_add(args: PeerAddArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.bundle)
        .with_context(|| format!("reading {}", args.bundle.display()))?;
    let accept = if args.accept == "manual" {
        AcceptPolicy::Manual
    } else {
        AcceptPolicy::Auto
    };
    if let Some(mut admin) = running_node(&args.node).await? {
        let req = proto::AddPeerRequest {
            bundle: text,
            fingerprint: args.fingerprint,
            endpoint: args.endpoint.unwrap_or_default(),
            accept: accept as i32,
        };
        let peer = admin.add_peer(req).await.map_err(rpc)?.into_inner();
        out!(
            "{}",
            if args.json {
                peer_line(&peer, true)
            } else {
                format!("trusted {} (node running; no restart needed)", peer.org)
            }
        );
        return Ok(());
    }
    let (config, store) = offline_store(args.node.dir()?)?;
    let record = federation::peer_record(
        &config.org,
        &text,
        &args.fingerprint,
        args.endpoint.as_deref(),
        accept,
    )?;
    store.put_peer(&record, &samband::audit::Actor::Host)?;
    out!(
        "trusted {} (node stopped; takes effect when it starts)",
        record.org
    );
    Ok(())
}

pub(crate) async fn peer_remove(args: PeerRemoveArgs) -> anyhow::Result<()> {
    let org = OrgId::parse(&args.org)?;
    if let Some(mut admin) = running_node(&args.node).await? {
        admin
            .remove_peer(proto::RemovePeerRequest {
                org: org.to_string(),
                unshare: args.unshare,
            })
            .await
            .map_err(rpc)?;
        out!("removed {org}; its links are closed");
        return Ok(());
    }
    let (config, store) = offline_store(args.node.dir()?)?;
    let records = store.channels()?;
    let shared: Vec<&str> = samband::rules::shared_from_here_with(&records, &config.org, &org)
        .into_iter()
        .map(|r| r.id.as_str())
        .collect();
    if !shared.is_empty() {
        bail!(
            "{org} still participates in {}; start the node and run this again with --unshare \
             (a roster change needs the running node), or unshare them first",
            shared.join(", ")
        );
    }
    if !store.remove_peer(&org, &samband::audit::Actor::Host)? {
        bail!("{org} is not a configured peer");
    }
    out!("removed {org}");
    Ok(())
}

pub(crate) async fn peer_list(args: PeerListArgs) -> anyhow::Result<()> {
    let peers = match running_node(&args.node).await? {
        Some(mut admin) => {
            admin
                .list_peers(proto::ListPeersRequest {})
                .await
                .map_err(rpc)?
                .into_inner()
                .peers
        }
        None => {
            let (_, store) = offline_store(args.node.dir()?)?;
            store
                .peers()?
                .into_iter()
                .map(|r| proto::Peer {
                    fingerprint: federation::peer_fingerprint(&r),
                    org: r.org,
                    endpoint: r.endpoint,
                    accept: r.accept,
                    link: Some(proto::LinkStatus {
                        state: "node-stopped".into(),
                        ..Default::default()
                    }),
                })
                .collect()
        }
    };
    if peers.is_empty() && !args.json {
        out!(
            "no peers yet (import a partner's bundle with: samband peer add FILE --fingerprint HEX --dir DIR)"
        );
    }
    for p in &peers {
        out!("{}", peer_line(p, args.json));
    }
    Ok(())
}

/// Peers and their links for `samband status`, if the caller is an operator.
/// The partner lines `status` shows an operator (each a JSON object with
/// `json`); `None` for a member, who may not list peers.
pub(crate) async fn status_peers(channel: Channel, json: bool) -> Option<Vec<String>> {
    match AdminClient::new(channel)
        .list_peers(proto::ListPeersRequest {})
        .await
    {
        Ok(response) => {
            let peers = response.into_inner().peers;
            Some(peers.iter().map(|p| peer_line(p, json)).collect())
        }
        Err(status) if status.code() == tonic::Code::PermissionDenied => None,
        // An operator must not read a failure as "no partners".
        Err(status) => Some(vec![format!(
            "(cannot list the partners: {})",
            super::output::printable(status.message())
        )]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partners_words_in_the_last_error_cannot_drive_the_terminal() {
        let peer = proto::Peer {
            org: "mallory.example".into(),
            link: Some(proto::LinkStatus {
                state: "backing-off".into(),
                last_error: "InvalidArgument: \u{1b}[2J\nrescue.example  connected".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let line = peer_line(&peer, false);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(!line.chars().any(char::is_control), "{line:?}");
        let json: serde_json::Value = serde_json::from_str(&peer_line(&peer, true)).unwrap();
        assert_eq!(
            json["last_error"],
            "InvalidArgument: \u{1b}[2J\nrescue.example  connected"
        );
    }
}
