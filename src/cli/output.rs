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

/// The offset times are shown in: local when `TZ` is set (read once, at
/// start, while the process has one thread: the only time the system's
/// local offset can be read soundly), else UTC.
static SHOWN_OFFSET: std::sync::OnceLock<Option<time::UtcOffset>> = std::sync::OnceLock::new();

/// Reads the local offset if `TZ` asks for local time. Call first thing in
/// `main`, before any thread starts.
pub(crate) fn init_time_zone() {
    let local = std::env::var("TZ")
        .ok()
        .filter(|tz| !tz.is_empty())
        .and_then(|_| time::UtcOffset::current_local_offset().ok());
    let _ = SHOWN_OFFSET.set(local);
}

/// An RFC 3339 time from the node, shown like every other time here (local
/// when `TZ` is set); as it came if it does not parse.
fn rfc3339_shown(t: &str) -> String {
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
        .map_or_else(|| printable(t), utc)
}

/// A time as people read it: UTC (`…Z`), or local with its offset when
/// `TZ` is set (e.g. `TZ=Europe/Stockholm`).
pub(crate) fn utc(unix_ms: u64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
    else {
        return format!("{unix_ms}ms");
    };
    let shown = match SHOWN_OFFSET.get().copied().flatten() {
        Some(offset) => t.to_offset(offset).format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second][offset_hour sign:mandatory]:[offset_minute]"
        )),
        None => t.format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]Z"
        )),
    };
    shown.unwrap_or_else(|_| format!("{unix_ms}ms"))
}

/// Text that came from outside (a member, a partner), made safe for a
/// terminal: control characters (newlines, escape sequences, bell) are
/// shown escaped, so no text can forge a line, recolour or clear the screen.
pub(crate) fn printable(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// A message's text for a terminal: [`printable`] line by line, each line
/// after the first indented under the message, so that a multi-line message
/// reads as one and no line of it can pass for a message of its own (every
/// message line starts with its time at the left margin).
fn printable_text(text: &str) -> String {
    text.split('\n')
        .map(printable)
        .collect::<Vec<_>>()
        .join(&format!("\n{CONTINUATION}"))
}

/// The indent of a message's continuation lines.
const CONTINUATION: &str = "    | ";

fn origin_key_word(key: i32) -> &'static str {
    match proto::OriginKey::try_from(key) {
        Ok(proto::OriginKey::Own) => "own",
        Ok(proto::OriginKey::Pinned) => "pinned",
        Ok(proto::OriginKey::VouchedByHome) => "vouched_by_home",
        _ => "unknown",
    }
}

