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
    out!("{}", output::status(&s, &endpoint, args.conn.json));
    // Operators also see the partner links.
    if !args.conn.json
        && let Some(peers) = super::peer::status_peers(channel).await
    {
        out!("partners  {}", if peers.is_empty() { "none" } else { "" });
        for line in peers {
            out!("  {line}");
        }
    }
    Ok(())
}
