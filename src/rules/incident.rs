//! Incidents: what the home states of an incident in its roster snapshots
//! (`Roster.incident`), and what follows from it on every participant.
//!
//! An incident is opened with its name, exercise flag, opening time,
//! optional end (`until`) and channels, none of which ever changes, and is
//! closed once. A snapshot that says otherwise is refused: a home cannot
//! turn an exercise into the real thing, reopen a closed incident, move its
//! end, or give it other channels.
//!
//! An incident runs in one or more channels of its home ([`channels_of`]),
//! each of which states the whole incident in its own roster, so each
//! channel is decided on its own (exercise marking, the end); the first
//! carries the situational picture ([`carries_picture`]).
//!
//! The end is decided per message, by the message's own signed timestamp:
//! a message stamped at or after `until` is refused by every node, the
//! home's own and a late relay's alike, so every participant keeps the same
//! messages whether or not the home is up when the time passes. Closing
//! removes every participant from the roster (`RosterEdit::Remove`), whose
//! lines (`last_seq`) already say which messages stand.

use crate::model::ChannelName;
use crate::proto::{ChannelRecord, Incident};

use super::Reject;

/// Most channels an incident runs in.
pub const MAX_CHANNELS: usize = 8;

/// Where an incident stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentState {
    Active,
    /// Its home closed it.
    Closed,
    /// Its `until` time passed.
    Ended,
}

impl IncidentState {
    /// Its name in CLI output, JSON and gRPC.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Active => "active",
            IncidentState::Closed => "closed",
            IncidentState::Ended => "ended",
        }
    }
}

/// Where `incident` stands at `now_unix_ms`.
pub fn state(incident: &Incident, now_unix_ms: u64) -> IncidentState {
    if incident.closed_unix_ms > 0 {
        IncidentState::Closed
    } else if incident.until_unix_ms > 0 && now_unix_ms >= incident.until_unix_ms {
        IncidentState::Ended
    } else {
        IncidentState::Active
    }
}

/// The names of the channels `incident` runs in, in order: the first
/// carries its situational picture. An incident that names none runs in the
/// one channel named after it.
pub fn channels_of(incident: &Incident) -> Vec<&str> {
    if incident.channels.is_empty() {
        vec![incident.name.as_str()]
    } else {
        incident.channels.iter().map(String::as_str).collect()
    }
}

/// Whether the channel of `record` carries the situational picture of the
/// incident it runs (its first channel); false when it runs none.
pub fn carries_picture(record: &ChannelRecord) -> bool {
    record
        .incident
        .as_ref()
        .is_some_and(|i| channels_of(i).first() == Some(&record.name.as_str()))
}

/// Whether the channel of `record` takes no new message at `now_unix_ms`:
/// its incident is closed or ended.
pub fn is_over(record: &ChannelRecord, now_unix_ms: u64) -> bool {
    record
        .incident
        .as_ref()
        .is_some_and(|i| state(i, now_unix_ms) != IncidentState::Active)
}

/// Whether a message stamped `stamped_unix_ms` (its hlc's wall time) lies
/// at or after the end of the channel's incident: refused everywhere.
pub fn stamped_after_end(record: &ChannelRecord, stamped_unix_ms: u64) -> bool {
    record
        .incident
        .as_ref()
        .is_some_and(|i| i.until_unix_ms > 0 && stamped_unix_ms >= i.until_unix_ms)
}

/// Checks what a home states of an incident run in its channel `channel`
/// (the channel's name), on its own: the incident names this channel among
/// its channels (or, naming none, is named after it), names at most
/// [`MAX_CHANNELS`] valid channel names once each, and its times are in
/// order. What a hostile home states is shown to members and decides what
/// is refused, so nothing else is believed.
pub(super) fn check_stated(channel: &str, incident: &Incident) -> Result<(), Reject> {
    let channels = channels_of(incident);
    if !channels.contains(&channel) {
        return Err(Reject::IncidentChanged(
            "an incident that does not name the channel it is stated in",
        ));
    }
    if channels.len() > MAX_CHANNELS {
        return Err(Reject::IncidentChanged("more than 8 channels"));
    }
    if channels.iter().any(|c| ChannelName::parse(c).is_err()) {
        return Err(Reject::IncidentChanged("a channel name that is not one"));
    }
    let mut sorted = channels.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != channels.len() {
        return Err(Reject::IncidentChanged("a channel named twice"));
    }
    if incident.opened_unix_ms == 0
        || (incident.until_unix_ms > 0 && incident.until_unix_ms <= incident.opened_unix_ms)
        || (incident.closed_unix_ms > 0 && incident.closed_unix_ms < incident.opened_unix_ms)
    {
        return Err(Reject::IncidentChanged(
            "times out of order (opened, until, closed)",
        ));
    }
    Ok(())
}

