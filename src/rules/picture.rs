//! The situational picture (lägesbild) of an incident: what one entry may
//! hold, and the merge every participant computes.
//!
//! An entry is a `KIND_PICTURE` envelope of its owner (the origin), so only
//! the owner's signature can set or remove it. Of the entries with the same
//! (owner, key), the one with the highest hlc stands, a removal included.
//! The merge ([`Picture::fold`]) depends only on the set of envelopes, never
//! on the order they arrived in, so every participant that holds the same
//! envelopes shows the same picture.
//!
//! Geometry is a GeoJSON geometry (RFC 7946): WGS84, each position
//! `[longitude, latitude]` (optionally an altitude), longitude within
//! ±180 and latitude within ±90; a line of at least two positions; each
//! polygon ring closed (its last position is its first) with at least four.

use std::collections::BTreeMap;

use prost::Message as _;

use super::Reject;
use crate::proto::{Envelope, Kind, PictureBody};

/// Longest entry key, in bytes.
pub const MAX_KEY_BYTES: usize = 128;
/// Most free fields of one entry.
pub const MAX_FIELDS: usize = 64;
/// Longest field name and status, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest field value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024;
/// Largest geometry, in bytes of GeoJSON text.
pub const MAX_GEOMETRY_BYTES: usize = 256 << 10;

