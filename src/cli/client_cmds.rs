//! Commands that talk to a running node as a member.

use std::future::Future;
use std::io::Read as _;

use anyhow::{Context as _, bail};
use clap::Args;
use samband::client;
use samband::model::Priority;
use samband::pki::IdentityBundle;
use samband::proto::{
    self, history_request::Position, messaging_client::MessagingClient, subscribe_request::Start,
};
use tonic::transport::Channel;

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
pub(crate) struct PostArgs {
    /// Channel: `name` for one of your org, or `home-org/name`.
    channel: String,
    /// Message text; `-` reads it from standard input.
    text: String,
    /// normal, urgent or flash.
    #[arg(long, default_value = "normal", value_parser = ["normal", "urgent", "flash"])]
    priority: String,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    channel: String,
    /// Messages per page (1-1000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: u32,
    /// Show the page just before this cursor.
    #[arg(long, value_name = "CURSOR", conflicts_with = "after")]
    before: Option<String>,
    /// Show the page just after this cursor.
    #[arg(long, value_name = "CURSOR")]
    after: Option<String>,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    channel: String,
    /// Keep running and print new messages as they are posted.
    #[arg(long, short)]
    follow: bool,
    /// Start after this cursor instead of with the last messages.
    #[arg(long, value_name = "CURSOR")]
    from: Option<String>,
    /// How many of the last messages to show first (0-1000; 0 with
    /// --follow shows only what is posted from now on).
    #[arg(long, short = 'n', default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=1000))]
    lines: u32,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    conn: Connection,
}

/// Runs a client command on a small runtime.
pub(crate) fn run(command: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(command)
}

impl Connection {
    fn bundle(&self) -> anyhow::Result<IdentityBundle> {
        let from_env = || std::env::var_os("SAMBAND_IDENTITY").map(std::path::PathBuf::from);
        let dir = match (&self.identity, &self.dir) {
            (Some(bundle), _) => bundle.clone(),
            (None, Some(node)) => samband::layout::operator_dir(node),
            (None, None) => match from_env() {
                Some(bundle) => bundle,
                None => bail!(
                    "no identity: pass --identity BUNDLE_DIR, set SAMBAND_IDENTITY, or --dir NODE_DIR"
                ),
            },
        };
        let bundle = IdentityBundle::load(&dir)
            .with_context(|| format!("loading identity bundle {}", dir.display()))?;
        // Said here, where it can be said plainly: under TLS 1.3 the node's
        // refusal would arrive only as an alert on the first call.
        let cert = bundle
            .certificate()
            .with_context(|| format!("loading identity bundle {}", dir.display()))?;
        if cert.not_after <= time::OffsetDateTime::now_utc() {
            bail!(
                "the certificate of {} ({}) expired on {}; ask your operator for a new one \
                 (samband user add {} --out DIR)",
                bundle.info.member,
                dir.display(),
                samband::model::rfc3339(cert.not_after),
                bundle.info.member
            );
        }
        Ok(bundle)
    }

    /// A gRPC channel to the node, as the chosen identity.
    pub(crate) async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(self.channel_and_endpoint().await?.0)
    }

    async fn channel_and_endpoint(&self) -> anyhow::Result<(Channel, String)> {
        let bundle = self.bundle()?;
        let endpoint = self.endpoint.clone().unwrap_or_else(|| {
            let node_dir = if self.identity.is_none() {
                self.dir.as_deref()
            } else {
                None
            };
            super::node_endpoint(node_dir, &bundle.info.endpoint)
        });
        let channel = client::connect_channel(&bundle, Some(&endpoint)).await?;
        Ok((channel, endpoint))
    }

    async fn connect(&self) -> anyhow::Result<(MessagingClient<Channel>, String)> {
        let (channel, endpoint) = self.channel_and_endpoint().await?;
        Ok((MessagingClient::new(channel), endpoint))
    }
}

