//! Test harness: real nodes with fresh PKI in temp dirs, real TLS on
//! 127.0.0.1:0, real sled. `TestNode::start("police.example")` is one line.
#![allow(dead_code, unreachable_pub)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use samband::client;
use samband::config::Limits;
use samband::model::{MemberName, OrgId, Role};
use samband::node::LocalNode;
use samband::pki::IdentityBundle;
use samband::proto::{self, messaging_client::MessagingClient};
use samband::setup::{self, InitOptions};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub mod files;
pub mod hand_peer;

pub type Client = MessagingClient<Channel>;

/// Guards against a hang; never a performance assertion.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A node running in this test process (the library's [`LocalNode`]) that
/// owns its temporary directory.
pub struct TestNode {
    pub tmp: tempfile::TempDir,
    /// Member listener.
    pub addr: SocketAddr,
    /// Federation listener.
    pub fed_addr: SocketAddr,
    pub org: OrgId,
    node: LocalNode,
}

pub fn node_dir(tmp: &tempfile::TempDir) -> PathBuf {
    tmp.path().join("node")
}

/// A fresh node directory for `org` on 127.0.0.1 (ports picked at start) whose members may post flat out
/// (`limits.member_posts_per_second = 0`): most tests post faster than a
/// person would. [`init_dir_as_shipped`] keeps every default.
pub fn init_dir(org: &str) -> tempfile::TempDir {
    init_dir_with(org, |limits| limits.member_posts_per_second = 0)
}

/// A fresh node directory with every default as `samband init` writes it.
pub fn init_dir_as_shipped(org: &str) -> tempfile::TempDir {
    init_dir_with(org, |_| {})
}

