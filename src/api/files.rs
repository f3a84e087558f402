//! Files in `samband.v1.Messaging`: Upload, UploadStatus, Download, the
//! files a post references, and how a message shows its attachments.
//!
//! A member attaches only what they uploaded themselves (the upload record
//! proves they held the bytes; knowing a hash is not enough, or a hash seen
//! anywhere would open the file). Download is authorised by the (channel,
//! message) reference: a member reads a file because a message of a channel
//! on this node references it, never by hash alone.
//!
//! May use: `model`, `proto`, `rules`, `store` (through [`ApiContext`]).

use std::pin::Pin;
use std::time::Instant;

use tokio_stream::{Stream, StreamExt as _};
use tonic::{Status, Streaming};

use super::{ApiContext, ApiError};
use crate::identity::Member;
use crate::model::{
    CHUNK_BYTES, ChannelId, Cursor, FileHash, check_file_name, check_media_type, unix_ms,
};
use crate::proto::{self, FileRef};
use crate::store::{FileError, PartialOf, PartialWriter, Upload};

/// What a post names when its `media_type` is empty (RFC 2046: arbitrary bytes).
const DEFAULT_MEDIA_TYPE: &str = "application/octet-stream";

/// File streams one member or one partner may have open at once: each
/// holds up to [`crate::federation::stream_file`]'s read-ahead + 1 chunks (5 MiB) in memory, and a
/// caller that opens many and reads none must not hold more than this.
pub(super) const STREAMS_PER_CALLER: usize = 4;

