//! The audit log and the member revocation list: two small trees whose
//! entries are rare (trust and sharing changes, rejections) and never deleted.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use std::ops::Bound;

use super::kv::Tree;
use super::{Store, StoreError, lossy};
use crate::audit::{Entry, Event, Head};

/// A member certificate the org CA issued, as the audit log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    pub member: String,
    /// `member` or `admin`.
    pub role: String,
    /// Hex serial number.
    pub serial: String,
    /// RFC 3339.
    pub not_after: String,
}

/// A revoked member certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    pub member: String,
    /// Hex serial number of the certificate.
    pub serial: String,
    /// RFC 3339 time of the revocation.
    pub at: String,
}

fn unreadable(key: &[u8], e: &serde_json::Error) -> StoreError {
    StoreError::Inconsistent {
        key: lossy(key),
        why: if e.is_eof() {
            "truncated record"
        } else {
            "undecodable record"
        },
    }
}

/// Now, RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    crate::model::rfc3339(time::OffsetDateTime::now_utc())
}

impl Store {
    /// The last entry of the audit log (`Head::default()` when empty).
    pub(super) fn load_audit_head(audit: &dyn Tree) -> Result<Head, StoreError> {
        let Some((key, value)) = audit.last()? else {
            return Ok(Head::default());
        };
        let entry: Entry = serde_json::from_slice(&value).map_err(|e| unreadable(&key, &e))?;
        Head::of(&entry).ok_or(StoreError::Inconsistent {
            key: lossy(&key),
            why: "audit entry without a valid hash",
        })
    }

    /// Appends `event` to the audit log. Durable with the next flush; callers
    /// recording a trust change flush with the change itself.
    pub fn audit(&self, event: Event) -> Result<Entry, StoreError> {
        let mut head = crate::locks::lock(&self.audit_head);
        let entry = head.next(now_rfc3339(), event);
        let bytes = serde_json::to_vec(&entry).map_err(|e| unreadable(b"audit", &e))?;
        self.audit.insert(&entry.seq.to_be_bytes(), &bytes)?;
        if let Some(next) = Head::of(&entry) {
            *head = next;
        }
        Ok(entry)
    }

    /// Audit entries with `seq >= from`, oldest first.
    pub fn audit_entries(&self, from: u64) -> impl Iterator<Item = Result<Entry, StoreError>> + '_ {
        let from = Bound::Included(from.to_be_bytes().to_vec());
        self.audit.range(from, Bound::Unbounded).map(|kv| {
            let (key, value) = kv?;
            serde_json::from_slice(&value).map_err(|e| unreadable(&key, &e))
        })
    }

    /// Revokes member certificates durably and records it in the audit log.
    pub fn revoke(
        &self,
        revoked: &[Revoked],
        actor: &crate::audit::Actor,
    ) -> Result<(), StoreError> {
        for r in revoked {
            let bytes = serde_json::to_vec(r).map_err(|e| unreadable(b"revoked", &e))?;
            self.revoked.insert(r.serial.as_bytes(), &bytes)?;
            self.audit(
                Event::new("member.revoked")
                    .with("member", &r.member)
                    .with("serial", &r.serial)
                    .by(actor),
            )?;
        }
        self.flush()
    }

    /// Records in the audit log each certificate of `issued` not recorded
    /// before (`member.issued`, naming `actor`), durably; returns how many
    /// were new. Issuing happens on the node's host with the CA key, where
    /// the running node cannot see it: the node records what `pki/issued`
    /// holds when it starts, reloads, and once a day.
    pub fn record_issued(
        &self,
        issued: &[IssuedCert],
        actor: &crate::audit::Actor,
    ) -> Result<usize, StoreError> {
        let mut new = 0;
        for cert in issued {
            let key = cert.serial.as_bytes();
            if self.issued.contains_key(key)? {
                continue;
            }
            self.audit(
                Event::new("member.issued")
                    .with("member", &cert.member)
                    .with("role", &cert.role)
                    .with("serial", &cert.serial)
                    .with("not_after", &cert.not_after)
                    .by(actor),
            )?;
            self.issued.insert(key, b"")?;
            new += 1;
        }
        if new > 0 {
            self.flush()?;
        }
        Ok(new)
    }

    /// Every revoked certificate.
    pub fn revocations(&self) -> Result<Vec<Revoked>, StoreError> {
        self.revoked
            .iter()
            .map(|kv| {
                let (key, value) = kv?;
                serde_json::from_slice(&value).map_err(|e| unreadable(&key, &e))
            })
            .collect()
    }

    /// Hex serials of every revoked certificate.
    pub fn revoked_serials(&self) -> Result<HashSet<String>, StoreError> {
        Ok(self.revocations()?.into_iter().map(|r| r.serial).collect())
    }
}
