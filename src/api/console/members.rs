//! A member's pages: the channel list (unread counts, FLASH and URGENT
//! markers), a channel (its newest messages, older pages, the live view,
//! posting with files), one message (its receipts per agency, replying),
//! and acknowledging and retracting from a page.
//!
//! Every action goes through the same functions as `samband.v1.Messaging`
//! (`messaging::post`, `acks::acknowledge`, `acks::retract`), so a page
//! can do nothing a member's gRPC client could not.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use super::{
    Caller, Console, Refusal, channel_id, channel_path, existing, from_own_page, page, secured,
};
use crate::engine::Start;
use crate::identity::Member;
use crate::model::{ChannelId, Cursor, Priority, Role, VersionVector};
use crate::proto;
use crate::store::{Page, Stored};

/// Messages a channel page shows.
const PAGE: usize = 50;

/// Bytes of messages a channel page reads at most.
const PAGE_BYTES: usize = 4 << 20;

/// The channel list: each channel with its state, what is new for this
/// member, and a marker when any of that is FLASH or URGENT.
pub(super) async fn channels(
    State(console): State<Console>,
    Caller(member): Caller,
) -> Result<Response, Refusal> {
    let api = &console.api;
    let records = api.store.channels()?;
    let mut rows = Vec::with_capacity(records.len());
    for record in records {
        let Ok(id) = ChannelId::parse(&record.id) else {
            continue;
        };
        let unread = api.store.unread(&member.name, &member.org, &id)?;
        rows.push((id, crate::api::messaging::channel_message(record), unread));
    }
    let body = html! {
        h1 { "Channels" }
        @if rows.is_empty() {
            p { "No channels yet. An admin creates one with samband channel create." }
        }
        ul.channels {
            @for (id, shown, unread) in &rows {
                li data-channel=(id) {
                    a href=(channel_path(id)) { (id) }
                    " "
                    span.state { (shown.state) }
                    @if let Some(incident) = &shown.incident {
                        @if incident.exercise { " " span.badge.exercise { "EXERCISE" } }
                        " " a.incident href=(super::incidents::incident_path(id)) { "incident " (incident.state) }
                    }
                    @if unread.flash > 0 { " " span.badge.flash { "FLASH" } }
                    @if unread.urgent > 0 { " " span.badge.urgent { "URGENT" } }
                    @if unread.messages > 0 {
                        " " span.unread {
                            (unread.messages) @if unread.more { "+" } " new"
                        }
                    }
                }
            }
        }
    };
    Ok(page("Channels", &member, body))
}

/// Which page of a channel: the newest, or the one before a cursor.
#[derive(Debug, serde::Deserialize)]
pub(super) struct PageQuery {
    before: Option<String>,
}

fn cursor(given: &str) -> Result<Cursor, Refusal> {
    Cursor::decode(given).map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, e.to_string()))
}

/// A channel: its newest messages (live: the script adds new ones) or an
/// older page, and the form to post.
pub(super) async fn channel(
    State(console): State<Console>,
    Caller(member): Caller,
    Path((home, name)): Path<(String, String)>,
    Query(query): Query<PageQuery>,
) -> Result<Response, Refusal> {
    let api = &console.api;
    let id = existing(api, &home, &name)?;
    let (page_of, newest) = match &query.before {
        Some(c) => (Page::Before(cursor(c)?), false),
        None => (Page::Newest, true),
    };
    // What is marked read is what the page can show: read before it.
    let seen = if newest {
        Some(api.store.vector(&id)?)
    } else {
        None
    };
    let (stored, more) = api.store.history(&id, &page_of, PAGE, PAGE_BYTES)?;
    if let Some(seen) = seen {
        api.store.mark_read(&member.name, &id, &seen)?;
    }
    let messages = crate::api::messaging::shown(api, &id, &stored, &member)?;
    let path = channel_path(&id);
    let token = console.token(&member);
    let record = api.store.channel(&id)?.unwrap_or_default();
    let writable = read_only(&record).is_none();
    let incident = record.incident.clone();
    let body = html! {
        @if incident.as_ref().is_some_and(|i| i.exercise) {
            p.exercise-banner { "EXERCISE — everything in this channel is an exercise, not the real thing" }
        }
        h1 { (id) }
        @if incident.is_some() {
            p { a.incident href=(super::incidents::incident_path(&id)) { "Incident and its situational picture" } }
        }
        nav.pages {
            @if more {
                @if let Some(first) = messages.first() {
                    a.older href=(format!("{path}?before={}", first.cursor)) { "Older messages" }
                }
            }
            @if !newest { " " a.newest href=(path) { "Newest messages" } }
        }
        ol #messages
            data-events=[newest.then(|| events_path(&path, messages.last()))]
            data-path=(path) data-token=(token) {
            @for m in &messages { (message_item(m, &member, &path, &token, writable)) }
        }
        @match read_only(&record) {
            Some(why) => p.read-only { (why) },
            None => (post_form(&path, &token, None)),
        }
    };
    Ok(page(&id.to_string(), &member, body))
}

