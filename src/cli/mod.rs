//! The command line: argument definitions and dispatch.

/// `println!` for what a command prints: when the reader went away
/// (`samband history … | head -1`) the command ends quietly, like other Unix
/// tools, instead of panicking on the failed write. (SIGPIPE stays ignored:
/// a closed socket must be an error to handle, not a silent death.)
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::cli::output_failed(&e);
        }
    }};
}

mod audit;
mod bench;
mod channel;
mod connection;
mod demo;
mod files;
mod incident;
mod init;
mod messages;
mod output;
mod peer;
mod pki;
mod serve;
mod status;
mod trust;
mod user;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use samband::config::Config;
use samband::layout::data_dir;
use samband::pki::IdentityBundle;
use samband::proto::admin_client::AdminClient;
use samband::store::{Store, StoreError};
use tonic::transport::Channel;

/// Refuses a `--dir` that is not a node directory, saying so and how to
/// make one, instead of naming the first file it lacks.
pub(crate) fn node_dir(dir: &std::path::Path) -> anyhow::Result<&std::path::Path> {
    if samband::layout::config_file(dir).is_file() {
        return Ok(dir);
    }
    let shown = dir.display();
    if dir.join("identity.toml").is_file() {
        anyhow::bail!(
            "{shown} is an identity bundle, not a node directory: give it with --identity"
        );
    }
    if dir.is_file() {
        anyhow::bail!("{shown} is a file; --dir takes the node directory `samband init` made");
    }
    let empty = std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none());
    if empty {
        anyhow::bail!(
            "{shown} is not a samband node directory; create one with `samband init --org ORG --dir {shown}`"
        );
    }
    anyhow::bail!(
        "{shown} is not a samband node directory (it has no config.toml); give the directory \
         `samband init` made"
    )
}

/// Where the node in `dir` listens for members, as seen from its host:
/// the address the running node recorded (`DIR/client.addr`), with an
/// unspecified IP (`0.0.0.0`, `::`) read as loopback. `None` if the node
/// never ran.
pub(crate) fn local_address(dir: &std::path::Path) -> Option<String> {
    let mut addr = samband::layout::recorded_client_address(dir)?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    Some(addr.to_string())
}

/// A channel to the node in `dir` from its host, as `bundle`: to its
/// local address when it has run (the certificate still verified for the
/// bundle's host name, so split DNS does not matter), else to the bundle's
/// endpoint. Also gives the address dialed.
pub(crate) async fn dial_local(
    dir: &std::path::Path,
    bundle: &IdentityBundle,
) -> Result<(Channel, String), samband::client::ClientError> {
    match local_address(dir) {
        Some(addr) => Ok((
            samband::client::connect_channel_at(bundle, &addr).await?,
            addr,
        )),
        None => Ok((
            samband::client::connect_channel(bundle, None).await?,
            bundle.info.endpoint.clone(),
        )),
    }
}

// Operator commands act on a running node through its Admin API, and on
// the data directory of a stopped one: these two find which.

/// The node an operator command acts on.
#[derive(Debug, Args)]
pub(crate) struct NodeTarget {
    /// Node directory: its operator identity (DIR/operator), the address it
    /// listens on and, when the node is stopped, its data. Not needed with
    /// both --identity and --node-endpoint (a running node elsewhere).
    #[arg(long, value_name = "DIR", required_unless_present_all = ["identity", "node_endpoint"])]
    dir: Option<PathBuf>,
    /// Act as this admin identity bundle instead of DIR/operator.
    #[arg(long, value_name = "BUNDLE_DIR")]
    identity: Option<PathBuf>,
    /// The node's member address host:port, instead of the one it listens on.
    #[arg(long, value_name = "HOST:PORT")]
    node_endpoint: Option<String>,
}

impl NodeTarget {
    /// The node in `dir`, as its operator, where it listens.
    pub(crate) fn at(dir: &std::path::Path) -> Self {
        Self {
            dir: Some(dir.to_owned()),
            identity: None,
            node_endpoint: None,
        }
    }

