//! Command line and environment. Every `serve` option is a flag and an
//! environment variable; the flag wins.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::types::ImageName;

#[derive(Debug, Parser)]
#[command(
    name = "slipway",
    version,
    about = "Publishes container images to a private registry when pull requests are merged"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: receive GitHub webhooks, build and publish images.
    Serve(Box<ServeArgs>),
    /// Write a CA and a server certificate signed by it, for the registry.
    Certs(CertsArgs),
    /// Print an htpasswd (bcrypt) line for the registry; the password is read from standard input.
    RegistryUser(RegistryUserArgs),
    /// Print the public URL of the ngrok tunnel in front of the service.
    TunnelUrl(TunnelUrlArgs),
    /// Write an ECDSA P-256 key pair for signing images: cosign.key (mode 0600) and cosign.pub.
    Keygen(KeygenArgs),
}

#[derive(Debug, Clone, Args)]
pub struct KeygenArgs {
    /// Folder to write cosign.key and cosign.pub into.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Replace an existing key pair.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CertsArgs {
    /// Folder to write ca.crt, ca.key, server.crt and server.key into.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// Names and addresses the registry is reached by (the server certificate's SANs).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "registry,localhost,127.0.0.1"
    )]
    pub hosts: Vec<String>,
    /// Replace existing keys and certificates.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RegistryUserArgs {
    /// The user name.
    pub name: String,
}

#[derive(Debug, Clone, Args)]
pub struct TunnelUrlArgs {
    /// Base URL of the ngrok agent's local API.
    #[arg(
        long,
        env = "SLIPWAY_NGROK_API",
        default_value = "http://localhost:4040"
    )]
    pub ngrok_api: String,
}

/// A secret that never shows in `Debug` output, logs or error messages.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the HTTP server.
    #[arg(long, env = "SLIPWAY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// The GitHub webhook secret.
    #[arg(long, env = "SLIPWAY_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Secret,

    /// GitHub REST base URL (GitHub Enterprise: https://HOST/api/v3).
    #[arg(
        long,
        env = "SLIPWAY_GITHUB_API",
        default_value = "https://api.github.com"
    )]
    pub github_api: String,

    /// Limit for one GitHub API call, and for each read of a download.
    #[arg(long, env = "SLIPWAY_GITHUB_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub github_timeout: Duration,

    /// Token for private repositories and commit statuses.
    #[arg(long, env = "SLIPWAY_GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<Secret>,

    /// host[:port] of the registry.
    #[arg(long, env = "SLIPWAY_REGISTRY")]
    pub registry: String,

    /// PEM file of the CA that signed the registry's certificate (default: system roots).
    #[arg(long, env = "SLIPWAY_REGISTRY_CA")]
    pub registry_ca: Option<PathBuf>,

    /// Registry user (basic credentials).
    #[arg(long, env = "SLIPWAY_REGISTRY_USER")]
    pub registry_user: Option<String>,

    /// Registry password (basic credentials).
    #[arg(long, env = "SLIPWAY_REGISTRY_PASSWORD", hide_env_values = true)]
    pub registry_password: Option<Secret>,

    /// Path prefix for every image: `team` gives host/team/api:1.0.0.
    #[arg(long, env = "SLIPWAY_REGISTRY_NAMESPACE", value_parser = parse_namespace)]
    pub registry_namespace: Option<ImageName>,

    /// Talk plain HTTP to a registry without TLS.
    #[arg(long, env = "SLIPWAY_REGISTRY_PLAIN_HTTP", default_value_t = false)]
    pub registry_plain_http: bool,

    /// Path of the service manifest inside the repository.
    #[arg(long, env = "SLIPWAY_MANIFEST", default_value = "dockerInfo.json")]
    pub manifest: String,

    /// Comma-separated base branches whose merges publish (default: all).
    #[arg(long, env = "SLIPWAY_BRANCHES", value_delimiter = ',')]
    pub branches: Vec<String>,

    /// Where build records and logs are kept.
    #[arg(long, env = "SLIPWAY_DATA_DIR", default_value = "./slipway-data")]
    pub data_dir: PathBuf,

    /// External URL of this service, for links in commit statuses.
    #[arg(long, env = "SLIPWAY_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Service images built at once.
    #[arg(long, env = "SLIPWAY_MAX_CONCURRENT_BUILDS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_builds: u32,

    /// Limit for building and pushing one service (e.g. 30m, 90s).
    #[arg(long, env = "SLIPWAY_BUILD_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    pub build_timeout: Duration,

    /// When set, every endpoint except POST /webhook and GET /healthz needs `Authorization: Bearer TOKEN`.
    #[arg(long, env = "SLIPWAY_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<Secret>,

    /// Past this many waiting builds, merged deliveries get 503 with Retry-After.
    #[arg(long, env = "SLIPWAY_MAX_QUEUED_BUILDS", default_value_t = 1000)]
    pub max_queued_builds: u64,

    /// How long running builds may finish after SIGTERM.
    #[arg(long, env = "SLIPWAY_SHUTDOWN_GRACE", default_value = "60s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Network mode for builds (`none` supported; default: the engine's).
    #[arg(long, env = "SLIPWAY_BUILD_NETWORK")]
    pub build_network: Option<String>,

    /// Allow Dockerfiles whose `# syntax=` line makes the engine fetch a frontend.
    #[arg(long, env = "SLIPWAY_ALLOW_SYNTAX_DIRECTIVE", default_value_t = false)]
    pub allow_syntax_directive: bool,

    /// Cap on the decompressed size of a commit's files (bytes; suffixes K, M, G).
    #[arg(long, env = "SLIPWAY_MAX_SOURCE_BYTES", default_value = "2G", value_parser = parse_size)]
    pub max_source_bytes: u64,

    /// Base URL of the ngrok agent's local API, to show the tunnel's URL on the page.
    #[arg(long, env = "SLIPWAY_NGROK_API")]
    pub ngrok_api: Option<String>,

    /// Cap on the number of entries in a commit's tarball.
    #[arg(long, env = "SLIPWAY_MAX_SOURCE_ENTRIES", default_value_t = 200_000)]
    pub max_source_entries: u64,

    /// PEM file of an ECDSA P-256 private key (PKCS#8): every published image is signed and carries a signed provenance attestation.
    #[arg(long, env = "SLIPWAY_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,

    /// This instance's name in provenance (default: the host name).
    #[arg(long, env = "SLIPWAY_INSTANCE_ID")]
    pub instance_id: Option<String>,
}