pub(crate) fn message(m: &proto::Message, as_json: bool) -> String {
    if as_json {
        let attachments: Vec<_> = m
            .attachments
            .iter()
            .map(|a| {
                let refused_by: Vec<_> = a
                    .refused_by
                    .iter()
                    .map(|r| json!({"org": r.org, "reason": r.reason}))
                    .collect();
                json!({"name": a.name, "media_type": a.media_type, "size": a.size, "sha256": a.sha256,
                       "held": a.held, "refused_by": refused_by})
            })
            .collect();
        let refused_by: Vec<_> = m
            .refused_by
            .iter()
            .map(|r| json!({"org": r.org, "reason": r.reason, "retrying": r.retrying}))
            .collect();
        return json!({
            "cursor": m.cursor, "channel": m.channel, "origin": m.origin, "origin_seq": m.origin_seq,
            "author": m.author, "hlc": m.hlc, "unix_ms": m.unix_ms,
            "priority": priority_word(m.priority), "kind": m.kind, "text": m.text,
            "origin_key": origin_key_word(m.origin_key), "refused_by": refused_by,
            "withheld": m.withheld, "attachments": attachments,
            "reply_to": m.reply_to.as_ref().map(message_ref),
            "acknowledges": m.acknowledges.as_ref().map(message_ref),
            "ack_required": m.ack_required, "ack_deadline_unix_ms": m.ack_deadline_unix_ms,
            "needs_my_ack": m.needs_my_ack, "ahead": m.ahead,
            "retracts": m.retracts.as_ref().map(message_ref),
            "retracted": m.retracted.as_ref().map(|r| json!({"member": r.member, "org": r.org, "unix_ms": r.unix_ms})),
            "exercise": m.exercise,
            "entry": m.entry.as_ref().map(entry_json),
        })
        .to_string();
    }
    // A partner that refused it: the message did not reach that agency.
    let refused: String = m
        .refused_by
        .iter()
        .map(|r| {
            let again = if r.retrying { "; sent again later" } else { "" };
            format!(
                "[REFUSED by {}: {}{again}] ",
                printable(&r.org),
                printable(&r.reason)
            )
        })
        .collect();
    // An org this node has not pinned speaks only on its channel's home's word.
    let vouched = if m.origin_key == proto::OriginKey::VouchedByHome as i32 {
        let home = m.channel.split('/').next().unwrap_or_default();
        format!("[vouched for by {}, not pinned here] ", printable(home))
    } else {
        String::new()
    };
    let mut flag = match priority_word(m.priority) {
        "normal" => String::new(),
        other => format!("[{}] ", other.to_uppercase()),
    };
    if m.exercise {
        flag.insert_str(0, "[EXERCISE] ");
    }
    if m.ahead {
        flag.push_str("[AHEAD of older messages still arriving] ");
    }
    if m.kind == "roster" {
        return format!(
            "{}  {flag}({} {})",
            utc(m.unix_ms),
            printable(&m.origin),
            printable_text(&m.text)
        );
    }
    if m.kind == "retraction" {
        let what = m.retracts.as_ref().map_or_else(String::new, shown_ref);
        return format!(
            "{}  {}@{}#{}  retracted {what}",
            utc(m.unix_ms),
            printable(&m.author),
            printable(&m.origin),
            m.origin_seq,
        );
    }
    if let Some(r) = &m.retracted {
        return format!(
            "{}  {}@{}#{}  [retracted by {}@{} at {}]",
            utc(m.unix_ms),
            printable(&m.author),
            printable(&m.origin),
            m.origin_seq,
            printable(&r.member),
            printable(&r.org),
            utc(r.unix_ms),
        );
    }
    if m.kind == "ack" {
        let what = m.acknowledges.as_ref().map_or_else(String::new, shown_ref);
        return format!(
            "{}  {}@{}#{}  acknowledged {what}",
            utc(m.unix_ms),
            printable(&m.author),
            printable(&m.origin),
            m.origin_seq,
        );
    }
    let text = if m.withheld {
        "[withheld by the home: posted before its share with this org]".into()
    } else {
        printable_text(&m.text)
    };
    let reply = m
        .reply_to
        .as_ref()
        .map_or_else(String::new, |r| format!("[reply to {}] ", shown_ref(r)));
    let ack = match (m.ack_required, m.needs_my_ack, m.ack_deadline_unix_ms) {
        (false, ..) => String::new(),
        (true, mine, due) => {
            let due = if due == 0 {
                String::new()
            } else {
                format!(" by {}", utc(due))
            };
            let yours = if mine {
                format!(
                    ", YOURS IS MISSING: samband ack {} {}",
                    printable(&m.channel),
                    printable(&m.cursor)
                )
            } else {
                String::new()
            };
            format!("[ACK REQUIRED{due}{yours}] ")
        }
    };
    // Each file on a line of its own, with whether its bytes are here yet.
    let files: String = m
        .attachments
        .iter()
        .map(|a| {
            let held = match (a.held, a.refused_by.is_empty()) {
                (true, _) => "",
                (false, true) => ", still arriving",
                (false, false) => ", not here",
            };
            let refused: String = a
                .refused_by
                .iter()
                .map(|r| {
                    format!(
                        " [REFUSED by {}: {}]",
                        printable(&r.org),
                        printable(&r.reason)
                    )
                })
                .collect();
            format!(
                "\n{CONTINUATION}[file] {} ({}, {}{held}) sha256 {}{refused}",
                printable(&a.name),
                printable(&a.media_type),
                indicatif::HumanBytes(a.size),
                printable(&a.sha256),
            )
        })
        .collect();
    format!(
        "{}  {}@{}#{}  {refused}{vouched}{flag}{ack}{reply}{text}{files}",
        utc(m.unix_ms),
        printable(&m.author),
        printable(&m.origin),
        m.origin_seq,
    )
}