    /// The node directory, for what only the node's host can do (its data
    /// while it is stopped, its CA); an error saying so without one.
    pub(crate) fn dir(&self) -> anyhow::Result<&std::path::Path> {
        match &self.dir {
            Some(dir) => Ok(dir),
            None => anyhow::bail!(
                "this needs the node's directory, on its host: give --dir (without --dir only a \
                 node that answers at {} can be acted on, and only through its Admin API)",
                self.node_endpoint.as_deref().unwrap_or("its address")
            ),
        }
    }
}

/// The Admin API of the node `target` names, if it is running; `None` if
/// nothing answers. Refuses an expired admin identity before dialing (the
/// node would refuse it only with an alert on the first call).
pub(crate) async fn running_node(
    target: &NodeTarget,
) -> anyhow::Result<Option<AdminClient<Channel>>> {
    if let Some(dir) = &target.dir {
        node_dir(dir)?;
    }
    let bundle_dir = match (&target.identity, &target.dir) {
        (Some(identity), _) => identity.clone(),
        (None, Some(dir)) => samband::layout::operator_dir(dir),
        (None, None) => anyhow::bail!("give --dir, or --identity and --node-endpoint"),
    };
    let bundle = connection::load_unexpired(&bundle_dir, target.dir.as_deref())?;
    let dialed = match (&target.node_endpoint, &target.dir) {
        (Some(endpoint), _) => samband::client::connect_channel(&bundle, Some(endpoint)).await,
        (None, Some(dir)) => dial_local(dir, &bundle).await.map(|(c, _)| c),
        (None, None) => anyhow::bail!("give --dir, or --identity and --node-endpoint"),
    };
    match dialed {
        Ok(channel) => Ok(Some(AdminClient::new(channel))),
        Err(samband::client::ClientError::Connect { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The stopped node's store.
pub(crate) fn offline_store(dir: &std::path::Path) -> anyhow::Result<(Config, Store)> {
    let config = Config::load(node_dir(dir)?)?;
    let store = Store::open(&data_dir(dir), &config.org, 8 << 20).map_err(|e| match e {
        StoreError::Locked(_) => anyhow::anyhow!(
            "the node is running but its client listener ({}) does not answer; try again, or stop it",
            config.client.advertise
        ),
        other => other.into(),
    })?;
    Ok((config, store))
}

/// Where `serve` keeps its node when no --dir is given.
pub(crate) const DEFAULT_NODE_DIR: &str = "samband-node";

#[derive(Debug, Parser)]
#[command(
    name = "samband",
    version,
    about = "Federated relay for crisis communication between organisations",
    long_about = "samband gives each organisation its own node: members talk over gRPC with mutual TLS,\n\
                  every acknowledged message is on disk, and nothing leaves the organisation unless shared.",
    after_help = "Quick start:\n  samband serve          # a node in ./samband-node, created if absent\n  samband channel create ops --dir samband-node\n  samband post ops 'Road 12 closed' --dir samband-node\n  samband tail ops --follow --dir samband-node"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a node directory: config, org CA, node certificate, signing key, operator identity.
    #[command(
        after_help = "Example:\n  samband init --org police.example --dir /var/lib/samband/node \\\n      --client-listen 0.0.0.0:7443 --host samband.police.example"
    )]
    Init(init::InitArgs),
    /// Run the node until SIGINT or SIGTERM.
    #[command(
        after_help = "Examples:\n  samband serve --dir /var/lib/samband/node\n  samband serve     # ./samband-node, created with org local.example if absent"
    )]
    Serve(serve::ServeArgs),
    /// Manage member identities.
    #[command(subcommand)]
    User(UserCommand),
    /// This org's trust bundle, for partner operators.
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Partner organisations this node trusts.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// The node certificate and member certificates over time: renew, revoke, reload.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// The hash-chained audit log of trust and sharing changes and rejected envelopes.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Create and list channels.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Incidents worked with partner agencies: open, close, list, show.
    #[command(subcommand)]
    Incident(IncidentCommand),
    /// An incident's shared situational picture (lägesbild): each agency's
    /// units, closures, hazards and more, merged on every participant.
    #[command(subcommand)]
    Picture(PictureCommand),
    /// CAP 1.2 alerts in and out of an incident.
    #[command(subcommand)]
    Cap(CapCommand),
    /// Post a message to a channel; returns once it is durable on the node.
    #[command(
        after_help = "Examples:\n  samband post ops 'Evacuation of block C complete' --identity alice/\n  echo 'all units: report' | \\\n      samband post ops - --priority urgent --dir /var/lib/samband/node\n  samband post ops 'Bridge at Kvarnholmen' --file bridge.jpg --identity alice/\n  samband post ops 'Close road 73' --priority flash --deadline 10m \\\n      --identity alice/\n  samband post ops 'On our way' --reply-to 0001... --identity bo/"
    )]
    Post(messages::PostArgs),
    /// Write a message's files to a directory, each checked against its
    /// SHA-256 before it gets its name (an interrupted fetch resumes).
    #[command(
        after_help = "Examples:\n  samband history ops --cursors --identity alice/\n  samband fetch ops 0001... --out ~/incident --identity alice/\n  samband fetch ops 0001... --attachment 9f86d0... --identity alice/"
    )]
    Fetch(files::FetchArgs),
    /// Show a page of a channel's history.
    #[command(
        after_help = "Examples:\n  samband history ops --limit 20 --identity alice/\n  samband history ops --before 0001...    # the page before a cursor"
    )]
    History(messages::HistoryArgs),
    /// Show the latest messages of a channel and optionally follow it live.
    #[command(
        after_help = "Examples:\n  samband tail ops --follow --identity alice/\n  samband tail ops --follow --from 0001...  # go on after a cursor"
    )]
    Tail(messages::TailArgs),
    /// Show who you are on the node and the node's state.
    #[command(after_help = "Example:\n  samband status --identity alice/")]
    Status(status::StatusArgs),
    /// Where a message is: for each agency, delivered (its node holds it),
    /// waiting, or refused (with its reason).
    #[command(
        after_help = "Example:\n  samband history ops --cursors --identity alice/\n  samband receipts ops 0001... --identity alice/"
    )]
    Receipts(messages::ReceiptsArgs),
    /// Acknowledge a message: a signed confirmation that reaches every
    /// agency of the channel (the sender sees it in `receipts`).
    #[command(
        after_help = "Examples:\n  samband tail ops --needs-ack --cursors --identity bo/\n  samband ack ops 0001... --identity bo/"
    )]
    Ack(messages::AckArgs),
    /// Take back a message of your org (yours, or any as an admin): every
    /// agency of the channel drops its text and files, and shows who
    /// retracted it.
    #[command(
        after_help = "Example:\n  samband history ops --cursors --identity alice/\n  samband retract ops 0001... --identity alice/"
    )]
    Retract(messages::RetractArgs),
    /// Messages whose acknowledgement deadline passed without one from
    /// some agency, and which agencies.
    #[command(
        after_help = "Examples:\n  samband overdue --identity alice/\n  samband overdue ops --json --identity alice/"
    )]
    Overdue(messages::OverdueArgs),
    /// Three agencies on this machine, federating a crisis channel; runs until Ctrl-C.
    #[command(after_help = "Example:\n  samband demo")]
    Demo,
    /// Measure this machine: disk floor and durable post throughput over mTLS.
    #[command(
        after_help = "Examples:\n  samband bench fsync\n  samband bench post --concurrency 1,64 --messages 50000"
    )]
    Bench(bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
enum IncidentCommand {
    /// Open an incident (admin): new channels of this org (one named after
    /// it unless --channel is given), shared with exactly the partners
    /// given, all in one step.
    #[command(
        after_help = "Examples:\n  samband incident open flood --with rescue.example region.example \\\n      --identity duty/\n  samband incident open flood-drill --with rescue.example --exercise \\\n      --until 8h --identity duty/\n  samband incident open storm --with rescue.example \\\n      --channel storm-ops --channel storm-medical --identity duty/"
    )]
    Open(incident::OpenArgs),
    /// Close an incident of this org (admin), all its channels: every
    /// participant's copy becomes read-only, keeping what it received.
    #[command(after_help = "Example:\n  samband incident close flood --identity duty/")]
    Close(incident::NameArgs),
    /// The incidents this node takes part in, with their state.
    #[command(after_help = "Example:\n  samband incident list --identity alice/")]
    List(incident::ListArgs),
    /// One incident: its state, participants, channels and picture.
    #[command(
        after_help = "Examples:\n  samband incident show flood --identity alice/\n  samband incident show police.example/flood --json --identity bo/"
    )]
    Show(incident::NameArgs),
}

