//! CAP 1.2 in and out (OASIS Common Alerting Protocol, version 1.2, 2010):
//! reading and checking an alert, what of it becomes part of an incident
//! (its areas as picture entries, its embedded resources as files), and a
//! member's message as an alert. Reading and writing the XML is the
//! `oasiscap` crate's: nothing here parses or prints XML by hand.
//!
//! Rules, and their sources:
//! * Only CAP 1.2 is taken. A CAP 1.0 or 1.1 alert is refused with its
//!   version: converting it would not export again as the alert it was.
//! * `status` must fit the incident (CAP 1.2 §3.2.1 "status"): `Actual`
//!   only into a real incident; `Exercise` and `Test` only into an
//!   exercise; `System` and `Draft` are not operational and never taken.
//! * CAP gives positions as "latitude,longitude" (§3.3.2.1), GeoJSON as
//!   `[longitude, latitude]` (RFC 7946 §3.1.1): areas are turned around.
//! * `references` (§3.2.1) name earlier alerts as "sender,identifier,sent";
//!   an `Update` or `Cancel` removes the entries those alerts made.
//!
//! Must never do I/O or read a clock. May use `model`, `proto`.

use std::collections::HashMap;

use oasiscap::v1dot2;

use crate::proto::PictureBody;

/// The CAP 1.2 XML namespace (CAP 1.2 §3.1).
const CAP_1_2: &str = "urn:oasis:names:tc:emergency:cap:1.2";

/// Largest alert taken, in bytes of XML (embedded resources included).
pub const MAX_ALERT_BYTES: usize = 4 << 20;

/// Why an alert is not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    #[error(
        "the alert is {size} bytes; alerts of at most {MAX_ALERT_BYTES} bytes are taken \
         (embedded resources included): send large resources as files"
    )]
    TooLarge { size: usize },
    #[error(
        "not a CAP document: no <alert> in the CAP 1.2 namespace \
         (urn:oasis:names:tc:emergency:cap:1.2)"
    )]
    NotCap,
    #[error(
        "a CAP {version} alert; only CAP 1.2 (OASIS, 2010) is taken, because an older \
         alert converted to 1.2 would not export again as the alert it was: ask its sender \
         for CAP 1.2"
    )]
    OldVersion { version: &'static str },
    #[error("invalid CAP 1.2 alert: {0}")]
    Invalid(String),
    #[error("a CAP alert of status {status} into {incident}: {why}")]
    WrongStatus {
        status: String,
        incident: &'static str,
        why: &'static str,
    },
}

/// Reads `xml` as a CAP 1.2 alert, checked as the CAP 1.2 schema and
/// specification require (`oasiscap`'s checks: required elements, value
/// sets, dates with a time zone, closed polygons, …).
pub fn parse(xml: &str) -> Result<v1dot2::Alert, CapError> {
    if xml.len() > MAX_ALERT_BYTES {
        return Err(CapError::TooLarge { size: xml.len() });
    }
    if !xml.contains("urn:oasis:names:tc:emergency:cap:")
        && !xml.contains("http://www.incident.com/cap/1.0")
    {
        return Err(CapError::NotCap);
    }
    if !xml.contains(CAP_1_2) {
        if xml.contains("urn:oasis:names:tc:emergency:cap:1.1") {
            return Err(CapError::OldVersion { version: "1.1" });
        }
        if xml.contains("http://www.incident.com/cap/1.0") {
            return Err(CapError::OldVersion { version: "1.0" });
        }
        return Err(CapError::NotCap);
    }
    match xml.parse::<oasiscap::Alert>() {
        // `oasiscap` reads more than the schema allows (a `Z` for the
        // offset): what it took is checked again as the schema says.
        Ok(oasiscap::Alert::V1dot2(alert)) => match diagnose(xml) {
            Some(why) => Err(CapError::Invalid(why)),
            None => Ok(alert),
        },
        Ok(oasiscap::Alert::V1dot1(_)) => Err(CapError::OldVersion { version: "1.1" }),
        Ok(oasiscap::Alert::V1dot0(_)) => Err(CapError::OldVersion { version: "1.0" }),
        Err(e)
            if e.to_string().contains("unknown variant") && e.to_string().contains("cap:alert") =>
        {
            Err(CapError::NotCap)
        }
        Err(e) => Err(CapError::Invalid(
            diagnose(xml).unwrap_or_else(|| readable(&e.to_string())),
        )),
    }
}

