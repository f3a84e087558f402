//! The home's channels: a new one created, roster changes (share, unshare,
//! an incident opened or closed) as signed control envelopes, one change
//! over one or several channels decided for all before any is staged; and
//! an operator's acceptance of an offered channel. Every channel record is
//! written here, so a name is decided once, against what the round staged.

use std::collections::HashMap;

use super::{RosterChange, Round, WriteError, Writer};
use crate::audit::{Actor, Event};
use crate::model::{ChannelId, OrgId};
use crate::proto::{ChannelRecord, ChannelState, Incident, Kind, OriginSeq};
use crate::rules::{self, History, RosterEdit};

impl Writer {
    /// Makes `change` to the roster of each of `channels`: checks it for
    /// all of them before staging any, so that a refusal leaves the round
    /// as it was and the channels change together or not at all.
    pub(super) fn change_rosters(
        &mut self,
        round: &mut Round,
        channels: &[ChannelId],
        change: &RosterChange,
        actor: &Actor,
    ) -> Result<Vec<ChannelRecord>, WriteError> {
        if let RosterChange::OpenIncident { incident, .. } = change {
            self.check_incident_names(incident)?;
        }
        let mut checked = Vec::with_capacity(channels.len());
        for channel in channels {
            checked.push(self.check_roster_change(channel, change)?);
        }
        let mut changed = Vec::with_capacity(channels.len());
        for (channel, record) in channels.iter().zip(checked) {
            match self.change_roster(round, channel, record, change, actor) {
                Ok(record) => changed.push(record),
                Err(e) => {
                    // Its checks passed, so only a store read failed, and
                    // what is staged cannot be taken back: the round goes.
                    round.failed.get_or_insert_with(|| e.to_string());
                    return Err(e);
                }
            }
        }
        Ok(changed)
    }

    /// Whether `incident` may be opened under its names: of this home, one
    /// incident per name, and no name that means both a channel and an
    /// incident (`home/name` names either), so none of its channels is
    /// named as another incident, and it is not named as another channel.
    /// Staged records count.
    fn check_incident_names(&mut self, incident: &Incident) -> Result<(), WriteError> {
        let channels = rules::channels_of(incident);
        for r in &self.own_records()? {
            let other = r.incident.as_ref().map(|i| i.name.as_str());
            if other == Some(incident.name.as_str()) {
                return Err(WriteError::IncidentExists(incident.name.clone()));
            }
            if let Some(other) = other.filter(|o| channels.contains(o)) {
                return Err(WriteError::NameTaken(other.to_owned()));
            }
            if r.name == incident.name && !channels.contains(&r.name.as_str()) {
                return Err(WriteError::NameTaken(r.name.clone()));
            }
        }
        Ok(())
    }

    /// This org's channel records, as stored and as this round staged them.
    fn own_records(&mut self) -> Result<Vec<ChannelRecord>, WriteError> {
        let org = self.settings.org.as_str();
        let mut own: HashMap<String, ChannelRecord> = self
            .store
            .channels()?
            .into_iter()
            .filter(|r| r.home == org)
            .map(|r| (r.id.clone(), r))
            .collect();
        for r in self.records.values().filter(|r| r.home == org) {
            own.insert(r.id.clone(), r.clone());
        }
        Ok(own.into_values().collect())
    }

    /// Creates the internal channel `record` of this org: refused if it
    /// exists, or if its name is an incident's (`home/name` names a channel
    /// or an incident, never both).
    pub(super) fn create(
        &mut self,
        round: &mut Round,
        record: ChannelRecord,
        actor: &Actor,
    ) -> Result<ChannelRecord, WriteError> {
        let channel =
            ChannelId::parse(&record.id).map_err(|_| WriteError::NoChannel(record.id.clone()))?;
        if record.home != self.settings.org.as_str() {
            return Err(WriteError::NotHome {
                channel: record.id.clone(),
                home: record.home,
            });
        }
        if self.record(&channel)?.is_some() {
            return Err(WriteError::ChannelExists(record.id));
        }
        let taken = self
            .own_records()?
            .iter()
            .any(|r| r.incident.as_ref().is_some_and(|i| i.name == record.name));
        if taken {
            return Err(WriteError::NameTaken(record.name));
        }
        round.audit.push(
            Event::new("channel.created")
                .with("channel", &channel)
                .by(actor),
        );
        round.put_channel(&channel, &record);
        self.records.insert(channel, record.clone());
        Ok(record)
    }

