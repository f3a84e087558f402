//! The web console: the member listener's pages for a browser, on the same
//! port, TLS and client-certificate identity as gRPC (a request that is
//! not gRPC is routed here). Pages are rendered on the node (`maud`
//! escapes every value, so a message of `<script>` is shown, not run);
//! the one script and one style sheet come from the binary; nothing is
//! loaded from anywhere else (a strict Content-Security-Policy says so to
//! the browser).
//!
//! Who gets in is decided by the TLS handshake (a certificate of this org)
//! and read from the connection ([`Verified`]), as for gRPC: no password,
//! no cookie. A state-changing request must come from a page of this
//! console: it carries a token bound to the member's certificate and this
//! node's run ([`Console::token`]), and a browser's `Sec-Fetch-Site` or
//! `Origin`, when sent, must say same origin. Posting goes through the same
//! checks as `Messaging.Post` (`messaging::new_post`).
//!
//! May use: `model`, `proto`, `rules`, `store`, `engine`, `identity`
//! (through [`ApiContext`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use super::{ApiContext, ApiError};
use crate::audit::Actor;
use crate::engine::Start;
use crate::federation::Federation;
use crate::identity::{Member, MemberIdentity, Verified};
use crate::model::{ChannelId, Priority, Role};
use crate::proto;
use crate::store::{Page, Stored};

/// Messages a channel page shows first.
const PAGE: usize = 100;

const SCRIPT: &str = include_str!("console/console.js");
const STYLE: &str = include_str!("console/console.css");

/// What the browser may load and do: this node's own script and style
/// only, no inline code, no frames, forms only back here.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The console's state: the API's, federation's (operators' view), and
/// this run's secret for tokens.
#[derive(Clone)]
pub(crate) struct Console {
    api: Arc<ApiContext>,
    fed: Arc<Federation>,
    secret: Arc<ring::hmac::Key>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Console")
    }
}

impl Console {
    fn new(api: Arc<ApiContext>, fed: Arc<Federation>) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let secret = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[0; 32]));
        Self {
            api,
            fed,
            secret: Arc::new(secret),
        }
    }

    /// The token a form of `member`'s pages carries: an HMAC of the
    /// certificate's serial under this run's secret (a restart makes old
    /// pages' forms stale: reload the page).
    fn token(&self, member: &Member) -> String {
        hex::encode(ring::hmac::sign(&self.secret, member.serial.as_bytes()).as_ref())
    }

    fn token_ok(&self, member: &Member, given: &str) -> bool {
        hex::decode(given).is_ok_and(|tag| {
            ring::hmac::verify(&self.secret, member.serial.as_bytes(), &tag).is_ok()
        })
    }
}

/// The console's routes; any other request that is not gRPC is a 404
/// page, and an unknown gRPC method is UNIMPLEMENTED as before.
pub(crate) fn router(api: Arc<ApiContext>, fed: Arc<Federation>) -> Router {
    Router::new()
        .route("/", get(channels))
        .route("/admin", get(operators))
        .route("/admin/accept", post(accept))
        .route("/c/{home}/{name}", get(channel))
        .route("/c/{home}/{name}/post", post(post_message))
        .route("/c/{home}/{name}/ack", post(acknowledge))
        .route("/c/{home}/{name}/retract", post(retract))
        .route("/c/{home}/{name}/events", get(events))
        .route("/assets/console.js", get(script))
        .route("/assets/console.css", get(style))
        .fallback(fallback)
        .with_state(Console::new(api, fed))
}

/// Why a request is refused: shown to the browser as a page with `status`.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    why: String,
}

impl Refusal {
    fn new(status: StatusCode, why: impl Into<String>) -> Self {
        Self {
            status,
            why: why.into(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        refused(self.status, &self.why)
    }
}

/// The one mapping of the API's errors to HTTP statuses.
impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        let status: tonic::Status = e.into();
        let code = match status.code() {
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
            tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => {
                StatusCode::BAD_REQUEST
            }
            tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(code, status.message())
    }
}

impl From<crate::store::StoreError> for Refusal {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError::from(e).into()
    }
}

/// The member on this request's connection.
fn member(parts: &axum::http::request::Parts) -> Result<Member, Refusal> {
    match parts.extensions.get::<Verified<MemberIdentity>>() {
        Some(v) => match &v.identity {
            Ok(member) => Ok(member.clone()),
            Err(e) => Err(Refusal::new(StatusCode::FORBIDDEN, e.to_string())),
        },
        None => Err(Refusal::new(StatusCode::FORBIDDEN, "no client certificate")),
    }
}

