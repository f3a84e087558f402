//! Plain values of the domain: names, ids, clocks, cursors, envelopes.
//!
//! Everything here is pure: parsing validates, nothing does I/O. Every type
//! that comes from outside (a request, a file, a certificate) has a `parse`
//! that says precisely what is wrong with bad input.

mod cursor;
mod envelope;
mod file;
mod hlc;

pub use cursor::Cursor;
pub use envelope::{
    ChainHead, EnvelopeHash, GENESIS_HASH, body_digest, body_matches, canonical_bytes, chain_hash,
    sign, sign_and_hash, verify, withheld_copy,
};
pub use file::{
    CHUNK_BYTES, FileHash, MAX_FILE_NAME_BYTES, MAX_FILES_PER_POST, check_file_name,
    check_media_type,
};
pub use hlc::{Hlc, HlcClock};

/// Milliseconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `unix_ms` (Unix milliseconds) as [`rfc3339`].
pub fn rfc3339_ms(unix_ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000)
        .map(rfc3339)
        .unwrap_or_default()
}

/// `t` as RFC 3339 UTC with milliseconds, e.g. `2026-11-29T03:12:47.123Z`.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let t = t
        .replace_nanosecond(u32::from(t.millisecond()) * 1_000_000)
        .unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

use std::collections::BTreeMap;
use std::fmt;

/// A version vector: per origin, the highest contiguous origin_seq held.
pub type VersionVector = BTreeMap<OrgId, u64>;

/// Why a name or id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is not valid: {why}")]
pub struct ParseError {
    what: &'static str,
    value: String,
    why: String,
}

impl ParseError {
    fn new(what: &'static str, value: &str, why: impl Into<String>) -> Self {
        // Echo at most a screenful of what was given.
        let value: String = value.chars().take(80).collect();
        Self {
            what,
            value,
            why: why.into(),
        }
    }

    /// Why the value is refused, and what is allowed instead.
    pub fn reason(&self) -> &str {
        &self.why
    }
}

/// Why `s` is not a simple name: its first character that is not allowed
/// (named, so that `räddning` says `ä`), then what is.
fn simple_name_refusal(s: &str, max: usize) -> String {
    const ALLOWED: &str = "a-z 0-9 . _ - starting with a letter or digit";
    let bad = s.chars().enumerate().find(|&(i, c)| {
        !(c.is_ascii_lowercase() || c.is_ascii_digit() || (i > 0 && matches!(c, '.' | '_' | '-')))
    });
    match bad {
        Some((0, c)) if matches!(c, '.' | '_' | '-') => {
            format!("a name starts with a letter or digit, not {c:?}: use 1 to {max} of {ALLOWED}")
        }
        Some((_, c)) if !c.is_ascii() => format!(
            "{c:?} is not allowed (names are plain ASCII so that every node, file system and \
             terminal shows them alike): use 1 to {max} of {ALLOWED}"
        ),
        Some((_, c)) => format!("{c:?} is not allowed: use 1 to {max} of {ALLOWED}"),
        None => format!("use 1 to {max} of {ALLOWED}"),
    }
}

/// An organisation id: lower-case DNS-style labels, e.g. `police.example`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OrgId(String);

/// The name of a channel within its home org, e.g. `flood-2026`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelName(String);

/// A channel: its home org and its name, written `home/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelId {
    home: OrgId,
    name: ChannelName,
}

/// A member's name within their org, e.g. `alice` or `duty-officer.1`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MemberName(String);

/// What a member may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Member,
    /// May create channels and, later, manage sharing and peers.
    Admin,
}

/// A message priority. Stored as its number in the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Normal = 1,
    Urgent = 2,
    /// Life-safety traffic.
    Flash = 3,
}

/// True for `[a-z0-9]` followed by up to `max - 1` of `[a-z0-9._-]`.
fn is_simple_name(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'.' | b'_' | b'-')
        })
}

// === impl OrgId ===