/// The acknowledgement deadlines a post can set, ms and as shown.
const DEADLINES: [(u64, &str); 5] = [
    (600_000, "10 minutes"),
    (1_800_000, "30 minutes"),
    (3_600_000, "1 hour"),
    (4 * 3_600_000, "4 hours"),
    (24 * 3_600_000, "1 day"),
];

/// The form to post to the channel at `path` (with files, dropped or
/// chosen, uploaded by the script before the post); `reply_to` makes it
/// a reply.
fn post_form(path: &str, token: &str, reply_to: Option<&str>) -> Markup {
    html! {
        form #compose method="post" action=(format!("{path}/post")) {
            input type="hidden" name="token" value=(token);
            input type="hidden" #attachments name="attachments" value="";
            @if let Some(to) = reply_to { input type="hidden" name="reply_to" value=(to); }
            label for="text" { @if reply_to.is_some() { "Reply" } @else { "Message" } }
            textarea #text name="text" rows="3" {}
            div.row {
                label for="priority" { "Priority" }
                select #priority name="priority" {
                    option value="normal" { "normal" }
                    option value="urgent" { "URGENT" }
                    option value="flash" { "FLASH" }
                }
                label { input type="checkbox" name="ack" value="yes"; " ask every agency to acknowledge" }
                label for="deadline" { "within" }
                select #deadline name="deadline_ms" {
                    option value="" { "no deadline" }
                    @for (ms, shown) in DEADLINES { option value=(ms) { (shown) } }
                }
            }
            div #drop {
                label for="files" { "Photos, video or files (or drop them here)" }
                input #files type="file" multiple;
                ul #uploads {}
            }
            button #post type="submit" { "Post" }
        }
    }
}

/// Why nothing can be posted to the channel of `record` now, if so.
fn read_only(record: &proto::ChannelRecord) -> Option<&'static str> {
    crate::api::messaging::Standing::of(record, crate::model::unix_ms()).read_only()
}

/// The priority a message is shown with: a member's message's own; none
/// for an acknowledgement, retraction or roster change.
fn shown_priority(m: &proto::Message) -> i32 {
    if m.kind == "text" { m.priority } else { 0 }
}

fn priority_class(priority: i32) -> &'static str {
    match Priority::from_i32(priority) {
        Some(Priority::Flash) => "flash",
        Some(Priority::Urgent) => "urgent",
        _ => "normal",
    }
}

