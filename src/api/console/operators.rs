//! The operators' pages (admin role only): partners and their links,
//! channels and their sharing with offers to accept, members and their
//! revocation, and the audit log with its verification state.
//!
//! Every action asks for confirmation in the page and goes through the
//! same functions as `samband.v1.Admin` (`admin::accept`, `admin::revoke`),
//! so it is audited as it is from the command line.

use axum::extract::{Form, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::{Caller, Console, Refusal, from_own_page, operator, page, secured};
use crate::api::ApiError;
use crate::audit::{Actor, Entry, Head};
use crate::identity::Member;
use crate::model::{ChannelId, MemberName};

/// Audit entries an audit page shows.
const AUDIT_PAGE: u64 = 50;

/// What an operator watches: partners and their links, channels and their
/// sharing, offers waiting for acceptance, and the org's members.
pub(super) async fn overview(
    State(console): State<Console>,
    Caller(member): Caller,
) -> Result<Response, Refusal> {
    operator(&member)?;
    let api = &console.api;
    let peers = console.fed.peers().map_err(ApiError::from)?;
    let records = api.store.channels()?;
    let issued = api
        .pki
        .issued()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let revoked = api.store.revoked_serials()?;
    let token = console.token(&member);
    let body = html! {
        h1 { "Operations" }
        p { a href="/admin/audit" { "Audit log" } }
        h2 { "Partners" }
        @if peers.is_empty() { p { "No partners yet: samband peer add." } }
        table.partners.stack {
            thead { tr { th { "Agency" } th { "Link" } th { "Last error" } th { "Lag (messages)" } } }
            tbody {
                @for peer in &peers {
                    @let link = peer.link.clone().unwrap_or_default();
                    tr data-org=(peer.org) {
                        td data-label="Agency" { (peer.org) }
                        td.link data-label="Link" { (link.state) }
                        td data-label="Last error" { (link.last_error) }
                        td data-label="Lag (messages)" {
                            @for lag in &link.lag { (lag.channel) ": " (lag.messages) br; }
                        }
                    }
                }
            }
        }
        h2 { "Channels" }
        table.channels.stack {
            thead { tr { th { "Channel" } th { "State" } th { "Shared with" } th {} } }
            tbody {
                @for record in &records {
                    @let shown = crate::api::messaging::channel_message(record.clone());
                    tr data-channel=(shown.id) {
                        td data-label="Channel" { (shown.id) }
                        td.state data-label="State" { (shown.state) }
                        td data-label="Shared with" { (shown.participants.join(", ")) }
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
        h2 { "Members" }
        table.members.stack {
            thead { tr { th { "Member" } th { "Role" } th { "Certificate until" } th { "State" } th {} } }
            tbody {
                @for m in &issued {
                    @let is_revoked = revoked.contains(&m.info.serial);
                    tr data-member=(m.member) {
                        td data-label="Member" { (m.member) }
                        td data-label="Role" { (m.role) }
                        td data-label="Certificate until" { (crate::model::rfc3339(m.info.not_after)) }
                        td.state data-label="State" { @if is_revoked { "revoked" } @else { "active" } }
                        td {
                            @if !is_revoked && m.member != crate::layout::OPERATOR_NAME {
                                form method="post" action="/admin/revoke" data-confirm=(revoke_question(&m.member, &member)) {
                                    input type="hidden" name="token" value=(token);
                                    input type="hidden" name="member" value=(m.member);
                                    button type="submit" { "Revoke" }
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
pub(super) struct AcceptForm {
    #[serde(default)]
    token: String,
    channel: String,
}

/// Accepts an offered channel, as `samband channel accept` does.
pub(super) async fn accept(
    State(console): State<Console>,
    Caller(member): Caller,
    headers: HeaderMap,
    Form(form): Form<AcceptForm>,
) -> Result<Response, Refusal> {
    operator(&member)?;
    from_own_page(&console, &member, &headers, &form.token)?;
    let channel = ChannelId::parse(&form.channel).map_err(ApiError::from)?;
    let actor = Actor::Member(member.name.to_string());
    crate::api::admin::accept(&console.api, &console.fed, channel, actor).await?;
    Ok(secured(Redirect::to("/admin").into_response()))
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct RevokeForm {
    #[serde(default)]
    token: String,
    member: String,
}

/// Revokes a member, as `samband pki revoke-user` does.
pub(super) async fn revoke(
    State(console): State<Console>,
    Caller(member): Caller,
    headers: HeaderMap,
    Form(form): Form<RevokeForm>,
) -> Result<Response, Refusal> {
    operator(&member)?;
    from_own_page(&console, &member, &headers, &form.token)?;
    let revoked = MemberName::parse(&form.member).map_err(ApiError::from)?;
    let actor = Actor::Member(member.name.to_string());
    crate::api::admin::revoke(&console.api, &revoked, &actor)?;
    Ok(secured(Redirect::to("/admin").into_response()))
}

/// Which audit entries to show: the page ending before `before` (seq),
/// else the newest.
#[derive(Debug, serde::Deserialize)]
pub(super) struct AuditQuery {
    before: Option<u64>,
}

/// What reading the whole log found: its head, how many entries, where it
/// breaks (if it does), and the entries of one page.
struct Verified {
    head: Head,
    entries: u64,
    broken: Option<String>,
    page: Vec<Entry>,
}

/// Reads the whole log once, checking the chain as `samband audit verify`
/// does, and keeps the last [`AUDIT_PAGE`] entries before `before`.
fn read_audit(store: &crate::store::Store, before: Option<u64>) -> Result<Verified, ApiError> {
    let mut head = Head::default();
    let mut count = 0;
    let mut broken = None;
    let mut kept = std::collections::VecDeque::new();
    for entry in store.audit_entries(0) {
        let entry = entry?;
        count += 1;
        if broken.is_none() {
            match crate::audit::verify(std::iter::once(&entry), Some(head)) {
                Ok(next) => head = next,
                Err(e) => broken = Some(e.to_string()),
            }
        }
        if before.is_none_or(|b| entry.seq < b) {
            kept.push_back(entry);
            if kept.len() as u64 > AUDIT_PAGE {
                kept.pop_front();
            }
        }
    }
    Ok(Verified {
        head,
        entries: count,
        broken,
        page: kept.into(),
    })
}

/// The audit log, newest first, a page at a time, and whether its chain
/// of hashes holds from the first entry to the last.
pub(super) async fn audit(
    State(console): State<Console>,
    Caller(member): Caller,
    Query(query): Query<AuditQuery>,
) -> Result<Response, Refusal> {
    operator(&member)?;
    let store = console.api.store.clone();
    let before = query.before;
    let verified = tokio::task::spawn_blocking(move || read_audit(&store, before))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    let oldest = verified.page.first().map(|e| e.seq);
    let body = html! {
        h1 { "Audit log" }
        @match &verified.broken {
            None => p #verification.verified {
                "Verified: " (verified.entries) " entries, each following from the one before; head "
                (verified.head.seq) " " code { (hex::encode(verified.head.hash)) }
            },
            Some(why) => p #verification.broken { "BROKEN: " (why) },
        }
        nav.pages {
            @if let Some(oldest) = oldest.filter(|&s| s > 1) {
                a.older href=(format!("/admin/audit?before={oldest}")) { "Older entries" }
            }
            @if before.is_some() { " " a.newest href="/admin/audit" { "Newest entries" } }
        }
        table.audit.stack {
            thead { tr { th { "#" } th { "When" } th { "Event" } th { "Details" } } }
            tbody {
                @for e in verified.page.iter().rev() {
                    tr data-seq=(e.seq) {
                        td data-label="#" { (e.seq) }
                        td data-label="When" { (e.at) }
                        td data-label="Event" { (e.event) }
                        td data-label="Details" { @for (k, v) in &e.details { (k) "=" (v) " " } }
                    }
                }
            }
        }
    };
    Ok(page("Audit log", &member, body))
}

/// What the operator confirms before revoking `revoked`; a warning when it
/// is the operator's own certificate.
fn revoke_question(revoked: &str, operator: &Member) -> String {
    if revoked == operator.name.as_str() {
        format!(
            "Revoke {revoked}? That is YOUR OWN certificate: this page and every other \
             stop working for you at once, and only another admin can issue you a new one."
        )
    } else {
        format!(
            "Revoke {revoked}? Their certificate stops working at once, on every open connection."
        )
    }
}
