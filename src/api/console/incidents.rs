//! The incident page: its state, participants and EXERCISE marking, and
//! its situational picture as a list and as a plot drawn from the entries'
//! geometry alone (an SVG of the coordinates: no map tiles, nothing from
//! outside). The page's script redraws the picture when the channel's
//! live stream brings an entry. An admin of the incident's home closes it
//! here, as `samband incident close` does.

use axum::extract::{Form, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::{
    Caller, Console, Refusal, channel_path, existing, from_own_page, operator, page, secured,
};
use crate::audit::Actor;
use crate::model::Role;
use crate::rules::picture::Stated;

/// The plot's size, in SVG user units.
const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 420.0;
const MARGIN: f64 = 24.0;

/// Colours per owner, in the order owners are listed.
const COLOURS: [&str; 6] = [
    "#1d3557", "#c1121f", "#2a9d8f", "#e76f51", "#6a4c93", "#8d6e00",
];

pub(super) fn incident_path(id: &crate::model::ChannelId) -> String {
    format!("/i/{id}")
}

/// Every [longitude, latitude] of a geometry.
fn positions(g: &geojson::GeometryValue, out: &mut Vec<(f64, f64)>) {
    use geojson::GeometryValue as V;
    let mut add = |p: &geojson::Position| {
        let c = p.as_slice();
        if c.len() >= 2 {
            out.push((c[0], c[1]));
        }
    };
    match g {
        V::Point { coordinates } => add(coordinates),
        V::MultiPoint { coordinates } | V::LineString { coordinates } => {
            coordinates.iter().for_each(add)
        }
        V::MultiLineString { coordinates } | V::Polygon { coordinates } => {
            coordinates.iter().flatten().for_each(add)
        }
        V::MultiPolygon { coordinates } => coordinates.iter().flatten().flatten().for_each(add),
        V::GeometryCollection { geometries } => {
            for g in geometries {
                positions(&g.value, out);
            }
        }
    }
}

/// Maps longitude/latitude into the plot (equirectangular, north up, the
/// longitude scaled by the cosine of the middle latitude so shapes keep
/// their proportions).
struct Frame {
    west: f64,
    north: f64,
    scale_x: f64,
    scale_y: f64,
    /// Where the drawing starts, px from the left and top.
    left: f64,
    top: f64,
}

impl Frame {
    fn around(all: &[(f64, f64)]) -> Self {
        let (mut west, mut east, mut south, mut north) = (180.0f64, -180.0f64, 90.0f64, -90.0f64);
        for &(lon, lat) in all {
            west = west.min(lon);
            east = east.max(lon);
            south = south.min(lat);
            north = north.max(lat);
        }
        let squeeze = ((south + north) / 2.0).to_radians().cos().max(0.01);
        let span_x = ((east - west) * squeeze).max(1e-4);
        let span_y = (north - south).max(1e-4);
        let scale = ((WIDTH - 2.0 * MARGIN) / span_x).min((HEIGHT - 2.0 * MARGIN) / span_y);
        // What the entries cover, centred (a single point in the middle,
        // not in a corner).
        let (drawn_x, drawn_y) = (
            ((east - west) * squeeze * scale).max(0.0),
            ((north - south) * scale).max(0.0),
        );
        Self {
            west,
            north,
            scale_x: scale * squeeze,
            scale_y: scale,
            left: MARGIN + ((WIDTH - 2.0 * MARGIN) - drawn_x).max(0.0) / 2.0,
            top: MARGIN + ((HEIGHT - 2.0 * MARGIN) - drawn_y).max(0.0) / 2.0,
        }
    }

    fn xy(&self, (lon, lat): (f64, f64)) -> (f64, f64) {
        (
            self.left + (lon - self.west) * self.scale_x,
            self.top + (self.north - lat) * self.scale_y,
        )
    }

    fn points(&self, ring: &[geojson::Position]) -> String {
        ring.iter()
            .filter(|p| p.len() >= 2)
            .map(|p| {
                let (x, y) = self.xy((p[0], p[1]));
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// An entry's key written at `at` (a line's or ring's first position).
fn name_at(frame: &Frame, at: Option<&geojson::Position>, label: &str) -> Markup {
    html! {
        @if let Some(p) = at.filter(|p| p.len() >= 2) {
            @let (x, y) = frame.xy((p[0], p[1]));
            text x=(format!("{:.1}", x + 4.0)) y=(format!("{:.1}", y - 4.0)) font-size="11" { (label) }
        }
    }
}

/// One entry's shapes in the plot.
fn shapes(frame: &Frame, g: &geojson::GeometryValue, colour: &str, label: &str) -> Markup {
    use geojson::GeometryValue as V;
    let dot = |p: &geojson::Position| {
        let (x, y) = frame.xy((p[0], p[1]));
        html! {
            circle cx=(format!("{x:.1}")) cy=(format!("{y:.1}")) r="5" fill=(colour) {}
            text x=(format!("{:.1}", x + 7.0)) y=(format!("{:.1}", y + 4.0)) font-size="11" { (label) }
        }
    };
    html! {
        @match g {
            V::Point { coordinates } => (dot(coordinates)),
            V::MultiPoint { coordinates } => { @for p in coordinates { (dot(p)) } },
            V::LineString { coordinates } => {
                polyline points=(frame.points(coordinates)) fill="none" stroke=(colour) stroke-width="3" {}
                (name_at(frame, coordinates.first(), label))
            },
            V::MultiLineString { coordinates } => {
                @for l in coordinates {
                    polyline points=(frame.points(l)) fill="none" stroke=(colour) stroke-width="3" {}
                }
            },
            V::Polygon { coordinates } => {
                @for ring in coordinates {
                    polygon points=(frame.points(ring)) fill=(colour) fill-opacity="0.25" stroke=(colour) stroke-width="2" {}
                }
                (name_at(frame, coordinates.first().and_then(|r| r.first()), label))
            },
            V::MultiPolygon { coordinates } => {
                @for ring in coordinates.iter().flatten() {
                    polygon points=(frame.points(ring)) fill=(colour) fill-opacity="0.25" stroke=(colour) stroke-width="2" {}
                }
            },
            V::GeometryCollection { geometries } => {
                @for g in geometries { (shapes(frame, &g.value, colour, label)) }
            },
        }
    }
}

/// The picture: the plot of every entry with a geometry, and the list.
fn picture(entries: &[&Stated], exercise: bool) -> Markup {
    let mut owners: Vec<&str> = entries.iter().map(|s| s.owner.as_str()).collect();
    owners.dedup();
    let colour = |owner: &str| {
        let i = owners.iter().position(|o| *o == owner).unwrap_or(0);
        COLOURS[i % COLOURS.len()]
    };
    let mapped: Vec<(&Stated, geojson::Geometry)> = entries
        .iter()
        .filter_map(|s| Some((*s, s.body.geometry.parse::<geojson::Geometry>().ok()?)))
        .collect();
    let mut all = Vec::new();
    for (_, g) in &mapped {
        positions(&g.value, &mut all);
    }
    let frame = Frame::around(&all);
    html! {
        @if !mapped.is_empty() {
            svg #plot viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img"
                aria-label="Plot of the picture's entries by their coordinates" {
                rect width=(WIDTH) height=(HEIGHT) fill="#f4f6f8" {}
                @for (s, g) in &mapped {
                    g.entry data-key=(s.body.key) data-owner=(s.owner) {
                        (shapes(&frame, &g.value, colour(&s.owner), &s.body.key))
                    }
                }
            }
            p.legend {
                @for o in &owners {
                    svg.swatch width="12" height="12" aria-hidden="true" { rect width="12" height="12" fill=(colour(o)) {} }
                    " " (o) " "
                }
                "— positions as given (longitude, latitude); no map underneath."
            }
        }
        table #entries {
            thead { tr { th { "Owner" } th { "Entry" } th { "Kind" } th { "Status" } th { "Details" } th { "Set by" } } }
            tbody {
                @for s in entries {
                    tr data-key=(s.body.key) data-owner=(s.owner) {
                        td { (s.owner) }
                        td { @if exercise { span.flag.exercise { "EXERCISE" } " " } (s.body.key) }
                        td { (s.body.kind) }
                        td { (s.body.status) }
                        td {
                            @for (k, v) in sorted(&s.body.fields) { (k) "=" (v) br; }
                            @if !s.body.geometry.is_empty() { span.mapped { "mapped" } }
                        }
                        td { (s.author) " " (super::when(crate::model::Hlc(s.hlc).unix_ms())) }
                    }
                }
            }
        }
    }
}

/// An entry's fields by name.
fn sorted(fields: &std::collections::HashMap<String, String>) -> Vec<(&String, &String)> {
    let mut all: Vec<_> = fields.iter().collect();
    all.sort();
    all
}

/// The incident page.
pub(super) async fn incident(
    State(console): State<Console>,
    Caller(member): Caller,
    Path((home, name)): Path<(String, String)>,
) -> Result<Response, Refusal> {
    let api = &console.api;
    let id = existing(api, &home, &name)?;
    let held = crate::api::incidents::incident_of_channel(api, &id)?;
    let info = crate::api::incidents::held_info(&held, crate::model::unix_ms());
    // Its first channel carries the picture; a partner may not hold it yet.
    let carrier = held.picture_channel();
    let standing = match &carrier {
        Ok((first, _)) => Some(crate::api::incidents::picture_of(api, first)?),
        Err(_) => None,
    };
    let entries: Vec<&Stated> = standing.iter().flat_map(|p| p.standing()).collect();
    let body = html! {
        @if info.exercise {
            p.exercise-banner { "EXERCISE — everything in this incident is an exercise, not the real thing" }
        }
        h1 { "Incident " (info.name) }
        p.incident-state {
            span.state { (info.state) }
            " · opened " (super::when(info.opened_unix_ms)) " by " (info.home)
            @if info.until_unix_ms > 0 { " · ends " (super::when(info.until_unix_ms)) }
            @if info.closed_unix_ms > 0 { " · closed " (super::when(info.closed_unix_ms)) }
        }
        p { "Agencies: " (info.participants.join(", ")) }
        @if member.role == Role::Admin && info.home == api.org.as_str() && info.state == "active" {
            form.action method="post" action=(format!("{}/close", incident_path(&id)))
                data-confirm=(format!("Close incident {}? Every agency's copy of its channels becomes read-only, with what it received kept; nothing new flows.", info.name)) {
                input type="hidden" name="token" value=(console.token(&member));
                button type="submit" { "Close the incident" }
            }
        }
        @let held_here: Vec<_> = held.held().collect();
        @match held_here.as_slice() {
            [(only, _)] if info.channels.len() == 1 => {
                p { a href=(channel_path(only)) { "Messages of the incident" } }
            }
            _ => {
                h2 { "Channels of the incident" }
                ul.incident-channels {
                    @for c in &info.channels {
                        li {
                            @match crate::model::ChannelId::parse(&c.id) {
                                Ok(id) if c.state != "not held" => a href=(channel_path(&id)) { (c.id) },
                                _ => (c.id),
                            }
                            " " span.state { (c.state) }
                        }
                    }
                }
            }
        }
        h2 #picture-heading { "Situational picture (" (entries.len()) ")" }
        @match &carrier {
            Ok((first, _)) => {
                div #picture data-events=(format!("{}/events", channel_path(first))) {
                    (picture(&entries, info.exercise))
                }
            }
            Err(why) => p.read-only { (why.to_string()) }
        }
    };
    Ok(page(&format!("Incident {}", info.name), &member, body))
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct CloseForm {
    #[serde(default)]
    token: String,
}

/// Closes the incident the channel `home/name` runs, as `samband incident
/// close` does (audited as `incident.closed`); back to its page.
pub(super) async fn close(
    State(console): State<Console>,
    Caller(member): Caller,
    Path((home, name)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<CloseForm>,
) -> Result<Response, Refusal> {
    operator(&member)?;
    from_own_page(&console, &member, &headers, &form.token)?;
    let id = existing(&console.api, &home, &name)?;
    let held = crate::api::incidents::incident_of_channel(&console.api, &id)?;
    let incident = crate::api::incidents::held_info(&held, crate::model::unix_ms()).id;
    let actor = Actor::Member(member.name.to_string());
    crate::api::incidents::close(&console.api, &console.fed, actor, &incident).await?;
    Ok(secured(Redirect::to(&incident_path(&id)).into_response()))
}

#[cfg(test)]
mod tests {
    use super::{Frame, HEIGHT, MARGIN, WIDTH};

    #[test]
    fn the_plot_centres_what_it_draws_and_keeps_it_inside() {
        // One point: in the middle, not in a corner.
        let one = Frame::around(&[(18.07, 59.33)]);
        let (x, y) = one.xy((18.07, 59.33));
        assert!(
            (x - WIDTH / 2.0).abs() < 0.5 && (y - HEIGHT / 2.0).abs() < 0.5,
            "{x},{y}"
        );
        // A wide area fills the width and is centred in the height; north
        // is up.
        let area = [(18.0, 59.3), (18.4, 59.3), (18.4, 59.35), (18.0, 59.35)];
        let frame = Frame::around(&area);
        let (west, north) = frame.xy((18.0, 59.35));
        let (east, south) = frame.xy((18.4, 59.3));
        assert!((west - MARGIN).abs() < 0.5 && (east - (WIDTH - MARGIN)).abs() < 0.5);
        assert!(north < south, "north is up");
        assert!(
            ((north - MARGIN) - (HEIGHT - MARGIN - south)).abs() < 0.5,
            "centred"
        );
    }
}
