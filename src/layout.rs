//! The node directory's layout: where `init` puts each part and where every
//! other command and the running node find it. The one module that knows
//! these names; it uses no other module of the crate.
//!
//! ```text
//! DIR/config.toml    the node's configuration (`config`)
//! DIR/pki/           the org CA, node certificate, message key, issued member certificates
//! DIR/data/          the store (sled)
//! DIR/operator/      the identity bundle samband's own admin commands use
//! DIR/client.addr    the member address a running node listens on, for commands run with --dir
//! ```

use std::path::{Path, PathBuf};

/// The member name of the operator identity `init` makes in `operator/`.
pub const OPERATOR_NAME: &str = "operator";

/// `DIR/config.toml`.
pub fn config_file(dir: &Path) -> PathBuf {
    dir.join("config.toml")
}

/// `DIR/pki/`.
pub fn pki_dir(dir: &Path) -> PathBuf {
    dir.join("pki")
}

/// `DIR/data/`: the store.
pub fn data_dir(dir: &Path) -> PathBuf {
    dir.join("data")
}

/// `DIR/operator/`: the operator's identity bundle.
pub fn operator_dir(dir: &Path) -> PathBuf {
    dir.join("operator")
}

/// The member address the running node recorded in `DIR/client.addr`, if
/// it has run (an unreadable or malformed file counts as none).
pub fn recorded_client_address(dir: &Path) -> Option<std::net::SocketAddr> {
    std::fs::read_to_string(client_address_file(dir))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `DIR/client.addr`: written by a running node (or the demo) so that
/// commands given only `--dir` know where to connect.
pub fn client_address_file(dir: &Path) -> PathBuf {
    dir.join("client.addr")
}
