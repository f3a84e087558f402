//! The organisation's keys and certificates, and the TLS settings built from them.
//!
//! Owns everything under `DIR/pki/` and the member identity bundles: the org
//! CA (rcgen), the node certificate, the Ed25519 message-signing key, member
//! certificates, and the rustls configurations (TLS 1.3 only, ring only).
//! Private keys are written 0600 and never overwritten.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::signature::Ed25519KeyPair;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::model::{MemberName, OrgId, Role};

/// Files in `DIR/pki/`.
const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const NODE_CERT: &str = "node.pem";
const NODE_KEY: &str = "node.key";
const SIGNING_KEY: &str = "signing.key";
/// Copies of every member certificate issued, `NAME.SERIAL.pem`: what
/// `pki revoke-user` looks up.
const ISSUED_DIR: &str = "issued";

/// Files in an identity bundle directory.
const BUNDLE_CA: &str = "ca.pem";
const BUNDLE_CERT: &str = "cert.pem";
const BUNDLE_KEY: &str = "key.pem";
const BUNDLE_IDENTITY: &str = "identity.toml";
/// The bundle as one PKCS#12 file, to import into a browser.
pub const BUNDLE_P12: &str = "member.p12";

/// The organizational-unit value that marks a node certificate.
pub const NODE_ROLE: &str = "node";

const CA_VALIDITY: Duration = Duration::days(3650);
/// Default lifetime of a node certificate.
pub const NODE_DAYS: u32 = 825;
/// Default lifetime of a member certificate.
pub const MEMBER_DAYS: u32 = 397;

/// When a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From an hour ago (clock skew between machines) until `days` from now.
    pub fn days(days: u32) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(i64::from(days)),
        }
    }
}

/// What an operator needs to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Hex serial number.
    pub serial: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl CertInfo {
    /// Warns (a log event) when the certificate expires within 30 days.
    pub fn warn_if_expiring(&self) {
        let left = self.not_after - time::OffsetDateTime::now_utc();
        if left < time::Duration::days(EXPIRY_WARNING_DAYS) {
            tracing::warn!(
                not_after = %crate::model::rfc3339(self.not_after),
                days_left = left.whole_days(),
                "the node certificate expires soon; partners and members will be refused then \
                 (renew it: samband pki renew --dir DIR)"
            );
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("{0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
    #[error(
        "{path} names org {found}, but this node's config.toml says {expected}: a node directory \
         is one organisation's (config, CA and node certificate); restore its own pki/ or config.toml"
    )]
    WrongOrg {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error(
        "no certificate was issued to {0} on this node (nothing in pki/issued); issue one with `samband user add`"
    )]
    NeverIssued(String),
}

/// The node's own PKI directory, `DIR/pki`.
#[derive(Debug, Clone)]
pub struct OrgPki {
    dir: PathBuf,
}

/// What a member (or the operator) holds: CA, certificate, key and where to connect.
#[derive(Debug, Clone)]
pub struct IdentityBundle {
    pub dir: PathBuf,
    pub info: IdentityInfo,
}

/// `identity.toml` of a bundle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityInfo {
    pub org: String,
    pub member: String,
    pub role: String,
    /// `host:port` of the node's client listener.
    pub endpoint: String,
}

/// Installs ring as the process-wide rustls provider. Harmless when already done.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes a new file; private keys get mode 0600. Never overwrites.
fn write_new(path: &Path, contents: &[u8], private: bool) -> Result<(), PkiError> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => PkiError::Exists(path.to_owned()),
        _ => PkiError::Io {
            path: path.to_owned(),
            source: e,
        },
    })?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(io_err(path))
}

