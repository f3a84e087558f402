//! A node started in this process on loopback: what `samband demo`,
//! `samband bench` and the tests run, and what an embedding program would
//! use; with the one trust exchange they all make between two such nodes
//! (each operator exports its bundle, the other imports it with its
//! fingerprint), through the Admin API as an operator would.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::{Listeners, Node, NodeError};
use crate::client::ClientError;
use crate::config::Config;
use crate::model::OrgId;
use crate::pki::IdentityBundle;
use crate::proto::{self, admin_client::AdminClient};

/// A running in-process node.
#[derive(Debug)]
pub struct LocalNode {
    pub dir: PathBuf,
    pub org: OrgId,
    /// Member listener.
    pub client: SocketAddr,
    /// Federation listener.
    pub federation: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), NodeError>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalNodeError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen: {0}")]
    Bind(#[from] std::io::Error),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{}: {}", .0.code(), .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("the node task failed: {0}")]
    Join(String),
}

impl LocalNode {
    /// Starts the node in `dir` (made by `setup::init`) on the given
    /// (client, federation) addresses, or on those of its config.
    pub async fn start(
        dir: &Path,
        addrs: Option<(SocketAddr, SocketAddr)>,
    ) -> Result<Self, LocalNodeError> {
        let node = Node::open(dir, Config::load(dir)?)?;
        let org = node.config().org.clone();
        let listeners = match addrs {
            Some((client, federation)) => Listeners::bind_to(client, federation).await?,
            None => Listeners::bind(node.config()).await?,
        };
        let (client, federation) = (
            listeners.client.local_addr()?,
            listeners.federation.local_addr()?,
        );
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(node.run(listeners, shutdown.clone()));
        Ok(Self {
            dir: dir.to_owned(),
            org,
            client,
            federation,
            shutdown,
            task,
        })
    }

    /// A channel to the node as its operator.
    pub async fn operator(&self) -> Result<Channel, ClientError> {
        let bundle = IdentityBundle::load(&crate::layout::operator_dir(&self.dir))?;
        crate::client::connect_channel(&bundle, Some(&self.client.to_string())).await
    }

    /// The operator's Admin client.
    pub async fn admin(&self) -> Result<AdminClient<Channel>, ClientError> {
        Ok(AdminClient::new(self.operator().await?))
    }

    /// This node's operator imports `other`'s trust bundle (exported by
    /// `other`'s operator, fingerprint checked); this node dials `other` at
    /// `endpoint`, or never (`None`: `other` dials it).
    pub async fn trust(
        &self,
        other: &LocalNode,
        endpoint: Option<String>,
        accept: proto::AcceptPolicy,
    ) -> Result<(), LocalNodeError> {
        let bundle = other
            .admin()
            .await?
            .export_trust(proto::ExportTrustRequest {})
            .await?
            .into_inner();
        let req = proto::AddPeerRequest {
            bundle: bundle.text,
            fingerprint: bundle.fingerprint,
            endpoint: endpoint.unwrap_or_default(),
            accept: accept as i32,
        };
        self.admin().await?.add_peer(req).await?;
        Ok(())
    }

    /// Mutual trust, accepting shares automatically; both sides dial each
    /// other directly.
    pub async fn peer_with(&self, other: &LocalNode) -> Result<(), LocalNodeError> {
        let auto = proto::AcceptPolicy::Auto;
        self.trust(other, Some(other.federation.to_string()), auto)
            .await?;
        other
            .trust(self, Some(self.federation.to_string()), auto)
            .await
    }

    /// Stops the node gracefully; resolves once its store is flushed.
    pub async fn stop(self) -> Result<(), LocalNodeError> {
        self.shutdown.cancel();
        self.task
            .await
            .map_err(|e| LocalNodeError::Join(e.to_string()))??;
        Ok(())
    }
}
