//! The BuildKit session: Slipway asks the engine to upgrade `POST /session`
//! to HTTP/2, then serves gRPC on it, the engine being the client. bollard's
//! own session serves registry auth only; this one serves the build context
//! (FileSync, as buildx does), build secrets, the registry cache's
//! credentials (Auth), and tells the build when the Dockerfile asked for a
//! secret nobody configured.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bollard_buildkit_proto::health::health_check_response::ServingStatus;
use bollard_buildkit_proto::health::health_server::{Health, HealthServer};
use bollard_buildkit_proto::health::{
    HealthCheckRequest, HealthCheckResponse, HealthListRequest, HealthListResponse,
};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::secrets_server::{Secrets, SecretsServer};
use bollard_buildkit_proto::moby::buildkit::secrets::v1::{GetSecretRequest, GetSecretResponse};
use hyper_util::rt::TokioExecutor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tonic::{Request, Response, Status};

use super::auth::{self, CacheAuth};
use super::filesync::{self, ContextSync};
use crate::context::SyncDir;
use crate::engine::address::{empty_body, error_text, EngineAddress};
use crate::engine::{BuildSecrets, CacheSource, EngineError};
use bollard_buildkit_proto::moby::filesync::packet::file_sync_server::FileSyncServer;
use bollard_buildkit_proto::moby::filesync::v1::auth_server::AuthServer;

/// The gRPC methods the engine may call on this session.
const METHODS: [&str; 3] = [
    "/grpc.health.v1.Health/Check",
    "/moby.buildkit.secrets.v1.Secrets/GetSecret",
    filesync::DIFF_COPY,
];

/// An open session; dropping it closes the connection and so ends the
/// session in the engine.
pub(super) struct Session {
    pub id: String,
    /// Cancelled when the engine's side of the session goes away.
    pub closed: CancellationToken,
    /// Cancelled when the Dockerfile asked for a secret that is not configured.
    pub secret_missing: CancellationToken,
    missing: Arc<Mutex<BTreeSet<String>>>,
    _serving: AbortOnDropHandle<()>,
}

impl Session {
    pub async fn open(
        address: &EngineAddress,
        secrets: Arc<BuildSecrets>,
        context: SyncDir,
        cache: Option<CacheSource>,
    ) -> Result<Self, EngineError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut request = hyper::Request::post("/session")
            .header(http::header::CONNECTION, "Upgrade")
            .header(http::header::UPGRADE, "h2c")
            .header("X-Docker-Expose-Session-Uuid", &id)
            .header("X-Docker-Expose-Session-Name", "slipway")
            .header("X-Docker-Expose-Session-Sharedkey", &id);
        for method in METHODS.into_iter().chain(auth::METHODS) {
            request = request.header("X-Docker-Expose-Session-Grpc-Method", method);
        }
        let request = request
            .body(empty_body())
            .map_err(|e| EngineError::Api(e.to_string()))?;
        let response = address.send(request).await?;
        let status = response.response.status();
        if status != http::StatusCode::SWITCHING_PROTOCOLS {
            let answer = format!("POST /session answered {}", error_text(response).await);
            // Only a refusal says the engine has no sessions; a 500 may pass.
            let refused = status.is_client_error() || status == http::StatusCode::NOT_IMPLEMENTED;
            return Err(if refused {
                EngineError::NoBuildKit(answer)
            } else {
                EngineError::Api(answer)
            });
        }
        let (response, connection) = response.into_parts();
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| EngineError::NoBuildKit(format!("session upgrade failed: {e}")))?;
        let closed = CancellationToken::new();
        let secret_missing = CancellationToken::new();
        let missing = Arc::new(Mutex::new(BTreeSet::new()));
        let provider = SecretProvider {
            secrets,
            missing: missing.clone(),
            asked_missing: secret_missing.clone(),
        };
        let routes = tonic::service::Routes::new(HealthServer::new(Healthy))
            .add_service(SecretsServer::new(provider))
            .add_service(AuthServer::new(CacheAuth::new(cache)))
            .add_service(
                FileSyncServer::new(ContextSync::new(context))
                    .max_decoding_message_size(usize::MAX)
                    .max_encoding_message_size(usize::MAX),
            );
        let service = hyper_util::service::TowerToHyperService::new(routes);
        let on_close = closed.clone();
        let serving = AbortOnDropHandle::new(tokio::spawn(async move {
            let _connection = connection;
            let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(upgraded, service)
                .await;
            if let Err(err) = served {
                tracing::debug!(%err, "BuildKit session ended");
            }
            on_close.cancel();
        }));
        Ok(Self {
            id,
            closed,
            secret_missing,
            missing,
            _serving: serving,
        })
    }

    /// Ids of secrets the build asked for that are not configured.
    pub fn missing_secrets(&self) -> Vec<String> {
        self.missing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}

/// The engine checks the session's health every few seconds and drops a
/// session that does not answer.
struct Healthy;

#[tonic::async_trait]
impl Health for Healthy {
    async fn check(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    async fn list(
        &self,
        _: Request<HealthListRequest>,
    ) -> Result<Response<HealthListResponse>, Status> {
        Err(Status::unimplemented("list is not served"))
    }

    type WatchStream =
        Pin<Box<dyn futures::Stream<Item = Result<HealthCheckResponse, Status>> + Send + 'static>>;

    async fn watch(
        &self,
        _: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("watch is not served"))
    }
}

struct SecretProvider {
    secrets: Arc<BuildSecrets>,
    missing: Arc<Mutex<BTreeSet<String>>>,
    asked_missing: CancellationToken,
}

#[tonic::async_trait]
impl Secrets for SecretProvider {
    async fn get_secret(
        &self,
        request: Request<GetSecretRequest>,
    ) -> Result<Response<GetSecretResponse>, Status> {
        let id = request.into_inner().id;
        match self.secrets.get(&id) {
            Some(value) => Ok(Response::new(GetSecretResponse {
                data: value.to_vec(),
            })),
            None => {
                self.missing
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id.clone());
                self.asked_missing.cancel();
                Err(Status::not_found(format!("secret {id} not found")))
            }
        }
    }
}