/// `oasiscap`'s words with CAP's element names (`<status>`, not the
/// namespaced serde field name).
fn readable(why: &str) -> String {
    why.replace("`{urn:oasis:names:tc:emergency:cap:1.2;}cap:", "element <")
        .replace("missing field element <", "missing element <")
        .replace("{urn:oasis:names:tc:emergency:cap:1.2;}cap:", "<")
        .replace("`", ">")
}

/// The value sets of CAP 1.2's enumerated elements (§3.2).
const VALUE_SETS: [(&str, &[&str]); 7] = [
    ("status", &["Actual", "Exercise", "System", "Test", "Draft"]),
    ("msgType", &["Alert", "Update", "Cancel", "Ack", "Error"]),
    ("scope", &["Public", "Restricted", "Private"]),
    (
        "category",
        &[
            "Geo",
            "Met",
            "Safety",
            "Security",
            "Rescue",
            "Fire",
            "Health",
            "Env",
            "Transport",
            "Infra",
            "CBRNE",
            "Other",
        ],
    ),
    (
        "urgency",
        &["Immediate", "Expected", "Future", "Past", "Unknown"],
    ),
    (
        "severity",
        &["Extreme", "Severe", "Moderate", "Minor", "Unknown"],
    ),
    (
        "certainty",
        &["Observed", "Likely", "Possible", "Unlikely", "Unknown"],
    ),
];

/// The CAP 1.2 elements that hold a date and time (§3.2.1, §3.2.2).
const DATES: [&str; 4] = ["sent", "effective", "onset", "expires"];

/// Whether `text` is a CAP 1.2 date and time: the schema's pattern
/// `\d\d\d\d-\d\d-\d\dT\d\d:\d\d:\d\d[-,+]\d\d:\d\d` (`cap12.xsd`),
/// with `+` or `-` for the offset. §3.3.2: "Alphabetic timezone
/// designators such as “Z” MUST NOT be used", and no fractions of a second.
fn is_cap_date(text: &str) -> bool {
    const SHAPE: &[u8; 25] = b"dddd-dd-ddTdd:dd:dd+dd:dd";
    let bytes = text.as_bytes();
    bytes.len() == SHAPE.len()
        && bytes.iter().zip(SHAPE).all(|(&c, &shape)| match shape {
            b'd' => c.is_ascii_digit(),
            b'+' => c == b'+' || c == b'-',
            _ => c == shape,
        })
}

/// What is wrong with a CAP polygon's text (§3.3.2.1: at least four
/// "latitude,longitude" pairs, the first and last the same), if anything.
fn polygon_fault(text: &str) -> Option<String> {
    let points: Vec<&str> = text.split_whitespace().collect();
    if points.is_empty() {
        return None; // an empty polygon is taken, as no shape
    }
    if points.len() < 4 {
        return Some(format!("{} points; a polygon has at least 4", points.len()));
    }
    let (first, last) = (points[0], points[points.len() - 1]);
    (first != last)
        .then(|| format!("not closed: its last point {last} is not its first point {first}"))
}

