//! Canonical encoding, chain hash, signature and its check for [`Envelope`].
//!
//! The canonical encoding is the protobuf encoding of the envelope with its
//! `signature` field empty and, in the digest form (`body_sha256` set, as on
//! every envelope this version writes), `body` and `withheld` empty too: the
//! body is signed and chained through its SHA-256, so a copy without it (a
//! withheld envelope, see [`withheld_copy`]) verifies and chains the same.
//! prost writes fields in number order with no unknown fields, so the same
//! envelope always encodes to the same bytes.
//!
//! Envelopes written before the digest form sign their body as is; they
//! still verify, and can never be withheld.

use prost::Message as _;
use ring::signature::{ED25519, Ed25519KeyPair, UnparsedPublicKey};

use super::Hlc;
use crate::proto::Envelope;

/// SHA-256 of an envelope's canonical encoding: what the next envelope of
/// the same origin and channel names as its `prev`.
pub type EnvelopeHash = [u8; 32];

/// The `prev` of an origin's first envelope in a channel.
pub const GENESIS_HASH: EnvelopeHash = [0; 32];

/// The end of one origin's hash chain in one channel: what the next
/// envelope of that origin must follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: EnvelopeHash,
    pub hlc: Hlc,
}

impl ChainHead {
    /// Before an origin's first envelope.
    pub const GENESIS: ChainHead = ChainHead {
        seq: 0,
        hash: GENESIS_HASH,
        hlc: Hlc(0),
    };

    /// The head once `env`, whose chain hash is `hash`, is the last envelope.
    pub fn after(env: &Envelope, hash: EnvelopeHash) -> Self {
        Self {
            seq: env.origin_seq,
            hash,
            hlc: Hlc(env.hlc),
        }
    }
}

/// The bytes that are signed and hashed.
pub fn canonical_bytes(env: &Envelope) -> Vec<u8> {
    let digest_form = !env.body_sha256.is_empty();
    Envelope {
        channel: env.channel.clone(),
        origin: env.origin.clone(),
        origin_seq: env.origin_seq,
        author: env.author.clone(),
        hlc: env.hlc,
        kind: env.kind,
        priority: env.priority,
        body: if digest_form {
            Vec::new()
        } else {
            env.body.clone()
        },
        prev: env.prev.clone(),
        signature: Vec::new(),
        body_sha256: env.body_sha256.clone(),
        withheld: false,
    }
    .encode_to_vec()
}

/// SHA-256 of a body: what `body_sha256` holds (32 bytes).
pub fn body_digest(body: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, body)
        .as_ref()
        .to_vec()
}

/// Whether the body an envelope carries is the one its origin signed: in
/// the digest form, a body whose SHA-256 is `body_sha256`, or none when it
/// is withheld; before it, any body (it is signed as is) and never withheld.
pub fn body_matches(env: &Envelope) -> bool {
    match (env.body_sha256.is_empty(), env.withheld) {
        (true, withheld) => !withheld,
        (false, true) => env.body.is_empty(),
        (false, false) => body_digest(&env.body) == env.body_sha256,
    }
}

/// The copy of `env` a recipient gets when its body is withheld from it:
/// the same place in the chain (seq, hash, signature), no body. `None` for
/// an envelope written before the digest form, whose body cannot be left out.
pub fn withheld_copy(env: &Envelope) -> Option<Envelope> {
    if env.body_sha256.is_empty() {
        return None;
    }
    Some(Envelope {
        body: Vec::new(),
        withheld: true,
        ..env.clone()
    })
}

pub fn chain_hash(env: &Envelope) -> EnvelopeHash {
    let digest = ring::digest::digest(&ring::digest::SHA256, &canonical_bytes(env));
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Signs `env` in place with the origin's message key.
pub fn sign(env: &mut Envelope, key: &Ed25519KeyPair) {
    env.signature = key.sign(&canonical_bytes(env)).as_ref().to_vec();
}

/// Signs `env` in place and returns its chain hash, encoding it once.
pub fn sign_and_hash(env: &mut Envelope, key: &Ed25519KeyPair) -> EnvelopeHash {
    let bytes = canonical_bytes(env);
    env.signature = key.sign(&bytes).as_ref().to_vec();
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &bytes).as_ref());
    out
}

/// Whether `env` carries a valid signature by `public_key` (32 raw bytes).
pub fn verify(env: &Envelope, public_key: &[u8]) -> bool {
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&canonical_bytes(env), &env.signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair as _;

    fn key() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    #[test]
    fn signature_covers_every_field() {
        let k = key();
        let mut env = Envelope {
            channel: "police.example/ops".into(),
            origin: "police.example".into(),
            origin_seq: 1,
            author: "alice".into(),
            hlc: 7,
            kind: 1,
            priority: 1,
            body: b"hello".to_vec(),
            prev: GENESIS_HASH.to_vec(),
            signature: vec![],
            body_sha256: body_digest(b"hello"),
            withheld: false,
        };
        let hash = sign_and_hash(&mut env, &k);
        assert_eq!(
            hash,
            chain_hash(&env),
            "the chain hash does not depend on the signature"
        );
        let public = k.public_key().as_ref().to_vec();
        assert!(verify(&env, &public));
        let tampered: [fn(&mut Envelope); 5] = [
            |e| e.body_sha256[0] ^= 1,
            |e| e.origin_seq += 1,
            |e| e.author.push('x'),
            |e| e.hlc += 1,
            |e| e.prev[0] ^= 1,
        ];
        for t in tampered {
            let mut e = env.clone();
            t(&mut e);
            assert!(!verify(&e, &public));
        }
        assert!(!verify(&env, key().public_key().as_ref()));
        assert_ne!(chain_hash(&env), GENESIS_HASH);
        assert!(body_matches(&env));
        let mut other_body = env.clone();
        other_body.body.push(b'!');
        assert!(
            !body_matches(&other_body),
            "a body is checked against its signed digest"
        );
    }

    #[test]
    fn a_withheld_copy_verifies_and_chains_like_the_original() {
        let k = key();
        let mut env = Envelope {
            channel: "police.example/ops".into(),
            origin: "police.example".into(),
            origin_seq: 3,
            author: "alice".into(),
            hlc: 7,
            kind: 1,
            priority: 1,
            body: b"the bridge is closed".to_vec(),
            prev: GENESIS_HASH.to_vec(),
            signature: vec![],
            body_sha256: body_digest(b"the bridge is closed"),
            withheld: false,
        };
        let hash = sign_and_hash(&mut env, &k);
        let copy = withheld_copy(&env).unwrap();
        assert!(copy.body.is_empty() && copy.withheld);
        assert_eq!(chain_hash(&copy), hash);
        assert!(verify(&copy, k.public_key().as_ref()));
        assert!(body_matches(&copy));
        let mut smuggled = copy.clone();
        smuggled.body = b"something else".to_vec();
        assert!(!body_matches(&smuggled), "a withheld copy carries no body");

        let mut legacy = Envelope {
            body_sha256: vec![],
            signature: vec![],
            ..env.clone()
        };
        sign(&mut legacy, &k);
        assert!(verify(&legacy, k.public_key().as_ref()));
        assert!(
            withheld_copy(&legacy).is_none(),
            "a body signed as is cannot be left out"
        );
        legacy.withheld = true;
        assert!(!body_matches(&legacy));
    }
}
