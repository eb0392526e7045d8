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

use super::{EngineError, ReachFailure};

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

    /// Why a connection to this address failed, as an operator can act on it.
    pub fn reach_failure(&self, err: &std::io::Error) -> ReachFailure {
        use std::io::ErrorKind;
        match (self, err.kind()) {
            (Self::Unix(path), ErrorKind::PermissionDenied) => socket_permission(path),
            (_, ErrorKind::PermissionDenied) => ReachFailure::PermissionDenied,
            (Self::Unix(_), ErrorKind::NotFound) => ReachFailure::NoSocket,
            (_, ErrorKind::ConnectionRefused) => ReachFailure::Refused,
            _ => ReachFailure::Other(err.to_string()),
        }
    }

    /// The engine could not be dialled at this address.
    pub fn cannot_reach(&self, err: &std::io::Error) -> EngineError {
        EngineError::CannotReach {
            address: self.to_string(),
            reason: self.reach_failure(err),
        }
    }

    /// Dials the address and hangs up: `Err` is why nothing answers there.
    pub async fn probe(&self) -> Result<(), EngineError> {
        self.connect()
            .await
            .map(drop)
            .map_err(|e| self.cannot_reach(&e))
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
        let io = self.connect().await.map_err(|e| self.cannot_reach(&e))?;
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

impl std::fmt::Display for EngineAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
            Self::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

/// A socket this process may not open: whose group would let it, when the
/// group may read and write it.
fn socket_permission(path: &std::path::Path) -> ReachFailure {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(meta) if meta.mode() & 0o060 == 0o060 => ReachFailure::SocketGroup { gid: meta.gid() },
        Ok(meta) => ReachFailure::SocketMode {
            uid: meta.uid(),
            mode: meta.mode() & 0o7777,
        },
        // Not even its folder may be read: the socket is out of sight.
        Err(_) => ReachFailure::PermissionDenied,
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

    #[test]
    fn failures_to_dial_say_what_to_do() {
        use std::io::{Error, ErrorKind};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("docker.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660)).expect("chmod");
        let gid = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&path).expect("stat").gid()
        };
        let socket = EngineAddress::Unix(path.clone());
        let denied = Error::from(ErrorKind::PermissionDenied);
        let message = socket.cannot_reach(&denied).to_string();
        assert_eq!(
            message,
            format!(
                "cannot reach the Docker Engine at unix://{}: permission denied (the socket belongs to group {gid}; run Slipway in that group)",
                path.display()
            )
        );
        assert!(matches!(
            socket.cannot_reach(&denied),
            EngineError::CannotReach {
                reason: ReachFailure::SocketGroup { gid: g },
                ..
            } if g == gid
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(
            socket.reach_failure(&denied),
            ReachFailure::SocketMode { mode: 0o600, .. }
        ));
        let gone = EngineAddress::Unix(dir.path().join("nothing.sock"));
        let message = gone
            .cannot_reach(&Error::from(ErrorKind::NotFound))
            .to_string();
        assert!(
            message.contains("nothing.sock: no socket there"),
            "{message}"
        );
        let tcp = EngineAddress::Tcp("127.0.0.1:1".into());
        let refused = tcp.reach_failure(&Error::from(ErrorKind::ConnectionRefused));
        assert!(matches!(refused, ReachFailure::Refused));
        assert_eq!(tcp.to_string(), "tcp://127.0.0.1:1");
    }

    #[tokio::test]
    async fn probing_a_missing_socket_names_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("docker.sock");
        let err = EngineAddress::Unix(path.clone())
            .probe()
            .await
            .expect_err("nothing listens");
        assert!(
            matches!(
                err,
                EngineError::CannotReach {
                    reason: ReachFailure::NoSocket,
                    ..
                }
            ),
            "{err}"
        );
    }
}
