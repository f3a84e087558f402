//! Dialing one peer: connect, open the link, run it; on failure wait a
//! capped, jittered, exponentially growing delay and try again. While a link
//! the peer dialed is up, there is nothing to dial.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::error::DialError;
use super::link::{self, LINK_BUFFER};
use super::wire::MAX_FRAME_BYTES;
use super::{Federation, LinkState};
use crate::model::OrgId;
use crate::proto::federation_client::FederationClient;

const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Low enough that a peer that comes back is linked within seconds, without
/// a partner that is down for hours costing more than one handshake a few seconds.
const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// The delay after `failures` failed attempts in a row; `jitter` in [0, 1).
pub(super) fn backoff(failures: u32, jitter: f64) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32.checked_shl(failures.min(16)).unwrap_or(u32::MAX));
    // Between half and all of the capped exponential delay.
    exp.min(BACKOFF_CAP)
        .mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
}

pub(super) fn jitter() -> f64 {
    let mut byte = [0u8; 1];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte);
    f64::from(byte[0]) / 256.0
}

pub(super) async fn run(fed: Arc<Federation>, peer: OrgId, cancel: CancellationToken) {
    let mut failures = 0u32;
    // What the log last said of this peer's dials: each change is said once.
    let mut said: Option<String> = None;
    loop {
        // A link the peer dialed serves both directions: wait for it to end.
        loop {
            let ended = fed.link_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if !fed.has_link(&peer) {
                break;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = ended => {}
            }
        }
        if cancel.is_cancelled() {
            return;
        }
        fed.set_status(&peer, LinkState::Connecting, None);
        match dial_once(&fed, &peer).await {
            Ok(()) => {
                failures = 0;
                said = None;
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let state = match e.refusal() {
                    Some(refusal) => LinkState::Refused(refusal),
                    None => LinkState::BackingOff { failures },
                };
                let text = e.to_string();
                if said.as_ref() != Some(&text) {
                    tracing::warn!(%peer, error = %text, failures, "cannot link to the partner; retrying with backoff (said again only when the reason changes)");
                    said = Some(text.clone());
                } else {
                    tracing::debug!(%peer, error = %text, failures, "dial failed");
                }
                fed.set_status(&peer, state, Some(text));
            }
        }
        let delay = backoff(failures, jitter());
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

async fn dial_once(fed: &Arc<Federation>, peer: &OrgId) -> Result<(), DialError> {
    let record = fed.store.peer(peer)?.ok_or(DialError::PeerRemoved)?;
    let tls = fed.pki.peer_client_tls(&record.ca_der)?;
    let (channel, server_cert) =
        crate::client::dial_seeing_server(Arc::new(tls), &record.endpoint).await?;
    let (tx, rx) = mpsc::channel(LINK_BUFFER);
    let mut client = FederationClient::new(channel)
        .max_decoding_message_size(MAX_FRAME_BYTES)
        .max_encoding_message_size(MAX_FRAME_BYTES);
    // A client cannot end its stream with a status: an error ends it plainly.
    let frames = ReceiverStream::new(rx).map_while(Result::ok);
    let response = client.link(frames).await.map_err(DialError::Call)?;
    let Some(registered) = fed.register_link(peer, true) else {
        return Ok(()); // the link the peer dialed is the one both sides keep
    };
    let expires = server_cert
        .as_deref()
        .and_then(crate::pki::cert_info)
        .map(|c| c.not_after);
    // While this link is up, the peer can have this node's files even if it
    // cannot dial it.
    let serving = registered.cancel.child_token();
    fed.runtime.spawn(super::files::serve_over_call(
        fed.clone(),
        peer.clone(),
        record,
        serving.clone(),
    ));
    link::run(
        fed.clone(),
        peer.clone(),
        registered,
        expires,
        response.into_inner(),
        tx,
    )
    .await;
    serving.cancel();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        assert_eq!(backoff(0, 0.0), Duration::from_millis(50));
        assert_eq!(
            backoff(0, 0.999_999),
            BACKOFF_BASE.mul_f64(0.5 + 0.999_999 / 2.0)
        );
        assert!(backoff(3, 0.5) > backoff(2, 0.5));
        for failures in [5, 10, 31, 1000, u32::MAX] {
            assert!(backoff(failures, 0.999) <= BACKOFF_CAP);
            assert!(backoff(failures, 0.0) >= BACKOFF_CAP / 2);
        }
    }
}
