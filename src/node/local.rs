//! A node started in this process on loopback: what `samband demo` and
//! `samband bench` run, and what an embedding program would use.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use super::{Listeners, Node, NodeError};
use crate::client::ClientError;
use crate::config::Config;
use crate::pki::IdentityBundle;

/// A running in-process node.
#[derive(Debug)]
pub struct LocalNode {
    pub dir: PathBuf,
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
        let (client, federation) =
            addrs.unwrap_or((node.config().client.listen, node.config().federation.listen));
        let listeners = Listeners {
            client: TcpListener::bind(client).await?,
            federation: TcpListener::bind(federation).await?,
        };
        let (client, federation) = (
            listeners.client.local_addr()?,
            listeners.federation.local_addr()?,
        );
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(node.run(listeners, shutdown.clone()));
        Ok(Self {
            dir: dir.to_owned(),
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

    /// Stops the node gracefully; resolves once its store is flushed.
    pub async fn stop(self) -> Result<(), LocalNodeError> {
        self.shutdown.cancel();
        self.task
            .await
            .map_err(|e| LocalNodeError::Join(e.to_string()))??;
        Ok(())
    }
}