/// One message of a channel page; its actions post to `path` with `token`
/// while the channel takes them (`writable`).
fn message_item(
    m: &proto::Message,
    member: &Member,
    path: &str,
    token: &str,
    writable: bool,
) -> Markup {
    // Only a member's message has a priority to show: an acknowledgement
    // or retraction travels at its message's priority, but is no order.
    let priority = shown_priority(m);
    // The author, or an admin, of the org whose message it is.
    let retractable = writable
        && m.retracted.is_none()
        && m.kind == "text"
        && m.origin == member.org.as_str()
        && (m.author == member.name.as_str() || member.role == Role::Admin);
    html! {
        li class={ "message " (priority_class(priority)) } data-cursor=(m.cursor)
            data-ref=(format!("{}#{}", m.origin, m.origin_seq)) {
            @if m.kind == "roster" {
                span.meta { (m.origin) "#" (m.origin_seq) " (sharing)" }
            } @else {
                span.meta { (m.author) "@" (m.origin) "#" (m.origin_seq) }
            }
            span.time { (super::when(m.unix_ms)) }
            @if m.exercise { span.flag.exercise { "EXERCISE" } }
            @if priority == Priority::Flash as i32 { span.flag { "FLASH" } }
            @if priority == Priority::Urgent as i32 { span.flag { "URGENT" } }
            @if m.needs_my_ack && m.retracted.is_none() {
                span.flag.ask { "ACK REQUIRED" }
            } @else if m.ack_required && m.retracted.is_none() {
                span.flag.asked { "acknowledgement asked" }
            }
            @if m.ack_required && m.retracted.is_none() && m.ack_deadline_unix_ms > 0 {
                span.due { "due " (super::when(m.ack_deadline_unix_ms)) }
                @if m.needs_my_ack && crate::model::unix_ms() >= m.ack_deadline_unix_ms {
                    span.flag.overdue { "OVERDUE" }
                }
            }
            @if let Some(to) = &m.reply_to { span.reply { "reply to " (to.origin) "#" (to.seq) } }
            @if let Some(r) = &m.retracted {
                span.text.retracted { "retracted by " (r.member) "@" (r.org) }
            } @else if m.kind == "ack" {
                span.text.ack {
                    "acknowledged"
                    @if let Some(r) = &m.acknowledges { " " (r.origin) "#" (r.seq) }
                }
            } @else if m.kind == "retraction" {
                span.text.ack {
                    "retracted"
                    @if let Some(r) = &m.retracts { " " (r.origin) "#" (r.seq) }
                }
            } @else {
                span.text { (m.text) }
                @if !m.attachments.is_empty() {
                    div.files {
                        @for a in &m.attachments { (super::files::attachment(path, &m.cursor, a)) }
                    }
                }
            }
            @if m.kind == "text" && m.retracted.is_none() {
                a.details href=(format!("{path}/m/{}", m.cursor)) { "Receipts · reply" }
            }
            @if m.needs_my_ack {
                form.action.needs-ack method="post" action=(format!("{path}/ack")) {
                    input type="hidden" name="token" value=(token);
                    input type="hidden" name="cursor" value=(m.cursor);
                    button type="submit" { "Acknowledge" }
                }
            }
            @if retractable {
                form.action method="post" action=(format!("{path}/retract"))
                    data-confirm="Retract this message? Every agency of the channel drops its text and files." {
                    input type="hidden" name="token" value=(token);
                    input type="hidden" name="cursor" value=(m.cursor);
                    button type="submit" { "Retract" }
                }
            }
        }
    }
}

/// One message with each agency's receipt of it (the script refreshes
/// them), and the form to reply.
pub(super) async fn message(
    State(console): State<Console>,
    Caller(member): Caller,
    Path((home, name, at)): Path<(String, String, String)>,
) -> Result<Response, Refusal> {
    let api = &console.api;
    let id = existing(api, &home, &name)?;
    let cursor = cursor(&at)?;
    let envelope = api
        .store
        .envelope(&id, &cursor.origin, cursor.seq)?
        .filter(|e| e.hlc == cursor.hlc.0)
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "no message at that cursor"))?;
    let stored = Stored {
        cursor: cursor.clone(),
        envelope,
    };
    let m = crate::api::messaging::shown(api, &id, std::iter::once(&stored), &member)?
        .pop()
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "no message at that cursor"))?;
    let receipts = crate::api::acks::receipts(api, &console.fed, &id, &cursor)?;
    let record = api.store.channel(&id)?.unwrap_or_default();
    let writable = read_only(&record).is_none();
    let path = channel_path(&id);
    let token = console.token(&member);
    let body = html! {
        p { a href=(path) { "← " (id) } }
        ol.messages { (message_item(&m, &member, &path, &token, writable)) }
        h2 { "Receipts" }
        @if receipts.ack_required {
            p.ask {
                "Every agency is asked to acknowledge"
                @if receipts.ack_deadline_unix_ms > 0 { " by " (super::when(receipts.ack_deadline_unix_ms)) }
                "."
            }
        }
        table #receipts data-refresh="3000" {
            thead { tr { th { "Agency" } th { "State" } th { "Since" } th { "Acknowledged by" } } }
            tbody {
                @for r in &receipts.agencies {
                    tr data-org=(r.org) class=[r.overdue.then_some("overdue")] {
                        td { (r.org) }
                        td.state {
                            (r.state)
                            @if r.state == "refused" { ": " (r.reason) }
                            @if r.state == "waiting" && !r.link.is_empty() { " (link " (r.link) ")" }
                            @if r.state == "offered" { ": its operator has not accepted the channel yet" }
                            @if r.state == "removed" { ": removed (or the incident closed) before this node learned that it held it" }
                            @if r.overdue { " " span.flag { "OVERDUE" } }
                            @if r.retraction_applied { " (retraction applied)" }
                        }
                        td { @if r.delivered_unix_ms > 0 { (super::when(r.delivered_unix_ms)) } }
                        td.acks {
                            @for a in &r.acknowledged_by { (a.member) " at " (super::when(a.unix_ms)) br; }
                        }
                    }
                }
            }
        }
        @if m.retracted.is_none() && writable {
            (post_form(&path, &token, Some(&m.cursor)))
        }
    };
    Ok(page(&format!("{id} #{}", m.origin_seq), &member, body))
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct MessageForm {
    /// Missing: refused as a form from elsewhere (403), not as malformed.
    #[serde(default)]
    token: String,
    cursor: String,
}

