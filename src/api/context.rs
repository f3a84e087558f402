//! What the API's services share: the node's state and handles as the
//! services see them, built by the composition root (`node`), and the
//! reload of the node certificate and peer trust that the Admin API and
//! SIGHUP both trigger.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::audit::Event;
use crate::config::Limits;
use crate::engine::{Fanout, Revocations, Start, Subscription, WriterHandle};
use crate::federation::{Federation, FederationError};
use crate::model::{ChannelId, MemberName, OrgId};
use crate::pki::{CertInfo, OrgPki, PkiError};
use crate::rate::Buckets;
use crate::store::{Store, StoreError};

/// Why a reload failed; the node keeps its previous certificate and trust.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReloadError {
    /// Unreadable or mismatched files: the operator can fix those.
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Federation(#[from] FederationError),
}

/// What the API services share. Cheap to reach through an `Arc`.
#[derive(Debug)]
pub(crate) struct ApiContext {
    pub(crate) org: OrgId,
    pub(crate) store: Store,
    pub(crate) writer: WriterHandle,
    pub(crate) limits: Limits,
    pub(crate) started: Instant,
    /// Cancelled when the node begins to shut down; long streams end on it.
    /// The node's shutdown signal and task tracker: live streams run on it.
    pub(crate) runtime: crate::runtime::Runtime,
    /// What partners refused of this node's envelopes (kept by the links).
    pub(crate) refusals: Arc<crate::federation::Refusals>,
    pub(crate) revocations: Revocations,
    /// Members read from client certificates, so each is parsed once.
    pub(crate) identities: crate::identity::IdentityCache,
    pub(crate) pki: OrgPki,
    /// The member listener's TLS settings; a reload replaces them.
    pub(crate) client_tls: RwLock<Arc<rustls::ServerConfig>>,
    /// Per member: how fast they may post (`limits.member_posts_per_second`).
    pub(crate) post_rates: Buckets<MemberName>,
    /// Per member: how fast they may upload, in bytes
    /// (`limits.member_upload_bytes_per_second`).
    pub(crate) upload_rates: Buckets<MemberName>,
    /// Per member: the Download streams open.
    pub(crate) file_streams: super::files::StreamSlots,
    pub(crate) fanout: Arc<Fanout>,
}

/// Re-reads the node certificate (e.g. after `samband pki renew`) and the
/// peer trust. New connections use them; open ones keep theirs.
pub(crate) fn reload(
    shared: &ApiContext,
    fed: &Federation,
    actor: &crate::audit::Actor,
) -> Result<CertInfo, ReloadError> {
    shared.pki.install_renewal()?;
    let tls = Arc::new(shared.pki.client_listener_tls()?);
    fed.reload_tls()?;
    *crate::locks::write(&shared.client_tls) = tls;
    let cert = shared.pki.node_certificate()?;
    let not_after = crate::model::rfc3339(cert.not_after);
    shared.store.audit(
        Event::new("node.reloaded")
            .with("node_cert_serial", &cert.serial)
            .with("node_cert_not_after", &not_after)
            .by(actor),
    )?;
    // Members issued on the host since the node last looked.
    if let Err(e) =
        crate::engine::record_issued(&shared.pki, &shared.store, &crate::audit::Actor::Host)
    {
        tracing::warn!(error = %e, "cannot record issued member certificates in the audit log");
    }
    shared.store.flush()?;
    tracing::info!(serial = %cert.serial, %not_after, "reloaded the node certificate and peer trust");
    cert.warn_if_expiring();
    Ok(cert)
}

// === impl ApiContext ===

impl ApiContext {
    /// What `Messaging.Status` shows admins of the org's certificates: the
    /// CA, the node and the operator always, members within
    /// [`crate::pki::EXPIRY_WARNING_DAYS`] of their end.
    pub(crate) fn expiries(&self) -> Result<Vec<crate::proto::CertificateExpiry>, PkiError> {
        let now = time::OffsetDateTime::now_utc();
        let revoked = self.revocations.serials();
        Ok(self
            .pki
            .expiries(&self.org, &revoked)?
            .into_iter()
            .filter(|e| {
                e.kind != crate::pki::CertKind::Member
                    || e.days_left(now) < crate::pki::EXPIRY_WARNING_DAYS
            })
            .map(|e| crate::proto::CertificateExpiry {
                kind: e.kind.as_str().to_owned(),
                days_left: e.days_left(now),
                name: e.name,
                serial: e.info.serial,
                not_after: crate::model::rfc3339(e.info.not_after),
            })
            .collect())
    }

    /// Who a member listener's connection is, from its verified chain (leaf
    /// first): asked once per connection, at its handshake.
    pub(crate) fn identify(
        &self,
        chain: &[rustls::pki_types::CertificateDer<'static>],
    ) -> crate::identity::MemberIdentity {
        let leaf = chain
            .first()
            .ok_or(crate::identity::IdentityError::NoCertificate)?;
        self.identities.member(leaf, &self.org)
    }

    /// Whether `member` may post now under `limits.member_posts_per_second`.
    pub(crate) fn may_post(&self, member: &MemberName) -> bool {
        self.post_rates.try_take(member, Instant::now())
    }

    pub(crate) fn client_tls(&self) -> Arc<rustls::ServerConfig> {
        crate::locks::read(&self.client_tls).clone()
    }

    /// Follows `channel` from `start`; see [`Subscription`].
    /// `None` when the channel has `limits.subscribers_per_channel` already.
    pub(crate) fn subscribe(
        &self,
        channel: &ChannelId,
        start: Start,
    ) -> Result<Option<Subscription>, StoreError> {
        let Some(rx) = self
            .fanout
            .subscribe(channel, self.limits.subscribers_per_channel)
        else {
            return Ok(None);
        };
        Subscription::new(self.store.clone(), channel.clone(), rx, start).map(Some)
    }
}