/// The children each CAP 1.2 element holds, in the order the schema's
/// sequences give them (`cap12.xsd`), each with whether it may repeat.
/// Elements of another namespace (an XML signature) end `<alert>`.
const SEQUENCES: [(&str, &[(&str, bool)]); 6] = [
    (
        "alert",
        &[
            ("identifier", false),
            ("sender", false),
            ("sent", false),
            ("status", false),
            ("msgType", false),
            ("source", false),
            ("scope", false),
            ("restriction", false),
            ("addresses", false),
            ("code", true),
            ("note", false),
            ("references", false),
            ("incidents", false),
            ("info", true),
        ],
    ),
    (
        "info",
        &[
            ("language", false),
            ("category", true),
            ("event", false),
            ("responseType", true),
            ("urgency", false),
            ("severity", false),
            ("certainty", false),
            ("audience", false),
            ("eventCode", true),
            ("effective", false),
            ("onset", false),
            ("expires", false),
            ("senderName", false),
            ("headline", false),
            ("description", false),
            ("instruction", false),
            ("web", false),
            ("contact", false),
            ("parameter", true),
            ("resource", true),
            ("area", true),
        ],
    ),
    (
        "resource",
        &[
            ("resourceDesc", false),
            ("mimeType", false),
            ("size", false),
            ("uri", false),
            ("derefUri", false),
            ("digest", false),
        ],
    ),
    (
        "area",
        &[
            ("areaDesc", false),
            ("polygon", true),
            ("circle", true),
            ("geocode", true),
            ("altitude", false),
            ("ceiling", false),
        ],
    ),
    ("eventCode", &[("valueName", false), ("value", false)]),
    ("parameter", &[("valueName", false), ("value", false)]),
];

/// Where CAP element `child` may stand in `parent`, after the child last
/// seen there at `last` (its place in the sequence): its own place, or
/// why it may not stand there. `None` for a parent whose children are not
/// checked (`geocode` shares eventCode's shape and is checked by that).
fn place_of(parent: &str, child: &str, last: Option<usize>) -> Option<Result<usize, String>> {
    let parent_seq = if parent == "geocode" {
        "eventCode"
    } else {
        parent
    };
    let (_, sequence) = SEQUENCES.iter().find(|(p, _)| *p == parent_seq)?;
    let Some(at) = sequence.iter().position(|(c, _)| *c == child) else {
        return Some(Err(format!(
            "element <{child}> is not part of <{parent}> in CAP 1.2"
        )));
    };
    Some(match last {
        Some(last) if at < last => Err(format!(
            "element <{child}> is out of place in <{parent}>: CAP 1.2 puts it before <{}>",
            sequence[last].0
        )),
        Some(last) if at == last && !sequence[at].1 => {
            Err(format!("element <{child}> appears twice in <{parent}>"))
        }
        _ => Ok(at),
    })
}

/// Which element of a document makes it invalid, when that is its place,
/// a date, a polygon or an enumerated value (read with `xml-rs`): a person
/// is told the element and what it must hold. Also run on what `oasiscap`
/// took, since it is laxer than the schema about dates and order.
fn diagnose(xml: &str) -> Option<String> {
    use xml::reader::{EventReader, XmlEvent};
    let mut open = String::new();
    // The open CAP elements, each with the place of its last child; an
    // element of another namespace and all within it are not checked.
    let mut within: Vec<(String, Option<usize>)> = Vec::new();
    let mut foreign = 0usize;
    for event in EventReader::new(xml.as_bytes()) {
        match event {
            Err(e) => return Some(format!("not well-formed XML: {e}")),
            Ok(XmlEvent::StartElement { name, .. }) => {
                if foreign > 0 || name.namespace.as_deref() != Some(CAP_1_2) {
                    foreign += 1;
                    open.clear();
                    continue;
                }
                if let Some((parent, last)) = within.last_mut()
                    && let Some(place) = place_of(parent, &name.local_name, *last)
                {
                    match place {
                        Ok(at) => *last = Some(at),
                        Err(why) => return Some(why),
                    }
                }
                within.push((name.local_name.clone(), None));
                open = name.local_name;
            }
            Ok(XmlEvent::EndElement { .. }) => {
                if foreign > 0 {
                    foreign -= 1;
                } else {
                    within.pop();
                }
                open.clear();
            }
            Ok(XmlEvent::Characters(text)) => {
                let text = text.trim();
                if DATES.contains(&open.as_str())
                    && (!is_cap_date(text) || text.parse::<oasiscap::DateTime>().is_err())
                {
                    return Some(format!(
                        "element <{open}>: {text:?} is not a CAP date and time \
                         (YYYY-MM-DDThh:mm:ss with its offset, e.g. 2003-04-02T14:39:01-05:00)"
                    ));
                }
                if open == "polygon"
                    && let Some(why) = polygon_fault(text)
                {
                    return Some(format!("element <polygon>: {why}"));
                }
                if let Some((_, allowed)) = VALUE_SETS.iter().find(|(e, _)| *e == open)
                    && !allowed.contains(&text)
                {
                    return Some(format!(
                        "element <{open}>: {text:?} is not one of {}",
                        allowed.join(", ")
                    ));
                }
            }
            Ok(_) => {}
        }
    }
    None
}