/// What the member does to one message from its page.
#[derive(Debug, Clone, Copy)]
enum MessageAction {
    Acknowledge,
    Retract,
}

async fn act(
    console: Console,
    member: Member,
    (home, name): (String, String),
    headers: HeaderMap,
    form: MessageForm,
    action: MessageAction,
) -> Result<Response, Refusal> {
    from_own_page(&console, &member, &headers, &form.token)?;
    let id = existing(&console.api, &home, &name)?;
    match action {
        MessageAction::Acknowledge => {
            crate::api::acks::acknowledge(&console.api, &member, id.clone(), &form.cursor).await?;
        }
        MessageAction::Retract => {
            crate::api::acks::retract(&console.api, &member, id.clone(), &form.cursor).await?;
        }
    }
    Ok(secured(Redirect::to(&channel_path(&id)).into_response()))
}

pub(super) async fn acknowledge(
    State(console): State<Console>,
    Caller(member): Caller,
    Path(channel): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<MessageForm>,
) -> Result<Response, Refusal> {
    let action = MessageAction::Acknowledge;
    act(console, member, channel, headers, form, action).await
}

pub(super) async fn retract(
    State(console): State<Console>,
    Caller(member): Caller,
    Path(channel): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<MessageForm>,
) -> Result<Response, Refusal> {
    let action = MessageAction::Retract;
    act(console, member, channel, headers, form, action).await
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct PostForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    text: String,
    priority: String,
    /// `yes`: ask every agency to acknowledge (FLASH asks anyway).
    ack: Option<String>,
    /// By when, ms after posting (one of [`DEADLINES`]; empty: none). A
    /// deadline asks for acknowledgement.
    #[serde(default)]
    deadline_ms: String,
    /// JSON: the files the script uploaded, `[{sha256, name, media_type}]`.
    #[serde(default)]
    attachments: String,
    reply_to: Option<String>,
}

/// A file the page's script uploaded, as the post names it.
#[derive(Debug, serde::Deserialize)]
struct Attached {
    sha256: String,
    name: String,
    #[serde(default)]
    media_type: String,
}

pub(super) async fn post_message(
    State(console): State<Console>,
    Caller(member): Caller,
    Path((home, name)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<PostForm>,
) -> Result<Response, Refusal> {
    from_own_page(&console, &member, &headers, &form.token)?;
    let id = channel_id(&home, &name)?;
    let priority = match form.priority.as_str() {
        "flash" => Priority::Flash,
        "urgent" => Priority::Urgent,
        "normal" => Priority::Normal,
        other => {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("priority {other:?} is not one of normal, urgent, flash"),
            ));
        }
    };
    let attached: Vec<Attached> = if form.attachments.trim().is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(&form.attachments).map_err(|e| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("the list of attached files is not readable ({e}); reload the page"),
            )
        })?
    };
    let deadline_ms: u64 = match form.deadline_ms.trim() {
        "" => 0,
        given => given.parse().map_err(|_| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("deadline {given:?} is not a number of milliseconds"),
            )
        })?,
    };
    let asked = form.ack.is_some_and(|a| a == "yes") || deadline_ms > 0;
    let req = proto::PostRequest {
        channel: id.to_string(),
        text: form.text,
        priority: priority as i32,
        ack_deadline_ms: deadline_ms,
        attachments: attached
            .into_iter()
            .map(|a| proto::AttachmentRef {
                sha256: a.sha256,
                name: a.name,
                media_type: a.media_type,
            })
            .collect(),
        reply_to: form.reply_to.unwrap_or_default(),
        ack_required: asked.then_some(true),
    };
    crate::api::messaging::post(&console.api, &member, req).await?;
    Ok(secured(Redirect::to(&channel_path(&id)).into_response()))
}

