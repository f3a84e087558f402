//! Replays the fuzz corpora (`fuzz/corpus/TARGET/`) and every input a fuzzer
//! once found failing (`fuzz/artifacts/TARGET/`) through the decoders, so a
//! crash found once stays fixed; then mutates the seeds at random (proptest)
//! for a short in-test fuzz run on the stable toolchain.
//!
//! `cargo test --test fuzz_corpora -- --ignored` rewrites the seed files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use prost::Message as _;
use ring::signature::KeyPair as _;
use samband::fuzz::{self, CHANNEL, HOME, PEER, TARGETS};
use samband::model::{Cursor, GENESIS_HASH, Hlc, OrgId, sign_and_hash};
use samband::proto::{
    ChannelVector, Envelope, EnvelopeBatch, Kind, LinkFrame, Participant, VectorEntry,
    VersionVectors, link_frame::Frame,
};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

fn target(name: &str) -> fuzz::Target {
    TARGETS.iter().find(|(n, _)| *n == name).unwrap().1
}

#[test]
fn every_corpus_and_artifact_input_is_handled() {
    for (name, run) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} has no seeds");
        for (path, bytes) in corpus
            .iter()
            .chain(&files(&fuzz_dir().join("artifacts").join(name)))
        {
            // A panic here names the file through the test output.
            eprintln!("{}", path.display());
            run(bytes);
        }
    }
}

#[test]
fn the_link_frame_seeds_reach_past_the_signature_check() {
    let dir = fuzz_dir().join("corpus").join("link_frame");
    for (seed, admitted) in [
        ("peer-run", 4),
        ("sealed-run", 4),
        ("home-control", 1),
        ("offer", 1),
    ] {
        let bytes = std::fs::read(dir.join(seed)).unwrap();
        assert_eq!(fuzz::admitted(&bytes), admitted, "{seed}");
    }
}

/// Random edits of a seed: flipped bytes, cuts and insertions.
fn mutated(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    (
        0..seeds.len(),
        prop::collection::vec((any::<u16>(), any::<u8>(), 0u8..3), 0..8),
    )
        .prop_map(move |(i, edits)| {
            let mut bytes = seeds[i].clone();
            for (at, value, kind) in edits {
                let at = if bytes.is_empty() {
                    0
                } else {
                    usize::from(at) % bytes.len()
                };
                match kind {
                    0 if !bytes.is_empty() => bytes[at] = value,
                    1 => bytes.truncate(at),
                    _ => bytes.insert(at, value),
                }
            }
            bytes
        })
}

fn seeds(name: &str) -> Vec<Vec<u8>> {
    files(&fuzz_dir().join("corpus").join(name))
        .into_iter()
        .map(|(_, b)| b)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mutated_link_frames_are_handled(bytes in mutated(seeds("link_frame"))) {
        target("link_frame")(&bytes);
    }

    #[test]
    fn mutated_trust_bundles_are_handled(bytes in mutated(seeds("trust_bundle"))) {
        target("trust_bundle")(&bytes);
    }

    #[test]
    fn mutated_configs_are_handled(bytes in mutated(seeds("config"))) {
        target("config")(&bytes);
    }

    #[test]
    fn mutated_cursors_are_handled(bytes in mutated(seeds("cursor"))) {
        target("cursor")(&bytes);
    }

    #[test]
    fn mutated_audit_exports_are_handled(bytes in mutated(seeds("audit_lines"))) {
        target("audit_lines")(&bytes);
    }

    #[test]
    fn arbitrary_bytes_are_handled(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        for (_, run) in TARGETS {
            run(&bytes);
        }
    }
}

// --- seeds ---

