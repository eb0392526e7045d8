//! Command line and environment. Every `serve` option is a flag and an
//! environment variable; the flag wins.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::engine::{BuilderKind, SecretSpec};
use crate::platform::PlatformList;
pub use crate::secret::Secret;
use crate::types::{ImageName, Repository};

#[derive(Debug, Parser)]
#[command(
    name = "slipway",
    version,
    about = "Publishes container images to a private registry when pull requests are merged",
    after_help = "Environment: SLIPWAY_SECRETS_DIR names a folder whose files webhook_secret, \
registry_password and api_token stand in for SLIPWAY_WEBHOOK_SECRET, \
SLIPWAY_REGISTRY_PASSWORD and SLIPWAY_API_TOKEN when those are unset or empty."
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
    /// Manage the repository webhooks that deliver to Slipway.
    #[command(subcommand)]
    Hook(HookCommand),
    /// Write an ECDSA P-256 key pair for signing images: cosign.key (mode 0600) and cosign.pub.
    Keygen(KeygenArgs),
    /// Image retention (--retention).
    #[command(subcommand)]
    Retention(RetentionCommand),
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Print, per image, the versions --retention keeps and those it would delete; delete nothing.
    Plan(Box<RetentionPlanArgs>),
}

/// What `retention plan` reads: the registry as `serve` reaches it, and the
/// records that say which images Slipway published.
#[derive(Debug, Clone, Args)]
pub struct RetentionPlanArgs {
    /// Images to plan for, e.g. `api` (default: every image Slipway's records name).
    #[arg(value_parser = parse_namespace)]
    pub images: Vec<ImageName>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Where build records are kept (SQLite), unless --database is set.
    #[arg(long, env = "SLIPWAY_DATA_DIR", default_value = "./slipway-data")]
    pub data_dir: PathBuf,
    /// A postgres:// URL of the records.
    #[arg(long, env = "SLIPWAY_DATABASE", hide_env_values = true)]
    pub database: Option<Secret>,
    #[command(flatten)]
    pub retention: RetentionArgs,
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

#[derive(Debug, Subcommand)]
pub enum HookCommand {
    /// Create the repository's webhook (or update the one installed before), then ping it.
    Install(Box<HookInstallArgs>),
}

#[derive(Debug, Clone, Args)]
pub struct HookInstallArgs {
    /// The repository, OWNER/REPO.
    #[arg(value_parser = parse_repository)]
    pub repository: Repository,
    /// Slipway's public base URL; the hook points at URL/webhook (default: --public-url, else the tunnel's).
    #[arg(long)]
    pub url: Option<String>,
    /// The GitHub webhook secret.
    #[arg(long, env = "SLIPWAY_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Secret,
    /// Token with the Webhooks read and write permission on the repository.
    #[arg(long, env = "SLIPWAY_GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<Secret>,
    /// GitHub REST base URL (GitHub Enterprise: https://HOST/api/v3).
    #[arg(
        long,
        env = "SLIPWAY_GITHUB_API",
        default_value = "https://api.github.com"
    )]
    pub github_api: String,
    /// External URL of this service.
    #[arg(long, env = "SLIPWAY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Base URL of the ngrok agent's local API, for the tunnel's URL.
    #[arg(
        long,
        env = "SLIPWAY_NGROK_API",
        default_value = "http://localhost:4040"
    )]
    pub ngrok_api: String,
    /// How long to wait for the ping to reach Slipway.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub ping_wait: Duration,
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

/// With `SLIPWAY_SECRETS_DIR` set, a secret option left unset (or empty) in
/// the environment is read from the file of that name in the folder
/// (`webhook_secret`, `registry_password`, `api_token`): the compose stack's
/// setup step generates them there, and `docker compose exec` sees them too.
/// Runs first thing in `main`, before any other thread exists.
pub fn secrets_from_dir() {
    let Some(dir) = std::env::var_os("SLIPWAY_SECRETS_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    for (file, variable) in SECRET_FILES {
        let unset = std::env::var(variable).map_or(true, |v| v.is_empty());
        if !unset {
            continue;
        }
        if let Ok(value) = std::fs::read_to_string(dir.join(file)) {
            let value = value.trim();
            if !value.is_empty() {
                std::env::set_var(variable, value);
            }
        }
    }
}

