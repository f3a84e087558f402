//! Files in the console. Uploading: the page's script computes the file's
//! SHA-256 in the browser, asks what the node holds of it (`GET /upload`),
//! and sends the rest as the body of `POST /upload`; a post then names it.
//! The node checks it as for `Messaging.Upload` (`files::receive_file`).
//!
//! Showing: a message's pictures, video and sound are shown in the page
//! when their media type is one browsers display without running anything
//! ([`inline`]); every other file is offered as a download only.
//!
//! A file is served only through the (channel, message) reference that
//! `Messaging.Download` checks (`files::open_download`), never by hash
//! alone. Each file response carries `Content-Security-Policy: sandbox`
//! and, unless [`inline`], `Content-Disposition: attachment`, so a file of
//! HTML or SVG from any agency never runs as a page of this console.

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use super::{Caller, Console, Refusal, from_own_page, secured};
use crate::api::ApiError;
use crate::api::files::{Announced, Chunks};
use crate::model::CHUNK_BYTES;
use crate::proto;

/// How a file is shown in a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Inline {
    Image,
    Video,
    Audio,
}

impl Inline {
    /// Its name for the page's script.
    pub(super) fn tag(self) -> &'static str {
        match self {
            Inline::Image => "image",
            Inline::Video => "video",
            Inline::Audio => "audio",
        }
    }
}

/// How a file of `media_type` is shown, if at all: raster images, video
/// and sound of the types browsers decode themselves. SVG, HTML, PDF and
/// everything else are downloads only (they can carry script or plugins).
pub(super) fn inline(media_type: &str) -> Option<Inline> {
    match media_type.to_ascii_lowercase().as_str() {
        "image/png" | "image/jpeg" | "image/gif" | "image/webp" => Some(Inline::Image),
        "video/mp4" | "video/webm" | "video/ogg" => Some(Inline::Video),
        "audio/mpeg" | "audio/ogg" | "audio/wav" | "audio/webm" | "audio/mp4" => {
            Some(Inline::Audio)
        }
        _ => None,
    }
}

/// Where the file `a` of the message at `cursor` of the channel at `path`
/// is read.
pub(super) fn url(path: &str, cursor: &str, a: &proto::Attachment) -> String {
    format!("{path}/f/{cursor}/{}", a.sha256)
}

/// `n` bytes for people (`2.4 MiB`).
pub(super) fn size(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// One file of a message: shown when it is held and [`inline`], always
/// with its name, size and a download link; "arriving" while a partner's
/// file is on its way (the page's script asks for it and shows it once it
/// is here: `data-arriving`, `data-inline`), and who refused it.
pub(super) fn attachment(path: &str, cursor: &str, a: &proto::Attachment) -> Markup {
    let url = url(path, cursor, a);
    let arriving = !a.held && a.refused_by.is_empty();
    let kind = inline(&a.media_type).map_or("", Inline::tag);
    html! {
        figure.file data-arriving=[arriving.then_some(&url)] data-inline=[arriving.then_some(kind)] {
            @if a.held {
                @match inline(&a.media_type) {
                    Some(Inline::Image) => a href=(url) { img src=(url) alt=(a.name) loading="lazy"; },
                    Some(Inline::Video) => video src=(url) controls preload="metadata" {},
                    Some(Inline::Audio) => audio src=(url) controls preload="none" {},
                    None => {},
                }
            }
            figcaption {
                a href=(url) download=(a.name) { (a.name) }
                " (" (size(a.size)) ")"
                @if arriving { span.arriving { " — arriving" } }
                @for r in &a.refused_by { " — refused by " (r.org) ": " (r.reason) }
            }
        }
    }
}

/// Which file an upload is of: its SHA-256 (hex), and for the bytes sent,
/// its size and where they start (bytes).
#[derive(Debug, serde::Deserialize)]
pub(super) struct UploadQuery {
    sha256: String,
    /// The name the post will give it: checked before any byte is sent.
    name: Option<String>,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    offset: u64,
}

fn json(value: &serde_json::Value) -> Response {
    secured(
        (
            [(header::CONTENT_TYPE, "application/json")],
            value.to_string(),
        )
            .into_response(),
    )
}

/// What the node holds of an upload of this member's: `{held, complete}`.
pub(super) async fn upload_status(
    State(console): State<Console>,
    Caller(member): Caller,
    Query(query): Query<UploadQuery>,
) -> Result<Response, Refusal> {
    // A name the post would be refused for is said now, not after the
    // upload (the post checks it again).
    if let Some(name) = &query.name {
        crate::model::check_file_name(name)
            .map_err(|why| Refusal::new(StatusCode::BAD_REQUEST, why))?;
    }
    let request = proto::UploadStatusRequest {
        sha256: query.sha256,
    };
    let status = crate::api::files::upload_status(&console.api, &member, &request)?;
    Ok(json(&serde_json::json!({
        "held": status.held, "complete": status.complete,
    })))
}

/// The bytes of a file from `offset`, as the request body; the page's
/// token comes in the `X-Samband-Token` header. Answers `{sha256, size}`
/// once the file is durable.
pub(super) async fn upload(
    State(console): State<Console>,
    Caller(member): Caller,
    headers: HeaderMap,
    Query(query): Query<UploadQuery>,
    body: Body,
) -> Result<Response, Refusal> {
    let token = headers
        .get("x-samband-token")
        .and_then(|t| t.to_str().ok())
        .unwrap_or("");
    from_own_page(&console, &member, &headers, token)?;
    let announced = Announced {
        sha256: query.sha256,
        size: query.size,
        offset: query.offset,
    };
    let most = console.api.limits.max_file_bytes;
    if announced.size > most {
        // RFC 9110 §15.5.14: the content is larger than the node takes.
        return Err(Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a file of {} bytes; this node accepts files of at most {most} bytes \
                 (limits.max_file_bytes)",
                announced.size
            ),
        ));
    }
    let chunks = chunks_of(&console, body);
    let done =
        crate::api::files::receive_file(&console.api, &member, announced, Vec::new(), chunks)
            .await?;
    Ok(json(&serde_json::json!({
        "sha256": done.sha256, "size": done.size,
    })))
}

