//! `samband post`, `history`, `tail` and `receipts`: a member's messages,
//! and where one of them is.

use std::io::Read as _;

use anyhow::Context as _;
use clap::Args;
use samband::model::Priority;
use samband::proto;
use samband::proto::history_request::Position;
use samband::proto::subscribe_request::Start;

use super::connection::rpc;
use super::{Connection, output};

#[derive(Debug, Args)]
pub(crate) struct PostArgs {
    /// Channel: `name` for one of your org, or `home-org/name`.
    channel: String,
    /// Message text; `-` reads it from standard input. May be left out
    /// when a file is attached.
    text: Option<String>,
    /// normal, urgent or flash.
    #[arg(long, default_value = "normal", value_parser = ["normal", "urgent", "flash"])]
    priority: String,
    /// A file to attach (repeat for more). It is uploaded first, resuming
    /// what the node holds of an interrupted upload; the post is
    /// acknowledged once the message and its files are durable.
    #[arg(long, value_name = "PATH")]
    file: Vec<std::path::PathBuf>,
    /// The message this one answers (a cursor from `history --cursors`).
    #[arg(long, value_name = "CURSOR")]
    reply_to: Option<String>,
    /// Ask every agency of the channel to acknowledge it (`samband ack`);
    /// FLASH messages ask without it.
    #[arg(long, conflicts_with = "no_ack")]
    ack_required: bool,
    /// Do not ask for acknowledgement, even for a FLASH message.
    #[arg(long)]
    no_ack: bool,
    /// When acknowledgements are due, from 10s to 30 days, e.g. 10m,
    /// 1h30m; it asks for acknowledgement too. Late agencies show as overdue.
    #[arg(long, value_name = "DURATION", value_parser = deadline)]
    deadline: Option<std::time::Duration>,
    #[command(flatten)]
    conn: Connection,
}

/// A `--deadline`: a duration such as 10m or 1h30m.
fn deadline(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{e}; give a duration such as 90s, 10m or 1h30m"))
}