const SECRET_FILES: [(&str, &str); 3] = [
    ("webhook_secret", "SLIPWAY_WEBHOOK_SECRET"),
    ("registry_password", "SLIPWAY_REGISTRY_PASSWORD"),
    ("api_token", "SLIPWAY_API_TOKEN"),
];

/// How images reach the registry (`--push-path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PushPath {
    /// The engine pushes through Slipway's loopback relay.
    Relay,
    /// `docker save`, then Slipway's own upload.
    Export,
}

/// Where BuildKit finds cache beside the engine's own (`--build-cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BuildCache {
    /// The image's previous version in the registry, as inline cache.
    Registry,
    /// The engine's own build cache only.
    Local,
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

    /// Act as this GitHub App (with --github-app-key): installation tokens instead of
    /// --github-token, check runs instead of commit statuses.
    #[arg(long, env = "SLIPWAY_GITHUB_APP_ID", requires = "github_app_key")]
    pub github_app_id: Option<u64>,

    /// PEM file of the GitHub App's private key.
    #[arg(long, env = "SLIPWAY_GITHUB_APP_KEY", requires = "github_app_id")]
    pub github_app_key: Option<PathBuf>,

    /// A Gitea or Forgejo server's API (https://HOST/api/v1) whose deliveries Slipway also takes.
    #[arg(long, env = "SLIPWAY_GITEA_API")]
    pub gitea_api: Option<String>,

    /// Gitea/Forgejo token (read the repository, write commit statuses).
    #[arg(long, env = "SLIPWAY_GITEA_TOKEN", hide_env_values = true)]
    pub gitea_token: Option<Secret>,

    /// A GitLab server's API (https://HOST/api/v4) whose merge request deliveries Slipway also takes.
    #[arg(long, env = "SLIPWAY_GITLAB_API")]
    pub gitlab_api: Option<String>,

    /// GitLab token (scopes `read_repository` and `api`, for commit statuses).
    #[arg(long, env = "SLIPWAY_GITLAB_TOKEN", hide_env_values = true)]
    pub gitlab_token: Option<Secret>,

    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Path of the service manifest inside the repository.
    #[arg(long, env = "SLIPWAY_MANIFEST", default_value = "dockerInfo.json")]
    pub manifest: String,

    /// Comma-separated base branches whose merges publish (default: all).
    #[arg(long, env = "SLIPWAY_BRANCHES", value_delimiter = ',')]
    pub branches: Vec<String>,

    /// Where build records and logs are kept.
    #[arg(long, env = "SLIPWAY_DATA_DIR", default_value = "./slipway-data")]
    pub data_dir: PathBuf,

    /// A postgres:// URL: build records, logs and the queue live in that
    /// PostgreSQL database instead of SQLite in --data-dir.
    #[arg(long, env = "SLIPWAY_DATABASE", hide_env_values = true)]
    pub database: Option<Secret>,

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

    /// Default platforms of every service, comma-separated (e.g. `linux/amd64,linux/arm64`); a service's own `platforms` wins (default: the engine's own).
    #[arg(long, env = "SLIPWAY_PLATFORMS", default_value = "")]
    pub platforms: PlatformList,

    /// `buildkit`, as today's `docker build`; `classic` for the legacy builder.
    /// An engine without BuildKit gets the classic builder, and the log says so.
    #[arg(long, env = "SLIPWAY_BUILDER", value_enum, default_value = "buildkit")]
    pub builder: BuilderKind,

    /// `ID=PATH`, repeatable: the file's content is offered to
    /// `RUN --mount=type=secret,id=ID`, never stored in an image, a log or a record.
    #[arg(
        long = "build-secret",
        env = "SLIPWAY_BUILD_SECRETS",
        value_delimiter = ','
    )]
    pub build_secrets: Vec<SecretSpec>,

    /// How images reach the registry. `relay`: the engine pushes through a
    /// registry Slipway serves on loopback, so only changed layers are read;
    /// where the engine cannot reach Slipway's loopback (another network
    /// namespace), Slipway notices and exports instead. `export`: always
    /// `docker save`, then Slipway's own upload.
    #[arg(long, env = "SLIPWAY_PUSH_PATH", value_enum, default_value = "relay")]
    pub push_path: PushPath,

    /// `registry`: BuildKit builds each service with its previous version in
    /// the registry as cache (read through the relay), so an engine that never
    /// built it reuses its unchanged layers; `local`: the engine's own cache only.
    #[arg(
        long,
        env = "SLIPWAY_BUILD_CACHE",
        value_enum,
        default_value = "registry"
    )]
    pub build_cache: BuildCache,

    /// IP:PORT the relay listens on (default: 127.0.0.1, on a port kept in
    /// --data-dir). In a container, 0.0.0.0:PORT, with PORT published on the
    /// host's loopback only, lets the host's engine reach it.
    #[arg(long, env = "SLIPWAY_RELAY_LISTEN")]
    pub relay_listen: Option<SocketAddr>,

    /// IP:PORT the engine pushes to, on the engine's side: a loopback address,
    /// which the engine talks plain HTTP to (default: the address listened on,
    /// or 127.0.0.1 on its port when that is every address).
    #[arg(long, env = "SLIPWAY_RELAY_ADVERTISE", value_parser = parse_relay_advertise)]
    pub relay_advertise: Option<SocketAddr>,

    /// BuildKit watchdog: a build whose engine stream stays silent this long is stopped.
    #[arg(long, env = "SLIPWAY_BUILD_STALL_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub build_stall_timeout: Duration,

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

    /// Comma-separated owner/name Slipway serves; deliveries from others are ignored (default: all).
    #[arg(long, env = "SLIPWAY_REPOSITORIES", value_parser = parse_repositories, default_value = "")]
    pub repositories: RepositoryList,

    /// Keep the webhook of each of --repositories pointed at the current public URL.
    #[arg(long, env = "SLIPWAY_MANAGE_HOOKS", default_value_t = false)]
    pub manage_hooks: bool,

    /// How often --manage-hooks asks the tunnel for its URL and GitHub for the hooks' state.
    #[arg(long, env = "SLIPWAY_HOOKS_POLL_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub hooks_poll_interval: Duration,

    /// How often to look for merges of --repositories that Slipway missed (needs --github-token); 0 turns it off.
    #[arg(long, env = "SLIPWAY_CATCH_UP_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub catch_up_interval: Duration,

    /// When a build ends, keep one comment on the merged PR listing its images (needs --github-token).
    #[arg(long, env = "SLIPWAY_PR_COMMENT", default_value_t = false)]
    pub pr_comment: bool,
    /// PEM file of an ECDSA P-256 private key (PKCS#8): every published image is signed and carries a signed provenance attestation.
    #[arg(long, env = "SLIPWAY_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,

    /// This instance's name in build records, metrics and provenance (default: the host name).
    #[arg(long, env = "SLIPWAY_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// How long a build stays with an instance that has stopped answering before another takes it over (at least 1s).
    #[arg(long, env = "SLIPWAY_LEASE", default_value = "30s", value_parser = parse_lease)]
    pub lease: Duration,

    /// How often an idle instance looks for builds to claim, besides the database's notices (at least 50ms).
    #[arg(long, env = "SLIPWAY_QUEUE_POLL", default_value = "1s", value_parser = parse_queue_poll)]
    pub queue_poll: Duration,

    #[command(flatten)]
    pub retention: RetentionArgs,
}