#[derive(Debug, Subcommand)]
enum PictureCommand {
    /// The picture: every entry that stands, as lines, JSON or GeoJSON.
    #[command(
        after_help = "Examples:\n  samband picture show flood --identity alice/\n  samband picture show police.example/flood --geojson > flood.geojson"
    )]
    Show(incident::ShowPictureArgs),
    /// Set an entry of this org (it replaces the entry's earlier state).
    #[command(
        after_help = "Examples:\n  samband picture set flood unit-12 --kind unit --status 'en route' \\\n      --point 59.33,18.07 --identity alice/\n  samband picture set flood r73 --kind road-closure --geojson r73.json \\\n      --field detour=road-12 --identity alice/"
    )]
    Set(incident::SetArgs),
    /// Remove an entry of this org from the picture.
    #[command(after_help = "Example:\n  samband picture remove flood unit-12 --identity alice/")]
    Remove(incident::RemoveArgs),
}

#[derive(Debug, Subcommand)]
enum CapCommand {
    /// Import a CAP 1.2 alert: a message keeping the whole alert, its areas
    /// as this org's picture entries; an Update or Cancel replaces or
    /// removes what the alerts it references made.
    #[command(
        after_help = "Examples:\n  samband cap import warning.xml --incident flood --identity alice/\n  curl -s https://alerts.example/cap.xml | \\\n      samband cap import - --incident flood --identity alice/"
    )]
    Import(incident::CapImportArgs),
    /// Export an incident's alerts, and its messages as CAP 1.2 alerts of
    /// their origin org (status Exercise in an exercise).
    #[command(
        after_help = "Example:\n  samband cap export flood --out flood-cap/ --identity alice/"
    )]
    Export(incident::CapExportArgs),
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Issue a member certificate signed by the org CA, as an identity bundle directory.
    #[command(
        after_help = "Examples:\n  samband user add alice --dir /var/lib/samband/node --out alice/\n  samband user add duty-officer --admin --dir /var/lib/samband/node --out duty/"
    )]
    Add(user::UserAddArgs),
    /// Issue a new certificate (same name and role, new key) before the old
    /// one expires; `operator` renews the identity of samband's admin commands.
    #[command(
        after_help = "Examples:\n  samband user renew alice --dir /var/lib/samband/node --out alice/\n  samband user renew operator --dir /var/lib/samband/node"
    )]
    Renew(user::UserRenewArgs),
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Re-issue the node certificate (same names, new key) and the operator
    /// identity (DIR/operator) before they expire; a running node picks the
    /// certificate up at once.
    #[command(
        after_help = "Examples:\n  samband pki renew --dir /var/lib/samband/node\n  samband pki renew --days 365 --dir /var/lib/samband/node"
    )]
    Renew(pki::RenewArgs),
    /// Stop every certificate issued to a member from working, at once
    /// (open streams end too). Recorded in the audit log.
    #[command(after_help = "Example:\n  samband pki revoke-user alice --dir /var/lib/samband/node")]
    RevokeUser(pki::RevokeArgs),
    /// Make the running node re-read its certificate and peer trust (as SIGHUP does).
    #[command(
        after_help = "Examples:\n  samband pki reload --dir /var/lib/samband/node\n  systemctl reload samband      # sends SIGHUP"
    )]
    Reload(pki::ReloadArgs),
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Print the audit log as JSON lines (trust and sharing changes, rejected envelopes).
    #[command(
        after_help = "Examples:\n  samband audit export --dir /var/lib/samband/node > audit.jsonl\n  samband audit export --since 2026-11-29T08:00:00Z --dir /var/lib/samband/node\n  samband audit export --since 120 --dir /var/lib/samband/node"
    )]
    Export(audit::AuditExportArgs),
    /// Check the audit log's hash chain: finds changed and removed entries.
    #[command(
        after_help = "Examples:\n  samband audit verify --dir /var/lib/samband/node\n  samband audit verify --file audit.jsonl\n  samband audit verify --dir /var/lib/samband/node \\\n      --head 118:3f2a...          # the head printed last time\n  samband audit verify --partial --file since-monday.jsonl"
    )]
    Verify(audit::AuditVerifyOptions),
}

