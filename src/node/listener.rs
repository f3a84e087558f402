//! Accepts TCP connections and completes TLS handshakes off the accept loop.
//!
//! The handshake (where rustls verifies the client certificate) has a time
//! limit and runs in its own task, so a slow or hostile client cannot hold
//! up anyone else. Refused handshakes are logged with their reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A stream of established TLS connections for `serve_with_incoming`.
/// `tls` gives the settings for each new handshake (so trust can change
/// without a restart); `None` refuses the connection.
pub fn tls_incoming(
    listener: TcpListener,
    tls: impl Fn() -> Option<Arc<rustls::ServerConfig>> + Send + 'static,
    shutdown: CancellationToken,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Typically EMFILE: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let Some(config) = tls() else {
                tracing::info!(%peer, "connection refused: no partner is trusted yet");
                continue;
            };
            let acceptor = TlsAcceptor::from(config);
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Some(tls) = handshake(acceptor, tcp, peer).await {
                    let _ = tx.send(Ok(tls)).await;
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "TLS handshake refused");
            None
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            None
        }
    }
}
