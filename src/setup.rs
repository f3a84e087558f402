//! Creating node directories and member identities: what `init` and
//! `user add` do, as library calls that tests use too.
//!
//! A node directory holds `config.toml`, `pki/` (CA, node certificate,
//! signing key), `data/` (the store) and `operator/` (an admin identity
//! bundle for the local operator).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError};
use crate::model::{MemberName, OrgId, Role};
use crate::pki::{IdentityBundle, MEMBER_DAYS, OrgPki, PkiError, Validity};
use crate::store::{Store, StoreError};

use crate::layout::OPERATOR_NAME;

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0} exists and is not empty; refusing to overwrite it")]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "{0} is reserved for the identity samband's own commands use (DIR/operator); pick another name"
    )]
    Reserved(String),
}

/// What `init` needs to know.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub org: OrgId,
    pub client_listen: SocketAddr,
    pub federation_listen: SocketAddr,
    /// Extra names (DNS or IP) for the node certificate.
    pub hosts: Vec<String>,
    /// The `[limits]` written into the config (the shipped defaults unless
    /// the caller changes them: tests, the bench).
    pub limits: crate::config::Limits,
}

impl InitOptions {
    /// A node of `org` on loopback, both listeners on ports the system picks
    /// at start (demo, bench, tests).
    pub fn loopback(org: OrgId) -> Self {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            org,
            client_listen: any_port,
            federation_listen: any_port,
            hosts: Vec::new(),
            limits: crate::config::Limits::default(),
        }
    }
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_none())
}

/// The `host:port` others dial to reach `listen`: the first `--host` for a
/// wildcard address, the address itself otherwise.
fn advertise(listen: SocketAddr, hosts: &[String]) -> String {
    if listen.ip().is_unspecified() {
        let host = hosts.first().map_or("localhost", String::as_str);
        let port = listen.port();
        return if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
    }
    listen.to_string()
}

/// Creates a node directory. Refuses a directory that exists and is not empty.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<(), SetupError> {
    if dir.exists() && !is_empty_dir(dir) {
        return Err(SetupError::Exists(dir.to_owned()));
    }
    let io = |source| SetupError::Io {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    let advertise_client = advertise(opts.client_listen, &opts.hosts);
    let text = Config::template(
        &opts.org,
        opts.client_listen,
        &advertise_client,
        opts.federation_listen,
        &advertise(opts.federation_listen, &opts.hosts),
        &opts.limits,
    );
    let config_path = crate::layout::config_file(dir);
    // Check our own template before writing it, so a bad flag never leaves a broken directory.
    Config::parse(&text, &config_path)?;
    let pki = OrgPki::create(dir, &opts.org, &opts.hosts)?;
    let store = Store::create(&crate::layout::data_dir(dir), &opts.org, 8 << 20)?;
    let operator = MemberName::parse(OPERATOR_NAME).map_err(|e| PkiError::Tls(e.to_string()))?;
    pki.issue_member(
        &opts.org,
        &operator,
        Role::Admin,
        &advertise_client,
        &crate::layout::operator_dir(dir),
        Validity::days(MEMBER_DAYS),
    )?;
    // The audit log's first entry: the operator identity, issued here.
    crate::engine::record_issued(&pki, &store, &crate::audit::Actor::Host)
        .map_err(|e| PkiError::Tls(e.to_string()))?;
    drop(store);
    std::fs::write(&config_path, text).map_err(|source| SetupError::Io {
        path: config_path,
        source,
    })?;
    Ok(())
}

/// Issues a member identity bundle into `out` (which must not exist or be empty).
pub fn add_user(
    dir: &Path,
    name: &MemberName,
    role: Role,
    out: &Path,
    validity: Validity,
) -> Result<IdentityBundle, SetupError> {
    if name.as_str() == OPERATOR_NAME {
        return Err(SetupError::Reserved(name.to_string()));
    }
    let config = Config::load(dir)?;
    if out.exists() && !is_empty_dir(out) {
        return Err(SetupError::Exists(out.to_owned()));
    }
    OrgPki::at(dir).check_org(&config.org)?;
    Ok(OrgPki::at(dir).issue_member(
        &config.org,
        name,
        role,
        &member_endpoint(dir, &config),
        out,
        validity,
    )?)
}

