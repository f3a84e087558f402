//! `samband incident open|close|list|show` and `samband picture
//! show|set|remove`: incidents shared with partner agencies, and their
//! situational picture.

use std::collections::HashMap;

use clap::Args;
use samband::proto::{self, incidents_client::IncidentsClient};
use tonic::transport::Channel;

use super::connection::rpc;
use super::{Connection, output};

async fn client(conn: &Connection) -> anyhow::Result<IncidentsClient<Channel>> {
    Ok(IncidentsClient::new(conn.channel().await?))
}

#[derive(Debug, Args)]
pub(crate) struct OpenArgs {
    /// Incident name: 1-63 of a-z 0-9 . _ -
    name: String,
    /// Partner agencies to work it with (each a configured peer).
    #[arg(long = "with", required = true, num_args = 1..)]
    with: Vec<String>,
    /// An exercise: every message, file, acknowledgement and picture entry
    /// in it is marked EXERCISE, everywhere.
    #[arg(long)]
    exercise: bool,
    /// When it ends by itself, on every participant: a time
    /// (`2026-12-01T18:00:00Z`) or a duration from now (`8h`, `3days`).
    #[arg(long)]
    until: Option<String>,
    /// A channel of the incident, new (repeat for more, at most 8; the
    /// first carries the picture). Default: one named after the incident.
    #[arg(long = "channel", value_name = "NAME")]
    channels: Vec<String>,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct NameArgs {
    /// The incident: `name` (this org's) or `home/name`.
    incident: String,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct ShowPictureArgs {
    /// The incident: `name` (this org's) or `home/name`.
    incident: String,
    /// Print a GeoJSON FeatureCollection (RFC 7946) of the entries that
    /// have a geometry, with owner, key, kind, status, author and time in
    /// each feature's properties.
    #[arg(long, conflicts_with = "json")]
    geojson: bool,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct SetArgs {
    /// The incident: `name` (this org's) or `home/name`.
    incident: String,
    /// The entry's key among this org's entries (1-128 bytes), e.g. `unit-12`.
    key: String,
    /// What it is: unit, resource, hazard, area, road-closure, shelter,
    /// casualties, note, or another word (a-z, 0-9, -).
    #[arg(long)]
    kind: String,
    /// Its status, e.g. `en route`, `closed`, `full`.
    #[arg(long, default_value = "")]
    status: String,
    /// Where it is: WGS84 latitude,longitude in degrees (`59.33,18.07`).
    #[arg(long, conflicts_with = "geojson", value_name = "LAT,LON")]
    point: Option<String>,
    /// Where it is: a file holding a GeoJSON geometry (Point, LineString,
    /// Polygon, …; RFC 7946, [longitude, latitude]).
    #[arg(long, value_name = "FILE")]
    geojson: Option<std::path::PathBuf>,
    /// A free field, NAME=VALUE (repeat for more), e.g. `--field beds=12`.
    #[arg(long = "field", value_name = "NAME=VALUE")]
    fields: Vec<String>,
    /// Whose entry: this org's (the default). Another org's is refused:
    /// only its owner changes it; comment in the incident's channel.
    #[arg(long, default_value = "")]
    owner: String,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct RemoveArgs {
    /// The incident: `name` (this org's) or `home/name`.
    incident: String,
    /// The key of this org's entry to remove.
    key: String,
    /// Whose entry: this org's (the default). Another org's is refused:
    /// only its owner changes it; comment in the incident's channel.
    #[arg(long, default_value = "")]
    owner: String,
    #[command(flatten)]
    conn: Connection,
}

/// `--until`: a time (RFC 3339, with `Z` or an offset) or a duration from
/// now; Unix ms.
fn until(given: &str) -> anyhow::Result<u64> {
    let format = &time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(given, format) {
        return u64::try_from(t.unix_timestamp_nanos() / 1_000_000)
            .map_err(|_| anyhow::anyhow!("--until {given} lies before 1970"));
    }
    let d = humantime::parse_duration(given).map_err(|_| {
        anyhow::anyhow!(
            "--until {given:?} is neither a time (2026-12-01T18:00:00Z, or with an offset: \
             2026-12-01T18:00:00+01:00) nor a duration (8h, 3days)"
        )
    })?;
    u64::try_from(d.as_millis())
        .ok()
        .and_then(|ms| samband::model::unix_ms().checked_add(ms))
        .ok_or_else(|| anyhow::anyhow!("--until {given:?} lies too far ahead"))
}

pub(crate) async fn open(args: OpenArgs) -> anyhow::Result<()> {
    let until_unix_ms = args.until.as_deref().map(until).transpose()?.unwrap_or(0);
    let req = proto::OpenIncidentRequest {
        name: args.name,
        with: args.with,
        exercise: args.exercise,
        until_unix_ms,
        channels: args.channels,
    };
    let info = client(&args.conn)
        .await?
        .open_incident(req)
        .await
        .map_err(rpc)?
        .into_inner();
    if args.conn.json {
        out!("{}", output::incident(&info, true));
    } else {
        out!("opened {}", output::incident(&info, false));
        let channels: Vec<&str> = info.channels.iter().map(|c| c.id.as_str()).collect();
        out!(
            "post in {} with samband post CHANNEL TEXT; map with samband picture set {} KEY",
            channels.join(", "),
            info.name
        );
    }
    Ok(())
}

pub(crate) async fn close(args: NameArgs) -> anyhow::Result<()> {
    let req = proto::CloseIncidentRequest {
        incident: args.incident,
    };
    let info = client(&args.conn)
        .await?
        .close_incident(req)
        .await
        .map_err(rpc)?
        .into_inner();
    if args.conn.json {
        out!("{}", output::incident(&info, true));
    } else {
        out!("closed {}", output::incident(&info, false));
        out!("every participant's copy is now read-only, with everything received kept");
    }
    Ok(())
}

pub(crate) async fn list(args: ListArgs) -> anyhow::Result<()> {
    let list = client(&args.conn)
        .await?
        .list_incidents(proto::ListIncidentsRequest {})
        .await
        .map_err(rpc)?
        .into_inner();
    if list.incidents.is_empty() && !args.conn.json {
        out!("no incidents (an admin opens one with: samband incident open NAME --with ORG)");
    }
    for i in &list.incidents {
        out!("{}", output::incident(i, args.conn.json));
    }
    Ok(())
}

pub(crate) async fn show(args: NameArgs) -> anyhow::Result<()> {
    let mut c = client(&args.conn).await?;
    let list = c
        .list_incidents(proto::ListIncidentsRequest {})
        .await
        .map_err(rpc)?
        .into_inner();
    // By home/name, by name, or by one of its channels (home/name, name).
    let given = args.incident.as_str();
    let exact = list
        .incidents
        .iter()
        .find(|i| i.id == given || i.channels.iter().any(|c| c.id == given));
    let channel_named = |i: &proto::IncidentInfo| {
        i.channels
            .iter()
            .any(|c| c.id.split_once('/').is_some_and(|(_, name)| name == given))
    };
    let mut named: Vec<&proto::IncidentInfo> =
        list.incidents.iter().filter(|i| i.name == given).collect();
    if named.is_empty() {
        named = list.incidents.iter().filter(|i| channel_named(i)).collect();
    }
    let info = match (exact, named.as_slice()) {
        (Some(info), _) => info,
        (None, [info]) => *info,
        (None, []) => anyhow::bail!(
            "not found: no incident {} on this node (samband incident list shows them)",
            args.incident
        ),
        (None, several) => anyhow::bail!(
            "several incidents are named {}: {}; give it as home/name",
            args.incident,
            several
                .iter()
                .map(|i| i.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let picture = c
        .picture(proto::PictureRequest {
            incident: info.id.clone(),
        })
        .await;
    // Its first channel carries the picture: a partner shows the rest
    // while that one is not offered (or accepted) yet.
    let picture = match picture {
        Ok(p) => Ok(p.into_inner()),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => Err(s.message().to_owned()),
        Err(s) => return Err(rpc(s)),
    };
    if args.conn.json {
        let mut shown: serde_json::Value = serde_json::from_str(&output::incident(info, true))?;
        if let Ok(picture) = &picture {
            let entries: Vec<serde_json::Value> = picture
                .entries
                .iter()
                .filter_map(|e| serde_json::from_str(&output::entry(e, true)).ok())
                .collect();
            shown["picture"] = serde_json::Value::Array(entries);
        }
        out!("{shown}");
        return Ok(());
    }
    out!("{}", output::incident(info, false));
    out!("channels:");
    for c in &info.channels {
        out!("  {:<40} {}", output::printable(&c.id), c.state);
    }
    match picture {
        Ok(picture) => {
            match picture.entries.len() {
                1 => out!("picture: 1 entry"),
                n => out!("picture: {n} entries"),
            }
            for e in &picture.entries {
                out!("  {}", output::entry(e, false));
            }
        }
        Err(why) => out!("picture: {why}"),
    }
    Ok(())
}

/// The picture as a GeoJSON FeatureCollection (RFC 7946): each entry with
/// a geometry is a Feature.
fn feature_collection(entries: &[proto::PictureEntry]) -> geojson::FeatureCollection {
    let features = entries
        .iter()
        .filter_map(|e| {
            // Only the geometry itself (RFC 7946: no `crs`, no bbox of ours).
            let geometry =
                geojson::Geometry::new(e.geometry.parse::<geojson::Geometry>().ok()?.value);
            let mut properties = geojson::JsonObject::new();
            let fields: serde_json::Map<String, serde_json::Value> = e
                .fields
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
                .collect();
            for (name, value) in [
                ("owner", serde_json::Value::from(e.owner.as_str())),
                ("key", e.key.as_str().into()),
                ("kind", e.kind.as_str().into()),
                ("status", e.status.as_str().into()),
                ("author", e.author.as_str().into()),
                ("time", samband::model::rfc3339_ms(e.unix_ms).into()),
                ("exercise", e.exercise.into()),
                ("fields", fields.into()),
            ] {
                properties.insert(name.to_owned(), value);
            }
            Some(geojson::Feature {
                bbox: None,
                geometry: Some(geometry),
                id: Some(geojson::feature::Id::String(format!(
                    "{}/{}",
                    e.owner, e.key
                ))),
                properties: Some(properties),
                foreign_members: None,
            })
        })
        .collect();
    geojson::FeatureCollection {
        bbox: None,
        features,
        foreign_members: None,
    }
}

pub(crate) async fn show_picture(args: ShowPictureArgs) -> anyhow::Result<()> {
    let picture = client(&args.conn)
        .await?
        .picture(proto::PictureRequest {
            incident: args.incident.clone(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    if args.geojson {
        out!("{}", feature_collection(&picture.entries));
        return Ok(());
    }
    if picture.entries.is_empty() && !args.conn.json {
        out!(
            "the picture of {} is empty (samband picture set {} KEY --kind unit …)",
            args.incident,
            args.incident
        );
    }
    for e in &picture.entries {
        out!("{}", output::entry(e, args.conn.json));
    }
    Ok(())
}

/// `--point LAT,LON` as a GeoJSON Point ([longitude, latitude]).
fn point(given: &str) -> anyhow::Result<String> {
    let degrees = |s: &str| s.trim().parse::<f64>().ok().filter(|d| d.is_finite());
    let parsed = given
        .split_once(',')
        .and_then(|(lat, lon)| Some((degrees(lat)?, degrees(lon)?)));
    let Some((lat, lon)) = parsed else {
        anyhow::bail!("--point {given:?}: give latitude,longitude in degrees, e.g. 59.33,18.07");
    };
    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
        anyhow::bail!(
            "--point {given:?}: latitude {lat} must lie in -90..90 and longitude {lon} in \
             -180..180 (latitude first, e.g. 59.33,18.07)"
        );
    }
    Ok(geojson::Geometry::new_point([lon, lat]).to_string())
}

/// A `--geojson` file's geometry: refused here when empty or larger than
/// any geometry the node takes.
fn geometry_file(file: &std::path::Path) -> anyhow::Result<String> {
    let most = samband::rules::picture::MAX_GEOMETRY_BYTES as u64;
    let size = std::fs::metadata(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?
        .len();
    if size > most {
        anyhow::bail!(
            "{} is {size} bytes; a geometry is at most {most} bytes: simplify it",
            file.display()
        );
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    if text.trim().is_empty() {
        anyhow::bail!(
            "{} is empty: give a GeoJSON geometry, e.g. {{\"type\":\"Point\",\"coordinates\":[18.07,59.33]}}",
            file.display()
        );
    }
    Ok(text)
}

pub(crate) async fn set(args: SetArgs) -> anyhow::Result<()> {
    let geometry = match (&args.point, &args.geojson) {
        (Some(p), _) => point(p)?,
        (None, Some(file)) => geometry_file(file)?,
        (None, None) => String::new(),
    };
    let mut fields = HashMap::new();
    for f in &args.fields {
        let Some((name, value)) = f.split_once('=') else {
            anyhow::bail!("--field {f:?}: give NAME=VALUE, e.g. --field beds=12");
        };
        fields.insert(name.to_owned(), value.to_owned());
    }
    let req = proto::SetEntryRequest {
        incident: args.incident,
        key: args.key,
        kind: args.kind,
        status: args.status,
        geometry,
        fields,
        owner: args.owner,
    };
    let entry = client(&args.conn)
        .await?
        .set_entry(req)
        .await
        .map_err(rpc)?
        .into_inner();
    out!("{}", output::entry(&entry, args.conn.json));
    Ok(())
}

pub(crate) async fn remove(args: RemoveArgs) -> anyhow::Result<()> {
    let req = proto::RemoveEntryRequest {
        incident: args.incident,
        key: args.key,
        owner: args.owner,
    };
    let entry = client(&args.conn)
        .await?
        .remove_entry(req)
        .await
        .map_err(rpc)?
        .into_inner();
    out!("{}", output::entry(&entry, args.conn.json));
    Ok(())
}

#[derive(Debug, Args)]
pub(crate) struct CapImportArgs {
    /// The CAP 1.2 alert (an XML file; `-` reads standard input).
    file: std::path::PathBuf,
    /// The incident it goes into: `name` (this org's) or `home/name`.
    #[arg(long)]
    incident: String,
    #[command(flatten)]
    conn: Connection,
}

#[derive(Debug, Args)]
pub(crate) struct CapExportArgs {
    /// The incident: `name` (this org's) or `home/name`.
    incident: String,
    /// Directory to write the alerts to, one `IDENTIFIER.xml` each, and
    /// `index.atom`, an Atom feed (RFC 4287) linking to them (created if
    /// missing).
    #[arg(long, value_name = "DIR")]
    out: std::path::PathBuf,
    #[command(flatten)]
    conn: Connection,
}

pub(crate) async fn cap_import(args: CapImportArgs) -> anyhow::Result<()> {
    use std::io::Read as _;
    let max = samband::cap::MAX_ALERT_BYTES;
    // One byte past the limit at most: a larger file is refused here,
    // saying so, instead of by the transport.
    let mut bytes = Vec::new();
    let read = if args.file.as_os_str() == "-" {
        std::io::stdin()
            .take(max as u64 + 1)
            .read_to_end(&mut bytes)
    } else {
        std::fs::File::open(&args.file).and_then(|f| f.take(max as u64 + 1).read_to_end(&mut bytes))
    };
    let file = args.file.display();
    read.map_err(|e| anyhow::anyhow!("cannot read {file}: {e}"))?;
    if bytes.len() > max {
        anyhow::bail!(
            "{file} is larger than {max} bytes, the most an alert may be (embedded resources \
             included): post large resources as files with samband post --file"
        );
    }
    let alert = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("{file} is not UTF-8 text, as CAP XML is: {e}"))?;
    let req = proto::ImportCapRequest {
        incident: args.incident.clone(),
        alert,
    };
    let done = client(&args.conn)
        .await?
        .import_cap(req)
        .await
        .map_err(rpc)?
        .into_inner();
    if args.conn.json {
        out!(
            "{}",
            serde_json::json!({
                "cursor": done.cursor, "channel": done.channel, "entries": done.entries,
                "removed": done.removed, "attachments": done.attachments,
            })
        );
        return Ok(());
    }
    let entries = match done.entries.len() {
        1 => "1 picture entry".to_owned(),
        n => format!("{n} picture entries"),
    };
    out!(
        "imported into {}: {entries} set, {} removed; the alert kept as a file, with {} embedded resources as files",
        args.incident,
        done.removed.len(),
        done.attachments.len()
    );
    out!(
        "where it is: samband receipts {} {}{}",
        done.channel,
        done.cursor,
        args.conn.flags()
    );
    Ok(())
}

pub(crate) async fn cap_export(args: CapExportArgs) -> anyhow::Result<()> {
    let req = proto::ExportCapRequest {
        incident: args.incident.clone(),
    };
    let done = client(&args.conn)
        .await?
        .export_cap(req)
        .await
        .map_err(rpc)?
        .into_inner();
    std::fs::create_dir_all(&args.out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", args.out.display()))?;
    let mut files = Vec::new();
    for alert in &done.alerts {
        // Sender and identifier: what makes an alert unique (CAP 1.2 §3.2.1).
        let name = samband::cap::file_name(&format!("{}-{}", alert.sender, alert.identifier));
        let file = format!("{name}.xml");
        let path = args.out.join(&file);
        std::fs::write(&path, &alert.xml)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        if args.conn.json {
            out!(
                "{}",
                serde_json::json!({"identifier": alert.identifier, "file": path, "imported": alert.imported})
            );
        }
        files.push((file, alert));
    }
    let feed = atom_index(&done.incident, &files)?;
    let index = args.out.join("index.atom");
    std::fs::write(&index, feed)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", index.display()))?;
    if !args.conn.json {
        let alerts = match done.alerts.len() {
            1 => "1 CAP 1.2 alert".to_owned(),
            n => format!("{n} CAP 1.2 alerts"),
        };
        out!(
            "wrote {alerts} of {} to {}, listed in {}",
            done.incident,
            args.out.display(),
            index.display()
        );
    }
    Ok(())
}

/// An Atom feed (RFC 4287) of the exported alerts: one entry per alert,
/// its content the alert's file (`src`, relative), as CAP feeds publish
/// alerts.
fn atom_index(incident: &str, files: &[(String, &proto::ExportedAlert)]) -> anyhow::Result<String> {
    use atom_syndication::{Content, Entry, Feed, FixedDateTime, Link, Person, Text};
    let id = |what: &str| {
        format!(
            "urn:samband:{}",
            percent_encoding::utf8_percent_encode(what, percent_encoding::NON_ALPHANUMERIC)
        )
    };
    let mut entries = Vec::new();
    let mut newest: Option<FixedDateTime> = None;
    for (file, alert) in files {
        let read = samband::cap::parse(&alert.xml)?;
        let updated = FixedDateTime::parse_from_rfc3339(&read.sent.to_string())?;
        newest = newest.max(Some(updated));
        let info = read.info.first();
        let title = info
            .and_then(|i| i.headline.clone())
            .or_else(|| info.map(|i| i.event.clone()))
            .unwrap_or_else(|| alert.identifier.clone());
        // RFC 4287 §4.1.1.1: an entry whose content is elsewhere (`src`)
        // has a summary.
        let summary = info
            .and_then(|i| i.description.clone())
            .unwrap_or_else(|| title.clone());
        entries.push(Entry {
            title: Text::plain(title),
            id: id(&format!("cap:{},{}", read.sender, read.identifier)),
            updated,
            links: vec![Link {
                href: file.clone(),
                rel: "alternate".into(),
                mime_type: Some("application/xml".into()),
                ..Default::default()
            }],
            content: Some(Content {
                src: Some(file.clone()),
                content_type: Some("application/xml".into()),
                ..Default::default()
            }),
            summary: Some(Text::plain(summary)),
            authors: vec![Person {
                name: read.sender.to_string(),
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    let feed = Feed {
        title: Text::plain(format!("CAP alerts of incident {incident}")),
        authors: vec![Person {
            name: incident.split('/').next().unwrap_or(incident).to_owned(),
            ..Default::default()
        }],
        id: id(&format!("incident:{incident}")),
        updated: newest.unwrap_or_default(),
        entries,
        ..Default::default()
    };
    Ok(feed.to_string())
}
