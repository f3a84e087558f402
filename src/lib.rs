//! samband: a federated organisation-to-organisation relay for crisis
//! communication. Each organisation runs its own node; members talk over
//! gRPC with mutual TLS; every acknowledged message is on disk.
//!
//! # Layout
//!
//! * [`model`] — plain values: org, channel and member names, hybrid
//!   logical clock, cursors, envelope signing. Pure, no I/O.
//! * [`audit`] — the hash-chained audit log's entries and their check.
//! * [`config`] — `config.toml`: parsing, defaults, validation, template.
//! * [`pki`] — the org CA, node and member certificates (rcgen), the
//!   message-signing key, rustls settings, identity bundles.
//! * [`rate`] — token buckets for the per-member and per-peer limits.
//! * [`identity`] — who is calling, from a verified client certificate.
//! * [`store`] — the only code that touches sled; all key layouts.
//! * [`trust`] — trust bundles and their fingerprints.
//! * [`rules`] — the federation's decisions, pure: eligibility, accepting
//!   or rejecting what a partner sends, rosters, pinned keys.
//! * [`federation`] — peers, links, replication of shared channels.
//! * [`node`] — a running node: writer with group commit, fan-out,
//!   subscriptions, TLS listener, ordered shutdown.
//! * `api` — tonic services; the one place errors become `Status`.
//! * [`fuzz`] — entry points of the fuzz targets for every outside decoder.
//! * [`setup`] — creating node directories (`init`) and member bundles.
//! * [`client`] — connecting to a node as a member.
//! * [`proto`] — generated protobuf and gRPC code (`proto/`).
//!
//! The binary (`src/main.rs`, `src/cli/`) parses the command line and calls
//! into this library; the library never reads environment variables or exits.

#![forbid(unsafe_code)]

mod api;
pub mod audit;
pub mod cap;
pub mod client;
pub mod config;
pub mod engine;
pub mod federation;
pub mod fuzz;
pub mod identity;
pub mod layout;
mod locks;
pub mod model;
pub mod node;
pub mod pki;
pub mod rate;
pub mod rules;
pub mod runtime;
pub mod setup;
pub mod store;
pub mod trust;

/// Generated from `proto/samband/v1/*.proto`.
#[allow(
    missing_docs,
    unreachable_pub,
    clippy::all,
    missing_debug_implementations
)]
pub mod proto {
    tonic::include_proto!("samband.v1");
    // `Federation`, generated with the link's bounded codec (see build.rs).
    include!(concat!(env!("OUT_DIR"), "/samband.v1.Federation.rs"));

    /// The encoded descriptor set of `proto/`, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/samband_descriptor.bin"));
}