/// Counts the file streams each caller (a member, a partner org) has open.
#[derive(Debug, Default)]
pub(crate) struct StreamSlots {
    open: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

/// One open file stream; its slot is given back on drop.
#[derive(Debug)]
pub(super) struct Slot {
    key: String,
    open: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
}

impl StreamSlots {
    /// A slot for `key`, or RESOURCE_EXHAUSTED when it has
    /// [`STREAMS_PER_CALLER`] open.
    pub(super) fn take(&self, key: &str) -> Result<Slot, ApiError> {
        let mut open = crate::locks::lock(&self.open);
        let n = open.entry(key.to_owned()).or_default();
        if *n >= STREAMS_PER_CALLER {
            return Err(ApiError::ResourceExhausted(format!(
                "{key} has {STREAMS_PER_CALLER} file streams open already; finish one first"
            )));
        }
        *n += 1;
        Ok(Slot {
            key: key.to_owned(),
            open: self.open.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = crate::locks::lock(&self.open);
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

pub(super) type DownloadStream =
    Pin<Box<dyn Stream<Item = Result<proto::DownloadChunk, Status>> + Send>>;

fn hash_of(given: &str) -> Result<FileHash, ApiError> {
    FileHash::parse_hex(given).map_err(ApiError::InvalidArgument)
}

fn file_error(e: FileError) -> ApiError {
    match e {
        FileError::Offset { .. } => ApiError::FailedPrecondition(e.to_string()),
        FileError::Mismatch { .. } => ApiError::InvalidArgument(format!(
            "{e}: the file changed while it was sent, or the sha256 given is wrong; nothing of it was kept"
        )),
        FileError::Io { .. } => ApiError::Internal(e.to_string()),
    }
}

/// Runs blocking file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("file task failed: {e}")))?
}

/// An upload's bytes after its first chunk, each at most [`CHUNK_BYTES`]:
/// from a gRPC `Upload` stream or a console request's body. An error is
/// the sender's going away.
pub(super) type Chunks = Pin<Box<dyn Stream<Item = Result<Vec<u8>, ApiError>> + Send>>;

/// What an upload announces before its bytes: the file, its size (bytes)
/// and where these bytes start (what UploadStatus said is held).
#[derive(Debug, Clone)]
pub(super) struct Announced {
    pub(super) sha256: String,
    pub(super) size: u64,
    pub(super) offset: u64,
}

/// Upload: the bytes of one file, checked against the SHA-256 the first
/// chunk names, durable and recorded as this member's before the answer.
pub(super) async fn upload(
    api: &ApiContext,
    member: &Member,
    mut chunks: Streaming<proto::UploadChunk>,
) -> Result<proto::UploadResponse, ApiError> {
    let first = chunks
        .message()
        .await
        .map_err(|s| ApiError::Cancelled(s.message().to_owned()))?
        .ok_or_else(|| {
            ApiError::InvalidArgument(
                "an upload starts with a chunk that names the file (sha256, size)".into(),
            )
        })?;
    let announced = Announced {
        sha256: first.sha256,
        size: first.size,
        offset: first.offset,
    };
    let rest = chunks.map(|chunk| {
        chunk
            .map(|c| c.data)
            .map_err(|s| ApiError::Cancelled(s.message().to_owned()))
    });
    receive_file(api, member, announced, first.data, Box::pin(rest)).await
}

/// Receives one file: `first` and then `rest` are its bytes from
/// `announced.offset`. Durable and recorded as `member`'s upload before it
/// returns; bytes that arrived before an error are kept for a resume.
pub(super) async fn receive_file(
    api: &ApiContext,
    member: &Member,
    announced: Announced,
    first: Vec<u8>,
    mut rest: Chunks,
) -> Result<proto::UploadResponse, ApiError> {
    let hash = hash_of(&announced.sha256)?;
    let size = announced.size;
    let limits = &api.limits;
    if size > limits.max_file_bytes {
        return Err(ApiError::ResourceExhausted(format!(
            "a file of {size} bytes; this node accepts files of at most {} bytes (limits.max_file_bytes)",
            limits.max_file_bytes
        )));
    }
    if announced.offset > size {
        return Err(ApiError::InvalidArgument(format!(
            "offset {} lies beyond the file's {size} bytes",
            announced.offset
        )));
    }
    let files = api.store.files();
    let free = files
        .available_bytes()
        .map_err(|e| ApiError::Internal(format!("cannot tell the free disk space: {e}")))?;
    if free.saturating_sub(size - announced.offset) < limits.disk_reserve_bytes {
        tracing::warn!(
            free,
            size,
            reserve = limits.disk_reserve_bytes,
            "upload refused: the disk is nearly full"
        );
        return Err(ApiError::ResourceExhausted(format!(
            "the node's disk is nearly full: {free} bytes free, and {} must stay free \
             (limits.disk_reserve_bytes); tell the node's operator",
            limits.disk_reserve_bytes
        )));
    }
    let _writing = files
        .claim(&PartialOf::Upload(&member.name, &hash))
        .ok_or_else(|| {
            ApiError::Aborted(format!(
                "an upload of {hash} by {} is still running; wait for it, then resume from UploadStatus",
                member.name
            ))
        })?;
    let (store, name) = (api.store.clone(), member.name.clone());
    let offset = announced.offset;
    let partial = blocking(move || {
        store
            .files()
            .partial(&PartialOf::Upload(&name, &hash), offset)
            .map_err(file_error)
    })
    .await?;
    // Received and written at once: the writer hashes and writes a chunk
    // while the next one is received.
    let mut writer = partial.into_writer(&api.store);
    let received = receive(api, member, &mut writer, first, &mut rest, size).await;
    // Whatever arrived is written before the answer, so UploadStatus says it.
    let partial = writer.finish().await.map_err(file_error)?;
    received?;
    if partial.len() < size {
        return Err(ApiError::FailedPrecondition(format!(
            "the upload ended after {} of {size} bytes; they are kept: send the rest from offset {}",
            partial.len(),
            partial.len()
        )));
    }
    // The sweep must not take the file between its rename and its record.
    let _posting = files.posting().await;
    let (store, name) = (api.store.clone(), member.name.clone());
    blocking(move || {
        let size = partial.finish(store.files(), &hash).map_err(file_error)?;
        let upload = Upload {
            hash,
            size,
            at_unix_ms: unix_ms(),
        };
        store.record_upload(&name, &upload)?;
        store.flush()?;
        Ok(())
    })
    .await?;
    tracing::info!(member = %member.name, %hash, size, "file uploaded");
    Ok(proto::UploadResponse {
        sha256: hash.to_hex(),
        size,
    })
}

/// Receives the upload's chunks into `writer`, each checked and within the
/// member's upload rate, until the stream ends.
async fn receive(
    api: &ApiContext,
    member: &Member,
    writer: &mut PartialWriter,
    mut data: Vec<u8>,
    chunks: &mut Chunks,
    size: u64,
) -> Result<(), ApiError> {
    loop {
        if data.len() > CHUNK_BYTES {
            return Err(ApiError::InvalidArgument(format!(
                "a chunk of {} bytes; chunks are at most {CHUNK_BYTES} bytes",
                data.len()
            )));
        }
        if writer.len() + data.len() as u64 > size {
            return Err(ApiError::InvalidArgument(format!(
                "more bytes than the {size} the first chunk announced; nothing past them is kept"
            )));
        }
        if !data.is_empty() {
            let wait =
                api.upload_rates
                    .take_or_wait(&member.name, data.len() as u32, Instant::now());
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            writer.write(data).await.map_err(file_error)?;
        }
        data = match chunks.next().await {
            Some(Ok(data)) => data,
            None => return Ok(()),
            // What arrived is kept: the client resumes from it.
            Some(Err(e)) => return Err(e),
        };
    }
}

/// UploadStatus: how much of an upload of the caller's the node holds.
pub(super) fn upload_status(
    api: &ApiContext,
    member: &Member,
    req: &proto::UploadStatusRequest,
) -> Result<proto::UploadStatusResponse, ApiError> {
    let hash = hash_of(&req.sha256)?;
    let files = api.store.files();
    if let Some(upload) = api.store.upload(&member.name, &hash)?
        && files.held(&hash).is_some()
    {
        return Ok(proto::UploadStatusResponse {
            held: upload.size,
            complete: true,
        });
    }
    Ok(proto::UploadStatusResponse {
        held: files.partial_len(&PartialOf::Upload(&member.name, &hash)),
        complete: false,
    })
}

/// The files a post references, checked: each uploaded by the caller and
/// held, at most `limits.max_files_per_post`. The caller holds the sweep's
/// shared lock from before this until the post is durable.
pub(super) fn attachments(
    api: &ApiContext,
    member: &Member,
    refs: &[proto::AttachmentRef],
) -> Result<Vec<FileRef>, ApiError> {
    let most = api.limits.max_files_per_post;
    if refs.len() > most {
        return Err(ApiError::InvalidArgument(format!(
            "{} files; a post may attach at most {most} (limits.max_files_per_post)",
            refs.len()
        )));
    }
    let mut files = Vec::with_capacity(refs.len());
    let mut names = std::collections::HashSet::new();
    for r in refs {
        if !names.insert(r.name.as_str()) {
            return Err(ApiError::InvalidArgument(format!(
                "two files named {:?} in one post; readers save them by name, so give each its own",
                r.name
            )));
        }
        let hash = hash_of(&r.sha256)?;
        check_file_name(&r.name).map_err(ApiError::InvalidArgument)?;
        let media_type = if r.media_type.is_empty() {
            DEFAULT_MEDIA_TYPE.to_owned()
        } else {
            r.media_type.clone()
        };
        check_media_type(&media_type).map_err(ApiError::InvalidArgument)?;
        let upload = api
            .store
            .upload(&member.name, &hash)?
            .filter(|_| api.store.files().held(&hash).is_some())
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "{} has no upload of {hash} on this node (or it expired unposted after \
                     limits.unposted_upload_seconds); upload it first, then post",
                    member.name
                ))
            })?;
        files.push(FileRef {
            sha256: hash.0.to_vec(),
            size: upload.size,
            name: r.name.clone(),
            media_type,
        });
    }
    Ok(files)
}