/// `alert` as a CAP 1.2 XML document. (Written through `oasiscap::Alert`:
/// `v1dot2::Alert`'s own `Display` leaves out the `<alert>` element.)
pub fn write(alert: v1dot2::Alert) -> String {
    oasiscap::Alert::V1dot2(alert).to_string()
}

/// The word CAP uses for `status` (§3.2.1).
pub fn status_word(status: &v1dot2::Status) -> &'static str {
    match status {
        v1dot2::Status::Actual => "Actual",
        v1dot2::Status::Exercise => "Exercise",
        v1dot2::Status::System => "System",
        v1dot2::Status::Test => "Test",
        v1dot2::Status::Draft => "Draft",
    }
}

/// The word CAP uses for `msgType` (§3.2.1).
pub fn msg_type_word(t: &v1dot2::MessageType) -> &'static str {
    match t {
        v1dot2::MessageType::Alert => "Alert",
        v1dot2::MessageType::Update => "Update",
        v1dot2::MessageType::Cancel => "Cancel",
        v1dot2::MessageType::Ack => "Ack",
        v1dot2::MessageType::Error => "Error",
    }
}

/// Whether an alert of `status` may go into an incident that is an
/// exercise (`exercise`) or real.
pub fn check_status(status: &v1dot2::Status, exercise: bool) -> Result<(), CapError> {
    let wrong = |incident, why| CapError::WrongStatus {
        status: status_word(status).to_owned(),
        incident,
        why,
    };
    match (status, exercise) {
        (v1dot2::Status::Actual, false)
        | (v1dot2::Status::Exercise | v1dot2::Status::Test, true) => Ok(()),
        (v1dot2::Status::Actual, true) => Err(wrong(
            "an exercise",
            "a real alert is never mixed into an exercise; import it into a real incident",
        )),
        (v1dot2::Status::Exercise | v1dot2::Status::Test, false) => Err(wrong(
            "a real incident",
            "exercise and test content is never mixed into a real incident",
        )),
        (v1dot2::Status::System | v1dot2::Status::Draft, _) => Err(wrong(
            "an incident",
            "System and Draft alerts are not operational",
        )),
    }
}

/// The prefix of the keys of the entries an alert of `sender` with
/// `identifier` makes: the same for the alert and for every later
/// `Update` or `Cancel` that references it.
pub fn key_prefix(sender: &str, identifier: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(sender.as_bytes());
    ctx.update(b"\n");
    ctx.update(identifier.as_bytes());
    let digest = ctx.finish();
    format!("cap-{}-", hex::encode(&digest.as_ref()[..8]))
}

/// The key prefixes of the earlier alerts `alert` references (§3.2.1).
pub fn referenced(alert: &v1dot2::Alert) -> Vec<String> {
    alert
        .references
        .as_ref()
        .map(|refs| {
            refs.iter()
                .map(|r| key_prefix(r.sender.as_str(), r.identifier.as_str()))
                .collect()
        })
        .unwrap_or_default()
}

