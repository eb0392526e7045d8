//! The public URL of the ngrok tunnel in front of Slipway, from the ngrok
//! agent's local API (`GET /api/tunnels`).

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("ngrok's API at {url} is unreachable: {reason} (is the ngrok container running?)")]
    Unreachable { url: String, reason: String },
    #[error("ngrok's API at {url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("ngrok's API at {0} lists no tunnel yet; check NGROK_AUTHTOKEN and the ngrok logs")]
    NoTunnel(String),
}

#[derive(Deserialize)]
struct Tunnels {
    #[serde(default)]
    tunnels: Vec<Tunnel>,
}

#[derive(Deserialize)]
struct Tunnel {
    public_url: String,
    #[serde(default)]
    proto: String,
}

/// Asks the agent at `api` (e.g. `http://localhost:4040`); prefers https.
pub async fn public_url(api: &str) -> Result<String, TunnelError> {
    let url = format!("{}/api/tunnels", api.trim_end_matches('/'));
    let unreachable = |e: reqwest::Error| TunnelError::Unreachable {
        url: url.clone(),
        reason: if e.is_connect() {
            "could not connect".into()
        } else {
            e.to_string()
        },
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(unreachable)?;
    let resp = client.get(&url).send().await.map_err(unreachable)?;
    if !resp.status().is_success() {
        return Err(TunnelError::Status {
            url,
            status: resp.status().as_u16(),
        });
    }
    let tunnels: Tunnels = resp.json().await.map_err(unreachable)?;
    pick(tunnels.tunnels).ok_or(TunnelError::NoTunnel(url))
}

fn pick(tunnels: Vec<Tunnel>) -> Option<String> {
    let https = tunnels
        .iter()
        .find(|t| t.proto == "https" || t.public_url.starts_with("https://"));
    https
        .or(tunnels.first())
        .map(|t| t.public_url.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_is_preferred() {
        let tunnels = vec![
            Tunnel {
                public_url: "http://a.ngrok.app".into(),
                proto: "http".into(),
            },
            Tunnel {
                public_url: "https://a.ngrok.app/".into(),
                proto: "https".into(),
            },
        ];
        assert_eq!(pick(tunnels).as_deref(), Some("https://a.ngrok.app"));
        assert_eq!(pick(vec![]), None);
    }
}