/// A fresh node directory whose config has the limits `change` makes to
/// the shipped defaults (written by `init`, as an operator would edit them).
pub fn init_dir_with(org: &str, change: impl FnOnce(&mut Limits)) -> tempfile::TempDir {
    samband::pki::install_crypto_provider();
    if let Ok(filter) = std::env::var("SAMBAND_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut opts = InitOptions::loopback(OrgId::parse(org).expect("org"));
    change(&mut opts.limits);
    setup::init(&node_dir(&tmp), &opts).expect("init");
    tmp
}

impl TestNode {
    pub async fn start(org: &str) -> Self {
        Self::start_in(init_dir(org)).await
    }

    /// Nodes of `orgs`, each peered with every other (each dials the others).
    pub async fn mesh<const N: usize>(orgs: [&str; N]) -> [TestNode; N] {
        let mut nodes = Vec::with_capacity(N);
        for org in orgs {
            nodes.push(Self::start(org).await);
        }
        for i in 0..N {
            for j in i + 1..N {
                nodes[i].peer_with(&nodes[j]).await;
            }
        }
        nodes.try_into().unwrap_or_else(|_| unreachable!("N nodes"))
    }

    /// Starts a node on an existing directory (e.g. after a stop), on fresh
    /// loopback ports or on the given (client, federation) addresses.
    pub async fn start_in(tmp: tempfile::TempDir) -> Self {
        Self::start_at(tmp, None).await
    }

    pub async fn start_at(tmp: tempfile::TempDir, addrs: Option<(SocketAddr, SocketAddr)>) -> Self {
        let node = LocalNode::start(&node_dir(&tmp), addrs)
            .await
            .expect("start node");
        Self {
            tmp,
            addr: node.client,
            fed_addr: node.federation,
            org: node.org.clone(),
            node,
        }
    }

    pub fn dir(&self) -> PathBuf {
        node_dir(&self.tmp)
    }

    /// Stops the node gracefully and hands back its directory.
    pub async fn stop(self) -> tempfile::TempDir {
        tokio::time::timeout(PATIENCE, self.node.stop())
            .await
            .expect("node stops")
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
            samband::pki::Validity::days(1),
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
        Client::new(operator_channel(&self.dir(), self.addr).await)
    }
}

/// The message-signing key (raw Ed25519) of the node `admin` speaks to,
/// from its trust bundle.
pub async fn signing_key(admin: &mut Admin) -> Vec<u8> {
    let bundle = admin
        .export_trust(proto::ExportTrustRequest {})
        .await
        .expect("export trust")
        .into_inner();
    samband::trust::TrustBundle::parse(&bundle.text)
        .expect("a trust bundle")
        .signing_key
}

/// A new connection to the node of `dir` at `addr`, as its operator.
pub async fn operator_channel(dir: &Path, addr: SocketAddr) -> Channel {
    let bundle =
        IdentityBundle::load(&samband::layout::operator_dir(dir)).expect("operator bundle");
    client::connect_channel(&bundle, Some(&addr.to_string()))
        .await
        .expect("connect")
}

pub async fn create_channel(c: &mut Client, name: &str) -> String {
    c.create_channel(proto::CreateChannelRequest { name: name.into() })
        .await
        .expect("create channel")
        .into_inner()
        .id
}

pub async fn post(c: &mut Client, channel: &str, text: &str) -> proto::PostResponse {
    c.post(post_request(channel, text))
        .await
        .expect("post")
        .into_inner()
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

/// A `samband serve` process on `dir`; its addresses are read from its "ready" line.
pub struct ServeProcess {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    pub fed_addr: SocketAddr,
    /// The node's pid when `child` is strace running it: killed on drop,
    /// since killing strace would leave the node running.
    traced_node: Option<u32>,
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Some(pid) = self.traced_node.take() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

pub fn samband_bin() -> &'static str {
    env!("CARGO_BIN_EXE_samband")
}

/// What one `samband` command printed, and whether it succeeded.
#[derive(Debug)]
pub struct CliRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `samband ARGS...` to completion.
pub fn cli(args: &[&str]) -> CliRun {
    let out = std::process::Command::new(samband_bin())
        .args(args)
        .output()
        .expect("run samband");
    CliRun {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`cli`] that must succeed.
pub fn cli_ok(args: &[&str]) -> CliRun {
    let run = cli(args);
    assert!(
        run.success,
        "samband {args:?}:\n{}\n{}",
        run.stdout, run.stderr
    );
    run
}

/// A test path as a command-line argument (temp dirs are UTF-8).
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// A post of `text` to `channel`, normal priority.
pub fn post_request(channel: &str, text: impl Into<String>) -> proto::PostRequest {
    proto::PostRequest {
        channel: channel.into(),
        text: text.into(),
        priority: 0,
        attachments: Vec::new(),
        ..Default::default()
    }
}

/// Follows `channel` live (no replay).
pub async fn subscribe_live(c: &mut Client, channel: &str) -> tonic::Streaming<proto::Message> {
    c.subscribe(proto::SubscribeRequest {
        channel: channel.into(),
        start: None,
    })
    .await
    .expect("subscribe")
    .into_inner()
}

impl ServeProcess {
    pub async fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[]).await
    }

    /// Starts `samband serve --dir DIR ARGS...`; its log goes to [`serve_log`].
    pub async fn start_with(dir: &Path, args: &[&str]) -> Self {
        let mut command = tokio::process::Command::new(samband_bin());
        command.args(["serve", "--dir"]).arg(dir).args(args);
        Self::spawn(command, dir).await
    }

    /// Starts `samband serve --dir DIR` with its clock `offset` ahead (or
    /// behind: `-90s`) of the machine's, with libfaketime preloaded (so
    /// that the child is the node itself, which `kill9` stops).
    pub async fn start_with_clock(dir: &Path, offset: &str) -> Self {
        let lib = std::fs::read_dir("/usr/lib")
            .expect("/usr/lib")
            .filter_map(Result::ok)
            .map(|e| e.path().join("faketime/libfaketimeMT.so.1"))
            .find(|p| p.exists())
            .expect("libfaketime installed (apt-get install faketime)");
        let mut command = tokio::process::Command::new(samband_bin());
        command
            .env("LD_PRELOAD", lib)
            .env("FAKETIME", offset)
            .env("DONT_FAKE_MONOTONIC", "1")
            .args(["serve", "--dir"])
            .arg(dir);
        Self::spawn(command, dir).await
    }

    /// Starts `samband serve --dir DIR` with its files limited to `kib` KiB
    /// (RLIMIT_FSIZE, with SIGXFSZ ignored): a write beyond that fails, as
    /// on a full disk.
    pub async fn start_with_file_limit(dir: &Path, kib: u64) -> Self {
        let mut command = tokio::process::Command::new("bash");
        command
            .arg("-c")
            .arg(format!(
                "trap '' XFSZ; ulimit -f {kib}; exec \"$0\" serve --dir \"$1\""
            ))
            .arg(samband_bin())
            .arg(dir);
        Self::spawn(command, dir).await
    }

    /// Starts `samband serve --dir DIR` under `strace`, which writes every
    /// `fdatasync` with the path of its file to `trace`. `child` is strace;
    /// stop the node with [`ServeProcess::signal_traced`].
    pub async fn start_traced(dir: &Path, trace: &Path) -> Self {
        Self::start_tracing(dir, trace, "fdatasync").await
    }

    /// [`ServeProcess::start_traced`], tracing the system calls `calls`
    /// (strace's `-e trace=` list).
    pub async fn start_tracing(dir: &Path, trace: &Path, calls: &str) -> Self {
        let mut command = tokio::process::Command::new("strace");
        command
            .args(["-f", "-y", "-qq", "-e", &format!("trace={calls}"), "-o"])
            .arg(trace)
            .args([samband_bin(), "serve", "--dir"])
            .arg(dir);
        let mut node = Self::spawn(command, dir).await;
        let tracer = node.child.id().expect("strace runs");
        let children = std::fs::read_to_string(format!("/proc/{tracer}/task/{tracer}/children"))
            .expect("strace's children");
        let pid = children.split_whitespace().next().expect("the traced node");
        node.traced_node = Some(pid.parse().expect("a pid"));
        node
    }

    /// Sends `signal` (`TERM`, `KILL`) to a node started by
    /// [`ServeProcess::start_traced`] (strace itself would only detach from
    /// it) and waits for strace to finish.
    pub async fn signal_traced(mut self, signal: &str) {
        let node = self.traced_node.take().expect("a traced node");
        let killed = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &node.to_string()])
            .status()
            .expect("run kill");
        assert!(killed.success());
        tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("the node stops on SIGTERM")
            .expect("strace exits");
    }

    async fn spawn(mut command: tokio::process::Command, dir: &Path) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(serve_log(dir))
            .expect("open serve.log");
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(log)
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
        let field = |name: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .expect("address in ready line")
                .parse()
                .expect("address")
        };
        Self {
            addr: field("client="),
            fed_addr: field("federation="),
            child,
            traced_node: None,
        }
    }

    pub async fn operator(&self, dir: &Path) -> Client {
        Client::new(operator_channel(dir, self.addr).await)
    }

    /// A member `name` of the node in `dir` (issued once), connected to this process.
    pub async fn member(&self, dir: &Path, name: &str) -> Client {
        let out = dir.join(format!("bundle-{name}"));
        let bundle = if out.exists() {
            IdentityBundle::load(&out).expect("bundle")
        } else {
            let name = MemberName::parse(name).expect("name");
            let days = samband::pki::Validity::days(1);
            setup::add_user(dir, &name, Role::Member, &out, days).expect("add user")
        };
        client::connect(&bundle, Some(&self.addr.to_string()))
            .await
            .expect("connect")
    }

    /// The operator's Admin client of this process.
    pub async fn admin(&self, dir: &Path) -> Admin {
        Admin::new(operator_channel(dir, self.addr).await)
    }

    pub async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.child.wait().await.expect("reaped");
    }
}

