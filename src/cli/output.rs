//! How client commands print: one readable line per thing, or JSON lines.

use samband::proto;
use serde_json::json;

fn priority_word(p: i32) -> &'static str {
    match proto::Priority::try_from(p) {
        Ok(proto::Priority::Urgent) => "urgent",
        Ok(proto::Priority::Flash) => "flash",
        _ => "normal",
    }
}

fn utc(unix_ms: u64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_else(|| format!("{unix_ms}ms"))
}

pub(crate) fn message(m: &proto::Message, as_json: bool) -> String {
    if as_json {
        return json!({
            "cursor": m.cursor, "channel": m.channel, "origin": m.origin, "origin_seq": m.origin_seq,
            "author": m.author, "hlc": m.hlc, "unix_ms": m.unix_ms,
            "priority": priority_word(m.priority), "kind": m.kind, "text": m.text,
        })
        .to_string();
    }
    let flag = match priority_word(m.priority) {
        "normal" => String::new(),
        other => format!("[{}] ", other.to_uppercase()),
    };
    if m.kind == "roster" {
        return format!(
            "{}  ({} changed the roster: {})",
            utc(m.unix_ms),
            m.origin,
            m.text
        );
    }
    format!(
        "{}  {}@{}  {flag}{}",
        utc(m.unix_ms),
        m.author,
        m.origin,
        m.text
    )
}

pub(crate) fn channel(c: &proto::Channel, as_json: bool) -> String {
    if as_json {
        return json!({
            "id": c.id, "home": c.home, "name": c.name, "state": c.state,
            "participants": c.participants, "created_unix_ms": c.created_unix_ms,
        })
        .to_string();
    }
    let with = if c.participants.is_empty() {
        String::new()
    } else {
        format!("  with {}", c.participants.join(", "))
    };
    format!(
        "{:<40} {:<9} created {}{with}",
        c.id,
        c.state,
        utc(c.created_unix_ms)
    )
}

pub(crate) fn posted(channel: &str, r: &proto::PostResponse, as_json: bool) -> String {
    if as_json {
        return json!({
            "channel": channel, "origin": r.origin, "origin_seq": r.origin_seq, "hlc": r.hlc, "cursor": r.cursor,
        })
        .to_string();
    }
    format!(
        "posted to {channel} as #{} of {} (durable)",
        r.origin_seq, r.origin
    )
}

pub(crate) fn status(s: &proto::StatusResponse, endpoint: &str, as_json: bool) -> String {
    let role = match proto::Role::try_from(s.role) {
        Ok(proto::Role::Admin) => "admin",
        _ => "member",
    };
    if as_json {
        return json!({
            "org": s.org, "member": s.member, "role": role, "version": s.version,
            "uptime_seconds": s.uptime_seconds, "channels": s.channels, "endpoint": endpoint,
        })
        .to_string();
    }
    format!(
        "node      {} at {endpoint} (samband {}, up {}s)\nyou       {} ({role})\nchannels  {}",
        s.org, s.version, s.uptime_seconds, s.member, s.channels
    )
}
