//! A partner org with real PKI that a node pinned, whose side of the link a
//! test drives frame by frame: the hostile partner of the federation tests.

use std::net::SocketAddr;
use std::path::Path;

use prost::bytes::{Buf as _, BufMut as _};
use ring::signature::Ed25519KeyPair;
use samband::proto;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use super::{Admin, PATIENCE, init_dir, node_dir};

/// An org with real PKI that a node trusts, driven by a test.
pub struct HandPeer {
    _tmp: tempfile::TempDir,
    pub pki: samband::pki::OrgPki,
    pub org: String,
    /// When the peer was made: its envelopes' timestamps count from here.
    pub now_ms: u64,
}

impl HandPeer {
    /// Made, and imported as a peer (accept auto, never dialed) through `admin`.
    pub async fn trusted_by(admin: &mut Admin, org: &str) -> Self {
        let tmp = init_dir(org);
        let pki = samband::pki::OrgPki::at(&node_dir(&tmp));
        let id = samband::model::OrgId::parse(org).unwrap();
        let bundle = samband::federation::own_bundle(&id, &pki, "127.0.0.1:1").unwrap();
        let req = proto::AddPeerRequest {
            bundle: bundle.to_text(),
            fingerprint: bundle.fingerprint(),
            endpoint: String::new(),
            accept: proto::AcceptPolicy::Auto as i32,
        };
        admin.add_peer(req).await.unwrap();
        Self {
            _tmp: tmp,
            pki,
            org: org.to_owned(),
            now_ms: now_ms(),
        }
    }

    /// A connection to the federation listener at `fed_addr` of the node in
    /// `node_dir`, made with this org's node certificate.
    pub async fn channel(
        &self,
        node_dir: &Path,
        fed_addr: SocketAddr,
    ) -> tonic::transport::Channel {
        let ca = std::fs::read(node_dir.join("pki/ca.pem")).unwrap();
        let ca = <rustls_pki_types::CertificateDer<'_> as rustls_pki_types::pem::PemObject>::from_pem_slice(&ca).unwrap();
        let tls = self.pki.peer_client_tls(&ca).unwrap();
        samband::client::dial(std::sync::Arc::new(tls), &fed_addr.to_string())
            .await
            .unwrap()
    }

    /// Dials the federation listener at `fed_addr` of the node in
    /// `node_dir` with this org's node certificate: where to send frames,
    /// and the node's frames.
    pub async fn dial(
        &self,
        node_dir: &Path,
        fed_addr: SocketAddr,
    ) -> (
        mpsc::Sender<proto::LinkFrame>,
        tonic::Streaming<proto::LinkFrame>,
    ) {
        let channel = self.channel(node_dir, fed_addr).await;
        let (tx, rx) = mpsc::channel(16);
        let responses = proto::federation_client::FederationClient::new(channel)
            .max_encoding_message_size(usize::MAX)
            .link(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        (tx, responses)
    }

    /// Like [`HandPeer::dial`], but frames are bytes sent as they are, as a
    /// stock client with its own idea of the schema would.
    pub async fn dial_raw(
        &self,
        node_dir: &Path,
        fed_addr: SocketAddr,
    ) -> (mpsc::Sender<Vec<u8>>, tonic::Streaming<Vec<u8>>) {
        self.try_dial_raw(node_dir, fed_addr).await.unwrap()
    }

    /// [`HandPeer::dial_raw`], with the node's refusal of the link (e.g.
    /// ALREADY_EXISTS while it still holds this peer's previous link).
    pub async fn try_dial_raw(
        &self,
        node_dir: &Path,
        fed_addr: SocketAddr,
    ) -> Result<(mpsc::Sender<Vec<u8>>, tonic::Streaming<Vec<u8>>), tonic::Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel(node_dir, fed_addr).await);
        grpc.ready().await.unwrap();
        let (tx, rx) = mpsc::channel(16);
        let path =
            tonic::codegen::http::uri::PathAndQuery::from_static("/samband.v1.Federation/Link");
        let responses = grpc
            .streaming(tonic::Request::new(ReceiverStream::new(rx)), path, RawCodec)
            .await?
            .into_inner();
        Ok((tx, responses))
    }

    /// An envelope signed with this org's key (whatever `origin` it names),
    /// and its chain hash. Roster changes carry no author or priority.
    pub fn envelope(
        &self,
        channel: &str,
        origin: &str,
        seq: u64,
        prev: [u8; 32],
        body: &str,
        kind: proto::Kind,
    ) -> (proto::Envelope, [u8; 32]) {
        self.envelope_with(
            &self.pki.message_key().unwrap(),
            channel,
            origin,
            seq,
            prev,
            body.as_bytes().to_vec(),
            kind,
        )
    }

    /// An envelope signed with `key`.
    #[allow(clippy::too_many_arguments)]
    pub fn envelope_with(
        &self,
        key: &Ed25519KeyPair,
        channel: &str,
        origin: &str,
        seq: u64,
        prev: [u8; 32],
        body: Vec<u8>,
        kind: proto::Kind,
    ) -> (proto::Envelope, [u8; 32]) {
        let control = kind == proto::Kind::Control;
        let mut e = proto::Envelope {
            channel: channel.into(),
            origin: origin.into(),
            origin_seq: seq,
            author: if control { "" } else { "hand" }.into(),
            hlc: (self.now_ms << 16) + seq,
            kind: kind as i32,
            priority: if control { 0 } else { 1 },
            body,
            prev: prev.to_vec(),
            signature: vec![],
            body_sha256: vec![],
            withheld: false,
        };
        e.body_sha256 = samband::model::body_digest(&e.body);
        let hash = samband::model::sign_and_hash(&mut e, key);
        (e, hash)
    }

    /// This org's roster change of its channel `channel` (seq `seq`, after
    /// `prev`): the offer of that channel to its participants.
    pub fn roster(
        &self,
        channel: &str,
        seq: u64,
        prev: [u8; 32],
        participants: Vec<proto::Participant>,
    ) -> (proto::Envelope, [u8; 32]) {
        self.envelope_with(
            &self.pki.message_key().unwrap(),
            channel,
            &self.org,
            seq,
            prev,
            samband::rules::control_body(participants),
            proto::Kind::Control,
        )
    }
}

