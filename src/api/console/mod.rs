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
//! Split by who uses what: [`members`] (channels, messages, the live
//! view, receipts), [`files`] (upload from the page, download and inline
//! display), [`incidents`] (an incident and its situational picture),
//! [`operators`] (the admin role's pages). This module holds
//! what they share: identity, the token and same-origin checks, the page
//! frame and the one `ApiError` → HTTP status mapping ([`Refusal`]).
//!
//! May use: `model`, `proto`, `rules`, `store`, `engine`, `identity`,
//! `audit`, `federation` (through [`ApiContext`] and [`Federation`]).

mod files;
mod incidents;
mod members;
mod operators;

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};

use super::{ApiContext, ApiError};
use crate::federation::Federation;
use crate::identity::{Member, MemberIdentity, Verified};
use crate::model::{ChannelId, Role};

const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

/// What the browser may load and do: this node's own script, style,
/// images and media only, no inline code, no frames, forms only back here.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   media-src 'self'; connect-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

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
    /// Its token secret comes from the system's random source; without
    /// one there is no console (a guessable secret would let any site post
    /// as a member).
    fn new(api: Arc<ApiContext>, fed: Arc<Federation>) -> Result<Self, NoRandom> {
        let rng = ring::rand::SystemRandom::new();
        let secret =
            ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).map_err(|_| NoRandom)?;
        Ok(Self {
            api,
            fed,
            secret: Arc::new(secret),
        })
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

/// The system's random source failed: the console cannot make its secret.
#[derive(Debug, thiserror::Error)]
#[error("the system's random source failed; the web console needs it for its form tokens")]
pub(crate) struct NoRandom;

/// The console's routes; any other request that is not gRPC is a 404
/// page, and an unknown gRPC method is UNIMPLEMENTED as before.
pub(crate) fn router(api: Arc<ApiContext>, fed: Arc<Federation>) -> Result<Router, NoRandom> {
    Ok(Router::new()
        .route("/", get(members::channels))
        .route("/c/{home}/{name}", get(members::channel))
        .route("/c/{home}/{name}/m/{cursor}", get(members::message))
        .route("/c/{home}/{name}/post", post(members::post_message))
        .route("/c/{home}/{name}/ack", post(members::acknowledge))
        .route("/c/{home}/{name}/retract", post(members::retract))
        .route("/c/{home}/{name}/events", get(members::events))
        .route("/c/{home}/{name}/f/{cursor}/{sha256}", get(files::download))
        .route("/upload", get(files::upload_status).post(files::upload))
        .route("/i/{home}/{name}", get(incidents::incident))
        .route("/i/{home}/{name}/close", post(incidents::close))
        .route("/admin", get(operators::overview))
        .route("/admin/accept", post(operators::accept))
        .route("/admin/revoke", post(operators::revoke))
        .route("/admin/audit", get(operators::audit))
        .route("/assets/console.js", get(script))
        .route("/assets/console.css", get(style))
        .fallback(fallback)
        .layer(axum::middleware::from_fn(authority))
        .with_state(Console::new(api, fed)?))
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
            tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => StatusCode::FORBIDDEN,
            tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => {
                StatusCode::BAD_REQUEST
            }
            tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::OutOfRange => StatusCode::RANGE_NOT_SATISFIABLE,
            tonic::Code::Aborted => StatusCode::CONFLICT,
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

/// The member on this request's connection, unless their certificate was
/// revoked or expired since the handshake (checked on every request, as
/// for every gRPC call: a browser keeps its connection open).
struct Caller(Member);

impl axum::extract::FromRequestParts<Console> for Caller {
    type Rejection = Refusal;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        console: &Console,
    ) -> Result<Self, Self::Rejection> {
        let identity = parts
            .extensions
            .get::<Verified<MemberIdentity>>()
            .map(|v| &v.identity);
        Ok(Caller(super::messaging::identified(
            identity,
            &console.api,
        )?))
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
    // `same-origin`, not `no-referrer`: under `no-referrer` a browser sends
    // `Origin: null` with the console's own forms, and the same-origin
    // check needs the real one. Nothing leaves for another site either way.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The page of a refused request: why, and the way back (the browser's
/// Back button returns to the form with what was typed in it).
fn refused(status: StatusCode, why: &str) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Refused — samband" }
                link rel="stylesheet" href="/assets/console.css";
            }
            body {
                header { a href="/" { "samband" } }
                main {
                    h1 { "Refused" }
                    p.refusal { (why) }
                    p { "Your browser's Back button returns to the page, with what you typed. "
                        a href="/" { "All channels" } }
                }
            }
        }
    };
    secured((status, markup).into_response())
}

/// Refused unless `member` is an admin.
fn operator(member: &Member) -> Result<(), Refusal> {
    Ok(super::messaging::admin_only(member, "this page")?)
}

/// Refused unless a state-changing request came from a page of this
/// console: same origin (as the browser says) and `token` from the page.
fn from_own_page(
    console: &Console,
    member: &Member,
    headers: &HeaderMap,
    token: &str,
) -> Result<(), Refusal> {
    let authority = headers.get(AUTHORITY).and_then(|a| a.to_str().ok());
    if cross_site(headers, authority) || !console.token_ok(member, token) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "this form did not come from a page of this console (or the node restarted since \
             the page was loaded): reload the page and try again",
        ));
    }
    Ok(())
}

/// Whether a browser says this request came from another site: its
/// `Sec-Fetch-Site` when sent, and its `Origin` when sent (`null`
/// included) against `Host` (or, over HTTP/2, the request's authority).
/// Either one naming another site is enough.
fn cross_site(headers: &HeaderMap, authority: Option<&str>) -> bool {
    if headers
        .get("sec-fetch-site")
        .is_some_and(|site| site.as_bytes() != b"same-origin")
    {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(authority)
        .unwrap_or("");
    origin
        .to_str()
        .ok()
        .and_then(|o| o.strip_prefix("https://"))
        != Some(host)
}

/// Where a request's `:authority` (HTTP/2) is kept for the checks above:
/// [`authority`] copies it into this header of the request.
const AUTHORITY: &str = "x-samband-authority";

/// Copies an HTTP/2 request's authority (which has no `Host` header) into
/// [`AUTHORITY`], so that the same-origin check sees it.
async fn authority(mut request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    request.headers_mut().remove(AUTHORITY);
    if let Some(value) = request
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        request.headers_mut().insert(AUTHORITY, value);
    }
    next.run(request).await
}

/// A time for people: `unix_ms` in UTC, to the second
/// (`2026-12-01 08:15:02 UTC`).
fn when(unix_ms: u64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

/// A channel this node holds, by its path's two parts.
fn existing(api: &ApiContext, home: &str, name: &str) -> Result<ChannelId, Refusal> {
    let id = channel_id(home, name)?;
    Ok(super::messaging::existing_channel(api, &id.to_string())?)
}

fn channel_path(id: &ChannelId) -> String {
    format!("/c/{}", id)
}

fn channel_id(home: &str, name: &str) -> Result<ChannelId, Refusal> {
    ChannelId::parse(&format!("{home}/{name}"))
        .map_err(|e| Refusal::new(StatusCode::NOT_FOUND, e.to_string()))
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