/// Checks what a newer snapshot of the home states of the incident against
/// what this node holds: once stated, an incident keeps its name, exercise
/// flag, opening time and end, and its closing time once set.
pub(super) fn check_change(
    held: Option<&Incident>,
    stated: Option<&Incident>,
) -> Result<(), Reject> {
    let (held, stated) = match (held, stated) {
        (None, _) => return Ok(()),
        (Some(_), None) => {
            return Err(Reject::IncidentChanged(
                "a roster that drops the incident it stated before",
            ));
        }
        (Some(h), Some(s)) => (h, s),
    };
    if held.name != stated.name || held.opened_unix_ms != stated.opened_unix_ms {
        return Err(Reject::IncidentChanged("another name or opening time"));
    }
    if held.channels != stated.channels {
        return Err(Reject::IncidentChanged("other channels"));
    }
    if held.exercise != stated.exercise {
        return Err(Reject::IncidentChanged(
            "an exercise turned real, or the real thing into an exercise",
        ));
    }
    if held.until_unix_ms != stated.until_unix_ms {
        return Err(Reject::IncidentChanged("another end (until)"));
    }
    if held.closed_unix_ms > 0 && stated.closed_unix_ms != held.closed_unix_ms {
        return Err(Reject::IncidentChanged("a closed incident reopened"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flood() -> Incident {
        Incident {
            name: "flood".into(),
            exercise: true,
            opened_unix_ms: 1_000,
            until_unix_ms: 5_000,
            ..Default::default()
        }
    }

    #[test]
    fn an_incident_ends_at_until_or_when_closed_and_never_changes_what_it_is() {
        let open = flood();
        assert_eq!(state(&open, 4_999), IncidentState::Active);
        assert_eq!(state(&open, 5_000), IncidentState::Ended);
        let closed = Incident {
            closed_unix_ms: 2_000,
            ..flood()
        };
        assert_eq!(state(&closed, 2_500), IncidentState::Closed);
        assert_eq!(check_change(Some(&open), Some(&closed)), Ok(()));
        assert_eq!(check_change(None, Some(&open)), Ok(()));
        let real = Incident {
            exercise: false,
            ..flood()
        };
        let later = Incident {
            until_unix_ms: 9_000,
            ..flood()
        };
        let renamed = Incident {
            name: "fire".into(),
            ..flood()
        };
        let grown = Incident {
            channels: vec!["flood".into(), "flood-medical".into()],
            ..flood()
        };
        for (changed, why) in [
            (Some(&real), "exercise"),
            (Some(&later), "until"),
            (Some(&renamed), "name"),
            (Some(&grown), "channels"),
            (None, "dropped"),
        ] {
            assert!(check_change(Some(&open), changed).is_err(), "{why}");
        }
        assert!(
            check_change(Some(&closed), Some(&open)).is_err(),
            "reopened"
        );
        let record = ChannelRecord {
            incident: Some(open),
            ..Default::default()
        };
        assert!(!stamped_after_end(&record, 4_999));
        assert!(stamped_after_end(&record, 5_000));
        assert!(!stamped_after_end(&ChannelRecord::default(), u64::MAX));
    }

    #[test]
    fn a_stated_incident_is_named_after_its_channel_with_its_times_in_order() {
        assert_eq!(check_stated("flood", &flood()), Ok(()));
        assert!(check_stated("fire", &flood()).is_err(), "another name");
        let backwards = Incident {
            until_unix_ms: 500,
            ..flood()
        };
        assert!(
            check_stated("flood", &backwards).is_err(),
            "ends before it opens"
        );
        let unopened = Incident {
            opened_unix_ms: 0,
            ..flood()
        };
        assert!(check_stated("flood", &unopened).is_err(), "never opened");
    }

    #[test]
    fn an_incident_in_several_channels_names_each_once_and_the_first_carries_the_picture() {
        let two = Incident {
            channels: vec!["roads".into(), "medical".into()],
            ..flood()
        };
        assert_eq!(channels_of(&two), ["roads", "medical"]);
        assert_eq!(channels_of(&flood()), ["flood"]);
        for channel in ["roads", "medical"] {
            assert_eq!(check_stated(channel, &two), Ok(()), "{channel}");
        }
        assert!(
            check_stated("flood", &two).is_err(),
            "its name is no channel of it"
        );
        let record = |name: &str, incident: &Incident| ChannelRecord {
            name: name.into(),
            incident: Some(incident.clone()),
            ..Default::default()
        };
        assert!(carries_picture(&record("roads", &two)));
        assert!(!carries_picture(&record("medical", &two)));
        assert!(carries_picture(&record("flood", &flood())));
        assert!(!carries_picture(&ChannelRecord::default()));
        for (bad, why) in [
            (vec!["roads", "roads"], "twice"),
            (vec!["roads", "Medical!"], "not a name"),
            (
                vec!["roads", "a", "b", "c", "d", "e", "f", "g", "h"],
                "nine",
            ),
        ] {
            let stated = Incident {
                channels: bad.iter().map(|c| c.to_string()).collect(),
                ..flood()
            };
            assert!(check_stated("roads", &stated).is_err(), "{why}");
        }
    }
}
