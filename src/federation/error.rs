//! Why a link ended, why a dial failed and why a partner's certificate
//! names no peer: typed, so that callers decide by variant and operators
//! read one sentence per cause (`samband status`, the log).
//!
//! May use: `model`, `store`, `engine` (error types only), `client`, `pki`,
//! `identity`, and `federation::wire`.

use crate::client::{ClientError, ConnectFailure};
use crate::engine::WriteError;
use crate::model::OrgId;
use crate::store::StoreError;

use super::Refusal;
use super::wire::FrameError;

/// Why a link ended (none of these is retried on the same link: the
/// dialer dials again after its backoff).
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// The peer broke the frame protocol: it is told so and it is audited.
    #[error("{0}")]
    Refused(FrameError),
    #[error("the peer closed the link")]
    PeerClosed,
    /// The peer's stream ended with a status (the connection went, or the
    /// peer refused this node's frames).
    #[error("{}: {}", .0.code(), .0.message())]
    Broken(tonic::Status),
    /// This node's half of the link was closed (the other half ended).
    #[error("the link closed")]
    Closed,
    #[error("the node is stopping")]
    Stopping,
    /// rustls checks validity only at the handshake, so an open link
    /// ends at the partner's certificate's expiry by this.
    #[error(
        "certificate expired: the partner's node certificate expired on {}; it must renew it (samband pki renew)",
        crate::model::rfc3339(*.0)
    )]
    PartnerCertificateExpired(time::OffsetDateTime),
    /// This node's hello would break the peer's frame limits.
    #[error(
        "this node shares {channels} channels ({entries} vector entries) with {peer}, over what one link frame may carry (wire::MAX_FRAME_CHANNELS, MAX_FRAME_ENTRIES)"
    )]
    TooManyChannels {
        peer: OrgId,
        channels: usize,
        entries: usize,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("a link task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl LinkError {
    /// Why the peer's incoming stream failed: its frame broke the protocol
    /// (refused), or the connection went.
    pub(super) fn of_stream(status: tonic::Status) -> Self {
        match FrameError::of(&status) {
            Some(reason) => LinkError::Refused(reason),
            None => LinkError::Broken(status),
        }
    }
}

/// Why one dial of a peer failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DialError {
    #[error("peer removed")]
    PeerRemoved,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    #[error("{}", dial_words(.0))]
    Connect(#[from] ClientError),
    /// The link call failed; with TLS 1.3 a refusal of this node's client
    /// certificate shows up here, on the first call, not on connect.
    #[error("{}: {}{}", .0.code(), .0.message(), std::error::Error::source(.0).map(|e| format!(" ({e:?})")).unwrap_or_default())]
    Call(tonic::Status),
}

impl DialError {
    /// Which certificate the TLS handshake refused, if it did: backing off
    /// will not cure that, a certificate or trust must change. TLS 1.3 tells
    /// a client of the refusal of its certificate on its first call.
    pub(super) fn refusal(&self) -> Option<Refusal> {
        match self {
            DialError::Connect(ClientError::Connect { why, .. }) => match why {
                ConnectFailure::UnknownServer | ConnectFailure::ServerCertificateInvalid => {
                    Some(Refusal::TheirCertificate)
                }
                ConnectFailure::OurCertificateRefused => Some(Refusal::OurCertificate),
                _ => None,
            },
            DialError::Call(status) if crate::client::tls_refused(status) => {
                Some(Refusal::OurCertificate)
            }
            _ => None,
        }
    }
}

/// A dial's connection failure as the operator of the dialing node reads
/// it: what to check about the partner, not a member's advice.
fn dial_words(e: &ClientError) -> String {
    let ClientError::Connect {
        endpoint,
        message,
        why,
    } = e
    else {
        return e.to_string();
    };
    let hint = match why {
        ConnectFailure::NobodyListens => {
            " (nothing answers there: is the partner's node running, and is this its federation address?)"
        }
        ConnectFailure::UnknownServer => {
            " (the server there is not the node of this partner's CA: check the endpoint given with `peer add`)"
        }
        ConnectFailure::ServerCertificateInvalid => {
            " (the partner's node certificate is not valid now: its operator must renew it)"
        }
        ConnectFailure::OurCertificateRefused => {
            " (the partner refused this node's certificate: does it still trust this org, and is this node's certificate valid?)"
        }
        ConnectFailure::Other => "",
    };
    format!("cannot connect to the partner at {endpoint}: {message}{hint}")
}

/// Why a verified client certificate names no configured peer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IdentifyError {
    #[error("no client certificate")]
    NoCertificate,
    #[error("no configured peer's CA verifies this certificate")]
    UnknownCa,
    #[error("certificate verified by the CA of {ca_of} names {named}")]
    NamesAnotherOrg { ca_of: String, named: OrgId },
    #[error(transparent)]
    Certificate(#[from] crate::identity::IdentityError),
    #[error(transparent)]
    Store(#[from] StoreError),
}
