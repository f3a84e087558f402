//! Files from the terminal: uploading what `samband post --file` attaches
//! (resuming what the node holds already), and `samband fetch`, which
//! writes a message's files to a directory, verified before they get their
//! final name.

use std::io::{IsTerminal as _, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use samband::model::{CHUNK_BYTES, Cursor, FileHash, check_file_name};
use samband::proto::{self, messaging_client::MessagingClient};
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

use super::connection::rpc;
use super::{Connection, output};

#[derive(Debug, Args)]
pub(crate) struct FetchArgs {
    /// Channel: `name` for one of your org, or `home-org/name`.
    channel: String,
    /// The message whose files to write (a cursor from `history --cursors`).
    cursor: String,
    /// Directory to write the files to (created if missing).
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Only the file with this SHA-256 (hex), of the message's files.
    #[arg(long, value_name = "SHA256")]
    attachment: Option<String>,
    #[command(flatten)]
    conn: Connection,
}

/// A bar on standard error when it is a terminal; hidden otherwise.
fn bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// The SHA-256 and size of the file at `path`, read once.
pub(crate) fn hash_file(path: &Path) -> anyhow::Result<(FileHash, u64)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata()?.len();
    let progress = bar(size, "checking");
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        progress.inc(n as u64);
    }
    progress.finish_and_clear();
    let hash = FileHash::from_bytes(hasher.finish().as_ref()).context("SHA-256 of the file")?;
    Ok((hash, size))
}

/// Uploads the file at `path` (or finishes an interrupted upload of it)
/// and says how a post references it.
pub(crate) async fn upload(
    c: &mut MessagingClient<Channel>,
    path: &Path,
) -> anyhow::Result<proto::AttachmentRef> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} has no file name in UTF-8", path.display()))?
        .to_owned();
    check_file_name(&name).map_err(anyhow::Error::msg)?;
    let media_type = mime_guess::from_path(path)
        .first_or_octet_stream()
        .essence_str()
        .to_owned();
    let (hash, size) = tokio::task::spawn_blocking({
        let path = path.to_owned();
        move || hash_file(&path)
    })
    .await??;
    let status = c
        .upload_status(proto::UploadStatusRequest {
            sha256: hash.to_hex(),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    // Said on standard error: standard output stays the post's result.
    if status.complete {
        eprintln!("{name}: the node holds it already; not sent again");
    } else {
        let offset = if status.held <= size { status.held } else { 0 };
        if offset > 0 {
            eprintln!("{name}: resuming an interrupted upload at byte {offset} of {size}");
        }
        send(c, path, hash, size, offset, &name).await?;
    }
    Ok(proto::AttachmentRef {
        sha256: hash.to_hex(),
        name,
        media_type,
    })
}

/// Streams the file from `offset` in chunks of [`CHUNK_BYTES`].
pub(crate) async fn send(
    c: &mut MessagingClient<Channel>,
    path: &Path,
    hash: FileHash,
    size: u64,
    offset: u64,
    name: &str,
) -> anyhow::Result<()> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    file.seek(SeekFrom::Start(offset))?;
    let progress = bar(size, name);
    progress.set_position(offset);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let reader = {
        let progress = progress.clone();
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let mut first = true;
            let mut at = offset;
            loop {
                let mut data = vec![0; CHUNK_BYTES];
                let n = read_full(&mut file, &mut data)?;
                data.truncate(n);
                if n == 0 && !first {
                    return Ok(());
                }
                let chunk = proto::UploadChunk {
                    sha256: if first { hash.to_hex() } else { String::new() },
                    size: if first { size } else { 0 },
                    offset: if first { at } else { 0 },
                    data,
                };
                first = false;
                at += n as u64;
                if tx.blocking_send(chunk).is_err() {
                    return Ok(());
                }
                progress.set_position(at);
                if n == 0 || at >= size {
                    return Ok(());
                }
            }
        })
    };
    let sent = c
        .upload(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    reader.await??;
    progress.finish_and_clear();
    let uploaded = sent.map_err(rpc)?.into_inner();
    if uploaded.sha256 != hash.to_hex() {
        bail!(
            "the node took {} as {}, not {hash}",
            path.display(),
            uploaded.sha256
        );
    }
    Ok(())
}