/// A message's attachments (`files`, from its body) as members see them:
/// whether each is here, and who refused it.
pub(super) fn shown(
    api: &ApiContext,
    env: &proto::Envelope,
    files: Vec<FileRef>,
) -> Vec<proto::Attachment> {
    let origin = crate::model::OrgId::parse(&env.origin).ok();
    files
        .into_iter()
        .filter_map(|f| {
            let hash = FileHash::from_bytes(&f.sha256)?;
            let refused_by = origin
                .as_ref()
                .map(|o| {
                    api.refusals
                        .of_file(&env.channel, o, env.origin_seq, &hash.0)
                })
                .unwrap_or_default()
                .into_iter()
                .map(|r| proto::PartnerRefusal {
                    org: r.by.to_string(),
                    reason: r.reason,
                    retrying: r.retrying,
                })
                .collect();
            Some(proto::Attachment {
                sha256: hash.to_hex(),
                size: f.size,
                name: f.name,
                media_type: f.media_type,
                held: origin
                    .as_ref()
                    .and_then(|o| api.store.held_for(&hash, o, &api.org).ok().flatten())
                    .is_some(),
                refused_by,
            })
        })
        .collect()
}

/// Download: the file `req.sha256` that message `req.cursor` of
/// `channel` references, from `req.offset`, in chunks of [`CHUNK_BYTES`].
pub(super) fn download(
    api: &ApiContext,
    member: &Member,
    channel: &ChannelId,
    req: &proto::DownloadRequest,
) -> Result<DownloadStream, ApiError> {
    open_download(api, member, channel, req).map(|open| open.chunks)
}