#[derive(Debug, Subcommand)]
enum TrustCommand {
    /// Write this org's trust bundle and print its fingerprint.
    #[command(
        after_help = "Example:\n  samband trust export --dir /var/lib/samband/node --out police.bundle\n  # send police.bundle to the partner; read them the fingerprint by phone"
    )]
    Export(trust::TrustExportArgs),
}

#[derive(Debug, Subcommand)]
enum PeerCommand {
    /// Trust a partner org from its bundle, after checking the fingerprint.
    #[command(
        after_help = "Examples:\n  samband peer add rescue.bundle --fingerprint '3f2a 9c1e ...' \\\n      --endpoint samband.rescue.example:7444 --dir /var/lib/samband/node\n  samband peer add health.bundle --fingerprint 3f2a9c1e... --accept manual \\\n      --dir /var/lib/samband/node                  # they dial us"
    )]
    Add(peer::PeerAddArgs),
    /// Stop trusting a partner: its live links close at once.
    #[command(
        after_help = "Example:\n  samband peer remove rescue.example --dir /var/lib/samband/node"
    )]
    Remove(peer::PeerRemoveArgs),
    /// List partners with their link state and lag.
    #[command(after_help = "Example:\n  samband peer list --dir /var/lib/samband/node")]
    List(peer::PeerListArgs),
}