/// Where a [`ServeProcess`] on `dir` logs (appended across restarts).
pub fn serve_log(dir: &Path) -> PathBuf {
    dir.with_extension("serve.log")
}

pub type Admin = samband::proto::admin_client::AdminClient<Channel>;

/// The whole audit log, through the Admin API.
pub async fn audit_log(admin: &mut Admin) -> Vec<samband::audit::Entry> {
    let mut stream = admin
        .export_audit(samband::proto::ExportAuditRequest { from_seq: 0 })
        .await
        .expect("export audit")
        .into_inner();
    let mut out = Vec::new();
    while let Some(entry) = stream.message().await.expect("audit entry") {
        out.push(entry.into());
    }
    out
}

impl TestNode {
    /// The operator's Admin client.
    pub async fn admin(&self) -> Admin {
        Admin::new(operator_channel(&self.dir(), self.addr).await)
    }

    /// This node trusts `other`; it dials `other` at `endpoint` (None: `other` dials us).
    pub async fn trust(
        &self,
        other: &TestNode,
        endpoint: Option<String>,
        accept: proto::AcceptPolicy,
    ) {
        self.node
            .trust(&other.node, endpoint, accept)
            .await
            .expect("trust");
    }

    /// Mutual trust, one way of dialing: this node dials `other` at `at`
    /// (its address, or a proxy in front of it); `other` never dials.
    pub async fn dials(&self, other: &TestNode, at: SocketAddr) {
        self.trust(other, Some(at.to_string()), proto::AcceptPolicy::Auto)
            .await;
        other.trust(self, None, proto::AcceptPolicy::Auto).await;
    }

    /// Mutual trust; both sides dial each other directly.
    pub async fn peer_with(&self, other: &TestNode) {
        self.node.peer_with(&other.node).await.expect("peer with");
    }

    pub async fn peers(&self) -> Vec<proto::Peer> {
        self.admin()
            .await
            .list_peers(proto::ListPeersRequest {})
            .await
            .expect("list peers")
            .into_inner()
            .peers
    }