/// Where and how to reach the registry, for `serve` and `retention plan`.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
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
}

impl RegistryArgs {
    pub fn settings(&self) -> crate::registry::RegistrySettings<'_> {
        crate::registry::RegistrySettings {
            host: &self.registry,
            ca_file: self.registry_ca.as_deref(),
            user: self.registry_user.as_deref(),
            password: self.registry_password.as_ref(),
            namespace: self.registry_namespace.as_ref(),
            plain_http: self.registry_plain_http,
        }
    }

    /// An empty variable means unset, as [`ServeArgs::without_empty_values`] says.
    fn without_empty_values(mut self) -> Self {
        self.registry_user = self.registry_user.filter(|v| !v.trim().is_empty());
        self.registry_password = self.registry_password.filter(|v| !v.expose().is_empty());
        self.registry_ca = self.registry_ca.filter(|p| !p.as_os_str().is_empty());
        self
    }
}

/// `--retention` and its companions, shared by `serve` and `retention plan`.
#[derive(Debug, Clone, Args)]
pub struct RetentionArgs {
    /// Which versions of each image to keep: `keep=N[,max-age=D]`, e.g. keep=10,max-age=90d (default: keep all).
    #[arg(long = "retention", env = "SLIPWAY_RETENTION", value_parser = parse_retention, default_value = "", hide_default_value = true)]
    pub policy: RetentionSetting,

