//! The node's configuration file, `DIR/config.toml`.
//!
//! Owns parsing, defaults and validation, and the commented template that
//! `init` writes. Every key is documented here and in the template; an
//! unknown key or a bad value is an error that names the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::OrgId;

/// A node's configuration, as validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// The organisation this node serves.
    pub org: OrgId,
    pub client: ClientSection,
    pub federation: FederationSection,
    pub limits: Limits,
    pub store: StoreSection,
    pub log: LogSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// Address the member listener binds (gRPC, mutual TLS 1.3).
    pub listen: SocketAddr,
    /// `host:port` members dial; written into their identity bundles.
    pub advertise: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationSection {
    /// Address the partner-node listener binds.
    pub listen: SocketAddr,
    /// `host:port` partner nodes dial; written into this org's trust bundle.
    pub advertise: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest message body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Live subscribers one channel may have on this node.
    pub subscribers_per_channel: usize,
    /// Posts per second one member may make over time (0: no limit).
    pub member_posts_per_second: u32,
    /// Posts one member may make at once before the rate applies.
    pub member_post_burst: u32,
    /// Envelopes per second a partner node may push over time (0: no
    /// limit); a faster partner is slowed down, never refused.
    pub peer_envelopes_per_second: u32,
    /// Envelopes a partner may push at once before the rate applies
    /// (catch-up after an outage).
    pub peer_envelope_burst: u32,
    /// Concurrent calls (HTTP/2 streams) one connection may have open.
    pub streams_per_connection: u32,
    /// Connections each listener keeps open at once; more wait.
    pub connections_per_listener: usize,
    /// Channels one partner org may share with this node; further offers
    /// from it are refused (and audited).
    pub channels_per_partner: usize,
    /// Seconds a subscriber may leave its full buffer unread before it is
    /// cut off (it resumes from its last cursor).
    pub subscriber_stall_seconds: u64,
    /// Largest file a member may upload, in bytes.
    pub max_file_bytes: u64,
    /// Files one post may reference.
    pub max_files_per_post: usize,
    /// Bytes per second one member may upload over time (0: no limit); a
    /// faster upload is slowed down, never refused.
    pub member_upload_bytes_per_second: u32,
    /// Bytes that must stay free on the file system of the data directory:
    /// an upload that would leave less is refused (0: none kept).
    pub disk_reserve_bytes: u64,
    /// Seconds an upload that no post references is kept before it is removed.
    pub unposted_upload_seconds: u64,
    /// Bytes of files per second written, node-wide, while messages are
    /// being written (0: no limit), so that messages do not wait behind
    /// file data for the disk.
    pub file_bytes_per_second_during_messages: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Memory sled may use for its page cache, in MiB.
    pub cache_mib: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A tracing filter such as `info` or `samband=debug,info`.
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

/// The file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    org: String,
    client: ClientSection,
    federation: FederationSection,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    store: StoreSection,
    #[serde(default)]
    log: LogSection,
}

/// Upper bound for `limits.max_body_bytes`: large payloads belong in files,
/// not messages. A message at the ceiling, with its other fields, stays
/// under the 4 MiB that stock gRPC clients decode by default, so every
/// message a node accepts can be read by every client.
pub const MAX_BODY_CEILING: usize = (4 << 20) - (16 << 10);

/// Largest envelope a node accepts from a partner: a body at the ceiling
/// plus room for the envelope's other fields. Partners may allow larger
/// posts than this node does; refusing theirs would stall that origin here.
///
/// It stays at what it was before the body ceiling was lowered (4 MiB plus
/// 4 KiB): a partner on an earlier version may still send a message of
/// 4 MiB, and refusing it would stop that origin here for good.
pub const MAX_ENVELOPE_BYTES: usize = EARLIER_BODY_CEILING + 4096;

/// The body ceiling of earlier versions. A config with a limit between the
/// ceiling and this is taken at the ceiling, with a warning, so that an
/// upgraded node still starts.
const EARLIER_BODY_CEILING: usize = 4 << 20;

// === impl Config ===