    pub async fn share(&self, channel: &str, orgs: &[&str]) -> proto::Channel {
        self.share_with(channel, orgs, proto::ShareHistory::Unspecified)
            .await
            .expect("share")
    }

    /// Shares `channel` with `orgs`, saying what they get of its history.
    pub async fn share_with(
        &self,
        channel: &str,
        orgs: &[&str],
        history: proto::ShareHistory,
    ) -> Result<proto::Channel, tonic::Status> {
        let req = proto::ShareChannelRequest {
            channel: channel.into(),
            orgs: orgs.iter().map(|s| s.to_string()).collect(),
            history: history as i32,
        };
        Ok(self.admin().await.share_channel(req).await?.into_inner())
    }

    /// Removes `org` from `channel` (`channel unshare`).
    pub async fn unshare(&self, channel: &str, org: &str) {
        let req = proto::UnshareChannelRequest {
            channel: channel.into(),
            org: org.into(),
        };
        self.admin()
            .await
            .unshare_channel(req)
            .await
            .expect("unshare");
    }
}

/// Runs a Python test script (`command`) off the runtime; fails the test
/// with its output unless it exits 0 and prints `ok`. Its standard output.
pub async fn python(mut command: std::process::Command, ok: &str) -> String {
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the script's task")
        .expect("run python3");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the Python script failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(ok), "{stdout}");
    stdout
}

/// Three agencies: police shares a channel `flood` with rescue and the
/// region, which do not know each other (each reaches the other only
/// through police); returns once both hold it. The nodes and the
/// channel's id.
pub async fn three_agencies() -> (TestNode, TestNode, TestNode, String) {
    let police = TestNode::start("police.example").await;
    let rescue = TestNode::start("rescue.example").await;
    let region = TestNode::start("region.example").await;
    police.peer_with(&rescue).await;
    police.peer_with(&region).await;
    let mut police_op = police.operator().await;
    let ch = create_channel(&mut police_op, "flood").await;
    police
        .share("flood", &["rescue.example", "region.example"])
        .await;
    for node in [&rescue, &region] {
        let op = node.operator().await;
        eventually("the channel shared", || async {
            channel_state(&op, &ch).await.filter(|s| s == "shared")
        })
        .await;
    }
    (police, rescue, region, ch)
}

/// The state of `channel` as the node `c` is connected to lists it
/// (`shared`, `pending`, `archived`, …); `None` if it does not hold it.
pub async fn channel_state(c: &Client, channel: &str) -> Option<String> {
    let channels = c
        .clone()
        .list_channels(proto::ListChannelsRequest {})
        .await
        .ok()?
        .into_inner()
        .channels;
    channels
        .into_iter()
        .find(|ch| ch.id == channel)
        .map(|ch| ch.state)
}

/// Polls `check` until it returns `Some`, failing the test after PATIENCE.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A channel's history as (origin, seq, text), in history order.
pub async fn texts(c: &mut Client, channel: &str) -> Vec<(String, u64, String)> {
    all_history(c, channel)
        .await
        .into_iter()
        .map(|m| (m.origin, m.origin_seq, m.text))
        .collect()
}