fn chain(origin: &str, kind: Kind, n: u64) -> Vec<Envelope> {
    let key = fuzz::signing_key(origin);
    let mut prev = GENESIS_HASH;
    (1..=n)
        .map(|seq| {
            let mut env = Envelope {
                channel: CHANNEL.into(),
                origin: origin.into(),
                origin_seq: seq,
                // A roster change carries no author or priority.
                author: if kind == Kind::Control { "" } else { "alice" }.into(),
                hlc: Hlc::at(1_700_000_000_000 + seq).0,
                kind: kind as i32,
                priority: if kind == Kind::Control { 0 } else { 1 },
                body: match kind {
                    Kind::Control => samband::rules::control_body(
                        [fuzz::LOCAL, PEER]
                            .map(|org| Participant {
                                org: org.into(),
                                signing_key: fuzz::signing_key(org).public_key().as_ref().to_vec(),
                                active: true,
                                removed_at: 0,
                                last_seq: 0,
                                withheld_through: vec![],
                            })
                            .to_vec(),
                    ),
                    _ => format!("message {seq}").into_bytes(),
                },
                prev: prev.to_vec(),
                signature: vec![],
                body_sha256: vec![],
                withheld: false,
            };
            env.body_sha256 = samband::model::body_digest(&env.body);
            prev = sign_and_hash(&mut env, &key);
            env
        })
        .collect()
}

fn frame(f: Frame) -> Vec<u8> {
    LinkFrame { frame: Some(f) }.encode_to_vec()
}

#[test]
#[ignore = "rewrites fuzz/corpus; run by hand after a format change"]
fn write_seed_corpus() {
    let mut seeds: Vec<(&str, &str, Vec<u8>)> = Vec::new();
    let peer_run = chain(PEER, Kind::Text, 4);
    seeds.push((
        "link_frame",
        "peer-run",
        frame(Frame::Envelopes(EnvelopeBatch {
            envelopes: peer_run.clone(),
            ..Default::default()
        })),
    ));
    let mut unsealed = peer_run.clone();
    for env in &mut unsealed[..3] {
        env.signature.clear();
    }
    seeds.push((
        "link_frame",
        "sealed-run",
        frame(Frame::Envelopes(EnvelopeBatch {
            envelopes: unsealed,
            ..Default::default()
        })),
    ));
    let control = chain(HOME, Kind::Control, 1);
    seeds.push((
        "link_frame",
        "home-control",
        frame(Frame::Envelopes(EnvelopeBatch {
            envelopes: control.clone(),
            ..Default::default()
        })),
    ));
    seeds.push((
        "link_frame",
        "offer",
        frame(Frame::Offer(control[0].clone())),
    ));
    seeds.push((
        "link_frame",
        "hello",
        frame(Frame::Hello(VersionVectors {
            channels: vec![ChannelVector {
                channel: CHANNEL.into(),
                entries: vec![VectorEntry {
                    origin: PEER.into(),
                    seq: 4,
                }],
            }],
        })),
    ));

    let tmp = tempfile::tempdir().unwrap();
    let org = OrgId::parse("police.example").unwrap();
    let pki = samband::pki::OrgPki::create(tmp.path(), &org, &[]).unwrap();
    let bundle = samband::federation::own_bundle(&org, &pki, "samband.police.example:7444")
        .unwrap()
        .to_text();
    seeds.push(("trust_bundle", "bundle", bundle.into_bytes()));

    let config = samband::config::Config::template(
        &org,
        "0.0.0.0:7443".parse().unwrap(),
        "samband.police.example:7443",
        "0.0.0.0:7444".parse().unwrap(),
        "samband.police.example:7444",
        &samband::config::Limits::default(),
    );
    seeds.push(("config", "template", config.into_bytes()));

    let cursor = Cursor {
        hlc: Hlc::at(1_700_000_000_000),
        origin: org.clone(),
        seq: 42,
    };
    seeds.push(("cursor", "cursor", cursor.encode().into_bytes()));

    let mut head = samband::audit::Head::default();
    let mut export = String::new();
    for (i, kind) in ["peer.added", "channel.shared", "federation.rejected"]
        .into_iter()
        .enumerate()
    {
        let entry = head.next(
            format!("2026-11-29T08:00:0{i}.000Z"),
            samband::audit::Event::new(kind).with("org", "rescue.example"),
        );
        head = samband::audit::Head::of(&entry).unwrap();
        export.push_str(&serde_json::to_string(&entry).unwrap());
        export.push('\n');
    }
    seeds.push(("audit_lines", "export", export.into_bytes()));

    for (target, name, bytes) in seeds {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
