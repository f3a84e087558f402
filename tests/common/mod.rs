//! Test harness: real nodes with fresh PKI in temp dirs, real TLS on
//! 127.0.0.1:0, real sled. `TestNode::start("police.example")` is one line.
#![allow(dead_code, unreachable_pub)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use samband::client;
use samband::config::Config;
use samband::model::{MemberName, OrgId, Role};
use samband::node::{Listeners, Node, NodeError};
use samband::pki::IdentityBundle;
use samband::proto::{self, messaging_client::MessagingClient};
use samband::setup::{self, InitOptions};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub type Client = MessagingClient<Channel>;

/// Guards against a hang; never a performance assertion.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A node running in this test process.
pub struct TestNode {
    pub tmp: tempfile::TempDir,
    /// Member listener.
    pub addr: SocketAddr,
    /// Federation listener.
    pub fed_addr: SocketAddr,
    pub org: OrgId,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), NodeError>>,
}

pub fn node_dir(tmp: &tempfile::TempDir) -> PathBuf {
    tmp.path().join("node")
}

/// Creates a node directory for `org` listening on 127.0.0.1 (port 0).
pub fn init_dir(org: &str) -> tempfile::TempDir {
    samband::pki::install_crypto_provider();
    let tmp = tempfile::tempdir().expect("temp dir");
    let opts = InitOptions {
        org: OrgId::parse(org).expect("org"),
        client_listen: "127.0.0.1:0".parse().expect("addr"),
        federation_listen: "127.0.0.1:0".parse().expect("addr"),
        hosts: vec![],
    };
    setup::init(&node_dir(&tmp), &opts).expect("init");
    tmp
}

impl TestNode {
    pub async fn start(org: &str) -> Self {
        Self::start_in(init_dir(org)).await
    }

    /// Starts a node on an existing directory (e.g. after a stop), on fresh
    /// loopback ports or on the given (client, federation) addresses.
    pub async fn start_in(tmp: tempfile::TempDir) -> Self {
        Self::start_at(tmp, None).await
    }

    pub async fn start_at(tmp: tempfile::TempDir, addrs: Option<(SocketAddr, SocketAddr)>) -> Self {
        let config = Config::load(&node_dir(&tmp)).expect("config");
        let org = config.org.clone();
        let node = Node::open(&node_dir(&tmp), config).expect("open node");
        let (client, federation) = addrs.unwrap_or_else(|| {
            (
                "127.0.0.1:0".parse().unwrap(),
                "127.0.0.1:0".parse().unwrap(),
            )
        });
        let listeners = Listeners {
            client: TcpListener::bind(client).await.expect("bind client"),
            federation: TcpListener::bind(federation)
                .await
                .expect("bind federation"),
        };
        let addr = listeners.client.local_addr().expect("addr");
        let fed_addr = listeners.federation.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(node.run(listeners, shutdown.clone()));
        Self {
            tmp,
            addr,
            fed_addr,
            org,
            shutdown,
            task,
        }
    }

    pub fn dir(&self) -> PathBuf {
        node_dir(&self.tmp)
    }

    /// Stops the node gracefully and hands back its directory.
    pub async fn stop(self) -> tempfile::TempDir {
        self.shutdown.cancel();
        tokio::time::timeout(PATIENCE, self.task)
            .await
            .expect("node stops")
            .expect("join")
            .expect("clean stop");
        self.tmp
    }

    /// Stops and starts the node again on the same ports (partners keep its endpoint).
    pub async fn restart(self) -> Self {
        let addrs = (self.addr, self.fed_addr);
        Self::start_at(self.stop().await, Some(addrs)).await
    }

    /// Issues a member bundle (once per name) and returns it.
    pub fn bundle(&self, name: &str, role: Role) -> IdentityBundle {
        let out = self.tmp.path().join(format!("bundle-{name}"));
        if out.exists() {
            return IdentityBundle::load(&out).expect("bundle");
        }
        setup::add_user(
            &self.dir(),
            &MemberName::parse(name).expect("name"),
            role,
            &out,
        )
        .expect("add user")
    }

    pub async fn client(&self, name: &str, role: Role) -> Client {
        let bundle = self.bundle(name, role);
        client::connect(&bundle, Some(&self.addr.to_string()))
            .await
            .expect("connect")
    }

    pub async fn operator(&self) -> Client {
        let bundle =
            IdentityBundle::load(&self.dir().join(setup::OPERATOR_DIR)).expect("operator bundle");
        client::connect(&bundle, Some(&self.addr.to_string()))
            .await
            .expect("connect")
    }
}

pub async fn create_channel(c: &mut Client, name: &str) -> String {
    c.create_channel(proto::CreateChannelRequest { name: name.into() })
        .await
        .expect("create channel")
        .into_inner()
        .id
}

pub async fn post(c: &mut Client, channel: &str, text: &str) -> proto::PostResponse {
    let req = proto::PostRequest {
        channel: channel.into(),
        text: text.into(),
        priority: 0,
    };
    c.post(req).await.expect("post").into_inner()
}

/// The whole history of a channel, oldest first, paging backward from the newest.
pub async fn all_history(c: &mut Client, channel: &str) -> Vec<proto::Message> {
    let mut pages = Vec::new();
    let mut position = None;
    loop {
        let req = proto::HistoryRequest {
            channel: channel.into(),
            limit: 1000,
            position,
        };
        let page = c.history(req).await.expect("history").into_inner();
        let more = page.more;
        position = page
            .messages
            .first()
            .map(|m| proto::history_request::Position::Before(m.cursor.clone()));
        pages.push(page.messages);
        if !more {
            break;
        }
    }
    pages.into_iter().rev().flatten().collect()
}

/// A `samband serve` process on `dir`; its client address is read from its "ready" line.
pub struct ServeProcess {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
}

pub fn samband_bin() -> &'static str {
    env!("CARGO_BIN_EXE_samband")
}

impl ServeProcess {
    pub async fn start(dir: &Path) -> Self {
        let mut child = tokio::process::Command::new(samband_bin())
            .args(["serve", "--dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn samband serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(PATIENCE, lines.next_line())
            .await
            .expect("serve becomes ready")
            .expect("read stdout")
            .expect("a ready line");
        let addr = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("client="))
            .expect("client= in ready line")
            .parse()
            .expect("address");
        Self { child, addr }
    }

    pub async fn operator(&self, dir: &Path) -> Client {
        let bundle = IdentityBundle::load(&dir.join(setup::OPERATOR_DIR)).expect("operator bundle");
        client::connect(&bundle, Some(&self.addr.to_string()))
            .await
            .expect("connect")
    }

    pub async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("reaped");
    }
}