/// Opens a link on an existing connection (a second call on it reuses the
/// same TLS connection, and so the identity its handshake established).
pub async fn link_on(
    connection: tonic::transport::Channel,
) -> (
    mpsc::Sender<proto::LinkFrame>,
    Result<tonic::Response<tonic::Streaming<proto::LinkFrame>>, tonic::Status>,
) {
    let (tx, rx) = mpsc::channel(1);
    let call = proto::federation_client::FederationClient::new(connection)
        .link(ReceiverStream::new(rx))
        .await;
    (tx, call)
}

/// A fresh Ed25519 key, as a partner would invent one.
pub fn invented_key() -> Ed25519KeyPair {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

pub fn frame(f: proto::link_frame::Frame) -> proto::LinkFrame {
    proto::LinkFrame { frame: Some(f) }
}

/// A hello stating that the sender holds `channel`, and nothing of it yet.
pub fn holding(channel: &str) -> proto::LinkFrame {
    frame(proto::link_frame::Frame::Hello(proto::VersionVectors {
        channels: vec![proto::ChannelVector {
            channel: channel.to_owned(),
            entries: vec![],
        }],
    }))
}

/// The next frame from the other side of a hand-driven link.
pub async fn next_frame(
    responses: &mut tonic::Streaming<proto::LinkFrame>,
) -> proto::link_frame::Frame {
    loop {
        let f = tokio::time::timeout(PATIENCE, responses.message())
            .await
            .expect("a frame in time")
            .expect("the link stays up")
            .expect("the link stays open");
        if let Some(f) = f.frame {
            return f;
        }
    }
}

/// How the other side ended a hand-driven link: the status it sent, after
/// skipping its frames.
pub async fn end_status<T>(responses: &mut tonic::Streaming<T>) -> tonic::Status {
    loop {
        match tokio::time::timeout(PATIENCE, responses.message())
            .await
            .expect("the link to end in time")
        {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the link ended with status OK"),
            Err(status) => return status,
        }
    }
}

/// Bytes in, bytes out: no schema.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

/// The federation server of a hand peer that a node dials: it takes the
/// node's link (and says nothing on it) and hands each ServeFiles call the
/// node opens to the test.
pub struct HandServer {
    pub addr: SocketAddr,
    calls: mpsc::Receiver<ServedCall>,
}

/// A node's ServeFiles call to a hand peer: the test asks for files on it.
pub struct ServedCall {
    requests: mpsc::Sender<Result<proto::FileRequest, tonic::Status>>,
    pushes: tonic::Streaming<proto::FilePush>,
}

impl HandServer {
    /// The next ServeFiles call the node opens.
    pub async fn next_call(&mut self) -> ServedCall {
        tokio::time::timeout(PATIENCE, self.calls.recv())
            .await
            .expect("the node to open ServeFiles")
            .expect("the hand server runs")
    }
}

impl ServedCall {
    /// Asks the node for one file: its bytes, or its refusal as NOT_FOUND.
    pub async fn ask(&mut self, req: proto::FileRequest) -> Result<Vec<u8>, tonic::Status> {
        use proto::file_push::Push;
        self.requests.send(Ok(req)).await.expect("the call is open");
        let mut out = Vec::new();
        loop {
            let push = tokio::time::timeout(PATIENCE, self.pushes.message())
                .await
                .expect("an answer")?
                .expect("the call is open");
            match push.push.expect("a push") {
                Push::Chunk(chunk) => {
                    assert_eq!(chunk.offset, out.len() as u64);
                    out.extend(chunk.data);
                }
                Push::Done(_) => return Ok(out),
                Push::Refused(why) => return Err(tonic::Status::not_found(why)),
            }
        }
    }
}

struct HandService {
    calls: mpsc::Sender<ServedCall>,
}

type Boxed<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl proto::federation_server::Federation for HandService {
    type LinkStream = Boxed<proto::LinkFrame>;

    async fn link(
        &self,
        request: tonic::Request<tonic::Streaming<proto::LinkFrame>>,
    ) -> Result<tonic::Response<Self::LinkStream>, tonic::Status> {
        // Read and dropped: the link stays open, and silent.
        let mut incoming = request.into_inner();
        tokio::spawn(async move { while let Ok(Some(_)) = incoming.message().await {} });
        Ok(tonic::Response::new(Box::pin(tokio_stream::pending())))
    }

    type FetchFileStream = Boxed<proto::FileChunk>;

    async fn fetch_file(
        &self,
        _: tonic::Request<proto::FileRequest>,
    ) -> Result<tonic::Response<Self::FetchFileStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("a hand peer serves no files"))
    }

    type ServeFilesStream = Boxed<proto::FileRequest>;

    async fn serve_files(
        &self,
        request: tonic::Request<tonic::Streaming<proto::FilePush>>,
    ) -> Result<tonic::Response<Self::ServeFilesStream>, tonic::Status> {
        let (requests, rx) = mpsc::channel(1);
        let call = ServedCall {
            requests,
            pushes: request.into_inner(),
        };
        let _ = self.calls.send(call).await;
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl HandPeer {
    /// Made with a federation server of its own on 127.0.0.1, and imported
    /// as a peer (accept auto) through `admin` with that server as its
    /// endpoint: the node in `node` dials it.
    pub async fn serving(admin: &mut Admin, org: &str, node: &Path) -> (Self, HandServer) {
        let tmp = init_dir(org);
        let dir = node_dir(&tmp);
        let pki = samband::pki::OrgPki::at(&dir);
        let identity = tonic::transport::Identity::from_pem(
            std::fs::read(dir.join("pki/node.pem")).unwrap(),
            std::fs::read(dir.join("pki/node.key")).unwrap(),
        );
        let node_ca = tonic::transport::Certificate::from_pem(
            std::fs::read(node.join("pki/ca.pem")).unwrap(),
        );
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(identity)
            .client_ca_root(node_ca);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (calls_tx, calls) = mpsc::channel(4);
        let service =
            proto::federation_server::FederationServer::new(HandService { calls: calls_tx });
        let server = tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        let id = samband::model::OrgId::parse(org).unwrap();
        let bundle = samband::federation::own_bundle(&id, &pki, &addr.to_string()).unwrap();
        let req = proto::AddPeerRequest {
            bundle: bundle.to_text(),
            fingerprint: bundle.fingerprint(),
            endpoint: addr.to_string(),
            accept: proto::AcceptPolicy::Auto as i32,
        };
        admin.add_peer(req).await.unwrap();
        let hand = Self {
            _tmp: tmp,
            pki,
            org: org.to_owned(),
            now_ms: now_ms(),
        };
        (hand, HandServer { addr, calls })
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