#[derive(Debug, Args)]
pub(crate) struct AckArgs {
    /// Channel: `name` for one of your org, or `home-org/name`.
    channel: String,
    /// The message to acknowledge (its cursor, from `history --cursors` or
    /// `tail --needs-ack --cursors`).
    cursor: String,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct RetractArgs {
    /// Channel: `name` for one of your org, or `home-org/name`.
    channel: String,
    /// The message to take back (its cursor, from `history --cursors`).
    cursor: String,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct OverdueArgs {
    /// Only this channel (`name` or `home-org/name`); every channel without it.
    channel: Option<String>,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    /// Channel: `name` for one of your org, or `home-org/name`.
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
    /// Show each message's cursor (for --before, --after, tail --from).
    #[arg(long)]
    cursors: bool,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// Channel: `name` for one of your org, or `home-org/name`.
    channel: String,
    /// Keep running and print new messages as they are posted; when the
    /// connection is lost (the node restarts), reconnect and go on after
    /// the last message shown, like `tail -F`.
    #[arg(long, short)]
    follow: bool,
    /// Show each message's cursor (to resume with --from).
    #[arg(long)]
    cursors: bool,
    /// Start after this cursor instead of with the last messages.
    #[arg(long, value_name = "CURSOR")]
    from: Option<String>,
    /// Only the messages that wait for your acknowledgement.
    #[arg(long)]
    needs_ack: bool,
    /// How many of the last messages to show first (0-1000; 0 with
    /// --follow shows only what is posted from now on).
    #[arg(long, short = 'n', default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=1000))]
    lines: u32,
    #[command(flatten)]
    conn: Connection,
}

pub(crate) async fn post(args: PostArgs) -> anyhow::Result<()> {
    let text = match args.text.as_deref() {
        Some("-") => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("reading the message from standard input")?;
            text.trim_end_matches('\n').to_owned()
        }
        Some(text) => text.to_owned(),
        None if args.file.is_empty() => anyhow::bail!(
            "nothing to post: give the message TEXT, `-` to read it from standard input, \
             or --file PATH to attach a file"
        ),
        None => String::new(),
    };
    let priority = Priority::parse(&args.priority)? as i32;
    let (mut c, _) = args.conn.connect().await?;
    let mut attachments = Vec::new();
    for path in &args.file {
        attachments.push(super::files::upload(&mut c, path).await?);
    }
    let ack_required = match (args.ack_required, args.no_ack) {
        (true, _) => Some(true),
        (_, true) => Some(false),
        _ => None,
    };
    if args.no_ack && args.deadline.is_some() {
        anyhow::bail!("--deadline is for messages that ask for acknowledgement; drop --no-ack");
    }
    let ack_deadline_ms = match args.deadline {
        Some(d) if d.is_zero() => anyhow::bail!("--deadline must be longer than 0s"),
        Some(d) => u64::try_from(d.as_millis()).context("--deadline is too long")?,
        None => 0,
    };
    let request = proto::PostRequest {
        channel: args.channel.clone(),
        text,
        priority,
        attachments,
        reply_to: args.reply_to.clone().unwrap_or_default(),
        // A deadline alone asks for acknowledgement too.
        ack_required: ack_required.or((ack_deadline_ms > 0).then_some(true)),
        ack_deadline_ms,
    };
    let response = c.post(request).await.map_err(rpc)?.into_inner();
    out!(
        "{}",
        output::posted(&args.channel, &response, &args.conn.flags(), args.conn.json)
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
        show(m, args.conn.json, args.cursors);
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
    let mut listed = 0usize;
    if !live_only {
        loop {
            let request = proto::HistoryRequest {
                channel: args.channel.clone(),
                limit: args.lines,
                position,
            };
            let page = c.history(request).await.map_err(rpc)?.into_inner();
            for m in page
                .messages
                .iter()
                .filter(|m| !args.needs_ack || m.needs_my_ack)
            {
                show(m, json, args.cursors);
                listed += 1;
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
        if args.needs_ack && listed == 0 && !json {
            out!("-- nothing waits for your acknowledgement");
        }
        return Ok(());
    }
    let mut retry = RETRY_FIRST;
    let mut shown_ahead = std::collections::HashSet::new();
    loop {
        let start = match &last {
            Some(cursor) => Some(Start::After(cursor.clone())),
            None if live_only => None,
            None => Some(Start::FromBeginning(true)),
        };
        let request = proto::SubscribeRequest {
            channel: args.channel.clone(),
            start,
        };
        let why = match c.subscribe(request).await {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    match stream.message().await {
                        // Shown ahead of older messages still arriving: it
                        // comes again in order, not shown twice, and
                        // following goes on from what came in order.
                        Ok(Some(m)) if m.ahead => {
                            if shown_ahead.insert(m.cursor.clone())
                                && (!args.needs_ack || m.needs_my_ack)
                            {
                                show(&m, json, args.cursors);
                            }
                        }
                        Ok(Some(m)) => {
                            let shown = shown_ahead.remove(&m.cursor);
                            if !shown && (!args.needs_ack || m.needs_my_ack) {
                                show(&m, json, args.cursors);
                            }
                            last = Some(m.cursor);
                            retry = RETRY_FIRST;
                        }
                        Ok(None) => break "the node ended the stream".to_owned(),
                        Err(status) if lost(&status) => break status.message().to_owned(),
                        Err(status) => return Err(rpc(status)),
                    }
                }
            }
            Err(status) if lost(&status) => status.message().to_owned(),
            Err(status) => return Err(rpc(status)),
        };
        let from = last.as_deref().unwrap_or("now");
        eprintln!(
            "connection lost ({}); reconnecting in {}s, from {from}",
            output::printable(&why),
            retry.as_secs()
        );
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(RETRY_MAX);
        // The node may have restarted: a new connection, the same identity.
        match args.conn.connect().await {
            Ok((client, _)) => c = client,
            Err(e) => eprintln!("{e:#}"),
        }
    }
}

/// How long `tail --follow` waits before its first reconnect, and at most.
const RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether a follow stream ended for a reason a reconnect may cure (the
/// node stopped or restarted, the network, a slow reader cut off) rather
/// than one it cannot (no such channel, no permission, revoked).
fn lost(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
    )
}

/// Prints a message, with its cursor when asked (to resume with --from).
fn show(m: &proto::Message, json: bool, cursors: bool) {
    if cursors && !json {
        out!("{}  [cursor {}]", output::message(m, json), m.cursor);
    } else {
        out!("{}", output::message(m, json));
    }
}

#[derive(Debug, Args)]
pub(crate) struct ReceiptsArgs {
    /// Channel: `name` for one of your org, or `home-org/name`.
    channel: String,
    /// The message's cursor (`history --cursors`, `tail --cursors`, or the
    /// one `post` printed).
    cursor: String,
    /// Keep running and print the receipts again each time they change
    /// (an agency takes it, acknowledges it, becomes overdue).
    #[arg(long, short)]
    follow: bool,
    #[command(flatten)]
    conn: Connection,
}

/// `samband receipts`: for each agency of the channel (this one too),
/// whether its node holds the message, still waits for it, or refused it,
/// and which of its members acknowledged it.
pub(crate) async fn receipts(args: ReceiptsArgs) -> anyhow::Result<()> {
    let (mut c, _) = args.conn.connect().await?;
    let req = proto::ReceiptsRequest {
        channel: args.channel,
        cursor: args.cursor,
    };
    if args.follow {
        let mut live = c.watch_receipts(req).await.map_err(rpc)?.into_inner();
        while let Some(r) = live.message().await.map_err(rpc)? {
            if !args.conn.json {
                out!("-- {}", output::utc(samband::model::unix_ms()));
            }
            show_receipts(&r, args.conn.json);
        }
        return Ok(());
    }
    let r = c.receipts(req).await.map_err(rpc)?.into_inner();
    show_receipts(&r, args.conn.json);
    Ok(())
}

fn show_receipts(r: &proto::ReceiptsResponse, json: bool) {
    let here_only = r.agencies.iter().all(|a| a.link == "this node");
    if here_only && !r.ack_required && !json {
        out!("not shared with any other agency: it is on this node only");
        return;
    }
    if r.ack_required && !json {
        let due = match r.ack_deadline_unix_ms {
            0 => String::new(),
            ms => format!(", due by {}", output::utc(ms)),
        };
        out!("acknowledgement asked for{due}");
    }
    for a in &r.agencies {
        if json {
            // Each agency's line also says what the message asks of it.
            let mut line: serde_json::Value =
                serde_json::from_str(&output::receipt(a, true)).unwrap_or_default();
            line["ack_required"] = r.ack_required.into();
            line["ack_deadline_unix_ms"] = r.ack_deadline_unix_ms.into();
            out!("{line}");
        } else {
            out!("{}", output::receipt(a, false));
        }
    }
}

/// `samband ack`: confirms a message as the caller.
pub(crate) async fn ack(args: AckArgs) -> anyhow::Result<()> {
    let (mut c, _) = args.conn.connect().await?;
    let r = c
        .acknowledge(proto::AcknowledgeRequest {
            channel: args.channel.clone(),
            cursor: args.cursor.clone(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    let at = r.acknowledgement.unwrap_or_default();
    if args.conn.json {
        out!(
            "{}",
            serde_json::json!({"channel": args.channel, "acknowledgement": at.cursor, "already": r.already})
        );
    } else if r.already {
        out!(
            "you had acknowledged it already (durable); who has: samband receipts {} {}",
            args.channel,
            args.cursor
        );
    } else {
        out!(
            "acknowledged (durable; it reaches every agency of the channel); who has: samband receipts {} {}",
            args.channel,
            args.cursor
        );
    }
    Ok(())
}

/// `samband overdue`: messages whose acknowledgement deadline passed
/// without one from some agency.
pub(crate) async fn overdue(args: OverdueArgs) -> anyhow::Result<()> {
    let (mut c, _) = args.conn.connect().await?;
    let r = c
        .overdue(proto::OverdueRequest {
            channel: args.channel.unwrap_or_default(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    if r.messages.is_empty() && !args.conn.json {
        out!("nothing overdue");
    }
    for o in &r.messages {
        let Some(m) = &o.message else { continue };
        if args.conn.json {
            out!(
                "{}",
                serde_json::json!({"channel": m.channel, "cursor": m.cursor, "origin": m.origin,
                    "origin_seq": m.origin_seq, "ack_deadline_unix_ms": m.ack_deadline_unix_ms,
                    "agencies": o.agencies})
            );
        } else {
            out!("{}  [cursor {}]", output::message(m, false), m.cursor);
            out!(
                "  not acknowledged by: {}",
                output::printable(&o.agencies.join(", "))
            );
        }
    }
    Ok(())
}

/// `samband retract`: takes back a message of the caller's org.
pub(crate) async fn retract(args: RetractArgs) -> anyhow::Result<()> {
    let (mut c, _) = args.conn.connect().await?;
    let r = c
        .retract(proto::RetractRequest {
            channel: args.channel.clone(),
            cursor: args.cursor.clone(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    let at = r.retraction.unwrap_or_default();
    if args.conn.json {
        out!(
            "{}",
            serde_json::json!({"channel": args.channel, "retraction": at.cursor, "already": r.already})
        );
    } else if r.already {
        out!(
            "it was retracted already; where the retraction is: samband receipts {} {}",
            args.channel,
            args.cursor
        );
    } else {
        out!(
            "retracted (durable): every agency of the channel drops its text and files as the retraction reaches it; \
             where: samband receipts {} {}",
            args.channel,
            args.cursor
        );
    }
    Ok(())
}
