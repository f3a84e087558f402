//! Trust bundles: what one org hands a partner out of band (org id, CA
//! certificate, message-signing public key, federation endpoint), and the
//! SHA-256 fingerprint both operators compare before trusting it.
//!
//! The fingerprint covers what trust rests on — org id, CA certificate and
//! signing key — and not the endpoint, which the importing operator may
//! override (`peer add --endpoint`).

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;
use serde::{Deserialize, Serialize};

use crate::model::OrgId;

/// A parsed, well-formed trust bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustBundle {
    pub org: OrgId,
    pub ca_der: Vec<u8>,
    pub signing_key: Vec<u8>,
    pub endpoint: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("not a samband trust bundle: {0}")]
    Format(String),
    /// Says which of the 16 groups of four hex digits differ, never the
    /// bundle's own fingerprint: printing it would let an importer copy the
    /// answer instead of comparing it with the partner's operator.
    #[error(
        "fingerprint mismatch: group(s) {groups} of 16 differ from this bundle's; do not trust \
         this bundle. Compare the whole fingerprint again with its operator over another \
         channel (phone, in person); a bundle that was changed on the way does not match"
    )]
    Mismatch { groups: String },
    #[error("{0:?} is not a fingerprint (64 hex digits; spaces and colons are ignored)")]
    BadFingerprint(String),
}

/// The file form.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BundleFile {
    samband_trust_bundle: u32,
    org: String,
    signing_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    ca: String,
}

const VERSION: u32 = 1;

impl TrustBundle {
    pub fn parse(text: &str) -> Result<Self, BundleError> {
        let file: BundleFile =
            toml::from_str(text).map_err(|e| BundleError::Format(e.message().to_owned()))?;
        if file.samband_trust_bundle != VERSION {
            return Err(BundleError::Format(format!(
                "bundle version {} (this samband reads {VERSION})",
                file.samband_trust_bundle
            )));
        }
        let org = OrgId::parse(&file.org).map_err(|e| BundleError::Format(e.to_string()))?;
        let signing_key = hex::decode(&file.signing_key)
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| {
                BundleError::Format(
                    "signing_key must be 64 hex digits (an Ed25519 public key)".into(),
                )
            })?;
        let ca = CertificateDer::from_pem_slice(file.ca.as_bytes())
            .map_err(|e| BundleError::Format(format!("ca is not a PEM certificate: {e}")))?;
        x509_parser::parse_x509_certificate(&ca)
            .map_err(|_| BundleError::Format("ca is not an X.509 certificate".into()))?;
        let endpoint = file.endpoint.filter(|e| !e.is_empty());
        Ok(Self {
            org,
            ca_der: ca.to_vec(),
            signing_key,
            endpoint,
        })
    }

    pub fn to_text(&self) -> String {
        let ca = pem_certificate(&self.ca_der);
        let file = BundleFile {
            samband_trust_bundle: VERSION,
            org: self.org.to_string(),
            signing_key: hex::encode(&self.signing_key),
            endpoint: self.endpoint.clone(),
            ca,
        };
        let body = toml::to_string(&file).unwrap_or_default();
        // The fingerprint is not in the file: an importer must get it from
        // this org's operator over another channel, not from the file.
        format!(
            "# samband trust bundle of {org}. Give it to partner operators; they import it with\n\
             #   samband peer add FILE --fingerprint FINGERPRINT\n\
             # typing the fingerprint you read to them over another channel (phone, in person).\n{body}",
            org = self.org,
        )
    }

    /// SHA-256 over the version, org id, CA certificate and signing key, in hex.
    pub fn fingerprint(&self) -> String {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"samband-trust-bundle-v1\0");
        ctx.update(self.org.as_str().as_bytes());
        ctx.update(b"\0");
        ctx.update(&(self.ca_der.len() as u64).to_be_bytes());
        ctx.update(&self.ca_der);
        ctx.update(&self.signing_key);
        hex::encode(ctx.finish())
    }

    /// Succeeds only if `given` (any case; spaces and colons ignored) is this bundle's fingerprint.
    pub fn check_fingerprint(&self, given: &str) -> Result<(), BundleError> {
        let normal: String = given
            .chars()
            .filter(|c| !matches!(c, ' ' | ':' | '-'))
            .collect::<String>()
            .to_lowercase();
        if normal.len() != 64 || !normal.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(BundleError::BadFingerprint(
                given.chars().take(100).collect(),
            ));
        }
        let actual = self.fingerprint();
        // Not secret material; a plain comparison is fine.
        if normal != actual {
            let groups: Vec<String> = (0..16)
                .filter(|g| normal[g * 4..g * 4 + 4] != actual[g * 4..g * 4 + 4])
                .map(|g| (g + 1).to_string())
                .collect();
            return Err(BundleError::Mismatch {
                groups: groups.join(", "),
            });
        }
        Ok(())
    }
}

fn pem_certificate(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle() -> TrustBundle {
        let tmp = tempfile::tempdir().unwrap();
        let org = OrgId::parse("police.example").unwrap();
        let pki = crate::pki::OrgPki::create(tmp.path(), &org, &[]).unwrap();
        let ca = CertificateDer::from_pem_file(tmp.path().join("pki/ca.pem")).unwrap();
        TrustBundle {
            org,
            ca_der: ca.to_vec(),
            signing_key: pki.message_public_key().unwrap(),
            endpoint: Some("h:1".into()),
        }
    }

    #[test]
    fn round_trip_and_fingerprint() {
        let b = bundle();
        let parsed = TrustBundle::parse(&b.to_text()).unwrap();
        assert_eq!(parsed, b);
        let fp = b.fingerprint();
        b.check_fingerprint(&fp).unwrap();
        let spaced: String = fp
            .to_uppercase()
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        b.check_fingerprint(&spaced).unwrap();
        let mut wrong = fp.clone();
        wrong.replace_range(0..1, if &fp[0..1] == "0" { "1" } else { "0" });
        let refused = b.check_fingerprint(&wrong).unwrap_err();
        assert_eq!(refused, BundleError::Mismatch { groups: "1".into() });
        // Neither the refusal nor the file gives the right answer away.
        for text in [refused.to_string(), b.to_text()] {
            assert!(!text.to_lowercase().contains(&fp), "{text}");
            assert!(!text.contains(&spaced), "{text}");
            assert!(!text.to_lowercase().contains(&fp[..16]), "{text}");
        }
        assert!(matches!(
            b.check_fingerprint("abc"),
            Err(BundleError::BadFingerprint(_))
        ));
        // The endpoint is not part of what is trusted.
        let mut moved = b.clone();
        moved.endpoint = None;
        assert_eq!(moved.fingerprint(), fp);
        // The signing key is.
        let mut other = b.clone();
        other.signing_key[0] ^= 1;
        assert_ne!(other.fingerprint(), fp);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        for text in [
            "",
            "org = 1",
            "samband_trust_bundle = 2\norg='a'\nsigning_key=''\nca=''",
        ] {
            assert!(TrustBundle::parse(text).is_err(), "{text}");
        }
        let b = bundle();
        let text = b.to_text().replace(&hex::encode(&b.signing_key), "abcd");
        assert!(
            TrustBundle::parse(&text)
                .unwrap_err()
                .to_string()
                .contains("signing_key")
        );
    }
}