/// A CAP area as a GeoJSON geometry: its polygons (turned to
/// `[longitude, latitude]`), or its circles' centres (GeoJSON has no
/// circle; the radius goes in the entry's fields), or none.
fn geometry(area: &v1dot2::Area) -> Option<geojson::Geometry> {
    let rings: Vec<Vec<Vec<geojson::Position>>> = area
        .polygons
        .iter()
        .map(|polygon| {
            vec![
                polygon
                    .iter()
                    .map(|p| geojson::Position::from([p.longitude(), p.latitude()]))
                    .collect(),
            ]
        })
        .filter(|rings: &Vec<Vec<geojson::Position>>| rings[0].len() >= 4)
        .collect();
    let centres: Vec<geojson::Position> = area
        .circles
        .iter()
        .map(|c| geojson::Position::from([c.center.longitude(), c.center.latitude()]))
        .collect();
    let value = match (rings.len(), centres.len()) {
        (1, _) => geojson::GeometryValue::Polygon {
            coordinates: rings.into_iter().next()?,
        },
        (n, _) if n > 1 => geojson::GeometryValue::MultiPolygon { coordinates: rings },
        (0, 1) => geojson::GeometryValue::Point {
            coordinates: centres.into_iter().next()?,
        },
        (0, n) if n > 1 => geojson::GeometryValue::MultiPoint {
            coordinates: centres,
        },
        _ => return None,
    };
    Some(geojson::Geometry::new(value))
}

/// The picture entries an alert's areas make, keyed under
/// [`key_prefix`]: kind `area`, the event and severity as status, and
/// the alert's words (event, headline, urgency, severity, certainty, area
/// description, circles' radii in km) as fields.
pub fn entries(alert: &v1dot2::Alert) -> Vec<PictureBody> {
    let prefix = key_prefix(alert.sender.as_str(), alert.identifier.as_str());
    let mut out = Vec::new();
    for (i, info) in alert.info.iter().enumerate() {
        for (j, area) in info.areas.iter().enumerate() {
            let mut fields = HashMap::from([
                ("event".to_owned(), info.event.clone()),
                ("urgency".to_owned(), format!("{:?}", info.urgency)),
                ("severity".to_owned(), format!("{:?}", info.severity)),
                ("certainty".to_owned(), format!("{:?}", info.certainty)),
                ("area".to_owned(), area.description.clone()),
                ("cap_identifier".to_owned(), alert.identifier.to_string()),
                ("cap_sender".to_owned(), alert.sender.to_string()),
            ]);
            if let Some(headline) = &info.headline {
                fields.insert("headline".to_owned(), headline.clone());
            }
            if !area.circles.is_empty() {
                let radii: Vec<String> =
                    area.circles.iter().map(|c| c.radius.to_string()).collect();
                fields.insert("radius_km".to_owned(), radii.join(" "));
            }
            // One line each: an alert's text is often wrapped and
            // indented in its XML (an entry's field is shown on one line).
            for value in fields.values_mut() {
                *value = value.split_whitespace().collect::<Vec<_>>().join(" ");
                clip(value, crate::rules::picture::MAX_VALUE_BYTES);
            }
            let mut status = format!("{} ({:?})", info.event, info.severity);
            clip(&mut status, crate::rules::picture::MAX_NAME_BYTES);
            out.push(PictureBody {
                key: format!("{prefix}{i}-{j}"),
                kind: "area".into(),
                status,
                geometry: geometry(area).map(|g| g.to_string()).unwrap_or_default(),
                fields,
                removed: false,
            });
        }
    }
    out
}

/// Cuts `text` to at most `most` bytes, at a character's edge.
fn clip(text: &mut String, most: usize) {
    let mut end = most.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
}

/// An embedded resource of an alert (`derefUri`, §3.3.1): its file name,
/// media type and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Embedded {
    pub name: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// Every resource of `alert` that carries its content (`derefUri`), named
