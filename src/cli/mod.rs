//! The command line: argument definitions and dispatch.

mod bench;
mod client_cmds;
mod node_cmds;
mod output;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Where `serve` keeps its node when no --dir is given.
pub(crate) const DEFAULT_NODE_DIR: &str = "samband-node";

#[derive(Debug, Parser)]
#[command(
    name = "samband",
    version,
    about = "Federated relay for crisis communication between organisations",
    long_about = "samband gives each organisation its own node: members talk over gRPC with mutual TLS,\n\
                  every acknowledged message is on disk, and nothing leaves the organisation unless shared.",
    after_help = "Quick start:\n  samband serve                                   # a node in ./samband-node, created if absent\n  samband channel create ops --dir samband-node\n  samband post ops 'Road 12 closed' --dir samband-node\n  samband tail ops --follow --dir samband-node"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a node directory: config, org CA, node certificate, signing key, operator identity.
    #[command(
        after_help = "Example:\n  samband init --org police.example --dir /var/lib/samband --client-listen 0.0.0.0:7443 --host samband.police.example"
    )]
    Init(node_cmds::InitArgs),
    /// Run the node until SIGINT or SIGTERM.
    #[command(
        after_help = "Examples:\n  samband serve --dir /var/lib/samband\n  samband serve                      # ./samband-node, created with org local.example if absent"
    )]
    Serve(node_cmds::ServeArgs),
    /// Manage member identities.
    #[command(subcommand)]
    User(UserCommand),
    /// Create and list channels.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Post a message to a channel; returns once it is durable on the node.
    #[command(
        after_help = "Examples:\n  samband post ops 'Evacuation of block C complete' --identity alice/\n  echo 'all units: report' | samband post ops - --priority urgent --dir /var/lib/samband"
    )]
    Post(client_cmds::PostArgs),
    /// Show a page of a channel's history.
    #[command(
        after_help = "Examples:\n  samband history ops --limit 20 --identity alice/\n  samband history ops --before 0001...    # the page before a cursor"
    )]
    History(client_cmds::HistoryArgs),
    /// Show the latest messages of a channel and optionally follow it live.
    #[command(
        after_help = "Examples:\n  samband tail ops --follow --identity alice/\n  samband tail ops --follow --from 0001...   # resume after a cursor, nothing missed"
    )]
    Tail(client_cmds::TailArgs),
    /// Show who you are on the node and the node's state.
    #[command(after_help = "Example:\n  samband status --identity alice/")]
    Status(client_cmds::StatusArgs),
    /// Measure this machine: disk floor and durable post throughput over mTLS.
    #[command(
        after_help = "Examples:\n  samband bench fsync\n  samband bench post --concurrency 1,64 --messages 50000"
    )]
    Bench(bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Issue a member certificate signed by the org CA, as an identity bundle directory.
    #[command(
        after_help = "Examples:\n  samband user add alice --dir /var/lib/samband --out alice/\n  samband user add duty-officer --admin --dir /var/lib/samband --out duty/"
    )]
    Add(node_cmds::UserAddArgs),
}

#[derive(Debug, Subcommand)]
enum ChannelCommand {
    /// Create an internal channel (admin role).
    #[command(after_help = "Example:\n  samband channel create flood-2026 --dir /var/lib/samband")]
    Create(client_cmds::ChannelCreateArgs),
    /// List the channels on the node.
    #[command(after_help = "Example:\n  samband channel list --identity alice/ --json")]
    List(client_cmds::ChannelListArgs),
}

/// How a client command finds its identity and node.
#[derive(Debug, Args)]
pub(crate) struct Connection {
    /// Identity bundle directory (from `samband user add`).
    #[arg(long, env = "SAMBAND_IDENTITY", value_name = "BUNDLE_DIR")]
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

pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(a) => node_cmds::init(a),
        Command::Serve(a) => node_cmds::serve(a),
        Command::User(UserCommand::Add(a)) => node_cmds::user_add(a),
        Command::Channel(ChannelCommand::Create(a)) => {
            client_cmds::run(client_cmds::channel_create(a))
        }
        Command::Channel(ChannelCommand::List(a)) => client_cmds::run(client_cmds::channel_list(a)),
        Command::Post(a) => client_cmds::run(client_cmds::post(a)),
        Command::History(a) => client_cmds::run(client_cmds::history(a)),
        Command::Tail(a) => client_cmds::run(client_cmds::tail(a)),
        Command::Status(a) => client_cmds::run(client_cmds::status(a)),
        Command::Bench(a) => bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