/// A download being read: what the message says of the file, its size
/// here (bytes) and its chunks from the offset asked.
pub(super) struct OpenDownload {
    pub(super) file: FileRef,
    pub(super) size: u64,
    pub(super) chunks: DownloadStream,
}

/// [`download`], with the file's reference and size for a response that
/// names them (the web console's).
pub(super) fn open_download(
    api: &ApiContext,
    member: &Member,
    channel: &ChannelId,
    req: &proto::DownloadRequest,
) -> Result<OpenDownload, ApiError> {
    let at = Cursor::decode(&req.cursor).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
    let hash = hash_of(&req.sha256)?;
    let not_here = || {
        ApiError::NotFound(format!(
            "no message at {} in {channel} references file {hash}",
            req.cursor
        ))
    };
    let env = api
        .store
        .envelope(channel, &at.origin, at.seq)?
        .filter(|e| e.hlc == at.hlc.0)
        .ok_or_else(not_here)?;
    let file = crate::rules::files_of(&env)
        .into_iter()
        .find(|f| f.sha256 == hash.0)
        .ok_or_else(not_here)?;
    let Some(size) = api.store.held_for(&hash, &at.origin, &api.org)? else {
        if let Some(r) = api
            .refusals
            .of_file(&channel.to_string(), &at.origin, at.seq, &hash.0)
            .into_iter()
            .find(|r| r.by == api.org)
        {
            return Err(ApiError::FailedPrecondition(format!(
                "this node refused file {hash}: {}; it will not arrive",
                r.reason
            )));
        }
        return Err(ApiError::Unavailable(format!(
            "file {hash} ({} bytes) has not arrived on this node yet (it comes from {}); try again later",
            file.size, env.origin
        )));
    };
    if req.offset > size {
        return Err(ApiError::OutOfRange(format!(
            "offset {} lies beyond the file's {size} bytes",
            req.offset
        )));
    }
    let slot = api.file_streams.take(member.name.as_str())?;
    let chunks = crate::federation::stream_file(
        &api.store,
        &api.runtime,
        slot,
        hash,
        req.offset,
        size,
        |offset, size, data| proto::DownloadChunk { offset, data, size },
    );
    Ok(OpenDownload {
        file,
        size,
        chunks: Box::pin(chunks),
    })
}
