//! `samband channel create|list|share|unshare|accept`: channels, and
//! sharing them with partner orgs.

use clap::{Args, ValueEnum};
use samband::proto;

use super::connection::{admin, rpc};
use super::{Connection, output};

#[derive(Debug, Args)]
pub(crate) struct ChannelCreateArgs {
    /// Channel name: 1-63 of a-z 0-9 . _ -
    name: String,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct ChannelListArgs {
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct ShareArgs {
    /// Channel of this org: `name` or `home/name`.
    channel: String,
    /// Partner orgs to share it with (each a configured peer).
    #[arg(required = true)]
    orgs: Vec<String>,
    /// What they get of what the channel holds already: `all`, or
    /// `from-now` (earlier messages reach them withheld: their place, not
    /// their text). Required when sharing again with an org that was
    /// removed; a first share defaults to `all`.
    #[arg(long, value_enum)]
    history: Option<HistoryArg>,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum HistoryArg {
    All,
    FromNow,
}

#[derive(Debug, Args)]
pub(crate) struct UnshareArgs {
    /// Channel of this org: `name` or `home/name`.
    channel: String,
    /// The partner org to remove from the channel.
    org: String,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct AcceptArgs {
    /// The offered channel, `home/name`.
    channel: String,
    #[command(flatten)]
    conn: Connection,
}

pub(crate) async fn channel_create(args: ChannelCreateArgs) -> anyhow::Result<()> {
    let (mut c, _) = args.conn.connect().await?;
    let channel = c
        .create_channel(proto::CreateChannelRequest { name: args.name })
        .await
        .map_err(rpc)?
        .into_inner();
    if args.conn.json {
        out!("{}", output::channel(&channel, true));
    } else {
        out!("created internal channel {}", channel.id);
    }
    Ok(())
}

pub(crate) async fn channel_list(args: ChannelListArgs) -> anyhow::Result<()> {
    let (mut c, _) = args.conn.connect().await?;
    let list = c
        .list_channels(proto::ListChannelsRequest {})
        .await
        .map_err(rpc)?
        .into_inner();
    if list.channels.is_empty() && !args.conn.json {
        out!("no channels yet (an admin creates one with: samband channel create NAME)");
    }
    for ch in &list.channels {
        out!("{}", output::channel(ch, args.conn.json));
    }
    Ok(())
}

pub(crate) async fn share(args: ShareArgs) -> anyhow::Result<()> {
    let history = match args.history {
        None => proto::ShareHistory::Unspecified,
        Some(HistoryArg::All) => proto::ShareHistory::All,
        Some(HistoryArg::FromNow) => proto::ShareHistory::FromNow,
    };
    let req = proto::ShareChannelRequest {
        channel: args.channel,
        orgs: args.orgs,
        history: history as i32,
    };
    let ch = admin(&args.conn)
        .await?
        .share_channel(req)
        .await
        .map_err(rpc)?
        .into_inner();
    out!("{}", output::channel(&ch, args.conn.json));
    Ok(())
}

pub(crate) async fn unshare(args: UnshareArgs) -> anyhow::Result<()> {
    let req = proto::UnshareChannelRequest {
        channel: args.channel,
        org: args.org,
    };
    let ch = admin(&args.conn)
        .await?
        .unshare_channel(req)
        .await
        .map_err(rpc)?
        .into_inner();
    out!("{}", output::channel(&ch, args.conn.json));
    Ok(())
}

pub(crate) async fn accept(args: AcceptArgs) -> anyhow::Result<()> {
    let req = proto::AcceptChannelRequest {
        channel: args.channel,
    };
    let ch = admin(&args.conn)
        .await?
        .accept_channel(req)
        .await
        .map_err(rpc)?
        .into_inner();
    out!("{}", output::channel(&ch, args.conn.json));
    Ok(())
}