impl Config {
    /// Reads and validates `DIR/config.toml`.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let path = crate::layout::config_file(dir);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        Self::parse(&text, &path)
    }

    /// Parses and validates configuration text; `path` is only used in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let invalid = |key, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        let org = OrgId::parse(&raw.org).map_err(|e| invalid("org", e.to_string()))?;
        // An upgraded node still starts.
        if (MAX_BODY_CEILING + 1..=EARLIER_BODY_CEILING).contains(&raw.limits.max_body_bytes) {
            tracing::warn!(
                configured = raw.limits.max_body_bytes,
                used = MAX_BODY_CEILING,
                "limits.max_body_bytes is above the ceiling (so that every message stays readable by \
                 stock clients); using the ceiling"
            );
            raw.limits.max_body_bytes = MAX_BODY_CEILING;
        }
        // (key, value, most): every limit is at least 1; `None` is no upper bound.
        let limits = &raw.limits;
        let ranges: [(&'static str, u64, Option<u64>); 12] = [
            (
                "limits.max_body_bytes",
                limits.max_body_bytes as u64,
                Some(MAX_BODY_CEILING as u64),
            ),
            (
                "limits.subscribers_per_channel",
                limits.subscribers_per_channel as u64,
                Some(100_000),
            ),
            (
                "limits.member_post_burst",
                u64::from(limits.member_post_burst),
                None,
            ),
            (
                "limits.peer_envelope_burst",
                u64::from(limits.peer_envelope_burst),
                None,
            ),
            (
                "limits.streams_per_connection",
                u64::from(limits.streams_per_connection),
                None,
            ),
            (
                "limits.channels_per_partner",
                limits.channels_per_partner as u64,
                None,
            ),
            (
                "limits.connections_per_listener",
                limits.connections_per_listener as u64,
                Some(1_000_000),
            ),
            (
                "limits.subscriber_stall_seconds",
                limits.subscriber_stall_seconds,
                Some(86_400),
            ),
            ("store.cache_mib", raw.store.cache_mib, Some(65_536)),
            (
                "limits.max_file_bytes",
                limits.max_file_bytes,
                Some(1 << 40),
            ),
            (
                "limits.max_files_per_post",
                limits.max_files_per_post as u64,
                Some(crate::model::MAX_FILES_PER_POST as u64),
            ),
            (
                "limits.unposted_upload_seconds",
                limits.unposted_upload_seconds,
                Some(30 * 86_400),
            ),
        ];
        for (key, value, most) in ranges {
            match most {
                Some(most) if !(1..=most).contains(&value) => {
                    return Err(invalid(
                        key,
                        format!("must be between 1 and {most}, not {value}"),
                    ));
                }
                None if value == 0 => return Err(invalid(key, "must be at least 1".into())),
                _ => {}
            }
        }
        let advertised = [
            ("client.advertise", &raw.client.advertise),
            ("federation.advertise", &raw.federation.advertise),
        ];
        for (key, value) in advertised {
            let valid = value
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !valid {
                return Err(invalid(key, format!("must be host:port, not {value:?}")));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&raw.log.level).is_err() {
            return Err(invalid(
                "log.level",
                format!("{:?} is not a log filter (try \"info\")", raw.log.level),
            ));
        }
        Ok(Self {
            org,
            client: raw.client,
            federation: raw.federation,
            limits: raw.limits,
            store: raw.store,
            log: raw.log,
        })
    }

    /// The commented file `init` writes, with these `limits` (as the
    /// shipped defaults, or changed by the caller: tests, the bench).
    pub fn template(
        org: &OrgId,
        client_listen: SocketAddr,
        advertise: &str,
        federation_listen: SocketAddr,
        federation_advertise: &str,
        limits: &Limits,
    ) -> String {
        let store = StoreSection::default();
        format!(
            r#"# samband node configuration, written by `samband init`.
# `samband serve --dir DIR` reads it; a bad key or value stops the node with
# a message naming the key. Flags of `serve` override some keys.

# The organisation this node serves (lower-case DNS-style name). It is bound
# to the CA in pki/ and to the data in data/: do not change it afterwards.
org = "{org}"

[client]
# Address the member listener binds: gRPC over mutual TLS 1.3, client
# certificates issued by this organisation's CA only.
listen = "{client_listen}"
# host:port members dial; written into the identity bundles that
# `samband user add` creates. The host must be one of the node certificate's
# names (see `samband init --host`).
advertise = "{advertise}"

[federation]
# Address partner organisations' nodes connect to (mutual TLS 1.3, pinned
# partner CAs only).
listen = "{federation_listen}"
# host:port partner nodes dial; written into this org's trust bundle
# (`samband trust export`). Port 0 means "the port `listen` got".
advertise = "{federation_advertise}"

[limits]
# Largest message body accepted, in bytes (at most {ceiling}). Larger posts
# are refused with INVALID_ARGUMENT.
max_body_bytes = {max_body}
# Live subscribers (tail --follow, Subscribe) one channel may have on this
# node; more are refused with RESOURCE_EXHAUSTED.
subscribers_per_channel = {subscribers}
# Posts one member may make: {member_burst} at once, then {member_rate} per second
# (0: no limit). Beyond that posts are refused with RESOURCE_EXHAUSTED. Raise
# it for a node whose members include gateways or bridges.
member_posts_per_second = {member_rate}
member_post_burst = {member_burst}
# Envelopes one partner node may push: {peer_burst} at once (catch-up after an
# outage), then {peer_rate} per second (0: no limit). A faster partner is slowed
# down, never refused: nothing it sends is lost.
peer_envelopes_per_second = {peer_rate}
peer_envelope_burst = {peer_burst}
# Concurrent calls one connection may have open (HTTP/2 streams); more wait.
streams_per_connection = {streams}
# Connections each listener (members, partners) keeps open at once; more
# wait until one closes. Keep it below the process's open-file limit.
connections_per_listener = {connections}
# Channels one partner org may share with this node; its further offers are
# refused and recorded in the audit log.
channels_per_partner = {channels}
# A subscriber that leaves its buffer unread this many seconds is cut off
# with RESOURCE_EXHAUSTED; it resumes from the last cursor it received.
subscriber_stall_seconds = {stall}
# Largest file a member may attach, in bytes ({max_file_mib} MiB). Larger
# uploads are refused with RESOURCE_EXHAUSTED before they are stored.
max_file_bytes = {max_file}
# Files one post may attach (at most 100).
max_files_per_post = {files_per_post}
# Bytes per second one member may upload (0: no limit). A faster upload is
# slowed down, never refused.
member_upload_bytes_per_second = {upload_rate}
# Bytes that must stay free on the disk of the data directory. An upload that
# would leave less is refused with RESOURCE_EXHAUSTED (0: keep none free).
disk_reserve_bytes = {disk_reserve}
# Seconds an uploaded file that no post references is kept before it is
# removed. Files a stored message references are never removed.
unposted_upload_seconds = {unposted}
# Bytes of files per second the node writes (uploads and partners' files
# together) while messages are being written, and for a second after
# (0: no limit). Every message waits for the disk; behind a large backlog of
# file data that wait grows from milliseconds to a tenth of a second. With
# no messages, files are written at full speed.
file_bytes_per_second_during_messages = {file_pace}

[store]
# Memory the embedded store (sled) may use for its page cache, in MiB.
cache_mib = {cache_mib}

[log]
# "human" or "json" (one JSON object per line). `serve --log-format` overrides.
format = "human"
# Which events to log: a tracing filter such as "info" or "samband=debug,info".
level = "info"
"#,
            ceiling = MAX_BODY_CEILING,
            max_body = limits.max_body_bytes,
            subscribers = limits.subscribers_per_channel,
            member_rate = limits.member_posts_per_second,
            member_burst = limits.member_post_burst,
            peer_rate = limits.peer_envelopes_per_second,
            peer_burst = limits.peer_envelope_burst,
            streams = limits.streams_per_connection,
            connections = limits.connections_per_listener,
            channels = limits.channels_per_partner,
            stall = limits.subscriber_stall_seconds,
            max_file = limits.max_file_bytes,
            max_file_mib = limits.max_file_bytes >> 20,
            files_per_post = limits.max_files_per_post,
            upload_rate = limits.member_upload_bytes_per_second,
            disk_reserve = limits.disk_reserve_bytes,
            unposted = limits.unposted_upload_seconds,
            file_pace = limits.file_bytes_per_second_during_messages,
            cache_mib = store.cache_mib,
        )
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            subscribers_per_channel: 1000,
            member_posts_per_second: 100,
            member_post_burst: 1000,
            peer_envelopes_per_second: 20_000,
            peer_envelope_burst: 200_000,
            streams_per_connection: 256,
            connections_per_listener: 1024,
            channels_per_partner: 1000,
            subscriber_stall_seconds: 60,
            max_file_bytes: 100 << 20,
            max_files_per_post: 10,
            member_upload_bytes_per_second: 64 << 20,
            disk_reserve_bytes: 1 << 30,
            unposted_upload_seconds: 86_400,
            file_bytes_per_second_during_messages: 32 << 20,
        }
    }
}