    /// Log and count what retention would delete; delete nothing.
    #[arg(
        long = "retention-dry-run",
        env = "SLIPWAY_RETENTION_DRY_RUN",
        default_value_t = false
    )]
    pub dry_run: bool,

    /// How often retention runs besides after each publish; 0 turns the hourly run off.
    #[arg(long = "retention-interval", env = "SLIPWAY_RETENTION_INTERVAL", default_value = "1h", value_parser = parse_duration, hide = true)]
    pub interval: Duration,
}

/// `--retention`: none keeps every version (an empty variable included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionSetting(pub Option<RetentionPolicy>);

/// Keep the `keep` most recently published versions of each image; of the
/// others, delete those older than `max_age` (all of them without it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub keep: std::num::NonZeroUsize,
    pub max_age: Option<Duration>,
}

fn parse_retention(raw: &str) -> Result<RetentionSetting, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(RetentionSetting(None));
    }
    const SHAPE: &str = "expected keep=N or keep=N,max-age=D (e.g. keep=10,max-age=90d)";
    let (mut keep, mut max_age) = (None, None);
    for part in raw.split(',') {
        let (key, value) = part
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or_else(|| format!("`{part}` is not KEY=VALUE: {SHAPE}"))?;
        match key {
            "keep" if keep.is_none() => {
                let n: usize = value
                    .parse()
                    .map_err(|_| format!("keep=`{value}` is not a whole number: {SHAPE}"))?;
                let n = std::num::NonZeroUsize::new(n).ok_or_else(|| {
                    "keep=0 would delete every version: keep at least 1 (leave --retention unset to keep all)".to_string()
                })?;
                keep = Some(n);
            }
            "max-age" if max_age.is_none() => max_age = Some(parse_duration(value)?),
            "keep" | "max-age" => return Err(format!("`{key}` is given twice: {SHAPE}")),
            other => return Err(format!("unknown retention setting `{other}`: {SHAPE}")),
        }
    }
    let keep = keep.ok_or_else(|| format!("`{raw}` names no keep=N: {SHAPE}"))?;
    Ok(RetentionSetting(Some(RetentionPolicy { keep, max_age })))
}

impl ServeArgs {
    /// Whether Slipway may write to GitHub: a token, or a GitHub App.
    pub fn acts_on_github(&self) -> bool {
        self.github_token.is_some() || self.github_app_id.is_some()
    }

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
        self.gitea_token = secret(self.gitea_token);
        self.gitlab_token = secret(self.gitlab_token);
        self.gitea_api = text(self.gitea_api);
        self.gitlab_api = text(self.gitlab_api);
        self.registry = self.registry.without_empty_values();
        self.api_token = secret(self.api_token);
        self.database = secret(self.database);
        self.public_url = text(self.public_url);
        self.build_network = text(self.build_network);
        self.ngrok_api = text(self.ngrok_api);
        self.signing_key = self.signing_key.filter(|p| !p.as_os_str().is_empty());
        self.github_app_key = self.github_app_key.filter(|p| !p.as_os_str().is_empty());
        self.instance_id = text(self.instance_id);
        self.branches.retain(|b| !b.trim().is_empty());
        self
    }
}

impl RetentionPlanArgs {
    /// As [`ServeArgs::without_empty_values`].
    pub fn without_empty_values(mut self) -> Self {
        self.registry = self.registry.without_empty_values();
        self.database = self.database.filter(|v| !v.expose().is_empty());
        self
    }
}