/// Axum extractor for the calling member.
struct Caller(Member);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = Refusal;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        member(parts).map(Caller)
    }
}

fn page(title: &str, member: &Member, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — samband" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body {
                header {
                    a href="/" { "samband" }
                    @if member.role == Role::Admin { a href="/admin" { "Operations" } }
                    span.who { (member.name) "@" (member.org) }
                }
                main { (body) }
            }
        }
    };
    secured(markup.into_response())
}

/// Adds the headers every console response carries.
fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn refused(status: StatusCode, why: &str) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "samband" } }
            body { h1 { "Refused" } p.refusal { (why) } }
        }
    };
    secured((status, markup).into_response())
}

fn channel_path(id: &ChannelId) -> String {
    format!("/c/{}", id)
}

fn channel_id(home: &str, name: &str) -> Result<ChannelId, Refusal> {
    ChannelId::parse(&format!("{home}/{name}"))
        .map_err(|e| Refusal::new(StatusCode::NOT_FOUND, e.to_string()))
}

async fn channels(
    State(console): State<Console>,
    Caller(member): Caller,
) -> Result<Response, Refusal> {
    let records = console.api.store.channels()?;
    let body = html! {
        h1 { "Channels" }
        @if records.is_empty() {
            p { "No channels yet. An admin creates one with samband channel create." }
        }
        ul.channels {
            @for record in &records {
                @if let Ok(id) = ChannelId::parse(&record.id) {
                    li {
                        a href=(channel_path(&id)) { (record.id) }
                        " "
                        span.state { (super::messaging::channel_message(record.clone()).state) }
                    }
                }
            }
        }
    };
    Ok(page("Channels", &member, body))
}

/// The calling member if an admin; refused otherwise.
fn operator(member: &Member) -> Result<(), Refusal> {
    if member.role == Role::Admin {
        return Ok(());
    }
    Err(Refusal::new(
        StatusCode::FORBIDDEN,
        format!(
            "this page needs the admin role; {} is a member",
            member.name
        ),
    ))
}

