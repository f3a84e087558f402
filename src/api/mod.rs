//! The gRPC surface: tonic services, and the one place errors become a
//! [`tonic::Status`].
//!
//! Handlers validate requests, ask `node` to act, and translate. Internal
//! detail (store errors) is logged here and never shown to a caller.

mod messaging;

use std::sync::Arc;

use tonic::Status;
use tonic::transport::Server;
use tonic::transport::server::Router;

use crate::identity::IdentityError;
use crate::model::ParseError;
use crate::node::{Shared, WriteError};
use crate::proto::messaging_server::MessagingServer;
use crate::store::StoreError;

/// Everything a handler can answer with besides success.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Unavailable(String),
    /// Logged in full; the caller is told only that it happened.
    #[error("{0}")]
    Internal(String),
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::InvalidArgument(m) => Status::invalid_argument(m),
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::AlreadyExists(m) => Status::already_exists(m),
            ApiError::PermissionDenied(m) => Status::permission_denied(m),
            ApiError::Unauthenticated(m) => Status::unauthenticated(m),
            ApiError::Unavailable(m) => Status::unavailable(m),
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error answering a request");
                Status::internal("internal error on the node; its log has the details")
            }
        }
    }
}

impl From<ParseError> for ApiError {
    fn from(e: ParseError) -> Self {
        ApiError::InvalidArgument(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Stopped => ApiError::Unavailable(e.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> Self {
        match e {
            IdentityError::NoCertificate | IdentityError::Unreadable => {
                ApiError::Unauthenticated(e.to_string())
            }
            other => ApiError::PermissionDenied(other.to_string()),
        }
    }
}

/// The member listener's services: Messaging, health, reflection (v1 and v1alpha).
pub(crate) async fn client_router(
    shared: Arc<Shared>,
) -> Result<Router, tonic_reflection::server::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<MessagingServer<messaging::Messaging>>()
        .await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // Room for the largest accepted body plus the other fields, so that an
    // oversized body reaches the handler and gets a precise answer.
    let max_request = shared.limits.max_body_bytes + 64 * 1024;
    let messaging = MessagingServer::new(messaging::Messaging::new(shared))
        .max_decoding_message_size(max_request);
    Ok(Server::builder()
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(messaging))
}
