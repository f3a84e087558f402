//! The gRPC surface: tonic services, and the one place errors become a
//! [`tonic::Status`].
//!
//! Handlers validate requests, ask the engine or federation to act, and translate. Internal
//! detail (store errors) is logged here and never shown to a caller.

mod acks;
mod admin;
mod console;
mod context;
mod federation;
mod files;
mod incidents;
mod messaging;

use std::sync::Arc;

use tonic::Status;
use tonic::server::NamedService as _;
use tonic::transport::Server;
use tonic::transport::server::Router;

use crate::engine::WriteError;
use crate::federation::Federation;
use crate::identity::IdentityError;
use crate::model::ParseError;
use crate::proto::admin_server::AdminServer;
use crate::proto::federation_server::FederationServer;
use crate::proto::incidents_server::IncidentsServer;
use crate::proto::messaging_server::MessagingServer;
use crate::store::StoreError;
pub(crate) use acks::OverdueWatch;
pub(crate) use context::{ApiContext, reload};

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
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    OutOfRange(String),
    /// A concurrent call holds what this one needs: retry after it.
    #[error("{0}")]
    Aborted(String),
    /// The caller went away or broke its stream off.
    #[error("{0}")]
    Cancelled(String),
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
            ApiError::FailedPrecondition(m) => Status::failed_precondition(m),
            ApiError::ResourceExhausted(m) => Status::resource_exhausted(m),
            ApiError::OutOfRange(m) => Status::out_of_range(m),
            ApiError::Aborted(m) => Status::aborted(m),
            ApiError::Cancelled(m) => Status::cancelled(m),
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

/// The node's own PKI files unreadable: the node's fault, not the caller's.
impl From<crate::pki::PkiError> for ApiError {
    fn from(e: crate::pki::PkiError) -> Self {
        ApiError::Internal(e.to_string())
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
            // The node stops after a failed commit; a retry goes to its restart.
            WriteError::Stopped | WriteError::Commit | WriteError::RoundRefused => {
                ApiError::Unavailable(e.to_string())
            }
            WriteError::NoChannel(_) => ApiError::NotFound(e.to_string()),
            WriteError::NotParticipant { .. } => ApiError::NotFound(e.to_string()),
            WriteError::Archived(_)
            | WriteError::Withdrawn(_)
            | WriteError::NotAccepted(_)
            | WriteError::NotPending(_)
            | WriteError::HomeNotPeer { .. }
            | WriteError::NotPeer(_)
            | WriteError::HistoryNotChosen { .. }
            | WriteError::IncidentOver(_)
            | WriteError::NotIncident(_)
            | WriteError::NoPicture(_)
            | WriteError::AlreadyClosed(_) => ApiError::FailedPrecondition(e.to_string()),
            WriteError::NotFresh(_)
            | WriteError::IncidentExists(_)
            | WriteError::NameTaken(_)
            | WriteError::ChannelExists(_) => ApiError::AlreadyExists(e.to_string()),
            WriteError::NotHome { .. } => ApiError::PermissionDenied(e.to_string()),
            WriteError::Store(_) => ApiError::Internal(e.to_string()),
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

/// Health and reflection (v1 and v1alpha), which every listener serves.
/// Reflection advertises exactly the services named in `services`, health
/// and itself. One connection may have `max_streams` calls open at once;
/// more wait.
async fn base_router(
    services: &[&'static str],
    max_streams: u32,
    console: Option<axum::Router>,
) -> Result<Router, tonic_reflection::server::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in services.iter().copied().chain([""]) {
        health
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = || {
        services.iter().fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health"),
            |builder, name| builder.with_service_name(*name),
        )
    };
    let server = Server::builder()
        .max_concurrent_streams(max_streams)
        .http2_keepalive_interval(Some(crate::client::KEEPALIVE))
        .http2_keepalive_timeout(Some(crate::client::KEEPALIVE));
    // The console's pages share the port: a browser may speak HTTP/1.1.
    let mut server = server.accept_http1(console.is_some());
    let routes = console
        .map(tonic::service::Routes::from)
        .unwrap_or_default();
    Ok(server
        .add_routes(routes)
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?))
}

/// Why the member listener's services could not be put together.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RouterError {
    #[error(transparent)]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(transparent)]
    Console(#[from] console::NoRandom),
}

/// The member listener's services: Messaging, Incidents and Admin, the web
/// console, health, reflection.
pub(crate) async fn client_router(
    shared: Arc<ApiContext>,
    fed: Arc<Federation>,
) -> Result<Router, RouterError> {
    // Room for the largest accepted body plus the other fields, so that an
    // oversized body reaches the handler and gets a precise answer.
    // An upload chunk (1 MiB of data) must fit too.
    let max_request = shared.limits.max_body_bytes.max(crate::model::CHUNK_BYTES) + 64 * 1024;
    let messaging = MessagingServer::new(messaging::Messaging::new(shared.clone(), fed.clone()))
        .max_decoding_message_size(max_request);
    // A CAP alert comes whole in one ImportCap request.
    let incidents = IncidentsServer::new(incidents::Incidents::new(shared.clone(), fed.clone()))
        .max_decoding_message_size(crate::cap::MAX_ALERT_BYTES + 64 * 1024);
    let services = [
        MessagingServer::<messaging::Messaging>::NAME,
        AdminServer::<admin::Admin>::NAME,
        IncidentsServer::<incidents::Incidents>::NAME,
    ];
    Ok(base_router(
        &services,
        shared.limits.streams_per_connection,
        Some(console::router(shared.clone(), fed.clone())?),
    )
    .await?
    .add_service(messaging)
    .add_service(incidents)
    .add_service(AdminServer::new(admin::Admin::new(shared, fed))))
}

/// The federation listener's services: Federation, health, reflection.
pub(crate) async fn federation_router(
    fed: Arc<Federation>,
    max_streams: u32,
) -> Result<Router, tonic_reflection::server::Error> {
    let service = FederationServer::new(federation::FederationService::new(fed))
        .max_decoding_message_size(crate::federation::MAX_FRAME_BYTES)
        .max_encoding_message_size(crate::federation::MAX_FRAME_BYTES);
    let services = [FederationServer::<federation::FederationService>::NAME];
    Ok(base_router(&services, max_streams, None)
        .await?
        .add_service(service))
}