#[derive(Debug, Subcommand)]
enum ChannelCommand {
    /// Create an internal channel (admin role).
    #[command(
        after_help = "Example:\n  samband channel create flood-2026 --dir /var/lib/samband/node"
    )]
    Create(channel::ChannelCreateArgs),
    /// Share a channel of this org with partner orgs (admin role).
    #[command(
        after_help = "Examples:\n  samband channel share flood-2026 rescue.example region-health.example \\\n      --dir /var/lib/samband/node\n  samband channel share flood-2026 rescue.example --history from-now \\\n      --dir /var/lib/samband/node"
    )]
    Share(channel::ShareArgs),
    /// Stop sharing a channel with one partner; its copy becomes read-only (admin role).
    #[command(
        after_help = "Example:\n  samband channel unshare flood-2026 rescue.example --dir /var/lib/samband/node"
    )]
    Unshare(channel::UnshareArgs),
    /// Accept a channel a partner offered (peers added with --accept manual).
    #[command(
        after_help = "Example:\n  samband channel accept police.example/flood-2026 --dir /var/lib/samband/node"
    )]
    Accept(channel::AcceptArgs),
    /// List the channels on the node.
    #[command(after_help = "Example:\n  samband channel list --identity alice/ --json")]
    List(channel::ChannelListArgs),
}

/// How a client command finds its identity and node.
#[derive(Debug, Args)]
pub(crate) struct Connection {
    /// Identity bundle directory (from `samband user add`). Without it and
    /// without --dir, $SAMBAND_IDENTITY: a flag given on the command line
    /// always wins over the environment.
    #[arg(long, value_name = "BUNDLE_DIR")]
    identity: Option<PathBuf>,
    /// Node directory: use its operator identity (DIR/operator) when --identity is not given.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Node address host:port, instead of the one in the identity bundle.
    #[arg(long, value_name = "HOST:PORT")]
    endpoint: Option<String>,
    /// Print JSON (one object per line) instead of text.
    #[arg(long)]
    json: bool,
}

/// Parses a listen address with a message that says what is expected.
pub(crate) fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an IP:port address (e.g. 127.0.0.1:7443 or [::]:7443)"))
}

/// Ends the command after its output could not be written: quietly when
/// the reader went away, else saying why.
pub(crate) fn output_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write the output: {e}");
    std::process::exit(1);
}