/// The engine pushes to this address, so it names a port and, as the engine
/// talks plain HTTP with no configuration only to registries on 127.0.0.0/8,
/// a loopback address.
fn parse_relay_advertise(raw: &str) -> Result<SocketAddr, String> {
    let addr: SocketAddr = raw
        .parse()
        .map_err(|e| format!("`{raw}` is not an IP:PORT: {e}"))?;
    if addr.port() == 0 {
        return Err(format!("`{raw}` names no port"));
    }
    if !addr.ip().is_loopback() {
        return Err(format!(
            "`{raw}` is not a loopback address: the engine pushes plain HTTP only to 127.0.0.0/8"
        ));
    }
    Ok(addr)
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw)
        .map_err(|e| format!("`{raw}` is not a duration like 30m or 90s: {e}"))
}

/// The lease is renewed every third of it; under a second, a busy database
/// would lose builds to takeovers.
fn parse_lease(raw: &str) -> Result<Duration, String> {
    at_least(raw, Duration::from_secs(1))
}

fn parse_queue_poll(raw: &str) -> Result<Duration, String> {
    at_least(raw, Duration::from_millis(50))
}

fn at_least(raw: &str, minimum: Duration) -> Result<Duration, String> {
    let duration = parse_duration(raw)?;
    if duration < minimum {
        return Err(format!("`{raw}` is too short: at least {minimum:?}"));
    }
    Ok(duration)
}

/// `--repositories`: empty (from an empty variable) serves every repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepositoryList(pub Vec<Repository>);

fn parse_repositories(raw: &str) -> Result<RepositoryList, String> {
    raw.split(',')
        .filter(|r| !r.trim().is_empty())
        .map(parse_repository)
        .collect::<Result<_, _>>()
        .map(RepositoryList)
}

/// `owner/name`, or a GitLab project in subgroups (`group/sub/project`).
fn parse_repository(raw: &str) -> Result<Repository, String> {
    Repository::parse_nested(raw.trim()).map_err(|e| e.to_string())
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
    fn retention_parses_keep_and_max_age_and_refuses_the_rest() {
        let policy = |raw: &str| parse_retention(raw).map(|s| s.0);
        let keep = |n| std::num::NonZeroUsize::new(n).expect("non-zero");
        assert_eq!(policy(""), Ok(None));
        assert_eq!(
            policy("keep=10"),
            Ok(Some(RetentionPolicy {
                keep: keep(10),
                max_age: None
            }))
        );
        assert_eq!(
            policy(" keep=3 , max-age=90d "),
            Ok(Some(RetentionPolicy {
                keep: keep(3),
                max_age: Some(Duration::from_secs(90 * 86400))
            }))
        );
        assert_eq!(
            policy("max-age=1h,keep=1").map(|p| p.map(|p| p.keep)),
            Ok(Some(keep(1)))
        );
        for (bad, why) in [
            ("keep=0", "keep at least 1"),
            ("keep=-1", "not a whole number"),
            ("keep=ten", "not a whole number"),
            ("keep=", "not a whole number"),
            ("10", "not KEY=VALUE"),
            ("max-age=30d", "names no keep"),
            ("keep=3,max-age=soon", "not a duration"),
            ("keep=3,keep=4", "given twice"),
            ("keep=3,age=1d", "unknown retention setting"),
        ] {
            let err = policy(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn the_relay_is_advertised_on_loopback_only() {
        assert_eq!(
            parse_relay_advertise("127.0.0.1:5444"),
            Ok("127.0.0.1:5444".parse().expect("addr"))
        );
        assert!(parse_relay_advertise("[::1]:5444").is_ok());
        for (raw, why) in [
            ("127.0.0.1:0", "names no port"),
            ("10.0.0.2:5444", "not a loopback address"),
            ("localhost:5444", "not an IP:PORT"),
        ] {
            let err = parse_relay_advertise(raw).expect_err(raw);
            assert!(err.contains(why), "{raw}: {err}");
        }
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
        assert!(args.platforms.0.is_empty());
    }
}
