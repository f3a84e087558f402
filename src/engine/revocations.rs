//! The member certificates this node refuses, checked on every call, and the
//! signal that ends a revoked member's open streams at once.

use std::collections::HashSet;
use std::sync::RwLock;

use tokio::sync::watch;

use crate::identity::Member;
use crate::model::MemberName;
use crate::pki::{OrgPki, PkiError};
use crate::store::{Revoked, Store, StoreError, now_rfc3339};

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("no certificate was issued to {0} on this node (nothing in pki/issued)")]
    NoneIssued(MemberName),
    #[error(
        "{0} is the identity samband's own commands use on this node; issue another admin \
         (samband user add --admin) and use that instead of revoking it"
    )]
    Operator(MemberName),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Revoked serials (hex), loaded from the store and kept in step with it.
#[derive(Debug)]
pub struct Revocations {
    serials: RwLock<HashSet<String>>,
    changed: watch::Sender<u64>,
}

/// Records in the audit log every member certificate in `pki/issued` that
/// it does not record yet (`member.issued`, naming `actor`); returns how
/// many. Issuing happens on the host with the CA key, out of the running
/// node's sight: it calls this when it starts, reloads and once a day.
pub fn record_issued(
    pki: &OrgPki,
    store: &Store,
    actor: &crate::audit::Actor,
) -> Result<usize, RevokeError> {
    let issued: Vec<crate::store::IssuedCert> = pki
        .issued_all()?
        .into_iter()
        .map(|i| crate::store::IssuedCert {
            member: i.member,
            role: i.role,
            serial: i.info.serial,
            not_after: crate::model::rfc3339(i.info.not_after),
        })
        .collect();
    Ok(store.record_issued(&issued, actor)?)
}

/// Revokes every certificate issued to `member`: durably in the store, with
/// an audit entry each naming `actor`. Returns what was revoked (already
/// revoked ones too).
pub fn revoke_member(
    pki: &OrgPki,
    store: &Store,
    member: &MemberName,
    actor: &crate::audit::Actor,
) -> Result<Vec<Revoked>, RevokeError> {
    if member.as_str() == crate::layout::OPERATOR_NAME {
        return Err(RevokeError::Operator(member.clone()));
    }
    let serials = pki.issued_to(member)?;
    if serials.is_empty() {
        return Err(RevokeError::NoneIssued(member.clone()));
    }
    let already = store.revoked_serials()?;
    let at = now_rfc3339();
    let new: Vec<Revoked> = serials
        .iter()
        .filter(|s| !already.contains(*s))
        .map(|serial| Revoked {
            member: member.to_string(),
            serial: serial.clone(),
            at: at.clone(),
        })
        .collect();
    store.revoke(&new, actor)?;
    Ok(store
        .revocations()?
        .into_iter()
        .filter(|r| r.member == member.as_str())
        .collect())
}

impl Revocations {
    pub fn load(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            serials: RwLock::new(store.revoked_serials()?),
            changed: watch::channel(0).0,
        })
    }

    /// Every revoked serial (hex).
    pub fn serials(&self) -> HashSet<String> {
        crate::locks::read(&self.serials).clone()
    }

    pub fn is_revoked(&self, member: &Member) -> bool {
        crate::locks::read(&self.serials).contains(&member.serial)
    }

    /// Refuses `revoked` from now on and ends their open streams.
    pub fn add(&self, revoked: &[Revoked]) {
        let mut serials = crate::locks::write(&self.serials);
        serials.extend(revoked.iter().map(|r| r.serial.clone()));
        drop(serials);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Completes when `member`'s certificate is revoked.
    pub async fn until_revoked(&self, member: &Member) {
        let mut changed = self.changed.subscribe();
        while !self.is_revoked(member) {
            if changed.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