impl OrgId {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let err = |why| Err(ParseError::new("organisation id", s, why));
        if s.is_empty() || s.len() > 253 {
            return err("must be 1 to 253 characters");
        }
        for label in s.split('.') {
            let b = label.as_bytes();
            if b.is_empty() || b.len() > 63 {
                return err("each dot-separated label must be 1 to 63 characters");
            }
            if !b
                .iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
            {
                return err("use lower-case letters, digits, '-' and '.' only");
            }
            if b[0] == b'-' || b[b.len() - 1] == b'-' {
                return err("a label may not start or end with '-'");
            }
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl ChannelName ===

impl ChannelName {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if is_simple_name(s, 63) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::new(
                "channel name",
                s,
                simple_name_refusal(s, 63),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl ChannelId ===

impl ChannelId {
    pub fn new(home: OrgId, name: ChannelName) -> Self {
        Self { home, name }
    }

    /// Parses `home/name`; a bare `name` means a channel whose home is `local`.
    pub fn parse_or_local(s: &str, local: &OrgId) -> Result<Self, ParseError> {
        match s.split_once('/') {
            Some((home, name)) => Ok(Self::new(OrgId::parse(home)?, ChannelName::parse(name)?)),
            None => Ok(Self::new(local.clone(), ChannelName::parse(s)?)),
        }
    }

    /// Parses `home/name`.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s.split_once('/') {
            Some((home, name)) => Ok(Self::new(OrgId::parse(home)?, ChannelName::parse(name)?)),
            None => Err(ParseError::new("channel id", s, "expected home-org/name")),
        }
    }

    pub fn home(&self) -> &OrgId {
        &self.home
    }

    pub fn name(&self) -> &ChannelName {
        &self.name
    }
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.home, self.name)
    }
}

// === impl MemberName ===

impl MemberName {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if is_simple_name(s, 64) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ParseError::new(
                "member name",
                s,
                simple_name_refusal(s, 64),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MemberName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// === impl Role ===

impl Role {
    /// The word written into member certificates (organizational unit).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s {
            "member" => Ok(Role::Member),
            "admin" => Ok(Role::Admin),
            _ => Err(ParseError::new("role", s, "expected member or admin")),
        }
    }
}

// === impl Priority ===

impl Priority {
    /// Maps the wire number; 0 (unspecified) is normal, unknown numbers are refused.
    pub fn from_i32(n: i32) -> Option<Self> {
        match n {
            0 | 1 => Some(Priority::Normal),
            2 => Some(Priority::Urgent),
            3 => Some(Priority::Flash),
            _ => None,
        }
    }

    pub fn parse(s: &str) -> Result<Self, ParseError> {
        match s {
            "normal" => Ok(Priority::Normal),
            "urgent" => Ok(Priority::Urgent),
            "flash" => Ok(Priority::Flash),
            _ => Err(ParseError::new(
                "priority",
                s,
                "expected normal, urgent or flash",
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Normal => "normal",
            Priority::Urgent => "urgent",
            Priority::Flash => "flash",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_ids() {
        for ok in ["police.example", "a", "region-health.example", "x1.y2.z3"] {
            assert!(OrgId::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Police.example",
            "a..b",
            "-a.b",
            "a-.b",
            "a_b",
            "a/b",
            &"a".repeat(64),
        ] {
            assert!(OrgId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn channel_ids() {
        let local = OrgId::parse("police.example").unwrap();
        let c = ChannelId::parse_or_local("ops", &local).unwrap();
        assert_eq!(c.to_string(), "police.example/ops");
        let c = ChannelId::parse_or_local("rescue.example/flood", &local).unwrap();
        assert_eq!(c.home().as_str(), "rescue.example");
        assert!(ChannelId::parse("ops").is_err());
        assert!(ChannelId::parse_or_local("a/b/c", &local).is_err());
        assert!(ChannelName::parse(".hidden").is_err());
        assert!(ChannelName::parse(&"c".repeat(64)).is_err());
    }

    #[test]
    fn a_refused_name_says_which_character_and_what_is_allowed() {
        let said = ChannelName::parse("räddning").unwrap_err().to_string();
        assert!(said.contains("'ä' is not allowed"), "{said}");
        assert!(said.contains("a-z 0-9 . _ -"), "{said}");
        let said = MemberName::parse("Alice").unwrap_err().to_string();
        assert!(said.contains("'A' is not allowed"), "{said}");
        let said = ChannelName::parse(".hidden").unwrap_err().to_string();
        assert!(
            said.contains("starts with a letter or digit, not '.'"),
            "{said}"
        );
        let said = ChannelName::parse(&"c".repeat(64)).unwrap_err().to_string();
        assert!(said.contains("use 1 to 63"), "{said}");
    }

    #[test]
    fn priorities_round_trip() {
        for p in [Priority::Normal, Priority::Urgent, Priority::Flash] {
            assert_eq!(Priority::from_i32(p as i32), Some(p));
            assert_eq!(Priority::parse(p.as_str()), Ok(p));
        }
        assert_eq!(Priority::from_i32(0), Some(Priority::Normal));
        assert_eq!(Priority::from_i32(9), None);
    }
}