    /// Whether `change` may be made to `channel`'s roster now: its record
    /// as it stands (for an incident's opening, the new channel's).
    fn check_roster_change(
        &mut self,
        channel: &ChannelId,
        change: &RosterChange,
    ) -> Result<ChannelRecord, WriteError> {
        let record = match change {
            RosterChange::OpenIncident { incident, .. } => {
                if self.record(channel)?.is_some() {
                    return Err(WriteError::NotFresh(channel.to_string()));
                }
                ChannelRecord {
                    id: channel.to_string(),
                    home: channel.home().to_string(),
                    name: channel.name().to_string(),
                    created_unix_ms: incident.opened_unix_ms,
                    ..Default::default()
                }
            }
            _ => self.writable(channel)?,
        };
        if record.home != self.settings.org.as_str() {
            return Err(WriteError::NotHome {
                channel: channel.to_string(),
                home: record.home,
            });
        }
        match change {
            RosterChange::CloseIncident { .. } => match &record.incident {
                None => {
                    return Err(WriteError::NotIncident(channel.to_string()));
                }
                Some(i) if i.closed_unix_ms > 0 => {
                    return Err(WriteError::AlreadyClosed(channel.to_string()));
                }
                Some(_) => {}
            },
            RosterChange::Share { .. } | RosterChange::Unshare { .. }
                if rules::is_over(&record, crate::model::unix_ms()) =>
            {
                return Err(WriteError::IncidentOver(channel.to_string()));
            }
            _ => {}
        }
        if let RosterChange::Share { orgs, .. } | RosterChange::OpenIncident { orgs, .. } = change {
            // Checked again here, in the round: a peer removed since the
            // caller read its key must not be shared with.
            self.refresh_pinned()?;
            if let Some((org, _)) = orgs
                .iter()
                .find(|(org, key)| self.pinned.key(org.as_str()) != Some(key.as_slice()))
            {
                return Err(WriteError::NotPeer(org.to_string()));
            }
            let again = rules::reshared(&record, orgs.iter().map(|(org, _)| org));
            let chosen = !matches!(change, RosterChange::Share { history: None, .. });
            if !chosen && !again.is_empty() {
                return Err(WriteError::HistoryNotChosen {
                    channel: channel.to_string(),
                    orgs: again
                        .iter()
                        .map(|o| o.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
        }
        if let RosterChange::Unshare { org } = change
            && !record
                .participants
                .iter()
                .any(|p| p.org == org.as_str() && p.active)
        {
            return Err(WriteError::NotParticipant {
                channel: channel.to_string(),
                org: org.to_string(),
            });
        }
        Ok(record)
    }

    /// Stages `change` (checked) to the roster of `channel`, whose record
    /// is `record`: the home's new signed snapshot, the record and the
    /// audit entry.
    fn change_roster(
        &mut self,
        round: &mut Round,
        channel: &ChannelId,
        record: ChannelRecord,
        change: &RosterChange,
        actor: &Actor,
    ) -> Result<ChannelRecord, WriteError> {
        let seq = self.head(channel, &self.settings.org.clone())?.seq;
        let share = |withheld_through: &[OriginSeq], orgs: &[(OrgId, Vec<u8>)]| {
            orgs.iter()
                .fold(record.participants.clone(), |roster, (org, key)| {
                    let edit = RosterEdit::Share {
                        signing_key: key,
                        withheld_through,
                    };
                    rules::changed_roster(&roster, org, edit)
                })
        };
        let mut incident = record.incident.clone();
        let participants = match change {
            RosterChange::Share { orgs, history } => {
                let withheld_through = match history {
                    Some(History::FromNow) => self.held_now(channel, &record)?,
                    Some(History::All) | None => Vec::new(),
                };
                share(&withheld_through, orgs)
            }
            RosterChange::OpenIncident {
                orgs,
                incident: opened,
            } => {
                incident = Some(opened.clone());
                share(&[], orgs)
            }
            RosterChange::CloseIncident { at_unix_ms } => {
                if let Some(i) = incident.as_mut() {
                    i.closed_unix_ms = *at_unix_ms;
                }
                let mut roster = record.participants.clone();
                for p in record.participants.iter().filter(|p| p.active) {
                    let Ok(org) = OrgId::parse(&p.org) else {
                        continue;
                    };
                    let edit = RosterEdit::Remove {
                        home_seq: seq + 1,
                        last_seq: self.head(channel, &org)?.seq,
                    };
                    roster = rules::changed_roster(&roster, &org, edit);
                }
                roster
            }
            RosterChange::Unshare { org } => {
                let last_seq = self.head(channel, org)?.seq;
                let edit = RosterEdit::Remove {
                    home_seq: seq + 1,
                    last_seq,
                };
                rules::changed_roster(&record.participants, org, edit)
            }
        };
        let body = rules::snapshot_body(participants.clone(), incident.clone());
        let index = self.originate(round, channel, "", Kind::Control, 0, body)?;
        let roster_seq = round.envelopes[index].2.origin_seq;
        if let RosterChange::OpenIncident { .. } = change {
            round.audit.push(
                Event::new("channel.created")
                    .with("channel", channel)
                    .by(actor),
            );
        }
        round.audit.push(
            match change {
                RosterChange::Share { orgs, history } => Event::new("channel.shared")
                    .with("orgs", org_list(orgs))
                    .with(
                        "history",
                        match history {
                            Some(History::FromNow) => "from-now",
                            Some(History::All) | None => "all",
                        },
                    ),
                RosterChange::Unshare { org } => Event::new("channel.unshared").with("org", org),
                RosterChange::OpenIncident { orgs, incident } => Event::new("incident.opened")
                    .with("incident", &incident.name)
                    .with("exercise", incident.exercise)
                    .with("orgs", org_list(orgs))
                    .with("until_unix_ms", incident.until_unix_ms),
                RosterChange::CloseIncident { .. } => Event::new("incident.closed"),
            }
            .with("channel", channel)
            .with("roster_seq", roster_seq)
            .by(actor),
        );
        let updated = ChannelRecord {
            participants,
            roster_seq,
            incident,
            ..record
        };
        round.put_channel(channel, &updated);
        self.records.insert(channel.clone(), updated.clone());
        Ok(updated)
    }

    /// What this node holds of the channel now, per origin that may have
    /// written to it (the home and every org of its roster): the lines a
    /// `--history from-now` share draws.
    fn held_now(
        &mut self,
        channel: &ChannelId,
        record: &ChannelRecord,
    ) -> Result<Vec<OriginSeq>, WriteError> {
        let origins = std::iter::once(record.home.as_str())
            .chain(record.participants.iter().map(|p| p.org.as_str()));
        let mut lines = Vec::new();
        for origin in origins {
            let Ok(org) = OrgId::parse(origin) else {
                continue;
            };
            let seq = self.head(channel, &org)?.seq;
            if seq > 0 {
                lines.push(OriginSeq {
                    origin: origin.to_string(),
                    seq,
                });
            }
        }
        Ok(lines)
    }

    pub(super) fn accept(
        &mut self,
        round: &mut Round,
        channel: &ChannelId,
        actor: &Actor,
    ) -> Result<ChannelRecord, WriteError> {
        let record = self
            .record(channel)?
            .ok_or_else(|| WriteError::NoChannel(channel.to_string()))?;
        if record.state == ChannelState::Archived as i32 {
            // An offer withdrawn by its home (`offer::withdrawal`), which is
            // what closing its incident before the accept does.
            return Err(if rules::is_over(&record, crate::model::unix_ms()) {
                WriteError::IncidentOver(channel.to_string())
            } else {
                WriteError::Withdrawn(channel.to_string())
            });
        }
        if record.state != ChannelState::Pending as i32 {
            return Err(WriteError::NotPending(channel.to_string()));
        }
        let updated = ChannelRecord {
            state: ChannelState::Active as i32,
            ..record
        };
        round.audit.push(
            Event::new("channel.accepted")
                .with("channel", channel)
                .by(actor),
        );
        round.put_channel(channel, &updated);
        self.records.insert(channel.clone(), updated.clone());
        Ok(updated)
    }
}

/// The orgs of a share, as an audit entry lists them: `a.example,b.example`.
fn org_list(orgs: &[(OrgId, Vec<u8>)]) -> String {
    orgs.iter()
        .map(|(o, _)| o.as_str())
        .collect::<Vec<_>>()
        .join(",")
}
