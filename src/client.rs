//! Connecting to a node as a member, from an identity bundle.
//!
//! Uses the same rustls settings as the node (TLS 1.3, ring, the org CA as
//! the only root) through a tokio-rustls connector, with TCP_NODELAY.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use crate::pki::{IdentityBundle, PkiError};
use crate::proto::messaging_client::MessagingClient;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 ping interval and the time a ping may go unanswered.
pub const KEEPALIVE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("endpoint {0:?} is not host:port")]
    Endpoint(String),
    #[error("cannot connect to {endpoint}: {message}{}", why.hint(endpoint))]
    Connect {
        endpoint: String,
        message: String,
        why: ConnectFailure,
    },
}

/// Why a connection could not be made, as far as the error chain tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// Nothing accepts connections there.
    NobodyListens,
    /// The server's certificate is not one this identity trusts: another
    /// organisation's node, or a port that is not the member listener.
    UnknownServer,
    /// The server's certificate is from the trusted CA but not valid now
    /// (expired, not yet valid): its operator must renew it.
    ServerCertificateInvalid,
    /// The server refused this side's certificate (a TLS alert): expired,
    /// revoked, or not from a CA it trusts. A retry will not help until a
    /// certificate or the trust changes.
    OurCertificateRefused,
    Other,
}

impl ConnectFailure {
    /// What `e` says, read from its chain.
    pub fn of(e: &(dyn std::error::Error + 'static)) -> Self {
        let mut next = Some(e);
        while let Some(e) = next {
            let io = e.downcast_ref::<std::io::Error>();
            if io.is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused) {
                return ConnectFailure::NobodyListens;
            }
            let tls = e
                .downcast_ref::<rustls::Error>()
                .or_else(|| io.and_then(|io| io.get_ref()?.downcast_ref::<rustls::Error>()));
            match tls {
                Some(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                    | rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. },
                )) => return ConnectFailure::UnknownServer,
                Some(rustls::Error::InvalidCertificate(_)) => {
                    return ConnectFailure::ServerCertificateInvalid;
                }
                Some(_) if tls_refused(e) => return ConnectFailure::OurCertificateRefused,
                _ => {}
            }
            next = e.source();
        }
        ConnectFailure::Other
    }

    /// What a person can do about it, to follow the error.
    fn hint(self, endpoint: &str) -> String {
        match self {
            ConnectFailure::NobodyListens => format!(
                " (is the node running, and is {endpoint} its member address? start it with samband serve)"
            ),
            ConnectFailure::UnknownServer => format!(
                " (the server at {endpoint} is not your organisation's node, or not its member \
                 port: check --endpoint; the federation port is for partner nodes)"
            ),
            ConnectFailure::ServerCertificateInvalid => format!(
                " (the certificate of the server at {endpoint} is not valid now: its operator must renew it)"
            ),
            ConnectFailure::OurCertificateRefused | ConnectFailure::Other => String::new(),
        }
    }
}

/// Whether a rustls certificate error or alert is anywhere in `e`'s chain:
/// the TLS handshake refused a certificate, as opposed to a peer that is
/// down. (I/O errors hide their inner error from `source`, so it is looked
/// into.) Under TLS 1.3 a refusal of the client's certificate arrives as an
/// alert on the first call, so callers check that call's status too.
pub fn tls_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        let tls = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if matches!(
            tls,
            Some(
                rustls::Error::InvalidCertificate(_)
                    | rustls::Error::AlertReceived(_)
                    | rustls::Error::NoCertificatesPresented
            )
        ) {
            return true;
        }
        next = e.source();
    }
    false
}