/// An error and its causes on one line, each cause once: many errors
/// already say their cause, and printing it again doubles the line
/// ("…(os error 2): …(os error 2)").
fn describe(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

pub(crate) fn main() -> ExitCode {
    output::init_time_zone();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(a) => init::init(a),
        Command::Serve(a) => serve::serve(a),
        Command::User(UserCommand::Add(a)) => user::user_add(a),
        Command::User(UserCommand::Renew(a)) => user::user_renew(a),
        Command::Trust(TrustCommand::Export(a)) => trust::trust_export(a),
        Command::Pki(PkiCommand::Renew(a)) => connection::run(pki::renew(a)),
        Command::Pki(PkiCommand::RevokeUser(a)) => connection::run(pki::revoke(a)),
        Command::Pki(PkiCommand::Reload(a)) => connection::run(pki::reload(a)),
        Command::Audit(AuditCommand::Export(a)) => connection::run(audit::export(a)),
        Command::Audit(AuditCommand::Verify(a)) => connection::run(audit::verify(a)),
        Command::Peer(PeerCommand::Add(a)) => connection::run(peer::peer_add(a)),
        Command::Peer(PeerCommand::Remove(a)) => connection::run(peer::peer_remove(a)),
        Command::Peer(PeerCommand::List(a)) => connection::run(peer::peer_list(a)),
        Command::Incident(IncidentCommand::Open(a)) => connection::run(incident::open(a)),
        Command::Incident(IncidentCommand::Close(a)) => connection::run(incident::close(a)),
        Command::Incident(IncidentCommand::List(a)) => connection::run(incident::list(a)),
        Command::Incident(IncidentCommand::Show(a)) => connection::run(incident::show(a)),
        Command::Picture(PictureCommand::Show(a)) => connection::run(incident::show_picture(a)),
        Command::Picture(PictureCommand::Set(a)) => connection::run(incident::set(a)),
        Command::Picture(PictureCommand::Remove(a)) => connection::run(incident::remove(a)),
        Command::Cap(CapCommand::Import(a)) => connection::run(incident::cap_import(a)),
        Command::Cap(CapCommand::Export(a)) => connection::run(incident::cap_export(a)),
        Command::Channel(ChannelCommand::Share(a)) => connection::run(channel::share(a)),
        Command::Channel(ChannelCommand::Unshare(a)) => connection::run(channel::unshare(a)),
        Command::Channel(ChannelCommand::Accept(a)) => connection::run(channel::accept(a)),
        Command::Channel(ChannelCommand::Create(a)) => connection::run(channel::channel_create(a)),
        Command::Channel(ChannelCommand::List(a)) => connection::run(channel::channel_list(a)),
        Command::Post(a) => connection::run(messages::post(a)),
        Command::Fetch(a) => connection::run(files::fetch(a)),
        Command::History(a) => connection::run(messages::history(a)),
        Command::Tail(a) => connection::run(messages::tail(a)),
        Command::Status(a) => connection::run(status::status(a)),
        Command::Receipts(a) => connection::run(messages::receipts(a)),
        Command::Ack(a) => connection::run(messages::ack(a)),
        Command::Overdue(a) => connection::run(messages::overdue(a)),
        Command::Retract(a) => connection::run(messages::retract(a)),
        Command::Bench(a) => bench::run(a),
        Command::Demo => demo::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// clap checks a command's definition (e.g. two flags of one name) only
    /// when that command is parsed: check every one here.
    #[test]
    fn every_command_is_well_formed() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    /// Every argument says what it is, and no example line is wider than a
    /// terminal (clap would wrap it mid-command).
    #[test]
    fn every_argument_is_documented_and_every_example_fits_a_terminal() {
        use clap::CommandFactory as _;
        fn check(command: &clap::Command, path: &str, problems: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    problems.push(format!("{path}: <{}> has no help", arg.get_id()));
                }
            }
            if let Some(after) = command.get_after_help() {
                for line in after.to_string().lines().filter(|l| l.chars().count() > 80) {
                    problems.push(format!("{path}: example wider than 80: {line}"));
                }
            }
            for sub in command.get_subcommands() {
                check(sub, &path, problems);
            }
        }
        let mut problems = Vec::new();
        check(&Cli::command(), "", &mut problems);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    #[test]
    fn each_cause_of_an_error_is_said_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let said = format!("/x/identity.toml: {io}");
        #[derive(Debug)]
        struct Wraps(String, std::io::Error);
        impl std::fmt::Display for Wraps {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::error::Error for Wraps {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.1)
            }
        }
        let e = anyhow::Error::new(Wraps(said.clone(), io)).context("loading identity bundle /x");
        assert_eq!(describe(&e), format!("loading identity bundle /x: {said}"));
    }
}