fn read_text(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(io_err(path))
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| PkiError::Tls("system random source failed".into()))?;
    // Positive, and no leading zero byte for DER to strip: 0x40..=0x7f.
    bytes[0] = (bytes[0] & 0x3f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn leaf_params(
    org: &OrgId,
    common_name: &str,
    unit: &str,
    validity: Validity,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn.push(DnType::OrganizationName, org.as_str());
    dn.push(DnType::OrganizationalUnitName, unit);
    params.distinguished_name = dn;
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    params.serial_number = Some(random_serial()?);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// A node certificate for `names` (DNS names or IP addresses).
fn node_params(
    org: &OrgId,
    names: &[String],
    validity: Validity,
) -> Result<CertificateParams, PkiError> {
    let mut node = leaf_params(org, org.as_str(), NODE_ROLE, validity)?;
    for name in names {
        node.subject_alt_names.push(match name.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(name.as_str().try_into()?),
        });
    }
    node.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(node)
}

/// The DNS names and IP addresses a certificate is for.
fn subject_alt_names(der: &[u8]) -> Option<Vec<String>> {
    use x509_parser::extensions::GeneralName;
    use x509_parser::prelude::FromDer as _;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let names = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some((*dns).to_owned()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b)
                    .ok()
                    .map(|a| std::net::IpAddr::from(a).to_string()),
                16 => <[u8; 16]>::try_from(*b)
                    .ok()
                    .map(|a| std::net::IpAddr::from(a).to_string()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    Some(names)
}

/// Where a renewal stages the new version of `path`.
fn staged(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| PkiError::Invalid {
            path: path.to_owned(),
            message: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(PkiError::Invalid {
            path: path.to_owned(),
            message: "no certificate in file".into(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| PkiError::Invalid {
        path: path.to_owned(),
        message: format!("not a PEM private key: {e}"),
    })
}

fn roots(ca: &[CertificateDer<'static>], path: &Path) -> Result<Arc<RootCertStore>, PkiError> {
    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots.add(cert.clone()).map_err(|e| PkiError::Invalid {
            path: path.to_owned(),
            message: format!("unusable CA certificate: {e}"),
        })?;
    }
    Ok(Arc::new(roots))
}

// === impl OrgPki ===

impl OrgPki {
    pub fn at(node_dir: &Path) -> Self {
        Self {
            dir: crate::layout::pki_dir(node_dir),
        }
    }

    /// Creates the org CA, the node certificate (for `hosts` plus localhost,
    /// 127.0.0.1 and ::1) and the message-signing key.
    pub fn create(node_dir: &Path, org: &OrgId, hosts: &[String]) -> Result<Self, PkiError> {
        let pki = Self::at(node_dir);
        std::fs::create_dir_all(&pki.dir).map_err(io_err(&pki.dir))?;

        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{org} samband CA"));
        dn.push(DnType::OrganizationName, org.as_str());
        ca.distinguished_name = dn;
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        ca.not_before = now - Duration::hours(1);
        ca.not_after = now + CA_VALIDITY;
        ca.serial_number = Some(random_serial()?);
        let ca_cert = ca.self_signed(&ca_key)?;
        write_new(
            &pki.dir.join(CA_KEY),
            ca_key.serialize_pem().as_bytes(),
            true,
        )?;
        write_new(&pki.dir.join(CA_CERT), ca_cert.pem().as_bytes(), false)?;
        let issuer = Issuer::new(ca, ca_key);

        let mut names: Vec<String> = hosts.to_vec();
        names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
        names.dedup();
        let node = node_params(org, &names, Validity::days(NODE_DAYS))?;
        let node_key = KeyPair::generate()?;
        let node_cert = node.signed_by(&node_key, &issuer)?;
        write_new(
            &pki.dir.join(NODE_KEY),
            node_key.serialize_pem().as_bytes(),
            true,
        )?;
        write_new(&pki.dir.join(NODE_CERT), node_cert.pem().as_bytes(), false)?;

        let signing = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .map_err(|_| PkiError::Tls("Ed25519 key generation failed".into()))?;
        let signing_pem = KeyPair::try_from(signing.as_ref())?.serialize_pem();
        write_new(&pki.dir.join(SIGNING_KEY), signing_pem.as_bytes(), true)?;
        Ok(pki)
    }

    /// Issues a member certificate and writes the bundle directory `out`
    /// (which must not exist yet or be empty).
    pub fn issue_member(
        &self,
        org: &OrgId,
        member: &MemberName,
        role: Role,
        endpoint: &str,
        out: &Path,
        validity: Validity,
    ) -> Result<IdentityBundle, PkiError> {
        let (issuer, ca_pem) = self.issuer()?;
        let mut params = leaf_params(org, member.as_str(), role.as_str(), validity)?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        // The serial as the certificate carries it (DER drops leading zeros),
        // which is what the node reads from a caller and revocation names.
        let serial = cert_info(cert.der())
            .map(|c| c.serial)
            .ok_or_else(|| PkiError::Tls("issued certificate is unreadable".into()))?;

        let issued = self.dir.join(ISSUED_DIR);
        std::fs::create_dir_all(&issued).map_err(io_err(&issued))?;
        write_new(
            &issued.join(format!("{member}.{serial}.pem")),
            cert.pem().as_bytes(),
            false,
        )?;
        std::fs::create_dir_all(out).map_err(io_err(out))?;
        let info = IdentityInfo {
            org: org.to_string(),
            member: member.to_string(),
            role: role.as_str().to_owned(),
            endpoint: endpoint.to_owned(),
        };
        let info_text = toml::to_string(&info).map_err(|e| PkiError::Tls(e.to_string()))?;
        write_new(&out.join(BUNDLE_KEY), key.serialize_pem().as_bytes(), true)?;
        write_new(&out.join(BUNDLE_CERT), cert.pem().as_bytes(), false)?;
        write_new(&out.join(BUNDLE_CA), ca_pem.as_bytes(), false)?;
        write_new(&out.join(BUNDLE_IDENTITY), info_text.as_bytes(), false)?;
        Ok(IdentityBundle {
            dir: out.to_owned(),
            info,
        })
    }

    /// The org CA as an issuer, and its certificate (PEM).
    fn issuer(&self) -> Result<(Issuer<'static, KeyPair>, String), PkiError> {
        let ca_key_path = self.dir.join(CA_KEY);
        let ca_key =
            KeyPair::from_pem(&read_text(&ca_key_path)?).map_err(|e| PkiError::Invalid {
                path: ca_key_path,
                message: e.to_string(),
            })?;
        let ca_path = self.dir.join(CA_CERT);
        let ca_pem = read_text(&ca_path)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|e| PkiError::Invalid {
            path: ca_path,
            message: e.to_string(),
        })?;
        Ok((issuer, ca_pem))
    }

    /// Re-issues `member`'s certificate, with the role of the newest one
    /// issued to it here and a new key, as the bundle `out`. An existing
    /// bundle there is replaced whole ([`replace_bundle`]: a crash leaves
    /// the old one or the new one, never a mix); the old certificate stays
    /// valid until it expires or is revoked.
    /// Errors: [`PkiError::NeverIssued`] when no certificate was issued to
    /// `member` here.
    pub fn renew_member(
        &self,
        org: &OrgId,
        member: &MemberName,
        endpoint: &str,
        out: &Path,
        validity: Validity,
    ) -> Result<IdentityBundle, PkiError> {
        let newest = self
            .issued()?
            .into_iter()
            .find(|i| i.member == member.as_str())
            .ok_or_else(|| PkiError::NeverIssued(member.to_string()))?;
        let role = Role::parse(&newest.role).map_err(|e| PkiError::Invalid {
            path: self.dir.join(ISSUED_DIR),
            message: format!(
                "the certificate issued to {member} has role {:?}: {e}",
                newest.role
            ),
        })?;
        let new = staged(out);
        if new.exists() {
            std::fs::remove_dir_all(&new).map_err(io_err(&new))?;
        }
        let bundle = self.issue_member(org, member, role, endpoint, &new, validity)?;
        replace_bundle(out)?;
        Ok(IdentityBundle {
            dir: out.to_owned(),
            info: bundle.info,
        })
    }

    /// Every certificate issued to a member here (`pki/issued/`), oldest
    /// end first.
    pub fn issued_all(&self) -> Result<Vec<Issued>, PkiError> {
        let dir = self.dir.join(ISSUED_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut all = Vec::new();
        for entry in entries {
            let path = entry.map_err(io_err(&dir))?.path();
            let Some(der) = load_certs(&path)?.into_iter().next() else {
                continue;
            };
            if let (Some(info), Some((member, role))) =
                (cert_info(&der), subject_name_and_unit(&der))
            {
                let written = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                all.push(Issued {
                    member,
                    role,
                    info,
                    written,
                });
            }
        }
        all.sort_by_key(|i| i.info.not_after);
        Ok(all)
    }

    /// The newest certificate issued to each member here (from
    /// `pki/issued/`), by name.
    pub fn issued(&self) -> Result<Vec<Issued>, PkiError> {
        let mut newest: std::collections::BTreeMap<String, Issued> = Default::default();
        for issued in self.issued_all()? {
            match newest.get(&issued.member) {
                // The one issued last is the one in use (a renewal may be
                // shorter than what it replaced).
                Some(held)
                    if (held.info.not_before, held.written)
                        >= (issued.info.not_before, issued.written) => {}
                _ => {
                    newest.insert(issued.member.clone(), issued);
                }
            }
        }
        Ok(newest.into_values().collect())
    }

    /// The org CA certificate's serial and expiry.
    pub fn ca_certificate(&self) -> Result<CertInfo, PkiError> {
        cert_info_at(&self.dir.join(CA_CERT))
    }

    /// Serials (hex) of every member certificate issued to `member` here.
    pub fn issued_to(&self, member: &MemberName) -> Result<Vec<String>, PkiError> {
        let dir = self.dir.join(ISSUED_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let prefix = format!("{member}.");
        let mut serials = Vec::new();
        for entry in entries {
            let name = entry.map_err(io_err(&dir))?.file_name();
            let name = name.to_string_lossy();
            if let Some(serial) = name
                .strip_prefix(&prefix)
                .and_then(|rest| rest.strip_suffix(".pem"))
                .filter(|serial| !serial.contains('.'))
            {
                serials.push(serial.to_owned());
            }
        }
        serials.sort();
        Ok(serials)
    }

    /// Re-issues the node certificate with the same names and a new key.
    /// The new files replace the old ones only once both are written.
    pub fn renew_node(&self, org: &OrgId, validity: Validity) -> Result<CertInfo, PkiError> {
        let cert_path = self.dir.join(NODE_CERT);
        let old = load_certs(&cert_path)?.remove(0);
        let names = subject_alt_names(&old).ok_or_else(|| PkiError::Invalid {
            path: cert_path.clone(),
            message: "cannot read the names of the current node certificate".into(),
        })?;
        let params = node_params(org, &names, validity)?;
        let (issuer, _) = self.issuer()?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let key_path = self.dir.join(NODE_KEY);
        for (path, contents, private) in [
            (&key_path, key.serialize_pem(), true),
            (&cert_path, cert.pem(), false),
        ] {
            let new = staged(path);
            // A leftover from an interrupted renewal is ours to replace.
            let _ = std::fs::remove_file(&new);
            write_new(&new, contents.as_bytes(), private)?;
        }
        self.install_renewal()?;
        self.node_certificate()
    }

    /// Moves a staged renewal (`node.key.new`, `node.pem.new`) into place:
    /// key first, then certificate, then the directory is synced. Run at
    /// start too, so that a renewal interrupted between the two renames is
    /// completed; a staged pair that is not whole is discarded.
    pub fn install_renewal(&self) -> Result<bool, PkiError> {
        let (key, cert) = (self.dir.join(NODE_KEY), self.dir.join(NODE_CERT));
        let (key_new, cert_new) = (staged(&key), staged(&cert));
        let whole = |p: &Path, k: bool| {
            p.exists()
                && if k {
                    load_key(p).is_ok()
                } else {
                    load_certs(p).is_ok()
                }
        };
        match (whole(&key_new, true), whole(&cert_new, false)) {
            (true, true) => {
                std::fs::rename(&key_new, &key).map_err(io_err(&key))?;
                std::fs::rename(&cert_new, &cert).map_err(io_err(&cert))?;
            }
            // The key was moved already; only the certificate is left.
            (false, true) if !key_new.exists() => {
                std::fs::rename(&cert_new, &cert).map_err(io_err(&cert))?;
            }
            _ => {
                // Nothing staged, or a pair cut short while being written.
                let staged_any = key_new.exists() || cert_new.exists();
                let _ = std::fs::remove_file(&key_new);
                let _ = std::fs::remove_file(&cert_new);
                if staged_any {
                    tracing::warn!(dir = %self.dir.display(), "discarded an incomplete node certificate renewal");
                }
                return Ok(false);
            }
        }
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))?;
        Ok(true)
    }

    /// Checks that the CA and the node certificate both name `org` (their
    /// subject's O): a node directory is one organisation's, and a `pki/`
    /// copied from another would issue certificates under a foreign CA.
    /// Errors: [`PkiError::WrongOrg`] naming the file and both orgs.
    pub fn check_org(&self, org: &OrgId) -> Result<(), PkiError> {
        for file in [CA_CERT, NODE_CERT] {
            let path = self.dir.join(file);
            let der = load_certs(&path)?.into_iter().next();
            let named = der.as_deref().and_then(subject_org);
            if named.as_deref() != Some(org.as_str()) {
                return Err(PkiError::WrongOrg {
                    path,
                    found: named.unwrap_or_else(|| "no org".into()),
                    expected: org.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Serial and expiry of the node certificate on disk.
    pub fn node_certificate(&self) -> Result<CertInfo, PkiError> {
        cert_info_at(&self.dir.join(NODE_CERT))
    }

    /// The org's message-signing key.
    pub fn message_key(&self) -> Result<Ed25519KeyPair, PkiError> {
        let path = self.dir.join(SIGNING_KEY);
        let der = load_key(&path)?;
        Ed25519KeyPair::from_pkcs8(der.secret_der()).map_err(|e| PkiError::Invalid {
            path,
            message: format!("not an Ed25519 PKCS#8 key: {e}"),
        })
    }

    /// The raw 32-byte Ed25519 public key that verifies this org's messages.
    pub fn message_public_key(&self) -> Result<Vec<u8>, PkiError> {
        use ring::signature::KeyPair as _;
        Ok(self.message_key()?.public_key().as_ref().to_vec())
    }

    /// The org CA certificate (DER).
    pub fn ca_der(&self) -> Result<Vec<u8>, PkiError> {
        let path = self.dir.join(CA_CERT);
        Ok(load_certs(&path)?.remove(0).to_vec())
    }

    /// TLS for the federation listener: the node certificate, and client
    /// certificates required and verified against the pinned CAs of the
    /// configured peers. `None` when there are no peers: then nobody gets in.
    pub fn federation_listener_tls(
        &self,
        peer_cas: &[Vec<u8>],
    ) -> Result<Option<rustls::ServerConfig>, PkiError> {
        if peer_cas.is_empty() {
            return Ok(None);
        }
        let mut roots = RootCertStore::empty();
        for der in peer_cas {
            // A malformed CA of one peer must not lock out the others.
            if let Err(e) = roots.add(CertificateDer::from(der.clone())) {
                tracing::warn!(error = %e, "skipping an unusable peer CA certificate");
            }
        }
        self.server_tls(Arc::new(roots)).map(Some)
    }

    /// TLS for dialing a peer node: trust only that peer's CA, present this node's certificate.
    pub fn peer_client_tls(&self, peer_ca: &[u8]) -> Result<rustls::ClientConfig, PkiError> {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(peer_ca.to_vec()))
            .map_err(|e| PkiError::Tls(format!("unusable peer CA certificate: {e}")))?;
        client_tls(
            Arc::new(roots),
            &self.dir.join(NODE_CERT),
            &self.dir.join(NODE_KEY),
        )
    }

    /// TLS for the member listener: the node certificate, and client
    /// certificates required and verified against this org's CA only;
    /// HTTP/2 (gRPC, browsers) or HTTP/1.1 (browsers, for the console).
    pub fn client_listener_tls(&self) -> Result<rustls::ServerConfig, PkiError> {
        let ca_path = self.dir.join(CA_CERT);
        let mut config = self.server_tls(roots(&load_certs(&ca_path)?, &ca_path)?)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// Server TLS with the node certificate, TLS 1.3 only, HTTP/2, and client
    /// certificates required and verified against `roots`.
    fn server_tls(&self, roots: Arc<RootCertStore>) -> Result<rustls::ServerConfig, PkiError> {
        let tls = |e: &dyn std::fmt::Display| PkiError::Tls(e.to_string());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| tls(&e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls(&e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                load_certs(&self.dir.join(NODE_CERT))?,
                load_key(&self.dir.join(NODE_KEY))?,
            )
            .map_err(|e| tls(&e))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// Client TLS trusting `roots` only and presenting the certificate and key
/// in the given files; TLS 1.3 only, HTTP/2.
fn client_tls(
    roots: Arc<RootCertStore>,
    cert: &Path,
    key: &Path,
) -> Result<rustls::ClientConfig, PkiError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| PkiError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Whether `chain` (leaf first) verifies as a client certificate chain
/// against `ca` alone. This is how a peer is identified: by which pinned CA
/// verified its certificate, never by the name it claims.
pub fn chain_verifies(ca: &[u8], chain: &[CertificateDer<'static>]) -> bool {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return false;
    };
    let mut roots = RootCertStore::empty();
    if roots.add(CertificateDer::from(ca.to_vec())).is_err() {
        return false;
    }
    let Ok(verifier) =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider()).build()
    else {
        return false;
    };
    verifier
        .verify_client_cert(leaf, intermediates, rustls_pki_types::UnixTime::now())
        .is_ok()
}

/// Which certificate an [`Expiry`] is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    Ca,
    Node,
    /// The identity samband's admin commands use (`DIR/operator`).
    Operator,
    Member,
}

impl CertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CertKind::Ca => "ca",
            CertKind::Node => "node",
            CertKind::Operator => "operator",
            CertKind::Member => "member",
        }
    }
}

/// When one of the org's certificates expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    pub kind: CertKind,
    /// The member's name; the org's for the CA and the node.
    pub name: String,
    pub info: CertInfo,
}

impl Expiry {
    /// Whole days from `now` to its end (negative once expired).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.info.not_after - now).whole_days()
    }
}

/// How long before a certificate's end operators are warned: in `status`
/// and once a day in the log.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

impl OrgPki {
    /// The CA, the node certificate, the operator identity and the newest
    /// certificate of every member (those whose serial is in `revoked`
    /// left out), soonest end first.
    pub fn expiries(
        &self,
        org: &OrgId,
        revoked: &std::collections::HashSet<String>,
    ) -> Result<Vec<Expiry>, PkiError> {
        let mut all = vec![
            Expiry {
                kind: CertKind::Ca,
                name: org.to_string(),
                info: self.ca_certificate()?,
            },
            Expiry {
                kind: CertKind::Node,
                name: org.to_string(),
                info: self.node_certificate()?,
            },
        ];
        // The operator identity in use is the one in DIR/operator.
        let operator = self
            .dir
            .parent()
            .map(crate::layout::operator_dir)
            .and_then(|dir| IdentityBundle::load(&dir).ok())
            .and_then(|bundle| bundle.certificate().ok());
        if let Some(info) = operator {
            all.push(Expiry {
                kind: CertKind::Operator,
                name: crate::layout::OPERATOR_NAME.to_owned(),
                info,
            });
        }
        for issued in self.issued()? {
            if revoked.contains(&issued.info.serial)
                || issued.member == crate::layout::OPERATOR_NAME
            {
                continue;
            }
            all.push(Expiry {
                kind: CertKind::Member,
                name: issued.member,
                info: issued.info,
            });
        }
        all.sort_by_key(|e| e.info.not_after);
        Ok(all)
    }
}

/// A member certificate this node's CA issued: the newest for its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub member: String,
    /// `member`, `admin` (the subject's OU).
    pub role: String,
    pub info: CertInfo,
    /// When its copy in `pki/issued/` was written: which of two issued in
    /// the same second (the certificates' times have seconds only) is newer.
    pub written: std::time::SystemTime,
}

/// The subject's O of a DER certificate.
fn subject_org(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer as _;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let org = cert.subject().iter_organization().next()?.as_str().ok()?;
    Some(org.to_owned())
}

/// The subject's CN and OU of a DER certificate.
fn subject_name_and_unit(der: &[u8]) -> Option<(String, String)> {
    use x509_parser::prelude::FromDer as _;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let cn = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let ou = subject
        .iter_organizational_unit()
        .next()?
        .as_str()
        .ok()?
        .to_owned();
    Some((cn, ou))
}

/// Puts the complete bundle staged in `OUT.new` in place of `out`: the old
/// one is moved aside to `OUT.old` first and removed last, so a crash
/// leaves a complete bundle under one of the names, which
/// [`IdentityBundle::load`] finishes the move from.
fn replace_bundle(out: &Path) -> Result<(), PkiError> {
    let (new, old) = (staged(out), aside(out));
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
    }
    if out.exists() {
        std::fs::rename(out, &old).map_err(io_err(out))?;
    }
    std::fs::rename(&new, out).map_err(io_err(&new))?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_err(parent))?;
    }
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
    }
    Ok(())
}

