//! The engine: everything that changes the message log and tells the rest
//! of the node about it. The single writer (group commit, every decision
//! through [`crate::rules`]), what it announces after each durable round
//! ([`Commits`], [`DurableMarks`]), live fan-out to subscribers, and the
//! revoked member certificates.
//!
//! Must never answer a poster before the flush, nor let anything read a
//! write as durable before it is. May use `model`, `rules`, `store`,
//! `audit`, `identity`, `pki`, `layout` and `sync`; never the listeners, the
//! API or federation, which sit above it.

mod commits;
mod durable;
mod fanout;
mod revocations;
mod subscription;
mod writer;

pub use commits::{Changes, Commits};
pub use durable::DurableMarks;
pub use fanout::{Fanout, Live};
pub use revocations::{Revocations, RevokeError, record_issued, revoke_member};
pub use subscription::{Delivery, Start, Subscription};
pub use writer::{
    Content, NewPost, Offered, Reply, RosterChange, WriteError, WriterHandle, WriterSettings, spawn,
};