/// Waits until every node shows the same history of `channel`, with `count`
/// messages. If they do not within PATIENCE, fails with what each node
/// showed last and the state of its links.
pub async fn converged(
    nodes: &[&TestNode],
    channel: &str,
    count: usize,
) -> Vec<(String, u64, String)> {
    let mut clients = Vec::new();
    for n in nodes {
        clients.push(n.operator().await);
    }
    // How many messages each node showed at the last look (None: not the channel yet).
    let mut shown = vec![None; nodes.len()];
    let same = tokio::time::timeout(PATIENCE, async {
        loop {
            let mut histories = Vec::new();
            for (c, shown) in clients.iter_mut().zip(&mut shown) {
                // The channel may not have reached every node yet.
                let probe = proto::HistoryRequest {
                    channel: channel.to_owned(),
                    limit: 1,
                    position: None,
                };
                *shown = match c.history(probe).await {
                    Ok(_) => Some(texts(c, channel).await),
                    Err(_) => None,
                }
                .map(|h| {
                    histories.push(h);
                    histories.last().map_or(0, Vec::len)
                });
            }
            if histories.len() == nodes.len()
                && histories
                    .iter()
                    .all(|h| h.len() == count && *h == histories[0])
            {
                return histories.swap_remove(0);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if let Ok(history) = same {
        return history;
    }
    let mut state = String::new();
    for (n, shown) in nodes.iter().zip(&shown) {
        state += &format!("\n  {}: {shown:?} messages; links:", n.org);
        for p in n.peers().await {
            state += &format!("\n    {} {:?}", p.org, p.link);
        }
    }
    panic!("timed out waiting for {channel} to converge on {count} messages:{state}");
}

/// Every byte of a node's data directory, for containment checks.
pub fn raw_store_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![samband::layout::data_dir(dir)];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read data dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.extend(std::fs::read(&path).expect("read store file"));
            }
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A TCP proxy on loopback that can cut every connection through it (a
/// partition) and later let connections through again.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    stalled: Arc<tokio::sync::watch::Sender<bool>>,
    /// Bumped by [`Proxy::reset_dialer_side`]: connections made before
    /// the bump lose their dialer side.
    resets: Arc<tokio::sync::watch::Sender<u64>>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: JoinHandle<()>,
}

/// Copies `from` to `to`, holding still (bytes back up in TCP) while `stalled`.
async fn pump(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    mut stalled: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0; 16 * 1024];
    loop {
        while *stalled.borrow_and_update() {
            if stalled.changed().await.is_err() {
                return;
            }
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let cut = Arc::new(AtomicBool::new(false));
        let stalled = Arc::new(tokio::sync::watch::channel(false).0);
        let resets = Arc::new(tokio::sync::watch::channel(0u64).0);
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let accept = tokio::spawn({
            let (cut, conns, stalled, resets) =
                (cut.clone(), conns.clone(), stalled.clone(), resets.clone());
            async move {
                while let Ok((inbound, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        continue; // dropped: the partition refuses it
                    }
                    let stalled = stalled.clone();
                    let mut reset = resets.subscribe();
                    let born = *reset.borrow_and_update();
                    let task = tokio::spawn(async move {
                        let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                            return;
                        };
                        let (mut in_r, mut in_w) = inbound.into_split();
                        let (mut out_r, mut out_w) = outbound.into_split();
                        let one_sided = tokio::select! {
                            _ = async {
                                tokio::join!(
                                    pump(&mut in_r, &mut out_w, stalled.subscribe()),
                                    pump(&mut out_r, &mut in_w, stalled.subscribe())
                                )
                            } => false,
                            _ = reset.wait_for(|&n| n > born) => true,
                        };
                        if one_sided {
                            // The dialer's side is closed; the accepter's side
                            // stays open and hears nothing, as after a NAT
                            // or firewall lost the connection's state.
                            drop((in_r, in_w));
                            let _keep = (out_r, out_w);
                            std::future::pending::<()>().await;
                        }
                    });
                    conns.lock().unwrap().push(task.abort_handle());
                }
            }
        });
        Self {
            addr,
            cut,
            stalled,
            resets,
            conns,
            accept,
        }
    }

    /// Drops every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }

    /// Keeps connections open but moves no bytes: a stalled partner.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    pub fn resume(&self) {
        self.stalled.send_replace(false);
    }

    /// Closes the dialer's side of every connection open now, and leaves
    /// the accepter's side open and silent. New connections pass as before.
    pub fn reset_dialer_side(&self) {
        self.resets.send_modify(|n| *n += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Waits until `channel` exists on the node and holds at least `n` messages; returns its history.
pub async fn wait_for_history(c: &mut Client, channel: &str, n: usize) -> Vec<proto::Message> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let probe = proto::HistoryRequest {
            channel: channel.into(),
            limit: 1,
            position: None,
        };
        if c.history(probe).await.is_ok() {
            let h = all_history(c, channel).await;
            if h.len() >= n {
                return h;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{channel} never reached {n} messages"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the posters were told is durable: origin_seq → text.
pub type Acked = Arc<std::sync::Mutex<std::collections::BTreeMap<u64, String>>>;

/// `n` tasks posting to `channel` flat out until the node stops answering;
/// every acknowledged post is recorded in `acked` (a seq acked twice fails).
pub fn spawn_posters(
    c: &Client,
    channel: &str,
    n: usize,
    tag: &str,
    acked: &Acked,
) -> Vec<JoinHandle<()>> {
    (0..n)
        .map(|p| {
            let (mut c, channel, acked) = (c.clone(), channel.to_owned(), acked.clone());
            let tag = format!("{tag}p{p}");
            tokio::spawn(async move {
                for i in 0.. {
                    let text = format!("{tag}-{i}");
                    let req = proto::PostRequest {
                        channel: channel.clone(),
                        text: text.clone(),
                        priority: 0,
                        attachments: Vec::new(),
                        ..Default::default()
                    };
                    match c.post(req).await {
                        Ok(r) => assert!(
                            acked
                                .lock()
                                .unwrap()
                                .insert(r.into_inner().origin_seq, text)
                                .is_none()
                        ),
                        Err(_) => return, // the node is gone
                    }
                }
            })
        })
        .collect()
}