/// A gRPC error as a person reads it.
pub(crate) fn rpc(status: tonic::Status) -> anyhow::Error {
    let code = match status.code() {
        tonic::Code::InvalidArgument => "invalid request",
        tonic::Code::NotFound => "not found",
        tonic::Code::AlreadyExists => "already exists",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::Unauthenticated => "not authenticated",
        tonic::Code::Unavailable => "node unavailable",
        tonic::Code::ResourceExhausted => "limit reached",
        tonic::Code::FailedPrecondition => "not possible now",
        _ => "node error",
    };
    let detail = if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_owned()
    };
    // Under TLS 1.3 a refused client certificate shows only here, on the first call.
    let hint = if samband::client::tls_refused(&status) {
        " (the node refused this identity's certificate: revoked, expired, of another \
         organisation, or this is not its member port)"
    } else {
        ""
    };
    anyhow::anyhow!("{code}: {detail}{hint}")
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

pub(crate) async fn post(args: PostArgs) -> anyhow::Result<()> {
    let text = if args.text == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the message from standard input")?;
        text.trim_end_matches('\n').to_owned()
    } else {
        args.text
    };
    let priority = Priority::parse(&args.priority)? as i32;
    let (mut c, _) = args.conn.connect().await?;
    let request = proto::PostRequest {
        channel: args.channel.clone(),
        text,
        priority,
    };
    let response = c.post(request).await.map_err(rpc)?.into_inner();
    out!(
        "{}",
        output::posted(&args.channel, &response, args.conn.json)
    );
    Ok(())
}

pub(crate) async fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let (mut c, _) = args.conn.connect().await?;
    let position = match (args.before, args.after) {
        (Some(b), _) => Some(Position::Before(b)),
        (None, Some(a)) => Some(Position::After(a)),
        (None, None) => None,
    };
    let page = c
        .history(proto::HistoryRequest {
            channel: args.channel,
            limit: args.limit,
            position,
        })
        .await
        .map_err(rpc)?
        .into_inner();
    for m in &page.messages {
        out!("{}", output::message(m, args.conn.json));
    }
    if !args.conn.json {
        match (page.messages.first(), page.more) {
            (Some(first), true) => out!("-- older messages: --before {}", first.cursor),
            (None, _) => out!("-- no messages"),
            _ => {}
        }
    }
    Ok(())
}

pub(crate) async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let (mut c, _) = args.conn.connect().await?;
    let json = args.conn.json;
    // The last message shown: following continues right after it.
    let mut last = args.from.clone();
    let mut position = args.from.clone().map(Position::After);
    // Nothing of the past asked for: no page (a limit of 0 would mean the default).
    let live_only = args.lines == 0 && args.from.is_none();
    if !live_only {
        loop {
            let request = proto::HistoryRequest {
                channel: args.channel.clone(),
                limit: args.lines,
                position,
            };
            let page = c.history(request).await.map_err(rpc)?.into_inner();
            for m in &page.messages {
                out!("{}", output::message(m, json));
            }
            if let Some(m) = page.messages.last() {
                last = Some(m.cursor.clone());
            }
            // Without --from the newest messages were shown; with it, page on to the end.
            if args.from.is_none() || !page.more {
                break;
            }
            position = last.clone().map(Position::After);
        }
    }
    if !args.follow {
        return Ok(());
    }
    let start = match last {
        Some(cursor) => Some(Start::After(cursor)),
        None if live_only => None,
        None => Some(Start::FromBeginning(true)),
    };
    let request = proto::SubscribeRequest {
        channel: args.channel,
        start,
    };
    let mut stream = c.subscribe(request).await.map_err(rpc)?.into_inner();
    while let Some(m) = stream.message().await.map_err(rpc)? {
        out!("{}", output::message(&m, json));
    }
    Ok(())
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
        && let Some(peers) = super::peer_cmds::status_peers(channel).await
    {
        out!("partners  {}", if peers.is_empty() { "none" } else { "" });
        for line in peers {
            out!("  {line}");
        }
    }
    Ok(())
}