/// One agency's state of a message: `samband receipts`.
pub(crate) fn receipt(a: &proto::AgencyReceipt, as_json: bool) -> String {
    if as_json {
        return json!({
            "org": a.org, "state": a.state, "reason": a.reason, "retrying": a.retrying,
            "link": a.link, "waiting_ms": a.waiting_ms, "overdue": a.overdue,
            "retraction_applied": a.retraction_applied, "delivered_unix_ms": a.delivered_unix_ms,
            "acknowledged_by": a.acknowledged_by.iter()
                .map(|m| json!({"member": m.member, "unix_ms": m.unix_ms}))
                .collect::<Vec<_>>(),
        })
        .to_string();
    }
    let detail = match a.state.as_str() {
        "refused" => format!(
            "REFUSED: {}{}",
            printable(&a.reason),
            if a.retrying {
                " (sent again later)"
            } else {
                ""
            }
        ),
        "delivered" if a.delivered_unix_ms > 0 => {
            format!("delivered (known since {})", utc(a.delivered_unix_ms))
        }
        "waiting" => format!(
            "waiting for {}s (link {})",
            a.waiting_ms / 1000,
            printable(&a.link)
        ),
        "not linked" => "not linked from here: the channel's home relays to it".to_owned(),
        "offered" => "offered: its node has not taken the channel yet (its operator accepts it \
                      with samband channel accept)"
            .to_owned(),
        "removed" => "removed (or the incident closed) before this node learned that it held it; \
             nothing more reaches it"
            .to_owned(),
        other => printable(other),
    };
    let acked: Vec<String> = a
        .acknowledged_by
        .iter()
        .map(|m| format!("{} at {}", printable(&m.member), utc(m.unix_ms)))
        .collect();
    let acked = if acked.is_empty() {
        String::new()
    } else {
        format!("; acknowledged by {}", acked.join(", "))
    };
    let overdue = if a.overdue {
        "; OVERDUE: no acknowledgement by the deadline"
    } else {
        ""
    };
    let retraction = if a.retraction_applied {
        "; retraction applied"
    } else {
        ""
    };
    format!(
        "{:<28} {detail}{acked}{overdue}{retraction}",
        printable(&a.org)
    )
}

/// A message another one answers or acknowledges, e.g. `police.example#12`.
fn shown_ref(r: &proto::MessageRef) -> String {
    format!("{}#{}", printable(&r.origin), r.seq)
}

fn message_ref(r: &proto::MessageRef) -> serde_json::Value {
    json!({"origin": r.origin, "seq": r.seq, "cursor": r.cursor})
}

/// One picture entry as JSON.
fn entry_json(e: &proto::PictureEntry) -> serde_json::Value {
    json!({
        "owner": e.owner, "key": e.key, "kind": e.kind, "status": e.status,
        "geometry": serde_json::from_str::<serde_json::Value>(&e.geometry).ok(),
        "fields": e.fields, "author": e.author, "unix_ms": e.unix_ms,
        "removed": e.removed, "exercise": e.exercise, "cursor": e.cursor,
    })
}

/// One picture entry: a line, or JSON.
pub(crate) fn entry(e: &proto::PictureEntry, as_json: bool) -> String {
    if as_json {
        return entry_json(e).to_string();
    }
    let exercise = if e.exercise { "[EXERCISE] " } else { "" };
    if e.removed {
        return format!(
            "{exercise}{}/{} removed by {} at {}",
            printable(&e.owner),
            printable(&e.key),
            printable(&e.author),
            utc(e.unix_ms)
        );
    }
    let status = if e.status.is_empty() {
        String::new()
    } else {
        format!(" [{}]", printable(&e.status))
    };
    let mut fields: Vec<(&String, &String)> = e.fields.iter().collect();
    fields.sort();
    let fields: String = fields
        .into_iter()
        .map(|(k, v)| format!(" {}={}", printable(k), printable(v)))
        .collect();
    let place = where_of(&e.geometry);
    format!(
        "{exercise}{:<14} {}/{}{status}{fields}{place}  by {} at {}",
        printable(&e.kind),
        printable(&e.owner),
        printable(&e.key),
        printable(&e.author),
        utc(e.unix_ms)
    )
}

