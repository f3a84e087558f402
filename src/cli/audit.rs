//! `samband audit export|verify`: the hash-chained audit log, from the
//! running node or the data directory.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;
use samband::audit::{Entry, Head};
use samband::{audit, proto};
use tokio_stream::StreamExt as _;

use super::connection::rpc;
use super::{NodeTarget, offline_store, running_node};

#[derive(Debug, Args)]
pub(crate) struct AuditExportArgs {
    #[command(flatten)]
    node: NodeTarget,
    /// Only entries from this entry number (e.g. 120) or time (RFC 3339,
    /// e.g. 2026-11-29T08:00:00Z) on.
    #[arg(long, value_name = "SEQ|TIME")]
    since: Option<String>,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub(crate) struct AuditVerifyArgs {
    /// Verify the node's whole log (running or stopped).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Verify an export (`samband audit export` output).
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct AuditVerifyOptions {
    #[command(flatten)]
    source: AuditVerifyArgs,
    /// A head printed by an earlier verify, `SEQ:HASH`: the log must still
    /// hold that exact entry (finds entries cut from the end, and a log
    /// rewritten as a whole).
    #[arg(long, value_name = "SEQ:HASH")]
    head: Option<String>,
    /// Accept a file that starts after entry 1 (an `export --since`); the
    /// entries before it are not checked.
    #[arg(long)]
    partial: bool,
}

/// The node's audit entries from `from` on (running node or data dir).
async fn entries(node: &NodeTarget, from: u64) -> anyhow::Result<Vec<Entry>> {
    if let Some(mut admin) = running_node(node).await? {
        let mut stream = admin
            .export_audit(proto::ExportAuditRequest { from_seq: from })
            .await
            .map_err(rpc)?
            .into_inner();
        let mut out = Vec::new();
        while let Some(entry) = stream.next().await {
            out.push(Entry::from(entry.map_err(rpc)?));
        }
        return Ok(out);
    }
    let (_, store) = offline_store(node.dir()?)?;
    Ok(store.audit_entries(from).collect::<Result<_, _>>()?)
}

enum Since {
    Seq(u64),
    Time(time::OffsetDateTime),
}

fn parse_since(text: &str) -> anyhow::Result<Since> {
    if let Ok(seq) = text.parse() {
        return Ok(Since::Seq(seq));
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(Since::Time)
        .with_context(|| {
            format!("--since {text:?} is neither an entry number nor an RFC 3339 time (e.g. 2026-11-29T08:00:00Z)")
        })
}

pub(crate) async fn export(args: AuditExportArgs) -> anyhow::Result<()> {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let from = match since {
        Some(Since::Seq(seq)) => seq,
        _ => 0,
    };
    for entry in entries(&args.node, from).await? {
        if let Some(Since::Time(t)) = since {
            let at = time::OffsetDateTime::parse(
                &entry.at,
                &time::format_description::well_known::Rfc3339,
            );
            if at.is_ok_and(|at| at < t) {
                continue;
            }
        }
        out!("{}", serde_json::to_string(&entry)?);
    }
    Ok(())
}

pub(crate) async fn verify(args: AuditVerifyOptions) -> anyhow::Result<()> {
    let entries = match (&args.source.dir, &args.source.file) {
        (Some(dir), _) => entries(&NodeTarget::at(dir), 0).await?,
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            audit::parse_lines(&text)?
        }
        (None, None) => bail!("give --dir or --file"),
    };
    let first = entries.first().map_or(1, |e| e.seq);
    if first > 1 && !args.partial {
        bail!(
            "the audit log is NOT intact as a whole: it starts at entry {first}, not 1, so entries \
             were removed, or it is an export with --since; check what it holds with --partial \
             (the entries before {first} are then not checked)"
        );
    }
    let whole = first == 1;
    let head = audit::verify(&entries, whole.then(Head::default))
        .context("the audit log is NOT intact")?;
    if let Some(given) = &args.head {
        let (seq, hash) = given
            .split_once(':')
            .and_then(|(seq, hash)| Some((seq.parse().ok()?, hash)))
            .with_context(|| format!("--head {given:?} is not SEQ:HASH"))?;
        audit::check_head(&entries, seq, hash).context("the audit log is NOT intact")?;
    }
    if whole {
        out!("audit log intact: {} entries", entries.len());
    } else {
        out!(
            "export intact from entry {first} on ({} entries); entries before {first} are not in the file and were not checked",
            entries.len()
        );
    }
    out!(
        "head: {}:{} (keep it elsewhere; `audit verify --head {}:{}` later finds entries cut from the end or a rewritten log)",
        head.seq,
        head.hash_hex(),
        head.seq,
        head.hash_hex()
    );
    Ok(())
}