/// Where a member bundle says to connect: `client.advertise`, except that
/// its port 0 (bound at start) becomes the port the running node got, as
/// it recorded in `DIR/client.addr` (while it has not run, port 0 stays,
/// and only `--dir` on this host finds the node).
fn member_endpoint(dir: &Path, config: &Config) -> String {
    let advertise = &config.client.advertise;
    let Some(host) = advertise.strip_suffix(":0") else {
        return advertise.clone();
    };
    crate::layout::recorded_client_address(dir)
        .map_or_else(|| advertise.clone(), |a| format!("{host}:{}", a.port()))
}

/// Re-issues `name`'s certificate (the role of its newest one, a new key)
/// as the bundle `out`, replacing a bundle there whole; the operator's
/// (`name` = `operator`) goes to `DIR/operator` whatever `out` says. The
/// old certificate stays valid until it expires or is revoked.
/// Errors: [`PkiError::NeverIssued`] (through `SetupError::Pki`) when no
/// certificate was issued to `name` here.
pub fn renew_user(
    dir: &Path,
    name: &MemberName,
    out: &Path,
    validity: Validity,
) -> Result<IdentityBundle, SetupError> {
    let config = Config::load(dir)?;
    let out = if name.as_str() == OPERATOR_NAME {
        crate::layout::operator_dir(dir)
    } else {
        out.to_owned()
    };
    OrgPki::at(dir).check_org(&config.org)?;
    Ok(OrgPki::at(dir).renew_member(
        &config.org,
        name,
        &member_endpoint(dir, &config),
        &out,
        validity,
    )?)
}

/// Renews the operator identity (`DIR/operator`) for [`MEMBER_DAYS`].
pub fn renew_operator(dir: &Path) -> Result<IdentityBundle, SetupError> {
    let operator = MemberName::parse(OPERATOR_NAME).map_err(|e| PkiError::Tls(e.to_string()))?;
    renew_user(
        dir,
        &operator,
        &crate::layout::operator_dir(dir),
        Validity::days(MEMBER_DAYS),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_makes_a_loadable_node_and_refuses_to_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("node");
        let opts = InitOptions {
            org: OrgId::parse("police.example").unwrap(),
            client_listen: "0.0.0.0:7443".parse().unwrap(),
            federation_listen: "0.0.0.0:7444".parse().unwrap(),
            hosts: vec!["samband.police.example".into()],
            limits: Default::default(),
        };
        init(&dir, &opts).unwrap();
        let config = Config::load(&dir).unwrap();
        assert_eq!(config.client.advertise, "samband.police.example:7443");
        assert!(IdentityBundle::load(&crate::layout::operator_dir(&dir)).is_ok());
        #[cfg(unix)]
        for key in [
            "pki/ca.key",
            "pki/node.key",
            "pki/signing.key",
            "operator/key.pem",
        ] {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        assert!(matches!(init(&dir, &opts), Err(SetupError::Exists(_))));
        let alice = MemberName::parse("alice").unwrap();
        add_user(
            &dir,
            &alice,
            Role::Member,
            &tmp.path().join("alice"),
            Validity::days(1),
        )
        .unwrap();
        assert!(matches!(
            add_user(
                &dir,
                &alice,
                Role::Member,
                &tmp.path().join("alice"),
                Validity::days(1)
            ),
            Err(SetupError::Exists(_))
        ));
        let operator = MemberName::parse(OPERATOR_NAME).unwrap();
        let out = tmp.path().join("op2");
        assert!(matches!(
            add_user(&dir, &operator, Role::Admin, &out, Validity::days(1)),
            Err(SetupError::Reserved(_))
        ));
    }
}