/// A request body as chunks of at most [`CHUNK_BYTES`] (what an upload
/// writes), read while the previous one is written.
fn chunks_of(console: &Console, body: Body) -> Chunks {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    console.api.runtime.spawn(async move {
        let mut frames = body.into_data_stream();
        let mut chunk = Vec::with_capacity(CHUNK_BYTES);
        while let Some(frame) = frames.next().await {
            let mut rest: &[u8] = match &frame {
                Ok(bytes) => bytes,
                Err(e) => {
                    let gone = ApiError::Cancelled(format!("the upload broke off: {e}"));
                    let _ = tx.send(Err(gone)).await;
                    return;
                }
            };
            while !rest.is_empty() {
                let take = (CHUNK_BYTES - chunk.len()).min(rest.len());
                chunk.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if chunk.len() == CHUNK_BYTES {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK_BYTES));
                    if tx.send(Ok(full)).await.is_err() {
                        return;
                    }
                }
            }
        }
        if !chunk.is_empty() {
            let _ = tx.send(Ok(chunk)).await;
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// The one byte range a request asks for (RFC 9110 §14.1.2): `bytes=N-`
/// or `bytes=N-M`, inclusive. Any other form is ignored (the whole file is
/// sent, as the RFC allows).
fn range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let spec = headers.get(header::RANGE)?.to_str().ok()?;
    let (first, last) = spec.strip_prefix("bytes=")?.split_once('-')?;
    let first = first.trim().parse().ok()?;
    let last = match last.trim() {
        "" => None,
        last => Some(last.parse::<u64>().ok().filter(|&l| l >= first)?),
    };
    Some((first, last))
}

/// A file of a message: shown in the page when [`inline`], else a
/// download; one byte range when asked (video seeks).
pub(super) async fn download(
    State(console): State<Console>,
    Caller(member): Caller,
    Path((home, name, cursor, sha256)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    let id = super::existing(&console.api, &home, &name)?;
    let asked = range(&headers);
    let request = proto::DownloadRequest {
        channel: id.to_string(),
        cursor,
        sha256,
        offset: asked.map_or(0, |(first, _)| first),
    };
    let open = crate::api::files::open_download(&console.api, &member, &id, &request)?;
    let (offset, size) = (request.offset, open.size);
    let last = asked
        .and_then(|(_, last)| last)
        .map_or(size.saturating_sub(1), |l| l.min(size.saturating_sub(1)));
    let length = if size == 0 { 0 } else { last + 1 - offset };
    let mut left = length;
    let body = open
        .chunks
        .take(length.div_ceil(CHUNK_BYTES as u64) as usize)
        .map(move |chunk| {
            chunk
                .map(|c| {
                    let mut data = c.data;
                    data.truncate(left.min(data.len() as u64) as usize);
                    left -= data.len() as u64;
                    Bytes::from(data)
                })
                .map_err(|s| std::io::Error::other(s.message().to_owned()))
        });
    let shown = inline(&open.file.media_type);
    let disposition = format!(
        "{}; filename*=UTF-8''{}",
        if shown.is_some() {
            "inline"
        } else {
            "attachment"
        },
        percent_encoding::utf8_percent_encode(&open.file.name, percent_encoding::NON_ALPHANUMERIC)
    );
    let media_type = match shown {
        Some(_) => open.file.media_type.as_str(),
        None => "application/octet-stream",
    };
    let mut response = secured(Body::from_stream(body).into_response());
    *response.status_mut() = if asked.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let headers = response.headers_mut();
    let value = |v: &str| HeaderValue::from_str(v).map_err(|e| ApiError::Internal(e.to_string()));
    headers.insert(header::CONTENT_TYPE, value(media_type)?);
    headers.insert(header::CONTENT_DISPOSITION, value(&disposition)?);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    if asked.is_some() {
        headers.insert(
            header::CONTENT_RANGE,
            value(&format!("bytes {offset}-{last}/{size}"))?,
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pictures_video_and_sound_browsers_decode_are_shown_in_the_page() {
        assert_eq!(inline("image/JPEG"), Some(Inline::Image));
        assert_eq!(inline("video/mp4"), Some(Inline::Video));
        for never in [
            "image/svg+xml",
            "text/html",
            "application/pdf",
            "",
            "image/png; x",
        ] {
            assert_eq!(inline(never), None, "{never}");
        }
    }

    #[test]
    fn one_range_of_bytes_is_read_and_any_other_form_is_ignored() {
        let asked = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::RANGE, HeaderValue::from_str(v).unwrap());
            range(&h)
        };
        assert_eq!(asked("bytes=100-"), Some((100, None)));
        assert_eq!(asked("bytes=0-99"), Some((0, Some(99))));
        assert_eq!(asked("bytes=-500"), None);
        assert_eq!(asked("bytes=9-3"), None);
        assert_eq!(asked("bytes=0-1,5-9"), None);
        assert_eq!(asked("lines=1-2"), None);
    }
}