impl ServeArgs {
    /// An empty environment variable (`SLIPWAY_GITHUB_TOKEN=` in an env file)
    /// means "not set", as it does for the Docker CLI and compose.
    pub fn without_empty_values(mut self) -> Self {
        fn text(value: Option<String>) -> Option<String> {
            value.filter(|v| !v.trim().is_empty())
        }
        fn secret(value: Option<Secret>) -> Option<Secret> {
            value.filter(|v| !v.expose().is_empty())
        }
        self.github_token = secret(self.github_token);
        self.registry_password = secret(self.registry_password);
        self.api_token = secret(self.api_token);
        self.registry_user = text(self.registry_user);
        self.public_url = text(self.public_url);
        self.build_network = text(self.build_network);
        self.ngrok_api = text(self.ngrok_api);
        self.registry_ca = self.registry_ca.filter(|p| !p.as_os_str().is_empty());
        self.signing_key = self.signing_key.filter(|p| !p.as_os_str().is_empty());
        self.instance_id = text(self.instance_id);
        self.branches.retain(|b| !b.trim().is_empty());
        self
    }
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw)
        .map_err(|e| format!("`{raw}` is not a duration like 30m or 90s: {e}"))
}

fn parse_namespace(raw: &str) -> Result<ImageName, String> {
    ImageName::parse(raw).map_err(|e| e.to_string())
}

fn parse_size(raw: &str) -> Result<u64, String> {
    let raw = raw.trim();
    let (digits, unit) = match raw.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => raw.split_at(i),
        None => (raw, ""),
    };
    let multiplier: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(format!("`{raw}` is not a size like 2G or 500M")),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("`{raw}` is not a size like 2G or 500M"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let secret = Secret::new("hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn flags_parse_with_defaults() {
        let cli = Cli::try_parse_from([
            "slipway",
            "serve",
            "--webhook-secret",
            "s",
            "--registry",
            "r:5000",
            "--branches",
            "main,release",
        ])
        .expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("serve expected");
        };
        assert_eq!(args.branches, vec!["main", "release"]);
        assert_eq!(args.max_concurrent_builds, 2);
        assert_eq!(args.build_timeout, Duration::from_secs(1800));
    }
}
