//! Canonical encoding, chain hash, signature and its check for [`Envelope`].
//!
//! The canonical encoding is the protobuf encoding of the envelope with its
//! `signature` field empty. prost writes fields in number order with no
//! unknown fields, so the same envelope always encodes to the same bytes.

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
    let mut unsigned = env.clone();
    unsigned.signature.clear();
    unsigned.encode_to_vec()
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
            |e| e.body.push(b'!'),
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
    }
}
