//! Who is calling, read from the client certificate of the connection.
//!
//! By the time a connection is identified, rustls has verified that the
//! certificate chains to a trusted CA. This module reads the member name
//! (CN), org (O) and role (OU) from it, and refuses anything that is not a
//! member certificate of this org. It never trusts a name a request merely
//! carries. A connection is identified once, when its handshake completes
//! ([`Verified`]); each request reads the result.
//!
//! May use: `model`, `pki` (certificate roles), `sync`.

use x509_parser::prelude::{FromDer as _, X509Certificate};

use crate::model::{MemberName, OrgId, Role};

/// An authenticated member of this node's org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub org: OrgId,
    pub name: MemberName,
    pub role: Role,
    /// Hex serial number of the certificate (what revocation names).
    pub serial: String,
    /// When the certificate expires, Unix seconds: a connection opened
    /// before then is refused from then on.
    pub not_after: i64,
}

/// What the TLS handshake of one connection established about the other
/// end, decided once when it completed; tonic hands it to every request on
/// that connection (it is the connection's `ConnectInfo`, found in each
/// request's extensions). `I` is what the listener's identification gives:
/// who the certificate names, or why it names no one the listener serves.
#[derive(Debug, Clone)]
pub struct Verified<I> {
    pub identity: I,
    /// The other end's address.
    pub remote: std::net::SocketAddr,
}

impl<I: Send + Sync + 'static> Verified<I> {
    /// The identity of the connection `request` came on; `None` if it came
    /// on no identified connection (a listener that does not identify).
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&I> {
        request
            .extensions()
            .get::<Verified<I>>()
            .map(|v| &v.identity)
    }
}

/// How a member listener identifies a connection.
pub type MemberIdentity = Result<Member, IdentityError>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("no client certificate on this connection")]
    NoCertificate,
    #[error("client certificate is not readable")]
    Unreadable,
    #[error("client certificate lacks its {0}")]
    Missing(&'static str),
    #[error("client certificate names {0:?}: {1}")]
    Invalid(String, String),
    #[error("certificate of org {found} presented to the node of {expected}")]
    WrongOrg { found: String, expected: String },
}

/// The subject fields samband uses: CN, O, OU; and the serial number.
struct Subject {
    common_name: String,
    organization: String,
    unit: String,
    serial: String,
    not_after: i64,
}

impl Subject {
    fn read(der: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Unreadable)?;
        let subject = cert.subject();
        let text = |attr: Option<&x509_parser::x509::AttributeTypeAndValue<'_>>, what| {
            attr.and_then(|a| a.as_str().ok())
                .map(str::to_owned)
                .ok_or(IdentityError::Missing(what))
        };
        Ok(Self {
            common_name: text(subject.iter_common_name().next(), "common name")?,
            organization: text(subject.iter_organization().next(), "organization")?,
            unit: text(
                subject.iter_organizational_unit().next(),
                "organizational unit",
            )?,
            serial: hex::encode(cert.raw_serial()),
            not_after: cert.validity().not_after.timestamp(),
        })
    }
}

fn invalid(value: &str, e: crate::model::ParseError) -> IdentityError {
    IdentityError::Invalid(value.to_owned(), e.to_string())
}

impl Member {
    /// Whether the certificate has expired by now.
    pub fn expired(&self) -> bool {
        time::OffsetDateTime::now_utc().unix_timestamp() > self.not_after
    }

    /// Reads the member from the leaf certificate (DER) of a verified chain.
    pub fn from_certificate(der: &[u8], node_org: &OrgId) -> Result<Self, IdentityError> {
        let s = Subject::read(der)?;
        let org = OrgId::parse(&s.organization).map_err(|e| invalid(&s.organization, e))?;
        if &org != node_org {
            return Err(IdentityError::WrongOrg {
                found: org.to_string(),
                expected: node_org.to_string(),
            });
        }
        Ok(Self {
            org,
            name: MemberName::parse(&s.common_name).map_err(|e| invalid(&s.common_name, e))?,
            role: Role::parse(&s.unit).map_err(|e| invalid(&s.unit, e))?,
            serial: s.serial,
            not_after: s.not_after,
        })
    }
}

