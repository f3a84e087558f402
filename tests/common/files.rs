//! Files in tests: upload, post with files, download, through the
//! Messaging API as a stock client would.

use std::path::{Path, PathBuf};

use samband::model::FileHash;
use samband::proto;
use tokio_stream::StreamExt as _;

use super::Client;

pub const MIB: usize = 1 << 20;

/// Bytes that are not all the same, so a misplaced chunk shows.
pub fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub fn sha(data: &[u8]) -> String {
    FileHash::of(data).to_hex()
}

/// The chunks of an upload of `data` from `offset`, the first naming the file.
pub fn chunks(data: &[u8], size: u64, offset: usize, hash: &str) -> Vec<proto::UploadChunk> {
    let mut out: Vec<proto::UploadChunk> = data[offset..]
        .chunks(MIB)
        .map(|c| proto::UploadChunk {
            data: c.to_vec(),
            ..Default::default()
        })
        .collect();
    if out.is_empty() {
        out.push(proto::UploadChunk::default());
    }
    out[0].sha256 = hash.to_owned();
    out[0].size = size;
    out[0].offset = offset as u64;
    out
}

pub async fn upload(c: &mut Client, data: &[u8]) -> Result<proto::UploadResponse, tonic::Status> {
    let stream = tokio_stream::iter(chunks(data, data.len() as u64, 0, &sha(data)));
    Ok(c.upload(stream).await?.into_inner())
}

pub fn attach(data: &[u8], name: &str) -> proto::AttachmentRef {
    proto::AttachmentRef {
        sha256: sha(data),
        name: name.into(),
        media_type: "image/jpeg".into(),
    }
}

pub async fn post_files(
    c: &mut Client,
    channel: &str,
    text: &str,
    files: Vec<proto::AttachmentRef>,
) -> Result<proto::PostResponse, tonic::Status> {
    let req = proto::PostRequest {
        channel: channel.into(),
        text: text.into(),
        priority: 0,
        attachments: files,
        ..Default::default()
    };
    Ok(c.post(req).await?.into_inner())
}

pub async fn download(
    c: &mut Client,
    channel: &str,
    cursor: &str,
    hash: &str,
    offset: u64,
) -> Result<Vec<u8>, tonic::Status> {
    let req = proto::DownloadRequest {
        channel: channel.into(),
        cursor: cursor.into(),
        sha256: hash.into(),
        offset,
    };
    let mut stream = c.download(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        assert_eq!(chunk.offset, offset + out.len() as u64);
        assert!(chunk.data.len() <= MIB);
        out.extend_from_slice(&chunk.data);
    }
    Ok(out)
}

/// Where the node in `dir` keeps the whole file `data`.
pub fn object_path(dir: &Path, data: &[u8]) -> PathBuf {
    let hash = sha(data);
    dir.join("data/files/objects").join(&hash[..2]).join(hash)
}

/// What the node holds of `c`'s member's upload of `hash` (hex).
pub async fn upload_status(
    c: &Client,
    hash: &str,
) -> Result<proto::UploadStatusResponse, tonic::Status> {
    let req = proto::UploadStatusRequest {
        sha256: hash.to_owned(),
    };
    Ok(c.clone().upload_status(req).await?.into_inner())
}
