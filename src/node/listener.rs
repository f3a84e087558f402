//! Accepts TCP connections and completes TLS handshakes off the accept loop.
//!
//! The handshake (where rustls verifies the client certificate) has a time
//! limit and runs in its own task, so a slow or hostile client cannot hold
//! up anyone else. Refused handshakes are logged with their reason. At most
//! `max_connections` connections are open at once: beyond that the loop
//! stops accepting (new connections wait in the kernel's backlog) until one
//! closes.
//!
//! Each connection is identified once, when its handshake completes, by the
//! listener's own rule (a member of this org, a configured peer): the
//! result travels with the connection as a typed [`Verified`] value that
//! every request on it reads, instead of each handler re-reading
//! certificates.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;

use rustls::pki_types::CertificateDer;

use crate::identity::Verified;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a listener at its connection limit says so.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// An established, identified TLS connection holding one of its
/// listener's connection slots until it is dropped.
#[derive(Debug)]
pub struct Connection<I> {
    inner: TlsStream<TcpStream>,
    verified: Verified<I>,
    _slot: OwnedSemaphorePermit,
}

/// A stream of established TLS connections for `serve_with_incoming`.
/// `tls` gives the settings for each new handshake (so trust can change
/// without a restart); `None` refuses the connection. `identify` reads the
/// verified certificate chain (leaf first; empty if the client sent none)
/// once per connection; requests find its result as [`Verified<I>`].
pub fn tls_incoming<I: Clone + Send + Sync + 'static>(
    listener: TcpListener,
    tls: impl Fn() -> Option<Arc<rustls::ServerConfig>> + Send + 'static,
    identify: impl Fn(&[CertificateDer<'static>]) -> I + Send + Sync + 'static,
    max_connections: usize,
    shutdown: CancellationToken,
) -> ReceiverStream<std::io::Result<Connection<I>>> {
    let identify = Arc::new(identify);
    let refusals = Arc::new(RefusalLog::default());
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(max_connections));
    tokio::spawn(async move {
        let mut last_warned = None;
        loop {
            let slot = match slots.clone().try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    if last_warned.is_none_or(|t: std::time::Instant| t.elapsed() >= WARN_EVERY) {
                        last_warned = Some(std::time::Instant::now());
                        tracing::warn!(
                            max_connections,
                            "connection limit reached (limits.connections_per_listener); new connections wait"
                        );
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        slot = slots.clone().acquire_owned() => match slot {
                            Ok(slot) => slot,
                            Err(_) => break,
                        },
                    }
                }
            };
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
            let (tx, identify, refusals) = (tx.clone(), identify.clone(), refusals.clone());
            tokio::spawn(async move {
                if let Some(tls) = handshake(acceptor, tcp, peer, &refusals).await {
                    let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
                    let verified = Verified {
                        identity: identify(chain),
                        remote: peer,
                    };
                    let _ = tx
                        .send(Ok(Connection {
                            inner: tls,
                            verified,
                            _slot: slot,
                        }))
                        .await;
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
    refusals: &RefusalLog,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            let error = e.to_string();
            match refusals.note(peer.ip(), &error, std::time::Instant::now()) {
                Some(0) => tracing::info!(%peer, %error, "TLS handshake refused"),
                Some(n) => {
                    tracing::info!(%peer, %error, refused_since = n, "TLS handshake refused (again; said once per reason and ten minutes)")
                }
                None => tracing::debug!(%peer, %error, "TLS handshake refused"),
            }
            None
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// Which handshake refusals were logged, per remote address: a partner
/// whose certificate is refused redials every few seconds, and the log
/// should say so when the reason changes, and at most every ten minutes.
#[derive(Debug, Default)]
struct RefusalLog {
    /// Per address: the last reason logged, when, and how many since.
    said: std::sync::Mutex<
        std::collections::HashMap<std::net::IpAddr, (String, std::time::Instant, u64)>,
    >,
}

/// How often one address's unchanged refusal is logged again.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(600);
/// Addresses remembered; beyond, the memory starts over.
const REFUSAL_LOG_ADDRESSES: usize = 1024;

impl RefusalLog {
    /// Records a refusal of `ip` for `reason`: `Some(refusals not logged
    /// since the last time)` when it should be logged now, `None` if not.
    fn note(&self, ip: std::net::IpAddr, reason: &str, now: std::time::Instant) -> Option<u64> {
        let mut said = crate::locks::lock(&self.said);
        if said.len() >= REFUSAL_LOG_ADDRESSES && !said.contains_key(&ip) {
            said.clear();
        }
        match said.get_mut(&ip) {
            Some((last, at, since))
                if last == reason && now.duration_since(*at) < REFUSAL_LOG_EVERY =>
            {
                *since += 1;
                None
            }
            Some((last, at, since)) => {
                let skipped = if last == reason { *since } else { 0 };
                *last = reason.to_owned();
                *at = now;
                *since = 0;
                Some(skipped)
            }
            None => {
                said.insert(ip, (reason.to_owned(), now, 0));
                Some(0)
            }
        }
    }
}

// === impl Connection ===

impl<I: Clone + Send + Sync + 'static> Connected for Connection<I> {
    type ConnectInfo = Verified<I>;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.verified.clone()
    }
}

impl<I: Unpin> AsyncRead for Connection<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: Unpin> AsyncWrite for Connection<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_logged_once_per_reason_and_ten_minutes() {
        let log = RefusalLog::default();
        let ip: std::net::IpAddr = [127, 0, 0, 2].into();
        let t0 = std::time::Instant::now();
        assert_eq!(log.note(ip, "expired", t0), Some(0));
        for s in 1..64 {
            assert_eq!(log.note(ip, "expired", t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(
            log.note(ip, "unknown issuer", t0 + Duration::from_secs(90)),
            Some(0)
        );
        assert_eq!(
            log.note(ip, "unknown issuer", t0 + Duration::from_secs(91)),
            None
        );
        let later = t0 + Duration::from_secs(90) + REFUSAL_LOG_EVERY;
        assert_eq!(log.note(ip, "unknown issuer", later), Some(1));
        assert_eq!(log.note([127, 0, 0, 3].into(), "expired", later), Some(0));
    }
}
