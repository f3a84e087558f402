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
}

impl FederationService {
    pub(crate) fn new(fed: Arc<Federation>) -> Self {
        Self { fed }
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<proto::LinkFrame, Status>> + Send>>;

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
}
