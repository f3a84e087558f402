//! Talking to a running node: the small runtime client commands run on, the
//! connection a command's flags name, the operator's Admin client, and how
//! a gRPC status is told to a person.

use std::future::Future;

use anyhow::{Context as _, bail};
use samband::client;
use samband::pki::IdentityBundle;
use samband::proto::admin_client::AdminClient;
use samband::proto::messaging_client::MessagingClient;
use tonic::transport::Channel;

use super::Connection;

/// Runs a client command on a small runtime.
pub(crate) fn run(command: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(command)
}

/// The identity bundle in `dir`, refused with what to do if its
/// certificate expired: said here, where it can be said plainly, since
/// under TLS 1.3 the node's refusal arrives only as an alert on the first
/// call. `node_dir` is the node directory when `dir` is its operator's.
pub(crate) fn load_unexpired(
    dir: &std::path::Path,
    node_dir: Option<&std::path::Path>,
) -> anyhow::Result<IdentityBundle> {
    if samband::layout::config_file(dir).is_file() {
        bail!(
            "{} is a node directory, not an identity bundle: give it with --dir",
            dir.display()
        );
    }
    let bundle = IdentityBundle::load(dir)
        .with_context(|| format!("loading identity bundle {}", dir.display()))?;
    let cert = bundle
        .certificate()
        .with_context(|| format!("loading identity bundle {}", dir.display()))?;
    let now = time::OffsetDateTime::now_utc();
    if cert.not_before > now {
        bail!(
            "the certificate of {} ({}) is not valid until {}: this machine's clock, or the one \
             of the host that issued it, is wrong; fix the clock, or renew it on the node's host",
            bundle.info.member,
            dir.display(),
            samband::model::rfc3339(cert.not_before)
        );
    }
    if cert.not_after > now {
        return Ok(bundle);
    }
    let member = &bundle.info.member;
    let expired = samband::model::rfc3339(cert.not_after);
    match node_dir {
        Some(node) if member == samband::layout::OPERATOR_NAME => bail!(
            "the operator identity {} expired on {expired}; renew it on the node's host with \
             `samband user renew operator --dir {}` (or `samband pki renew`, which renews it too)",
            dir.display(),
            node.display()
        ),
        _ => bail!(
            "the certificate of {member} ({}) expired on {expired}; ask your operator for a new one \
             (samband user renew {member} --out BUNDLE_DIR)",
            dir.display()
        ),
    }
}

impl Connection {
    /// The flags this command was given to reach the node, to repeat in a
    /// command it suggests (quoted for a POSIX shell).
    pub(crate) fn flags(&self) -> String {
        let quote = |s: &str| {
            if s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-:@[]".contains(c))
            {
                s.to_owned()
            } else {
                format!("'{}'", s.replace('\'', r"'\''"))
            }
        };
        let mut out = String::new();
        if let Some(i) = &self.identity {
            out.push_str(&format!(" --identity {}", quote(&i.display().to_string())));
        }
        if let Some(d) = &self.dir {
            out.push_str(&format!(" --dir {}", quote(&d.display().to_string())));
        }
        if let Some(e) = &self.endpoint {
            out.push_str(&format!(" --endpoint {}", quote(e)));
        }
        out
    }

    pub(crate) fn bundle(&self) -> anyhow::Result<IdentityBundle> {
        let from_env = || std::env::var_os("SAMBAND_IDENTITY").map(std::path::PathBuf::from);
        let dir = match (&self.identity, &self.dir) {
            (Some(bundle), _) => bundle.clone(),
            (None, Some(node)) => samband::layout::operator_dir(super::node_dir(node)?),
            (None, None) => match from_env() {
                Some(bundle) => bundle,
                None => bail!(
                    "no identity: pass --identity BUNDLE_DIR, set SAMBAND_IDENTITY, or --dir NODE_DIR"
                ),
            },
        };
        let node_dir = if self.identity.is_none() {
            self.dir.as_deref()
        } else {
            None
        };
        load_unexpired(&dir, node_dir)
    }

    /// A gRPC channel to the node, as the chosen identity.
    pub(crate) async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(self.channel_and_endpoint().await?.0)
    }

    /// With `--dir` (on the node's host, as its operator) the node is
    /// dialed where it listens ([`super::dial_local`]).
    pub(crate) async fn channel_and_endpoint(&self) -> anyhow::Result<(Channel, String)> {
        let bundle = self.bundle()?;
        if let Some(endpoint) = &self.endpoint {
            let channel = client::connect_channel(&bundle, Some(endpoint)).await?;
            return Ok((channel, endpoint.clone()));
        }
        match (&self.identity, &self.dir) {
            (None, Some(dir)) => Ok(super::dial_local(dir, &bundle).await?),
            _ => {
                let channel = client::connect_channel(&bundle, None).await?;
                Ok((channel, bundle.info.endpoint.clone()))
            }
        }
    }

    pub(crate) async fn connect(&self) -> anyhow::Result<(MessagingClient<Channel>, String)> {
        let (channel, endpoint) = self.channel_and_endpoint().await?;
        Ok((MessagingClient::new(channel), endpoint))
    }
}

pub(crate) async fn admin(conn: &Connection) -> anyhow::Result<AdminClient<Channel>> {
    Ok(AdminClient::new(conn.channel().await?))
}

/// A gRPC error as a person reads it.
pub(crate) fn rpc(status: tonic::Status) -> anyhow::Error {
    let code = match status.code() {
        tonic::Code::InvalidArgument => "invalid request",
        tonic::Code::NotFound => "not found",
        tonic::Code::AlreadyExists => "already exists",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::Unauthenticated => "not authenticated",
        tonic::Code::Unavailable => "node unavailable",
        tonic::Code::ResourceExhausted => "limit reached",
        tonic::Code::FailedPrecondition => "not possible now",
        _ => "node error",
    };
    let detail = if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_owned()
    };
    // Under TLS 1.3 a refused client certificate shows only here, on the first call.
    let hint = if samband::client::tls_refused(&status) {
        " (the node refused this identity's certificate: revoked, expired, of another \
         organisation, or this is not its member port)"
    } else {
        ""
    };
    anyhow::anyhow!("{code}: {detail}{hint}")
}