/// from its URI's last segment or its description (kept to a file name).
pub fn embedded(alert: &v1dot2::Alert) -> Vec<Embedded> {
    let mut out = Vec::new();
    for info in &alert.info {
        for (i, r) in info.resources.iter().enumerate() {
            let Some(content) = &r.embedded_content else {
                continue;
            };
            let from_uri = r
                .uri
                .as_ref()
                .and_then(|u| u.path_segments()?.next_back().map(str::to_owned))
                .filter(|s| !s.is_empty());
            let base = from_uri.unwrap_or_else(|| r.description.clone());
            let mut name = file_name(&base);
            if name.trim_matches(['.', '-']).is_empty() {
                name = format!("resource-{i}");
            }
            if !name.contains('.')
                && let Some(ext) =
                    mime_guess::get_mime_extensions_str(&r.mime_type).and_then(|e| e.first())
            {
                name = format!("{name}.{ext}");
            }
            out.push(Embedded {
                name,
                media_type: r.mime_type.clone(),
                bytes: content.as_slice().to_vec(),
            });
        }
    }
    out
}

/// `text` (an identifier, a resource's description) as a file name: ASCII
/// letters, digits, `.`, `_` and `-` only (anything else becomes `-`, so
/// no path and no control character), at most 120 characters.
pub fn file_name(text: &str) -> String {
    text.chars()
        .take(120)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A member's message as a CAP 1.2 alert of its origin org: what every
/// alert needs, and the message in its one `info` block.
#[derive(Debug, Clone)]
pub struct AsAlert<'a> {
    /// Unique per sender: e.g. `police.example-flood-17`.
    pub identifier: &'a str,
    /// The origin org.
    pub sender: &'a str,
    pub sent_unix_ms: u64,
    pub exercise: bool,
    /// The incident's name (the alert's `event`).
    pub incident: &'a str,
    /// The incident's channel the message is in, `home/name` (named in the
    /// alert's `restriction`: who may see it).
    pub channel: &'a str,
    /// `author@org`.
    pub author: &'a str,
    pub text: &'a str,
    /// FLASH: Immediate; URGENT: Expected; else Unknown.
    pub urgency: v1dot2::Urgency,
}

/// The fixed frame every message-made alert starts from (no data of any
/// message in it): the typed alert is filled in field by field, and
/// `oasiscap` writes and escapes it.
const FRAME: &str = r#"<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
<identifier>x</identifier><sender>x</sender><sent>2000-01-01T00:00:00+00:00</sent>
<status>Actual</status><msgType>Alert</msgType><scope>Restricted</scope>
<restriction>x</restriction>
<info><category>Other</category><event>x</event><urgency>Unknown</urgency>
<severity>Unknown</severity><certainty>Unknown</certainty></info></alert>"#;