/// Checks an entry's body: a key of 1–[`MAX_KEY_BYTES`] printable bytes,
/// a kind that is one word (`[a-z0-9-]`, 1–32), bounded status and fields,
/// and a geometry that is valid GeoJSON in range (or none).
pub fn check_entry(body: &PictureBody) -> Result<(), String> {
    let printable = |s: &str| !s.chars().any(char::is_control);
    if body.key.is_empty() || body.key.len() > MAX_KEY_BYTES || !printable(&body.key) {
        return Err(format!(
            "an entry key is 1 to {MAX_KEY_BYTES} bytes of printable text"
        ));
    }
    let word = |s: &str| {
        (1..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !body.removed && !word(&body.kind) {
        return Err(format!(
            "kind {:?} is not one word of a-z, 0-9 and -, up to 32 (e.g. unit, road-closure, shelter)",
            body.kind
        ));
    }
    if body.status.len() > MAX_NAME_BYTES || !printable(&body.status) {
        return Err(format!(
            "a status is up to {MAX_NAME_BYTES} bytes of printable text"
        ));
    }
    if body.fields.len() > MAX_FIELDS {
        return Err(format!(
            "{} fields; an entry has at most {MAX_FIELDS}",
            body.fields.len()
        ));
    }
    for (name, value) in &body.fields {
        if name.is_empty() || name.len() > MAX_NAME_BYTES || !printable(name) {
            return Err(format!(
                "field name {name:?}: 1 to {MAX_NAME_BYTES} bytes of printable text"
            ));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(format!(
                "field {name}: a value is at most {MAX_VALUE_BYTES} bytes"
            ));
        }
    }
    if !body.geometry.is_empty() {
        check_geometry(&body.geometry)?;
    }
    Ok(())
}

/// Parses and checks a GeoJSON geometry (see the module's rules).
pub fn check_geometry(text: &str) -> Result<geojson::Geometry, String> {
    if text.len() > MAX_GEOMETRY_BYTES {
        return Err(format!(
            "a geometry of {} bytes; at most {MAX_GEOMETRY_BYTES}",
            text.len()
        ));
    }
    let geometry: geojson::Geometry = text
        .parse()
        .map_err(|e| format!("not a GeoJSON geometry: {e}"))?;
    check_value(&geometry.value)?;
    Ok(geometry)
}

fn check_position(p: &geojson::Position) -> Result<(), String> {
    let c = p.as_slice();
    if !(2..=3).contains(&c.len()) {
        return Err(format!(
            "a position has 2 or 3 numbers ([longitude, latitude]), not {}",
            c.len()
        ));
    }
    let (lon, lat) = (c[0], c[1]);
    if !(-180.0..=180.0).contains(&lon) || !lon.is_finite() {
        return Err(format!("longitude {lon} is outside -180..180"));
    }
    if !(-90.0..=90.0).contains(&lat) || !lat.is_finite() {
        return Err(format!(
            "latitude {lat} is outside -90..90 (GeoJSON gives [longitude, latitude])"
        ));
    }
    Ok(())
}

fn check_line(line: &[geojson::Position]) -> Result<(), String> {
    if line.len() < 2 {
        return Err("a line has at least 2 positions".into());
    }
    line.iter().try_for_each(check_position)
}

fn check_polygon(rings: &[Vec<geojson::Position>]) -> Result<(), String> {
    if rings.is_empty() {
        return Err("a polygon has at least one ring".into());
    }
    for ring in rings {
        if ring.len() < 4 {
            return Err(format!(
                "a polygon ring has {} positions; it needs at least 4, its first repeated \
                 as its last to close it (RFC 7946 §3.1.6)",
                ring.len()
            ));
        }
        if ring.first() != ring.last() {
            return Err(
                "a polygon ring is not closed: its last position must repeat its first".into(),
            );
        }
        ring.iter().try_for_each(check_position)?;
    }
    Ok(())
}

fn check_value(value: &geojson::GeometryValue) -> Result<(), String> {
    use geojson::GeometryValue as V;
    match value {
        V::Point { coordinates } => check_position(coordinates),
        V::MultiPoint { coordinates } => coordinates.iter().try_for_each(check_position),
        V::LineString { coordinates } => check_line(coordinates),
        V::MultiLineString { coordinates } => coordinates.iter().try_for_each(|l| check_line(l)),
        V::Polygon { coordinates } => check_polygon(coordinates),
        V::MultiPolygon { coordinates } => coordinates.iter().try_for_each(|p| check_polygon(p)),
        V::GeometryCollection { geometries } => {
            if geometries.len() > 256 {
                return Err("a geometry collection holds at most 256 geometries".into());
            }
            geometries.iter().try_for_each(|g| match g.value {
                V::GeometryCollection { .. } => {
                    Err("a geometry collection does not nest another".into())
                }
                ref v => check_value(v),
            })
        }
    }
}

/// The entry a received `KIND_PICTURE` envelope carries, checked.
pub fn check_picture_body(env: &Envelope) -> Result<PictureBody, Reject> {
    let body = PictureBody::decode(env.body.as_slice())
        .map_err(|e| Reject::Malformed(format!("picture entry: {e}")))?;
    check_entry(&body).map_err(|e| Reject::Malformed(format!("picture entry: {e}")))?;
    Ok(body)
}

/// The entry a stored envelope sets or removes, if it is one.
pub fn entry_of(env: &Envelope) -> Option<PictureBody> {
    if env.kind != Kind::Picture as i32 || env.withheld {
        return None;
    }
    PictureBody::decode(env.body.as_slice()).ok()
}

/// One stated entry: what set it (its origin, seq, hlc and author) and
/// its body.
#[derive(Debug, Clone, PartialEq)]
pub struct Stated {
    pub owner: String,
    pub seq: u64,
    pub hlc: u64,
    pub author: String,
    pub body: PictureBody,
}

/// The picture: per (owner, key), the entry that stands, removals
/// included (a removal stands until a later setting).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Picture {
    entries: BTreeMap<(String, String), Stated>,
}

impl Picture {
    /// Takes `stated` in if it is later (by hlc) than what stands for its
    /// (owner, key); whether it did.
    pub fn merge(&mut self, stated: Stated) -> bool {
        let at = (stated.owner.clone(), stated.body.key.clone());
        match self.entries.get(&at) {
            Some(held) if held.hlc >= stated.hlc => false,
            _ => {
                self.entries.insert(at, stated);
                true
            }
        }
    }

    /// The picture the statements make, in any order.
    pub fn fold(stated: impl IntoIterator<Item = Stated>) -> Self {
        let mut picture = Self::default();
        for s in stated {
            picture.merge(s);
        }
        picture
    }

    /// The entries that stand (not removed), by owner, then key.
    pub fn standing(&self) -> impl Iterator<Item = &Stated> {
        self.entries.values().filter(|s| !s.body.removed)
    }

    /// What stands for (owner, key), a removal included.
    pub fn get(&self, owner: &str, key: &str) -> Option<&Stated> {
        self.entries.get(&(owner.to_owned(), key.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(key: &str, geometry: &str) -> PictureBody {
        PictureBody {
            key: key.into(),
            kind: "road-closure".into(),
            geometry: geometry.into(),
            ..Default::default()
        }
    }

    #[test]
    fn geometry_out_of_range_or_not_closed_is_refused_with_the_reason() {
        let ok = [
            "",
            r#"{"type":"Point","coordinates":[18.07,59.33]}"#,
            r#"{"type":"LineString","coordinates":[[18.0,59.3],[18.1,59.4]]}"#,
            r#"{"type":"Polygon","coordinates":[[[18,59],[18.1,59],[18.1,59.1],[18,59]]]}"#,
        ];
        for g in ok {
            assert_eq!(check_entry(&body("r73", g)), Ok(()), "{g}");
        }
        let bad = [
            (
                r#"{"type":"Point","coordinates":[59.33,98.07]}"#,
                "latitude",
            ),
            (r#"{"type":"Point","coordinates":[181,0]}"#, "longitude"),
            (
                r#"{"type":"Polygon","coordinates":[[[18,59],[18.1,59],[18.1,59.1],[18.2,59.2]]]}"#,
                "not closed",
            ),
            (
                r#"{"type":"Polygon","coordinates":[[[18,59],[18.1,59],[18,59]]]}"#,
                "needs at least 4",
            ),
            (
                r#"{"type":"LineString","coordinates":[[18,59]]}"#,
                "2 positions",
            ),
            (
                r#"{"type":"Circle","coordinates":[18,59]}"#,
                "not a GeoJSON",
            ),
            ("not json", "not a GeoJSON"),
        ];
        for (g, why) in bad {
            let err = check_entry(&body("r73", g)).unwrap_err();
            assert!(err.contains(why), "{g}: {err}");
        }
        assert!(check_entry(&body("", "")).is_err(), "empty key");
        let mut shouting = body("r73", "");
        shouting.kind = "Road Closure".into();
        assert!(check_entry(&shouting).is_err(), "kind not a word");
    }

    #[test]
    fn the_latest_statement_of_each_owner_and_key_stands_in_any_order() {
        let s = |owner: &str, key: &str, hlc, removed| Stated {
            owner: owner.into(),
            seq: hlc,
            hlc,
            author: "a".into(),
            body: PictureBody {
                key: key.into(),
                kind: "unit".into(),
                removed,
                ..Default::default()
            },
        };
        let all = vec![
            s("police", "u1", 1, false),
            s("police", "u1", 5, true),
            s("rescue", "u1", 2, false),
            s("police", "u2", 3, false),
            s("police", "u1", 4, false),
        ];
        let forward = Picture::fold(all.clone());
        let backward = Picture::fold(all.into_iter().rev());
        assert_eq!(forward, backward);
        let standing: Vec<_> = forward
            .standing()
            .map(|s| (s.owner.as_str(), s.body.key.as_str()))
            .collect();
        assert_eq!(standing, [("police", "u2"), ("rescue", "u1")]);
        assert!(forward.get("police", "u1").unwrap().body.removed);
    }
}