/// Where the newest page of the channel at `path`, whose last message is
/// `last`, follows it live: from just after `last`, so that nothing
/// committed between the page and its stream is missed (an empty page:
/// from the beginning).
fn events_path(path: &str, last: Option<&proto::Message>) -> String {
    format!(
        "{path}/events?after={}",
        last.map_or("", |m| m.cursor.as_str())
    )
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct EventsQuery {
    /// Start after this cursor; empty: from the beginning; absent: live.
    after: Option<String>,
}

/// Messages stored from now on (or after `?after=`, or after the
/// `Last-Event-ID` a reconnecting browser sends), as server-sent events of
/// JSON (`message`), each with its cursor as id: the script adds each to
/// the page. What reaches an open page counts as read.
pub(super) async fn events(
    State(console): State<Console>,
    Caller(member): Caller,
    Path((home, name)): Path<(String, String)>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let id = existing(&console.api, &home, &name)?;
    // Each event's id is its message's cursor, and a browser reconnecting
    // (after the node restarted, say) sends the last one it got: the stream
    // goes on from there, so an open page misses nothing.
    let from = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .or(query.after);
    let start = match from.as_deref() {
        None => Start::Live,
        Some("") => Start::Beginning,
        Some(c) => Start::After(cursor(c)?),
    };
    let Some(subscription) = console.api.subscribe(&id, start)? else {
        return Err(Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "this channel has as many live readers as the node allows",
        ));
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let api = console.api.clone();
    console.api.runtime.spawn(async move {
        let mut subscription = subscription;
        let path = channel_path(&id);
        loop {
            let next = tokio::select! {
                () = tx.closed() => return,
                () = api.runtime.shutdown().cancelled() => return,
                () = api.revocations.until_revoked(&member) => return,
                next = subscription.next() => next,
            };
            let Some(Ok(delivery)) = next else { return };
            let messages = delivery.messages.iter().map(|m| m.as_ref());
            let mut seen = VersionVector::new();
            let Ok(shown) = crate::api::messaging::shown(&api, &id, messages, &member) else {
                return;
            };
            for m in shown {
                if let Ok(origin) = crate::model::OrgId::parse(&m.origin) {
                    seen.insert(origin, m.origin_seq);
                }
                let json = live_json(&m, &path, delivery.ahead);
                let mut event = Event::default().event("message").data(json.to_string());
                // One sent ahead of its run is no place to go on from:
                // those before it have not arrived.
                if !delivery.ahead {
                    event = event.id(m.cursor.clone());
                }
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            // A message sent ahead of its run is not its origin's mark:
            // those before it have not arrived.
            if !delivery.ahead {
                let _ = api.store.mark_read(&member.name, &id, &seen);
            }
        }
    });
    let stream = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Ok(secured(
        Sse::new(stream)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response(),
    ))
}

/// What the live view's script needs of a message.
fn live_json(m: &proto::Message, path: &str, ahead: bool) -> serde_json::Value {
    let files: Vec<_> = m
        .attachments
        .iter()
        .map(|a| {
            serde_json::json!({
                "name": a.name, "size": a.size, "size_shown": super::files::size(a.size),
                "held": a.held,
                "inline": super::files::inline(&a.media_type).map(|i| i.tag()),
                "url": super::files::url(path, &m.cursor, a),
            })
        })
        .collect();
    serde_json::json!({
        "cursor": m.cursor, "author": m.author, "origin": m.origin,
        "seq": m.origin_seq, "priority": priority_class(shown_priority(m)),
        "text": m.text, "kind": m.kind, "ahead": ahead,
        "time": super::when(m.unix_ms),
        "retracted": m.retracted.is_some(), "ack_required": m.ack_required,
        "needs_my_ack": m.needs_my_ack, "files": files, "exercise": m.exercise,
        "due": (m.ack_deadline_unix_ms > 0).then(|| super::when(m.ack_deadline_unix_ms)),
        "reply_to": m.reply_to.as_ref().map(|r| format!("{}#{}", r.origin, r.seq)),
        "acknowledges": m.acknowledges.as_ref().map(|r| format!("{}#{}", r.origin, r.seq)),
        "retracts": m.retracts.as_ref().map(|r| format!("{}#{}", r.origin, r.seq)),
    })
}
