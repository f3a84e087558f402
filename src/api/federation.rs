//! `samband.v1.Federation`: the link service partner nodes dial.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::federation::{Federation, PeerIdentity};
use crate::identity::Verified;
use crate::proto::{self, federation_server};

#[derive(Debug)]
pub(crate) struct FederationService {
    fed: Arc<Federation>,
    /// Per partner org: the FetchFile streams open.
    file_streams: super::files::StreamSlots,
}

impl FederationService {
    pub(crate) fn new(fed: Arc<Federation>) -> Self {
        Self {
            fed,
            file_streams: Default::default(),
        }
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<proto::LinkFrame, Status>> + Send>>;
type RequestStream = Pin<Box<dyn Stream<Item = Result<proto::FileRequest, Status>> + Send>>;
type FileStream = Pin<Box<dyn Stream<Item = Result<proto::FileChunk, Status>> + Send>>;

#[tonic::async_trait]
impl federation_server::Federation for FederationService {
    type LinkStream = FrameStream;

    async fn link(
        &self,
        request: Request<Streaming<proto::LinkFrame>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        let identity = Verified::<PeerIdentity>::of(&request)
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?
            .clone();
        let out = self.fed.accept_link(&identity, request.into_inner())?;
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    type FetchFileStream = FileStream;

    async fn fetch_file(
        &self,
        request: Request<proto::FileRequest>,
    ) -> Result<Response<Self::FetchFileStream>, Status> {
        let identity = Verified::<PeerIdentity>::of(&request)
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?
            .clone();
        let req = request.into_inner();
        let (peer, hash, size) = self.fed.file_for_peer(&identity, &req)?;
        let slot = self
            .file_streams
            .take(peer.as_str())
            .map_err(tonic::Status::from)?;
        if req.offset > size {
            return Err(Status::out_of_range(format!(
                "offset {} lies beyond the file's {size} bytes",
                req.offset
            )));
        }
        let chunks = crate::federation::stream_file(
            self.fed.store(),
            &self.fed.runtime,
            slot,
            hash,
            req.offset,
            size,
            |offset, size, data| proto::FileChunk { offset, data, size },
        );
        Ok(Response::new(Box::pin(chunks)))
    }

    type ServeFilesStream = RequestStream;

    async fn serve_files(
        &self,
        request: Request<Streaming<proto::FilePush>>,
    ) -> Result<Response<Self::ServeFilesStream>, Status> {
        let identity = Verified::<PeerIdentity>::of(&request)
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?
            .clone();
        let requests = self
            .fed
            .accept_served_files(&identity, request.into_inner())?;
        Ok(Response::new(Box::pin(ReceiverStream::new(requests))))
    }
}
