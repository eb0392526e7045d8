//! BuildKit's `Auth` session service (`moby.filesync.v1.Auth`): the engine
//! asks the session for credentials to the registry it imports cache from.
//! Only the cache's own host gets an answer, so the engine learns nothing
//! it was not meant to pull with, and nothing is written into its
//! configuration.
//!
//! `GetTokenAuthority` answers Unimplemented, which BuildKit (0.8 and later)
//! takes as "no token authority": it then asks `Credentials` and fetches
//! registry tokens itself. `FetchToken` and `VerifyTokenAuthority` are only
//! called once an authority was given, so they are Unimplemented too.

use bollard_buildkit_proto::moby::filesync::v1::auth_server::Auth;
use bollard_buildkit_proto::moby::filesync::v1::{
    CredentialsRequest, CredentialsResponse, FetchTokenRequest, FetchTokenResponse,
    GetTokenAuthorityRequest, GetTokenAuthorityResponse, VerifyTokenAuthorityRequest,
    VerifyTokenAuthorityResponse,
};
use tonic::{Request, Response, Status};

use crate::engine::CacheSource;

/// The gRPC paths the engine may call, announced when the session opens.
pub const METHODS: [&str; 4] = [
    "/moby.filesync.v1.Auth/Credentials",
    "/moby.filesync.v1.Auth/FetchToken",
    "/moby.filesync.v1.Auth/GetTokenAuthority",
    "/moby.filesync.v1.Auth/VerifyTokenAuthority",
];

/// Credentials for the cache's host; anonymous for every other host.
pub struct CacheAuth {
    source: Option<CacheSource>,
}

impl CacheAuth {
    pub fn new(source: Option<CacheSource>) -> Self {
        Self { source }
    }

    fn credentials_for(&self, host: &str) -> CredentialsResponse {
        match &self.source {
            Some(source) if source.host == host => CredentialsResponse {
                username: source.user.clone(),
                secret: source.password.expose().to_string(),
            },
            _ => CredentialsResponse::default(),
        }
    }
}

#[tonic::async_trait]
impl Auth for CacheAuth {
    async fn credentials(
        &self,
        request: Request<CredentialsRequest>,
    ) -> Result<Response<CredentialsResponse>, Status> {
        let host = request.into_inner().host;
        Ok(Response::new(self.credentials_for(&host)))
    }

    async fn fetch_token(
        &self,
        _: Request<FetchTokenRequest>,
    ) -> Result<Response<FetchTokenResponse>, Status> {
        Err(Status::unimplemented("no token authority"))
    }

    async fn get_token_authority(
        &self,
        _: Request<GetTokenAuthorityRequest>,
    ) -> Result<Response<GetTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented("no token authority"))
    }

    async fn verify_token_authority(
        &self,
        _: Request<VerifyTokenAuthorityRequest>,
    ) -> Result<Response<VerifyTokenAuthorityResponse>, Status> {
        Err(Status::unimplemented("no token authority"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn only_the_cache_host_gets_credentials() {
        let auth = CacheAuth::new(Some(CacheSource {
            reference: "127.0.0.1:5000/team/api:1.0.0".into(),
            host: "127.0.0.1:5000".into(),
            user: "relay".into(),
            password: Secret::new("pw"),
        }));
        let given = auth.credentials_for("127.0.0.1:5000");
        assert_eq!(
            (given.username.as_str(), given.secret.as_str()),
            ("relay", "pw")
        );
        assert_eq!(
            auth.credentials_for("docker.io"),
            CredentialsResponse::default()
        );
        assert_eq!(
            CacheAuth::new(None).credentials_for("127.0.0.1:5000"),
            CredentialsResponse::default()
        );
    }
}