/// Where an entry is, in a few words: a point's latitude,longitude, or
/// the kind of shape and its size.
fn where_of(geometry: &str) -> String {
    use geojson::GeometryValue as V;
    let Ok(g) = geometry.parse::<geojson::Geometry>() else {
        return String::new();
    };
    match &g.value {
        V::Point { coordinates } if coordinates.len() >= 2 => {
            format!(" at {:.5},{:.5}", coordinates[1], coordinates[0])
        }
        V::LineString { coordinates } => format!(" (line of {} points)", coordinates.len()),
        V::Polygon { coordinates } => format!(
            " (area of {} points)",
            coordinates.first().map_or(0, Vec::len)
        ),
        other => format!(" ({})", other.type_name()),
    }
}

/// One incident: a line, or JSON.
pub(crate) fn incident(i: &proto::IncidentInfo, as_json: bool) -> String {
    if as_json {
        return json!({
            "id": i.id, "name": i.name, "home": i.home, "state": i.state,
            "exercise": i.exercise, "opened_unix_ms": i.opened_unix_ms,
            "until_unix_ms": i.until_unix_ms, "closed_unix_ms": i.closed_unix_ms,
            "participants": i.participants,
            "channels": i.channels.iter()
                .map(|c| json!({"id": c.id, "state": c.state}))
                .collect::<Vec<_>>(),
        })
        .to_string();
    }
    // Marked in a column of its own, so that lines stay aligned.
    let exercise = if i.exercise { "EXERCISE" } else { "real" };
    let until = if i.until_unix_ms > 0 {
        format!(" until {}", utc(i.until_unix_ms))
    } else {
        String::new()
    };
    let closed = if i.closed_unix_ms > 0 {
        format!(" closed {}", utc(i.closed_unix_ms))
    } else {
        String::new()
    };
    // Its channels where they are not just the one named after it, each
    // marked with its state where that is not what the incident's is.
    let expected = if i.state == "active" {
        "shared"
    } else {
        "archived"
    };
    let channels = match i.channels.as_slice() {
        [only] if only.id == i.id => String::new(),
        all => {
            let named: Vec<String> = all
                .iter()
                .map(|c| match c.state.as_str() {
                    state if state == expected => c.id.clone(),
                    state => format!("{} ({state})", c.id),
                })
                .collect();
            format!("  channels {}", printable(&named.join(", ")))
        }
    };
    format!(
        "{:<32} {:<7} {exercise:<8} opened {}{until}{closed}  agencies {}{channels}",
        printable(&i.id),
        i.state,
        utc(i.opened_unix_ms),
        printable(&i.participants.join(", "))
    )
}

pub(crate) fn channel(c: &proto::Channel, as_json: bool) -> String {
    if as_json {
        return json!({
            "id": c.id, "home": c.home, "name": c.name, "state": c.state,
            "participants": c.participants, "created_unix_ms": c.created_unix_ms,
            "incident": c.incident.as_ref().map(|i| &i.id),
            "exercise": c.incident.as_ref().is_some_and(|i| i.exercise),
        })
        .to_string();
    }
    let with = if c.participants.is_empty() {
        String::new()
    } else {
        format!("  with {}", printable(&c.participants.join(", ")))
    };
    let incident = match &c.incident {
        Some(i) if i.exercise => format!("  EXERCISE incident {}", printable(&i.id)),
        Some(i) => format!("  incident {}", printable(&i.id)),
        None => String::new(),
    };
    format!(
        "{:<40} {:<9} created {}{with}{incident}",
        printable(&c.id),
        c.state,
        utc(c.created_unix_ms)
    )
}

pub(crate) fn posted(channel: &str, r: &proto::PostResponse, flags: &str, as_json: bool) -> String {
    if as_json {
        return json!({
            "channel": channel, "origin": r.origin, "origin_seq": r.origin_seq, "hlc": r.hlc, "cursor": r.cursor,
        })
        .to_string();
    }
    format!(
        "posted to {channel} as #{} of {} (durable); where it is: samband receipts {channel} {}{flags}",
        r.origin_seq, r.origin, r.cursor
    )
}