/// The alert a message makes (see [`AsAlert`]), as XML.
pub fn message_alert(m: &AsAlert<'_>) -> Result<String, CapError> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| CapError::Invalid(format!("{what}: {e}"));
    let mut alert: v1dot2::Alert = FRAME.parse().map_err(|e| invalid("frame", &e))?;
    alert.identifier =
        oasiscap::id::Id::new(m.identifier).map_err(|e| invalid("identifier", &e))?;
    alert.sender = oasiscap::id::Id::new(m.sender).map_err(|e| invalid("sender", &e))?;
    let sent = crate::model::rfc3339_ms(m.sent_unix_ms);
    alert.sent = sent.parse().map_err(|e| invalid("sent", &e))?;
    alert.status = if m.exercise {
        v1dot2::Status::Exercise
    } else {
        v1dot2::Status::Actual
    };
    alert.restriction = Some(format!(
        "the agencies of incident {} (its channel {})",
        m.incident, m.channel
    ));
    if m.exercise {
        alert.note = Some(format!("exercise {}", m.incident));
    }
    let info = alert
        .info
        .first_mut()
        .ok_or_else(|| CapError::Invalid("frame without info".into()))?;
    info.event = m.incident.to_owned();
    info.urgency = m.urgency;
    info.sender_name = Some(m.author.to_owned());
    let headline: String = m.text.chars().take(80).collect();
    info.headline = Some(headline);
    info.description = Some(m.text.to_owned());
    Ok(write(alert))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/cap-samples");

    #[test]
    fn a_message_makes_an_alert_that_reads_back_with_its_words_escaped() {
        let m = AsAlert {
            identifier: "police.example-flood-17",
            sender: "police.example",
            sent_unix_ms: 1_764_576_000_000,
            exercise: true,
            incident: "flood",
            channel: "police.example/flood",
            author: "alice@police.example",
            text: "Road 73 <closed> & detour via road 12",
            urgency: v1dot2::Urgency::Immediate,
        };
        let xml = message_alert(&m).unwrap();
        assert!(xml.contains("&lt;closed&gt; &amp; detour"), "{xml}");
        let back = parse(&xml).unwrap();
        assert_eq!(back.identifier.as_str(), "police.example-flood-17");
        assert_eq!(status_word(&back.status), "Exercise");
        assert_eq!(
            back.info[0].description.as_deref(),
            Some("Road 73 <closed> & detour via road 12")
        );
    }

    /// The samples are kept here byte for byte as the shared set holds
    /// them: where that set is at hand, any difference fails.
    #[test]
    fn the_samples_here_are_the_shared_ones_unedited() {
        let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/cap-samples");
        let Ok(entries) = std::fs::read_dir(shared) else {
            return; // a clone without the shared set beside it
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let here = std::fs::read(format!("{SAMPLES}/{name}"))
                .unwrap_or_else(|_| panic!("{name} is missing from {SAMPLES}"));
            assert!(
                here == std::fs::read(&path).unwrap(),
                "{name} differs from {shared}"
            );
        }
    }

    fn sample(name: &str) -> String {
        std::fs::read_to_string(format!("{SAMPLES}/{name}")).unwrap()
    }

    #[test]
    fn bad_alerts_are_refused_saying_what_is_wrong() {
        let adot1 = sample("v1dot2_appendix_adot1.xml");
        assert_eq!(
            parse("<html><body>hi</body></html>").unwrap_err(),
            CapError::NotCap
        );
        let old = adot1.replace(
            "urn:oasis:names:tc:emergency:cap:1.2",
            "urn:oasis:names:tc:emergency:cap:1.1",
        );
        assert_eq!(
            parse(&old).unwrap_err(),
            CapError::OldVersion { version: "1.1" }
        );
        let zulu = adot1.replace("2003-04-02T14:39:01-05:00", "2003-04-02T19:39:01Z");
        assert_ne!(zulu, adot1);
        let e = parse(&zulu).unwrap_err().to_string();
        assert!(
            e.contains("element <sent>: \"2003-04-02T19:39:01Z\" is not a CAP date"),
            "§3.3.2: no Z: {e}"
        );
        let undated = adot1.replace("2003-04-02T14:39:01-05:00", "2003-04-02 14:39");
        assert_ne!(undated, adot1);
        let e = parse(&undated).unwrap_err().to_string();
        assert!(
            e.contains("element <sent>: \"2003-04-02 14:39\" is not a CAP date"),
            "{e}"
        );
        let huge = format!("{adot1}{}", " ".repeat(10 << 20));
        assert!(matches!(parse(&huge), Err(CapError::TooLarge { .. })));
        let no_status = adot1.replace("<status>Actual</status>", "");
        let e = parse(&no_status).unwrap_err().to_string();
        assert!(e.contains("missing element <status>"), "{e}");
        let unreal = adot1.replace("<status>Actual</status>", "<status>Real</status>");
        let e = parse(&unreal).unwrap_err().to_string();
        assert!(
            e.contains("element <status>: \"Real\" is not one of Actual"),
            "{e}"
        );
        let cap10 = adot1.replace(CAP_1_2, "http://www.incident.com/cap/1.0");
        assert_eq!(
            parse(&cap10).unwrap_err(),
            CapError::OldVersion { version: "1.0" }
        );
        let invented = adot1.replace(CAP_1_2, "urn:oasis:names:tc:emergency:cap:9.9");
        assert_eq!(parse(&invented).unwrap_err(), CapError::NotCap);
        let storm = sample("v1dot2_appendix_adot2.xml");
        let open = storm.replace(
            "38.47,-120.14 38.34,-119.95 38.52,-119.74 38.62,-119.89 38.47,-120.14",
            "38.47,-120.14 38.34,-119.95 38.52,-119.74 38.62,-119.89 38.60,-120.0",
        );
        assert_ne!(open, storm);
        let e = parse(&open).unwrap_err().to_string();
        assert!(
            e.contains("element <polygon>: not closed: its last point 38.60,-120.0 is not its first point 38.47,-120.14"),
            "{e}"
        );
        let broken = adot1.replace("</info>", "");
        let e = parse(&broken).unwrap_err().to_string();
        assert!(e.contains("not well-formed XML"), "{e}");
        // In the schema's order (cap12.xsd): <references> after <scope>.
        let cancel = adot1.replace(
            "<scope>Public</scope>",
            "<scope>Public</scope><references>a,b,2003-04-02T14:39:01-05:00</references>",
        );
        assert!(parse(&cancel).is_ok(), "{:?}", parse(&cancel));
        let early = adot1.replace(
            "<scope>Public</scope>",
            "<references>a,b,2003-04-02T14:39:01-05:00</references><scope>Public</scope>",
        );
        let e = parse(&early).unwrap_err().to_string();
        assert!(
            e.contains(
                "element <scope> is out of place in <alert>: CAP 1.2 puts it before <references>"
            ),
            "{e}"
        );
        let twice = adot1.replace(
            "<scope>Public</scope>",
            "<scope>Public</scope><scope>Public</scope>",
        );
        let e = parse(&twice).unwrap_err().to_string();
        assert!(e.contains("<scope>"), "{e}");
        let stray = adot1.replace(
            "<scope>Public</scope>",
            "<scope>Public</scope><colour>red</colour>",
        );
        let e = parse(&stray).unwrap_err().to_string();
        assert!(e.contains("<colour>"), "{e}");
    }

    #[test]
    fn long_words_of_an_alert_are_cut_at_a_characters_edge() {
        let storm = sample("v1dot2_appendix_adot2.xml");
        let long = storm.replace(
            "<event>SEVERE THUNDERSTORM</event>",
            &format!("<event>x{}</event>", "Å".repeat(1500)),
        );
        assert_ne!(long, storm);
        for body in entries(&parse(&long).unwrap()) {
            crate::rules::picture::check_entry(&body).unwrap();
        }
    }

    #[test]
    fn file_names_keep_to_plain_characters_and_a_bounded_length() {
        assert_eq!(file_name("../etc/passwd"), "..-etc-passwd");
        assert_eq!(file_name("Räddning\u{1b}[2J"), "R-ddning--2J");
        // Many characters of several bytes each: cut by character, never
        // inside one.
        assert_eq!(file_name(&"Å".repeat(300)).len(), 120);
    }

    #[test]
    fn statuses_go_only_into_incidents_they_fit() {
        assert!(check_status(&v1dot2::Status::Actual, false).is_ok());
        assert!(check_status(&v1dot2::Status::Exercise, true).is_ok());
        assert!(check_status(&v1dot2::Status::Exercise, false).is_err());
        assert!(check_status(&v1dot2::Status::Actual, true).is_err());
        assert!(check_status(&v1dot2::Status::Draft, true).is_err());
    }

    #[test]
    fn the_samples_read_and_their_areas_become_entries_that_pass_the_picture_checks() {
        let mut read = 0;
        for entry in std::fs::read_dir(SAMPLES).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "xml") {
                continue;
            }
            let xml = std::fs::read_to_string(&path).unwrap();
            let alert = parse(&xml).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for body in entries(&alert) {
                crate::rules::picture::check_entry(&body)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            // Written again, it reads back as the same alert.
            let again = parse(&write(alert.clone())).unwrap();
            assert_eq!(again, alert, "{}", path.display());
            read += 1;
        }
        assert_eq!(read, 7, "every sample alert");
    }
}