/// What an operator watches: partners and their links, channels and their
/// sharing, offers waiting for acceptance.
async fn operators(
    State(console): State<Console>,
    Caller(member): Caller,
) -> Result<Response, Refusal> {
    operator(&member)?;
    let peers = console.fed.peers().map_err(ApiError::from)?;
    let records = console.api.store.channels()?;
    let token = console.token(&member);
    let body = html! {
        h1 { "Operations" }
        h2 { "Partners" }
        @if peers.is_empty() { p { "No partners yet: samband peer add." } }
        table.partners {
            thead { tr { th { "Agency" } th { "Link" } th { "Last error" } th { "Lag (messages)" } } }
            tbody {
                @for peer in &peers {
                    @let link = peer.link.clone().unwrap_or_default();
                    tr data-org=(peer.org) {
                        td { (peer.org) }
                        td.link { (link.state) }
                        td { (link.last_error) }
                        td {
                            @for lag in &link.lag { (lag.channel) ": " (lag.messages) " " }
                        }
                    }
                }
            }
        }
        h2 { "Channels" }
        table.channels {
            thead { tr { th { "Channel" } th { "State" } th { "Shared with" } th {} } }
            tbody {
                @for record in &records {
                    @let shown = super::messaging::channel_message(record.clone());
                    tr data-channel=(shown.id) {
                        td { (shown.id) }
                        td.state { (shown.state) }
                        td { (shown.participants.join(", ")) }
                        td {
                            @if shown.state == "pending" {
                                form method="post" action="/admin/accept" data-confirm=(format!("Accept {} from {}? Its messages will be stored here and shown to every member.", shown.id, shown.home)) {
                                    input type="hidden" name="token" value=(token);
                                    input type="hidden" name="channel" value=(shown.id);
                                    button type="submit" { "Accept" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(page("Operations", &member, body))
}

#[derive(Debug, serde::Deserialize)]
struct AcceptForm {
    token: String,
    channel: String,
}

/// Accepts an offered channel, as `samband channel accept` does (audited).
async fn accept(
    State(console): State<Console>,
    Caller(member): Caller,
    headers: HeaderMap,
    Form(form): Form<AcceptForm>,
) -> Result<Response, Refusal> {
    operator(&member)?;
    if cross_site(&headers) || !console.token_ok(&member, &form.token) {
        return Err(stale_form());
    }
    let channel = ChannelId::parse(&form.channel).map_err(ApiError::from)?;
    console
        .api
        .writer
        .accept(channel.clone(), Actor::Member(member.name.to_string()))
        .await
        .map_err(ApiError::from)?;
    console.fed.rehello();
    tracing::info!(%channel, by = %member.name, "channel accepted in the web console");
    Ok(secured(Redirect::to("/admin").into_response()))
}

fn stale_form() -> Refusal {
    Refusal::new(
        StatusCode::FORBIDDEN,
        "this form did not come from a page of this console (or the node restarted since \
         the page was loaded): reload the page and try again",
    )
}

fn priority_class(priority: i32) -> &'static str {
    match Priority::from_i32(priority) {
        Some(Priority::Flash) => "flash",
        Some(Priority::Urgent) => "urgent",
        _ => "normal",
    }
}

/// One message of a channel page; its actions post to `path` with `token`.
fn message_item(m: &proto::Message, member: &Member, path: &str, token: &str) -> Markup {
    // The author, or an admin, of the org whose message it is.
    let retractable = m.retracted.is_none()
        && m.kind == "text"
        && m.origin == member.org.as_str()
        && (m.author == member.name.as_str() || member.role == Role::Admin);
    html! {
        li class={ "message " (priority_class(m.priority)) } data-cursor=(m.cursor) {
            @if m.kind == "roster" {
                span.meta { (m.origin) "#" (m.origin_seq) " (sharing)" }
            } @else {
                span.meta { (m.author) "@" (m.origin) "#" (m.origin_seq) }
            }
            @if m.priority == Priority::Flash as i32 { span.flag { "FLASH" } }
            @if m.priority == Priority::Urgent as i32 { span.flag { "URGENT" } }
            @if m.ack_required && m.retracted.is_none() { span.flag.ask { "ACK REQUIRED" } }
            @if let Some(to) = &m.reply_to { span.reply { "reply to " (to.origin) "#" (to.seq) } }
            @if let Some(r) = &m.retracted {
                span.text.retracted { "retracted by " (r.member) "@" (r.org) }
            } @else if m.kind == "ack" {
                span.text.ack { "acknowledged" }
            } @else if m.kind == "retraction" {
                span.text.ack { "retracted a message" }
            } @else {
                span.text { (m.text) }
            }
            @if m.needs_my_ack {
                form.action method="post" action=(format!("{path}/ack")) {
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

#[derive(Debug, serde::Deserialize)]
struct MessageForm {
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
    home: String,
    name: String,
    headers: HeaderMap,
    form: MessageForm,
    action: MessageAction,
) -> Result<Response, Refusal> {
    if cross_site(&headers) || !console.token_ok(&member, &form.token) {
        return Err(stale_form());
    }
    let id = channel_id(&home, &name)?;
    let id = super::messaging::existing_channel(&console.api, &id.to_string())?;
    match action {
        MessageAction::Acknowledge => {
            super::acks::acknowledge(&console.api, &member, id.clone(), &form.cursor).await?;
        }
        MessageAction::Retract => {
            super::acks::retract(&console.api, &member, id.clone(), &form.cursor).await?;
        }
    }
    Ok(secured(Redirect::to(&channel_path(&id)).into_response()))
}

async fn acknowledge(
    State(console): State<Console>,
    Caller(member): Caller,
    Path((home, name)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<MessageForm>,
) -> Result<Response, Refusal> {
    act(
        console,
        member,
        home,
        name,
        headers,
        form,
        MessageAction::Acknowledge,
    )
    .await
}

async fn retract(
    State(console): State<Console>,
    Caller(member): Caller,
    Path((home, name)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<MessageForm>,
) -> Result<Response, Refusal> {
    act(
        console,
        member,
        home,
        name,
        headers,
        form,
        MessageAction::Retract,
    )
    .await
}

async fn channel(
    State(console): State<Console>,
    Caller(member): Caller,
    Path((home, name)): Path<(String, String)>,
) -> Result<Response, Refusal> {
    let id = channel_id(&home, &name)?;
    let id = super::messaging::existing_channel(&console.api, &id.to_string())?;
    let (stored, _) = console
        .api
        .store
        .history(&id, &Page::Newest, PAGE, 4 << 20)?;
    let messages = shown(&console.api, stored.iter(), &member);
    let path = channel_path(&id);
    let token = console.token(&member);
    let body = html! {
        h1 { (id) }
        ol #messages data-events=(format!("{path}/events")) data-path=(path) data-token=(token) {
            @for m in &messages { (message_item(m, &member, &path, &token)) }
        }
        form method="post" action=(format!("{path}/post")) {
            input type="hidden" name="token" value=(token);
            label for="text" { "Message" }
            textarea #text name="text" required rows="3" {}
            label for="priority" { "Priority" }
            select #priority name="priority" {
                option value="normal" { "normal" }
                option value="urgent" { "URGENT" }
                option value="flash" { "FLASH" }
            }
            button #post type="submit" { "Post" }
        }
    };
    Ok(page(&id.to_string(), &member, body))
}

fn shown<'a>(
    api: &ApiContext,
    stored: impl Iterator<Item = &'a Stored>,
    member: &Member,
) -> Vec<proto::Message> {
    let pinned = match api.store.peers() {
        Ok(peers) => crate::rules::Pinned::from_peers(&peers),
        Err(_) => crate::rules::Pinned::default(),
    };
    stored
        .map(|s| super::messaging::message(s, api, &pinned, member))
        .collect()
}

#[derive(Debug, serde::Deserialize)]
struct PostForm {
    token: String,
    text: String,
    priority: String,
}

/// Whether a browser says this request came from another site: its
/// `Sec-Fetch-Site`, or failing that its `Origin` against `Host`.
fn cross_site(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site.as_bytes() != b"same-origin";
    }
    match (headers.get(header::ORIGIN), headers.get(header::HOST)) {
        (Some(origin), Some(host)) => {
            let origin = origin.to_str().unwrap_or("");
            let host = host.to_str().unwrap_or("");
            origin.strip_prefix("https://") != Some(host)
        }
        _ => false,
    }
}

async fn post_message(
    State(console): State<Console>,
    Caller(member): Caller,
    Path((home, name)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<PostForm>,
) -> Result<Response, Refusal> {
    if cross_site(&headers) || !console.token_ok(&member, &form.token) {
        return Err(stale_form());
    }
    let id = channel_id(&home, &name)?;
    let priority = match form.priority.as_str() {
        "flash" => Priority::Flash,
        "urgent" => Priority::Urgent,
        _ => Priority::Normal,
    };
    let req = proto::PostRequest {
        channel: id.to_string(),
        text: form.text,
        priority: priority as i32,
        ..Default::default()
    };
    let post = super::messaging::new_post(&console.api, &member, req)?;
    console
        .api
        .writer
        .post(post)
        .await
        .map_err(ApiError::from)?;
    Ok(secured(Redirect::to(&channel_path(&id)).into_response()))
}

/// Messages posted from now on, as server-sent events of JSON (`message`):
/// the script adds each to the page.
async fn events(
    State(console): State<Console>,
    Caller(member): Caller,
    Path((home, name)): Path<(String, String)>,
) -> Result<Response, Refusal> {
    let id = channel_id(&home, &name)?;
    let id = super::messaging::existing_channel(&console.api, &id.to_string())?;
    let Some(subscription) = console.api.subscribe(&id, Start::Live)? else {
        return Err(Refusal::new(
            StatusCode::TOO_MANY_REQUESTS,
            "this channel has as many live readers as the node allows",
        ));
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(64);
    let api = console.api.clone();
    console.api.runtime.spawn(async move {
        let mut subscription = subscription;
        loop {
            let next = tokio::select! {
                () = tx.closed() => return,
                () = api.runtime.shutdown().cancelled() => return,
                () = api.revocations.until_revoked(&member) => return,
                next = subscription.next() => next,
            };
            let Some(Ok(delivery)) = next else { return };
            let messages = delivery.messages.iter().map(|m| m.as_ref());
            for m in shown(&api, messages, &member) {
                let json = serde_json::json!({
                    "cursor": m.cursor, "author": m.author, "origin": m.origin,
                    "seq": m.origin_seq, "priority": priority_class(m.priority),
                    "text": m.text, "kind": m.kind, "ahead": delivery.ahead,
                    "retracted": m.retracted.is_some(), "ack_required": m.ack_required,
                    "needs_my_ack": m.needs_my_ack,
                });
                let event = Event::default().event("message").data(json.to_string());
                if tx.send(event).await.is_err() {
                    return;
                }
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

async fn script() -> Response {
    secured(
        (
            [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
            SCRIPT,
        )
            .into_response(),
    )
}

async fn style() -> Response {
    secured(([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response())
}

/// Not a console page: an unknown gRPC method stays UNIMPLEMENTED for gRPC
/// clients; a browser gets a page.
async fn fallback(headers: HeaderMap) -> Response {
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        let (parts, ()) = tonic::Status::unimplemented("")
            .into_http::<()>()
            .into_parts();
        return Response::from_parts(parts, axum::body::Body::empty());
    }
    refused(StatusCode::NOT_FOUND, "no such page")
}