/// The host part of `host:port` or `[v6]:port`.
fn host_of(endpoint: &str) -> Option<&str> {
    let (host, port) = endpoint.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

/// Opens a channel to `endpoint` (default: the bundle's) as the bundle's member.
pub async fn connect_channel(
    bundle: &IdentityBundle,
    endpoint: Option<&str>,
) -> Result<Channel, ClientError> {
    let endpoint = endpoint.unwrap_or(&bundle.info.endpoint);
    dial(Arc::new(bundle.client_tls()?), endpoint).await
}

/// A gRPC channel to the node at `addr` (`ip:port`, e.g. the address it
/// listens on, from its host) whose certificate is verified for the host
/// of the bundle's endpoint: what operator commands on the node's host
/// use, so that split DNS (the public name resolving elsewhere) does not
/// matter.
pub async fn connect_channel_at(
    bundle: &IdentityBundle,
    addr: &str,
) -> Result<Channel, ClientError> {
    let endpoint = &bundle.info.endpoint;
    let host = host_of(endpoint).ok_or_else(|| ClientError::Endpoint(endpoint.clone()))?;
    Ok(dial_to(Arc::new(bundle.client_tls()?), addr, host, None)
        .await?
        .0)
}

/// Opens a gRPC channel over TLS with the given settings to `host:port`,
/// verifying the server certificate for `host`.
pub async fn dial(tls: Arc<rustls::ClientConfig>, endpoint: &str) -> Result<Channel, ClientError> {
    Ok(dial_seeing_server(tls, endpoint).await?.0)
}

/// [`dial`], also giving the server's leaf certificate (DER) as the
/// handshake presented it: a partner's link ends when that certificate does.
pub async fn dial_seeing_server(
    tls: Arc<rustls::ClientConfig>,
    endpoint: &str,
) -> Result<(Channel, Option<Vec<u8>>), ClientError> {
    let host = host_of(endpoint).ok_or_else(|| ClientError::Endpoint(endpoint.to_owned()))?;
    dial_to(tls, endpoint, host, None).await
}

/// HTTP/2 receive windows of a connection that carries file bytes, bytes:
/// a few chunks in flight, so a transfer is not paced by window updates.
const BULK_STREAM_WINDOW: u32 = 4 << 20;
const BULK_CONNECTION_WINDOW: u32 = 8 << 20;

/// [`dial_seeing_server`] for a connection of its own that carries file
/// bytes: larger receive windows.
pub async fn dial_for_files(
    tls: Arc<rustls::ClientConfig>,
    endpoint: &str,
) -> Result<Channel, ClientError> {
    let host = host_of(endpoint).ok_or_else(|| ClientError::Endpoint(endpoint.to_owned()))?;
    let windows = Some((BULK_STREAM_WINDOW, BULK_CONNECTION_WINDOW));
    Ok(dial_to(tls, endpoint, host, windows).await?.0)
}

/// Dials `endpoint` (`host:port`) and verifies the server's certificate
/// for `server_host`.
async fn dial_to(
    tls: Arc<rustls::ClientConfig>,
    endpoint: &str,
    server_host: &str,
    windows: Option<(u32, u32)>,
) -> Result<(Channel, Option<Vec<u8>>), ClientError> {
    let seen: Arc<std::sync::Mutex<Option<Vec<u8>>>> = Arc::default();
    let server_name = ServerName::try_from(server_host.to_owned())
        .map_err(|_| ClientError::Endpoint(endpoint.to_owned()))?;
    let connector = TlsConnector::from(tls);
    let uri = Endpoint::from_shared(format!("http://{endpoint}"))
        .map_err(|_| ClientError::Endpoint(endpoint.to_owned()))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        // A peer that vanishes without closing (power cut, cable) is noticed
        // within about two keepalive periods instead of never.
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(windows.map(|w| w.0))
        .initial_connection_window_size(windows.map(|w| w.1));
    let addr = endpoint.to_owned();
    let record = seen.clone();
    let connect = tower::service_fn(move |_| {
        let (connector, server_name, addr) = (connector.clone(), server_name.clone(), addr.clone());
        let record = record.clone();
        async move {
            let tcp = TcpStream::connect(&addr).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server_name, tcp).await?;
            let leaf = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|der| der.to_vec());
            *crate::locks::lock(&record) = leaf;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    let channel = uri
        .connect_with_connector(connect)
        .await
        .map_err(|e| ClientError::Connect {
            endpoint: endpoint.to_owned(),
            message: std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string()),
            why: ConnectFailure::of(&e),
        })?;
    let leaf = crate::locks::lock(&seen).take();
    Ok((channel, leaf))
}

/// A Messaging client for the bundle's member.
pub async fn connect(
    bundle: &IdentityBundle,
    endpoint: Option<&str>,
) -> Result<MessagingClient<Channel>, ClientError> {
    Ok(MessagingClient::new(
        connect_channel(bundle, endpoint).await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::{ConnectFailure, host_of, tls_refused};

    #[test]
    fn hosts() {
        assert_eq!(host_of("localhost:7443"), Some("localhost"));
        assert_eq!(host_of("[::1]:7443"), Some("::1"));
        assert_eq!(host_of("127.0.0.1:1"), Some("127.0.0.1"));
        assert_eq!(host_of("localhost"), None);
        assert_eq!(host_of(":1"), None);
        assert_eq!(host_of("h:99999"), None);
    }

    #[test]
    fn a_connect_failure_is_read_from_the_error_chain() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(ConnectFailure::of(&refused), ConnectFailure::NobodyListens);
        let unknown = std::io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        assert_eq!(ConnectFailure::of(&unknown), ConnectFailure::UnknownServer);
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::CertificateExpired);
        assert_eq!(
            ConnectFailure::of(&alert),
            ConnectFailure::OurCertificateRefused
        );
        let expired = std::io::Error::other(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Expired,
        ));
        assert_eq!(
            ConnectFailure::of(&expired),
            ConnectFailure::ServerCertificateInvalid
        );
        let other = std::io::Error::other("something else");
        assert_eq!(ConnectFailure::of(&other), ConnectFailure::Other);
        assert!(
            ConnectFailure::NobodyListens
                .hint("h:1")
                .contains("is the node running")
        );
    }

    #[test]
    fn a_certificate_refusal_is_told_from_other_failures_through_the_error_chain() {
        let expired = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        let io = std::io::Error::other(expired);
        assert!(tls_refused(&io));
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::BadCertificate);
        assert!(tls_refused(&alert));
        let refused_connection = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!tls_refused(&refused_connection));
        assert!(!tls_refused(&tonic::Status::unavailable("no route")));
    }
}