pub(crate) fn status(s: &proto::StatusResponse, endpoint: &str, as_json: bool) -> String {
    let role = match proto::Role::try_from(s.role) {
        Ok(proto::Role::Admin) => "admin",
        _ => "member",
    };
    if as_json {
        let workers: Vec<_> = s
            .workers
            .iter()
            .map(|w| json!({"name": w.name, "state": w.state, "runs": w.runs, "status": w.status}))
            .collect();
        let certificates: Vec<_> = s
            .certificates
            .iter()
            .map(|c| json!({"kind": c.kind, "name": c.name, "serial": c.serial, "not_after": c.not_after, "days_left": c.days_left}))
            .collect();
        return json!({
            "org": s.org, "member": s.member, "role": role, "version": s.version,
            "uptime_seconds": s.uptime_seconds, "channels": s.channels, "endpoint": endpoint,
            "certificate_not_after": s.certificate_not_after,
            "workers": workers, "certificates": certificates,
        })
        .to_string();
    }
    let mut text = format!(
        "node      {} at {endpoint} (samband {}, up {}s)\nyou       {} ({role}), certificate valid until {}\nchannels  {}",
        s.org,
        s.version,
        s.uptime_seconds,
        s.member,
        rfc3339_shown(&s.certificate_not_after),
        s.channels
    );
    for c in &s.certificates {
        let left = match c.days_left {
            d if d < 0 => "EXPIRED".to_owned(),
            d if d < samband::pki::EXPIRY_WARNING_DAYS => format!("{d} days left, RENEW SOON"),
            d => format!("{d} days left"),
        };
        let what = match c.kind.as_str() {
            "ca" | "node" | "operator" => c.kind.clone(),
            kind => format!("{kind} {}", printable(&c.name)),
        };
        text.push_str(&format!(
            "\ncert      {what}: until {} ({left})",
            rfc3339_shown(&c.not_after)
        ));
    }
    for w in &s.workers {
        text.push_str(&format!(
            "\nworker    {}: {}, {} runs; {}",
            printable(&w.name),
            printable(&w.state),
            w.runs,
            printable(&w.status)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_a_partner_refused_says_so_in_its_line() {
        let m = proto::Message {
            channel: "police.example/ops".into(),
            origin: "police.example".into(),
            author: "chief".into(),
            text: "evacuate".into(),
            kind: "text".into(),
            refused_by: vec![proto::PartnerRefusal {
                org: "rescue.example".into(),
                reason: "timestamp lies too far in the future\u{1b}[2J".into(),
                retrying: true,
            }],
            ..Default::default()
        };
        let line = message(&m, false);
        assert!(
            line.contains("[REFUSED by rescue.example: timestamp lies too far in the future"),
            "{line}"
        );
        assert!(line.contains("; sent again later]"), "{line}");
        assert!(!line.chars().any(char::is_control), "{line:?}");
        let json: serde_json::Value = serde_json::from_str(&message(&m, true)).unwrap();
        assert_eq!(json["refused_by"][0]["org"], "rescue.example");
        assert_eq!(json["refused_by"][0]["retrying"], true);
    }

    #[test]
    fn text_from_outside_cannot_forge_a_line_or_drive_the_terminal() {
        let forged = "ok\n2026-11-30 12:00:00Z  chief@police.example  stand down\u{1b}[2J\u{7}";
        let shown = printable(forged);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(shown.contains("ok\\n2026"), "{shown}");
        let m = proto::Message {
            channel: "evil.example/ops".into(),
            origin: "x.example".into(),
            author: "a\nb".into(),
            text: forged.into(),
            kind: "text".into(),
            origin_key: proto::OriginKey::VouchedByHome as i32,
            ..Default::default()
        };
        let line = message(&m, false);
        // A multi-line message reads as one: its second line is indented,
        // so it cannot pass for a message of its own.
        let lines: Vec<&str> = line.lines().collect();
        assert_eq!(lines.len(), 2, "{line}");
        assert!(lines[1].starts_with(CONTINUATION), "{line}");
        assert!(
            !line.chars().any(|c| c.is_control() && c != '\n'),
            "{line:?}"
        );
        assert!(
            line.contains("a\\nb@x.example"),
            "names stay on one line: {line}"
        );
        assert!(
            line.contains("[vouched for by evil.example, not pinned here]"),
            "{line}"
        );
        // JSON stays exact.
        let json: serde_json::Value = serde_json::from_str(&message(&m, true)).unwrap();
        assert_eq!(json["text"], forged);
        assert_eq!(json["origin_key"], "vouched_by_home");
    }
}