/// Members already read from their certificates, keyed by the certificate
/// itself: reading X.509 on every call cost more than the rest of a lookup.
/// Bounded; emptied when full.
#[derive(Debug, Default)]
pub struct IdentityCache {
    members: std::sync::Mutex<std::collections::HashMap<Vec<u8>, Member>>,
}

/// Certificates remembered at most (a few hundred bytes each).
const CACHED_IDENTITIES: usize = 4096;

impl IdentityCache {
    /// [`Member::from_certificate`], remembered.
    pub fn member(&self, der: &[u8], node_org: &OrgId) -> Result<Member, IdentityError> {
        let lock = || crate::locks::lock(&self.members);
        if let Some(member) = lock().get(der).filter(|m| &m.org == node_org) {
            return Ok(member.clone());
        }
        let member = Member::from_certificate(der, node_org)?;
        let mut members = lock();
        if members.len() >= CACHED_IDENTITIES {
            members.clear();
        }
        members.insert(der.to_vec(), member.clone());
        Ok(member)
    }
}

/// The org a node certificate (OU `node`) names. Only meaningful after the
/// chain was verified against that org's pinned CA.
pub fn node_org(der: &[u8]) -> Result<OrgId, IdentityError> {
    let s = Subject::read(der)?;
    if s.unit != crate::pki::NODE_ROLE {
        return Err(IdentityError::Invalid(
            s.unit,
            "not a node certificate".into(),
        ));
    }
    OrgId::parse(&s.organization).map_err(|e| invalid(&s.organization, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::OrgPki;

    #[test]
    fn reads_members_and_refuses_node_and_foreign_certs() {
        let tmp = tempfile::tempdir().unwrap();
        let org = OrgId::parse("police.example").unwrap();
        let pki = OrgPki::create(tmp.path(), &org, &[]).unwrap();
        let alice = MemberName::parse("alice").unwrap();
        let bundle = pki
            .issue_member(
                &org,
                &alice,
                Role::Admin,
                "localhost:1",
                &tmp.path().join("alice"),
                crate::pki::Validity::days(1),
            )
            .unwrap();
        let pem = std::fs::read(bundle.dir.join("cert.pem")).unwrap();
        let der = rustls_pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
        use rustls_pki_types::pem::PemObject as _;
        let member = Member::from_certificate(&der, &org).unwrap();
        assert_eq!(
            member,
            Member {
                org: org.clone(),
                name: alice.clone(),
                role: Role::Admin,
                serial: pki.issued_to(&alice).unwrap().remove(0),
                not_after: member.not_after,
            }
        );

        let other = OrgId::parse("rescue.example").unwrap();
        assert!(matches!(
            Member::from_certificate(&der, &other),
            Err(IdentityError::WrongOrg { .. })
        ));

        // The node's own certificate chains to the same CA but is not a member.
        let node = rustls_pki_types::CertificateDer::from_pem_file(tmp.path().join("pki/node.pem"))
            .unwrap();
        assert!(matches!(
            Member::from_certificate(&node, &org),
            Err(IdentityError::Invalid(..))
        ));
        assert_eq!(
            Member::from_certificate(b"junk", &org),
            Err(IdentityError::Unreadable)
        );

        // The cache answers as the certificate does, and remembers no refusal.
        let cache = IdentityCache::default();
        assert_eq!(cache.member(&der, &org), Ok(member.clone()));
        assert_eq!(cache.member(&der, &org), Ok(member));
        assert!(matches!(
            cache.member(&der, &other),
            Err(IdentityError::WrongOrg { .. })
        ));
        assert_eq!(cache.member(b"junk", &org), Err(IdentityError::Unreadable));
    }
}
