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
    #[error("cannot connect to {endpoint}: {message}")]
    Connect {
        endpoint: String,
        message: String,
        /// The TLS handshake refused a certificate ([`tls_refused`]): a
        /// retry will not help until one side's certificate or trust changes.
        refused: bool,
    },
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
    let seen: Arc<std::sync::Mutex<Option<Vec<u8>>>> = Arc::default();
    let host = host_of(endpoint).ok_or_else(|| ClientError::Endpoint(endpoint.to_owned()))?;
    let server_name = ServerName::try_from(host.to_owned())
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
        .keep_alive_while_idle(true);
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
            *crate::sync::lock(&record) = leaf;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    let channel = uri
        .connect_with_connector(connect)
        .await
        .map_err(|e| ClientError::Connect {
            endpoint: endpoint.to_owned(),
            message: std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string()),
            refused: tls_refused(&e),
        })?;
    let leaf = crate::sync::lock(&seen).take();
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
    use super::host_of;

    #[test]
    fn hosts() {
        assert_eq!(host_of("localhost:7443"), Some("localhost"));
        assert_eq!(host_of("[::1]:7443"), Some("::1"));
        assert_eq!(host_of("127.0.0.1:1"), Some("127.0.0.1"));
        assert_eq!(host_of("localhost"), None);
        assert_eq!(host_of(":1"), None);
        assert_eq!(host_of("h:99999"), None);
    }
}
