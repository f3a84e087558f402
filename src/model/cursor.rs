//! A position in a channel's history, handed to clients as an opaque string.

use super::{Hlc, OrgId, ParseError};

/// The history position of one message: its place in the total order
/// (hlc, origin, origin_seq) that every node shares.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    pub hlc: Hlc,
    pub origin: OrgId,
    pub seq: u64,
}

impl Cursor {
    /// The opaque text form: 16 hex digits of hlc, 16 of seq, then the origin in hex.
    pub fn encode(&self) -> String {
        format!(
            "{:016x}{:016x}{}",
            self.hlc.0,
            self.seq,
            hex::encode(self.origin.as_str())
        )
    }

    /// The position just before this message and after every message
    /// before it: paging after it starts with this message. (No message
    /// lies between: the same origin's `seq - 1` has a smaller hlc.)
    pub fn just_before(&self) -> Self {
        Self {
            seq: self.seq.saturating_sub(1),
            ..self.clone()
        }
    }

    pub fn decode(s: &str) -> Result<Self, ParseError> {
        let err = |why| ParseError::new("cursor", s, why);
        if s.len() < 34 || s.len() > 32 + 2 * 253 || !s.is_ascii() {
            return Err(err("not a cursor this node issued (wrong length)"));
        }
        let hlc = u64::from_str_radix(&s[..16], 16).map_err(|_| err("not a cursor (bad hex)"))?;
        let seq = u64::from_str_radix(&s[16..32], 16).map_err(|_| err("not a cursor (bad hex)"))?;
        let origin = hex::decode(&s[32..]).map_err(|_| err("not a cursor (bad hex)"))?;
        let origin = std::str::from_utf8(&origin).map_err(|_| err("not a cursor (bad origin)"))?;
        let origin = OrgId::parse(origin).map_err(|_| err("not a cursor (bad origin)"))?;
        Ok(Self {
            hlc: Hlc(hlc),
            origin,
            seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let c = Cursor {
            hlc: Hlc(0x1234_5678_9abc),
            origin: OrgId::parse("police.example").unwrap(),
            seq: 42,
        };
        assert_eq!(Cursor::decode(&c.encode()), Ok(c));
        for bad in [
            "",
            "zz",
            "0000000000000000000000000000000000",
            &"g".repeat(40),
            "ä".repeat(20).as_str(),
        ] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
        // Valid hex, but the origin part is not an org id.
        let upper = format!("{:016x}{:016x}{}", 1, 1, hex::encode("UPPER"));
        assert!(Cursor::decode(&upper).is_err());
    }
}
