//! A stand-in for a Docker-compatible engine without BuildKit: a TCP proxy
//! in front of the real engine's socket that answers `POST /session` with
//! 404, as engines without BuildKit sessions do, and passes everything else.
//! The engine behind it is the one the tests run against: `DOCKER_HOST` when
//! it is a unix socket (the engine matrix, scripts/engines.sh), else the
//! default socket.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};

const DEFAULT_ENGINE_SOCKET: &str = "/var/run/docker.sock";

fn engine_socket() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|host| host.strip_prefix("unix://").map(str::to_string))
        .unwrap_or_else(|| DEFAULT_ENGINE_SOCKET.to_string())
}

pub struct EngineWithoutSessions {
    /// For `DOCKER_HOST`.
    pub docker_host: String,
    refused: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl EngineWithoutSessions {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let refused = Arc::new(AtomicUsize::new(0));
        let counter = refused.clone();
        let engine = engine_socket();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, engine.clone(), counter.clone()));
            }
        });
        Self {
            docker_host: format!("tcp://{addr}"),
            refused,
            _task: task,
        }
    }

    /// How many session requests it refused.
    pub fn refused_sessions(&self) -> usize {
        self.refused.load(Ordering::SeqCst)
    }
}

/// Judges a connection by its first request (a session always opens a
/// connection of its own), then splices it to the engine.
async fn relay(mut client: TcpStream, engine_socket: String, refused: Arc<AtomicUsize>) {
    let mut head = Vec::new();
    let mut chunk = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    let request_line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    if path.ends_with("/session") {
        refused.fetch_add(1, Ordering::SeqCst);
        let body = r#"{"message":"page not found"}"#;
        let answer = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = client.write_all(answer.as_bytes()).await;
        return;
    }
    let Ok(mut engine) = UnixStream::connect(&engine_socket).await else {
        return;
    };
    if engine.write_all(&head).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
}
