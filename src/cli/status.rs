//! `samband status`: who you are on the node and the node's state (and, for
//! operators, its partner links and background workers).

use clap::Args;
use samband::proto;
use samband::proto::messaging_client::MessagingClient;

use super::connection::rpc;
use super::{Connection, output};

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    conn: Connection,
}

pub(crate) async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let (channel, endpoint) = args.conn.channel_and_endpoint().await?;
    let s = MessagingClient::new(channel.clone())
        .status(proto::StatusRequest {})
        .await
        .map_err(rpc)?
        .into_inner();
    // Operators also see the partner links, with every shared channel's lag.
    let peers = super::peer::status_peers(channel, args.conn.json).await;
    if args.conn.json {
        let mut status: serde_json::Value =
            serde_json::from_str(&output::status(&s, &endpoint, true))?;
        if let Some(peers) = peers {
            let partners = peers
                .iter()
                .map(|p| serde_json::from_str(p))
                .collect::<Result<Vec<serde_json::Value>, _>>()?;
            status["partners"] = partners.into();
        }
        out!("{status}");
        return Ok(());
    }
    out!("{}", output::status(&s, &endpoint, false));
    if let Some(peers) = peers {
        out!("partners  {}", if peers.is_empty() { "none" } else { "" });
        for line in peers {
            out!("  {line}");
        }
    }
    Ok(())
}