impl Default for StoreSection {
    fn default() -> Self {
        Self { cache_mib: 64 }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> String {
        let org = OrgId::parse("police.example").unwrap();
        Config::template(
            &org,
            "127.0.0.1:7443".parse().unwrap(),
            "localhost:7443",
            "127.0.0.1:7444".parse().unwrap(),
            "localhost:7444",
            &Limits::default(),
        )
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("config.toml"))
    }

    #[test]
    fn template_parses_with_defaults() {
        let c = parse(&template()).unwrap();
        assert_eq!(c.org.as_str(), "police.example");
        assert_eq!(c.limits.max_body_bytes, 65536);
        assert_eq!(c.log.format, LogFormat::Human);
    }

    #[test]
    fn a_body_limit_of_an_earlier_version_is_taken_at_the_ceiling() {
        let text = template().replace("max_body_bytes = 65536", "max_body_bytes = 4194304");
        let c = parse(&text).unwrap();
        assert_eq!(c.limits.max_body_bytes, MAX_BODY_CEILING);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "max_body_bytes = 65536",
                "max_body_bytes = 0",
                "limits.max_body_bytes",
            ),
            ("cache_mib = 64", "cache_mib = -1", "cache_mib"),
            ("org = \"police.example\"", "org = \"Police\"", "org"),
            ("format = \"human\"", "format = \"xml\"", "format"),
            (
                "listen = \"127.0.0.1:7443\"",
                "listen = \"nowhere\"",
                "listen",
            ),
            (
                "advertise = \"localhost:7443\"",
                "advertise = \"localhost\"",
                "client.advertise",
            ),
            (
                "advertise = \"localhost:7444\"",
                "advertise = \"\"",
                "federation.advertise",
            ),
            ("level = \"info\"", "level = \"=[\"", "log.level"),
            ("[limits]", "[limits]\nmax_bodybytes = 1", "max_bodybytes"),
            (
                "member_post_burst = 1000",
                "member_post_burst = 0",
                "limits.member_post_burst",
            ),
            (
                "streams_per_connection = 256",
                "streams_per_connection = 0",
                "limits.streams_per_connection",
            ),
            (
                "channels_per_partner = 1000",
                "channels_per_partner = 0",
                "limits.channels_per_partner",
            ),
            (
                "connections_per_listener = 1024",
                "connections_per_listener = 0",
                "limits.connections_per_listener",
            ),
            (
                "subscriber_stall_seconds = 60",
                "subscriber_stall_seconds = 0",
                "limits.subscriber_stall_seconds",
            ),
            // Above the upper bounds.
            (
                "max_body_bytes = 65536",
                "max_body_bytes = 4194305",
                "between 1 and 4177920, not 4194305",
            ),
            (
                "subscribers_per_channel = 1000",
                "subscribers_per_channel = 100001",
                "limits.subscribers_per_channel",
            ),
            (
                "subscriber_stall_seconds = 60",
                "subscriber_stall_seconds = 86401",
                "limits.subscriber_stall_seconds",
            ),
            ("cache_mib = 64", "cache_mib = 65537", "store.cache_mib"),
        ];
        for (from, to, key) in cases {
            let text = template().replacen(from, to, 1);
            assert_ne!(text, template(), "case {from} did not apply");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(key), "{to}: error {err:?} does not name {key}");
        }
    }
}
