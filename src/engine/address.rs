//! Raw HTTP to the engine, for what bollard does not expose: the BuildKit
//! session (an upgraded connection Slipway serves gRPC on) and the BuildKit
//! build request that names it.

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::task::AbortOnDropHandle;

use super::EngineError;

pub(super) type RequestBody = BoxBody<Bytes, std::io::Error>;

/// Where the engine listens, found as the Docker CLI finds it.
#[derive(Debug, Clone)]
pub(super) enum EngineAddress {
    Unix(PathBuf),
    Tcp(String),
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A response, with the connection it came on: dropping it closes the
/// connection, which is how the engine learns that a build was abandoned.
pub(super) struct EngineResponse {
    pub response: hyper::Response<Incoming>,
    _connection: AbortOnDropHandle<()>,
}

impl EngineResponse {
    pub fn into_parts(self) -> (hyper::Response<Incoming>, AbortOnDropHandle<()>) {
        (self.response, self._connection)
    }
}

impl EngineAddress {
    /// `DOCKER_HOST` as the CLI reads it; `Err` says why raw access is not possible.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var("DOCKER_HOST") {
            Ok(host) if !host.trim().is_empty() => Self::parse(host.trim()),
            _ => Ok(Self::Unix(PathBuf::from("/var/run/docker.sock"))),
        }
    }

    fn parse(host: &str) -> Result<Self, String> {
        if let Some(path) = host.strip_prefix("unix://") {
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
        {
            return Ok(Self::Tcp(rest.trim_end_matches('/').to_string()));
        }
        Err(format!(
            "DOCKER_HOST `{host}` is neither unix:// nor plain tcp://"
        ))
    }

    fn host_header(&self) -> &str {
        match self {
            Self::Unix(_) => "docker",
            Self::Tcp(addr) => addr,
        }
    }

    async fn connect(&self) -> std::io::Result<Box<dyn Io>> {
        Ok(match self {
            Self::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            Self::Tcp(addr) => Box::new(tokio::net::TcpStream::connect(addr).await?),
        })
    }

    /// Sends `request` on a connection of its own.
    pub async fn send(
        &self,
        mut request: hyper::Request<RequestBody>,
    ) -> Result<EngineResponse, EngineError> {
        let unreachable = |e: &dyn std::fmt::Display| EngineError::Unreachable(e.to_string());
        let io = self.connect().await.map_err(|e| unreachable(&e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| unreachable(&e))?;
        let connection = AbortOnDropHandle::new(tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        }));
        if let Ok(host) = http::HeaderValue::from_str(self.host_header()) {
            request.headers_mut().insert(http::header::HOST, host);
        }
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable(&e))?;
        Ok(EngineResponse {
            response,
            _connection: connection,
        })
    }
}

/// A request body with nothing in it.
pub(super) fn empty_body() -> RequestBody {
    use http_body_util::BodyExt;
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// The first KiB of an error answer, as text.
pub(super) async fn error_text(response: EngineResponse) -> String {
    use http_body_util::BodyExt;
    let status = response.response.status();
    let body = match response.response.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let text = String::from_utf8_lossy(&body[..body.len().min(1024)]).to_string();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or(text);
    format!("{status}: {}", message.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_forms() {
        assert!(matches!(
            EngineAddress::parse("unix:///run/docker.sock"),
            Ok(EngineAddress::Unix(p)) if p == std::path::Path::new("/run/docker.sock")
        ));
        assert!(matches!(
            EngineAddress::parse("tcp://127.0.0.1:2375"),
            Ok(EngineAddress::Tcp(a)) if a == "127.0.0.1:2375"
        ));
        assert!(EngineAddress::parse("ssh://me@host").is_err());
    }
}