/// Reads until `buf` is full or the file ends; how many bytes.
fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// `samband fetch`: the message's files (or one of them) into `--out`.
pub(crate) async fn fetch(args: FetchArgs) -> anyhow::Result<()> {
    let (mut c, _) = args.conn.connect().await?;
    let message = find_message(&mut c, &args.channel, &args.cursor).await?;
    let wanted: Vec<_> = match &args.attachment {
        Some(sha) => {
            let sha = FileHash::parse_hex(sha)
                .map_err(anyhow::Error::msg)?
                .to_hex();
            let one: Vec<_> = message
                .attachments
                .iter()
                .filter(|a| a.sha256 == sha)
                .cloned()
                .collect();
            if one.is_empty() {
                bail!("the message has no attachment {sha}");
            }
            one
        }
        None => message.attachments.clone(),
    };
    if wanted.is_empty() {
        bail!("the message has no attachments");
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    for a in &wanted {
        let path = download(&mut c, &args, a).await?;
        if args.conn.json {
            out!(
                "{}",
                serde_json::json!({"path": path.display().to_string(), "sha256": a.sha256, "size": a.size, "name": a.name, "media_type": a.media_type})
            );
        } else {
            out!(
                "{}  ({}, {})",
                path.display(),
                output::printable(&a.media_type),
                indicatif::HumanBytes(a.size)
            );
        }
    }
    Ok(())
}

/// The message at `cursor`: a page of one, after the position just before it.
async fn find_message(
    c: &mut MessagingClient<Channel>,
    channel: &str,
    cursor: &str,
) -> anyhow::Result<proto::Message> {
    let at = Cursor::decode(cursor)?;
    let page = c
        .history(proto::HistoryRequest {
            channel: channel.to_owned(),
            limit: 1,
            position: Some(proto::history_request::Position::After(
                at.just_before().encode(),
            )),
        })
        .await
        .map_err(rpc)?
        .into_inner();
    page.messages
        .into_iter()
        .find(|m| m.cursor == cursor)
        .with_context(|| format!("no message at {cursor} in {channel}"))
}

/// Downloads one file to `DIR/.NAME.partial` (resuming what is there),
/// checks its SHA-256, then renames it to `DIR/NAME`.
async fn download(
    c: &mut MessagingClient<Channel>,
    args: &FetchArgs,
    a: &proto::Attachment,
) -> anyhow::Result<PathBuf> {
    check_file_name(&a.name).map_err(anyhow::Error::msg)?;
    let target = args.out.join(&a.name);
    if target.exists() {
        bail!(
            "{} exists already; fetch into another --out directory, or move it away first",
            target.display()
        );
    }
    // Named by the file's hash: two files of the same name do not resume
    // into each other.
    let partial = args.out.join(format!(".samband-{}.partial", a.sha256));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&partial)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    let mut offset = file.metadata()?.len();
    if offset > a.size {
        file.set_len(0)?;
        offset = 0;
    }
    let progress = bar(a.size, &a.name);
    progress.set_position(offset);
    if offset < a.size {
        let mut chunks = c
            .download(proto::DownloadRequest {
                channel: args.channel.clone(),
                cursor: args.cursor.clone(),
                sha256: a.sha256.clone(),
                offset,
            })
            .await
            .map_err(rpc)?
            .into_inner();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(rpc)?;
            if chunk.offset != offset {
                bail!(
                    "the node sent bytes from {} where {offset} was next",
                    chunk.offset
                );
            }
            if offset + chunk.data.len() as u64 > a.size {
                bail!("the node sent more than the file's {} bytes", a.size);
            }
            file.write_all(&chunk.data)
                .with_context(|| format!("writing {}", partial.display()))?;
            offset += chunk.data.len() as u64;
            progress.set_position(offset);
        }
    }
    file.sync_data()?;
    drop(file);
    progress.finish_and_clear();
    let (hash, size) = hash_file(&partial)?;
    if hash.to_hex() != a.sha256 || size != a.size {
        std::fs::remove_file(&partial).ok();
        bail!(
            "{} arrived with SHA-256 {hash} ({size} bytes), not {} ({} bytes); removed it, fetch again",
            a.name,
            a.sha256,
            a.size
        );
    }
    std::fs::rename(&partial, &target).with_context(|| {
        format!(
            "cannot rename {} to {}",
            partial.display(),
            target.display()
        )
    })?;
    Ok(target)
}