fn aside(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".old");
    PathBuf::from(name)
}

/// Serial and validity of the first certificate of the PEM file at `path`
/// (an empty or unreadable file is an error, never a panic).
fn cert_info_at(path: &Path) -> Result<CertInfo, PkiError> {
    load_certs(path)?
        .first()
        .and_then(|der| cert_info(der))
        .ok_or_else(|| PkiError::Invalid {
            path: path.to_owned(),
            message: "not a readable X.509 certificate".into(),
        })
}

/// Serial and expiry of a DER certificate.
pub fn cert_info(der: &[u8]) -> Option<CertInfo> {
    use x509_parser::prelude::FromDer as _;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    Some(CertInfo {
        serial: hex::encode(cert.raw_serial()),
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
    })
}

// === impl IdentityBundle ===

impl IdentityBundle {
    /// Loads the bundle in `dir`, first finishing a replacement that a
    /// crash cut short (see [`OrgPki::renew_member`]).
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        if !dir.exists() && staged(dir).join(BUNDLE_IDENTITY).exists() {
            std::fs::rename(staged(dir), dir).map_err(io_err(dir))?;
        }
        let path = dir.join(BUNDLE_IDENTITY);
        let info = toml::from_str(&read_text(&path)?).map_err(|e| PkiError::Invalid {
            path,
            message: e.to_string(),
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            info,
        })
    }

    /// The member certificate's serial and end of validity.
    pub fn certificate(&self) -> Result<CertInfo, PkiError> {
        cert_info_at(&self.dir.join(BUNDLE_CERT))
    }

    /// Writes the bundle's key, certificate and org CA as one PKCS#12 file
    /// (`member.p12`, RFC 7292; PBES2 with AES-256 and PBKDF2-SHA-256, as
    /// current browsers import), encrypted with `passphrase`; never over an
    /// existing file. Its path.
    pub fn write_p12(&self, passphrase: &str) -> Result<PathBuf, PkiError> {
        let key_path = self.dir.join(BUNDLE_KEY);
        let key = load_key(&key_path)?;
        let invalid = |path: &Path, e: p12_keystore::error::Error| PkiError::Invalid {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let key = p12_keystore::PrivateKey::from_der(key.secret_der())
            .map_err(|e| invalid(&key_path, e))?;
        let mut chain = Vec::new();
        for name in [BUNDLE_CERT, BUNDLE_CA] {
            let path = self.dir.join(name);
            for der in load_certs(&path)? {
                chain.push(
                    p12_keystore::Certificate::from_der(&der).map_err(|e| invalid(&path, e))?,
                );
            }
        }
        let id = ring::digest::digest(&ring::digest::SHA256, chain[0].as_der());
        let entry = p12_keystore::PrivateKeyChain::new(&id.as_ref()[..20], key, chain);
        let mut store = p12_keystore::KeyStore::new();
        store.add_entry(
            &self.info.member,
            p12_keystore::KeyStoreEntry::PrivateKeyChain(entry),
        );
        let out = self.dir.join(BUNDLE_P12);
        let bytes = store
            .writer(passphrase)
            .write()
            .map_err(|e| invalid(&out, e))?;
        write_new(&out, &bytes, true)?;
        Ok(out)
    }

    /// TLS for dialing the node: trust only the org CA, present the member certificate.
    pub fn client_tls(&self) -> Result<rustls::ClientConfig, PkiError> {
        let ca_path = self.dir.join(BUNDLE_CA);
        let roots = roots(&load_certs(&ca_path)?, &ca_path)?;
        client_tls(
            roots,
            &self.dir.join(BUNDLE_CERT),
            &self.dir.join(BUNDLE_KEY),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_members_pkcs12_file_holds_their_key_certificate_and_the_org_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let org = OrgId::parse("police.example").unwrap();
        let pki = OrgPki::create(&tmp.path().join("node"), &org, &[]).unwrap();
        let out = tmp.path().join("alice");
        let member = crate::model::MemberName::parse("alice").unwrap();
        let bundle = pki
            .issue_member(
                &org,
                &member,
                Role::Member,
                "127.0.0.1:1",
                &out,
                Validity::days(1),
            )
            .unwrap();
        let path = bundle.write_p12("a passphrase").unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let policy = p12_keystore::Pkcs12ImportPolicy::Strict;
        assert!(p12_keystore::KeyStore::from_pkcs12(&bytes, "not it", policy).is_err());
        let store = p12_keystore::KeyStore::from_pkcs12(&bytes, "a passphrase", policy).unwrap();
        let (alias, chain) = store.private_key_chain().unwrap();
        assert_eq!(alias, "alice");
        let cert = load_certs(&out.join(BUNDLE_CERT)).unwrap();
        let ca = load_certs(&out.join(BUNDLE_CA)).unwrap();
        let certs: Vec<&[u8]> = chain.certs().iter().map(|c| c.as_der()).collect();
        assert_eq!(certs, [cert[0].as_ref(), ca[0].as_ref()]);
        let key = load_key(&out.join(BUNDLE_KEY)).unwrap();
        assert_eq!(chain.key().as_der(), key.secret_der());
        // Never over an existing file.
        assert!(bundle.write_p12("another").is_err());
    }

    #[test]
    fn an_empty_certificate_file_is_an_error_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let org = OrgId::parse("police.example").unwrap();
        let pki = OrgPki::create(tmp.path(), &org, &[]).unwrap();
        std::fs::write(tmp.path().join("pki").join(NODE_CERT), b"").unwrap();
        assert!(pki.node_certificate().is_err());
    }

    #[test]
    fn a_renewal_cut_between_its_renames_is_completed_and_a_partial_one_discarded() {
        let tmp = tempfile::tempdir().unwrap();
        let org = OrgId::parse("police.example").unwrap();
        let pki = OrgPki::create(tmp.path(), &org, &[]).unwrap();
        let dir = tmp.path().join("pki");
        let old = pki.node_certificate().unwrap();

        // Staged and the key moved, then a crash: the certificate follows at start.
        let renewed = pki.renew_node(&org, Validity::days(30)).unwrap();
        let (key, cert) = (dir.join(NODE_KEY), dir.join(NODE_CERT));
        std::fs::copy(&cert, staged(&cert)).unwrap();
        std::fs::write(&cert, std::fs::read(dir.join(CA_CERT)).unwrap()).unwrap();
        assert!(pki.install_renewal().unwrap());
        assert_eq!(pki.node_certificate().unwrap(), renewed);
        assert_ne!(renewed, old);
        assert!(
            pki.client_listener_tls().is_ok(),
            "key and certificate match"
        );

        // A staged pair cut short while being written is dropped.
        std::fs::write(staged(&key), b"-----BEGIN PRIV").unwrap();
        assert!(!pki.install_renewal().unwrap());
        assert!(!staged(&key).exists());
        assert_eq!(pki.node_certificate().unwrap(), renewed);
    }
}
