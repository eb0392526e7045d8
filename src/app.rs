//! Wiring: options → store, clients, pipeline, queue → HTTP server, and an
//! orderly shutdown that lets running builds finish.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::task::TaskTracker;
use warp::Filter;

use crate::admission::Admissions;
use crate::config::{PushPath, Secret, ServeArgs};
use crate::context::{ContextPolicy, Limits};
use crate::engine::{BuildSecrets, EngineSettings};
use crate::forge::Forges;
use crate::github::hook_keeper::{HookKeeper, PublicUrl};
use crate::github::GitHub;
use crate::intake::Intake;
use crate::pipeline::{Pipeline, PipelineSettings};
use crate::queue::{Queue, QueueSettings};
use crate::registry::relay::{Relay, RelayAddresses};
use crate::registry::{Registry, RegistrySettings};
use crate::state::AppState;
use crate::store::{Notice, Store};
use crate::types::Forge;

/// Why the service cannot start: each is a one-line reason for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Registry(#[from] crate::registry::RegistryError),
    #[error("{0}")]
    GitHub(#[from] crate::github::ForgeError),
    #[error("{0}")]
    GitHubApp(#[from] crate::github::app::AppKeyError),
    #[error("{0}")]
    BuildSecret(#[from] crate::engine::SecretError),
    #[error("{0}")]
    Builder(#[from] crate::engine::BuilderConfigError),
    #[error("{0}")]
    SigningKey(#[from] crate::signing::KeyError),
    #[error("cannot use the data dir {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The builder, its secrets read now, and the combinations a build would
/// only fail on refused before the service starts.
fn registry_settings(args: &ServeArgs) -> RegistrySettings<'_> {
    args.registry.settings()
}

/// The loopback registry the engine pushes through, with `--push-path relay`.
async fn start_relay(
    args: &ServeArgs,
    registry: &Registry,
) -> Result<Option<Arc<Relay>>, StartError> {
    if args.push_path != PushPath::Relay {
        return Ok(None);
    }
    let port_file = args.data_dir.join("relay-port");
    let addresses = RelayAddresses {
        listen: args.relay_listen,
        advertise: args.relay_advertise,
    };
    let relay = Relay::start(registry.clone(), addresses, &port_file).await?;
    tracing::info!(
        listen = %relay.listen_addr(),
        engine_pushes_to = %relay.addr(),
        "the engine pushes through the loopback relay"
    );
    Ok(Some(relay))
}

fn engine_settings(args: &ServeArgs) -> Result<EngineSettings, StartError> {
    let settings = EngineSettings {
        builder: args.builder,
        secrets: Arc::new(BuildSecrets::load(&args.build_secrets)?),
        stall_limit: args.build_stall_timeout,
        // The classic build is one long engine call.
        request_timeout: args.build_timeout + Duration::from_secs(60),
    };
    settings.check(args.build_network.as_deref())?;
    Ok(settings)
}

/// A started service: bound, with its queue running.
pub struct App {
    pub addr: SocketAddr,
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    tracker: TaskTracker,
    grace: Duration,
    watch: Watch,
}

/// The background work `--repositories` with a token asks for.
struct Watch {
    catch_up_interval: Option<Duration>,
    hooks: Option<(PublicUrl, Duration)>,
    webhook_secret: Secret,
    retention_interval: Option<Duration>,
}

impl Watch {
    fn from_args(args: &ServeArgs) -> Self {
        let able = !args.repositories.0.is_empty() && args.acts_on_github();
        if !args.repositories.0.is_empty() && !args.acts_on_github() {
            tracing::warn!("--repositories without --github-token: missed merges are not caught up and hooks are not managed");
        }
        let public_url = match (&args.public_url, &args.ngrok_api) {
            (Some(url), _) => Some(PublicUrl::Fixed(url.clone())),
            (None, Some(api)) => Some(PublicUrl::Tunnel {
                ngrok_api: api.clone(),
            }),
            (None, None) => None,
        };
        if args.manage_hooks && able && public_url.is_none() {
            tracing::warn!("--manage-hooks needs --public-url or --ngrok-api to know where the hooks should point");
        }
        Self {
            catch_up_interval: Some(args.catch_up_interval).filter(|i| !i.is_zero()),
            hooks: public_url
                .filter(|_| able && args.manage_hooks)
                .map(|url| (url, args.hooks_poll_interval.max(Duration::from_secs(1)))),
            webhook_secret: args.webhook_secret.clone(),
            retention_interval: Some(args.retention.interval).filter(|i| !i.is_zero()),
        }
    }

    fn start(self, state: &Arc<AppState>) {
        if let Some((public_url, interval)) = self.hooks {
            let keeper = HookKeeper {
                github: state.pipeline.forges.github().clone(),
                repos: github_repositories(state),
                public_url,
                secret: self.webhook_secret,
                interval,
                board: state.hooks.clone(),
            };
            tokio::spawn(keeper.run());
        }
        if let (Some(retention), Some(interval)) =
            (&state.pipeline.retention, self.retention_interval)
        {
            tokio::spawn(retention.clone().every(interval));
        }
        let sources = catch_up_sources(state);
        if let Some(interval) = self.catch_up_interval.filter(|_| !sources.is_empty()) {
            tokio::spawn(crate::github::catch_up::run(
                state.clone(),
                sources,
                interval,
            ));
        }
    }
}

/// Where missed merges are looked for: a GitHub App's installations (those
/// `--repositories` serves), else `--repositories` on GitHub with a token;
/// and `--repositories` on Gitea/Forgejo with a token.
fn catch_up_sources(state: &AppState) -> Vec<crate::github::catch_up::Source> {
    use crate::github::catch_up::Source;
    let listed = github_repositories(state);
    let forges = &state.pipeline.forges;
    let github = forges.github();
    let mut sources = Vec::new();
    if github.is_app() {
        sources.push(Source {
            forge: github.clone(),
            repositories: None,
        });
    } else if github.has_token() && !listed.is_empty() {
        sources.push(Source {
            forge: github.clone(),
            repositories: Some(listed.clone()),
        });
    }
    if let Some(gitea) = forges.client(Forge::Gitea).filter(|g| g.has_token()) {
        if !listed.is_empty() {
            sources.push(Source {
                forge: gitea.clone(),
                repositories: Some(listed),
            });
        }
    }
    sources
}

/// The `--repositories` that can be GitHub's (`owner/name`): hooks and catch-up
/// are GitHub's only, and a GitLab subgroup path cannot be one.
fn github_repositories(state: &AppState) -> Vec<crate::types::Repository> {
    state
        .intake
        .repositories()
        .iter()
        .filter(|r| crate::types::Repository::parse(r.as_str()).is_ok())
        .cloned()
        .collect()
}

/// `--retention`, when set: run after each publish and on its interval.
fn retention(args: &ServeArgs, pipeline: &Pipeline) -> Option<Arc<crate::retention::Retention>> {
    let policy = args.retention.policy.0?;
    tracing::info!(
        keep = policy.keep.get(),
        max_age = ?policy.max_age,
        dry_run = args.retention.dry_run,
        "retention on: after each publish and every {:?}",
        args.retention.interval
    );
    let settings = crate::retention::RetentionSettings {
        policy,
        dry_run: args.retention.dry_run,
        lease: args.lease,
    };
    Some(Arc::new(crate::retention::Retention::new(
        settings,
        pipeline.registry.clone(),
        pipeline.store.clone(),
        pipeline.metrics.clone(),
    )))
}

/// Without `--api-token`, anyone who reaches a non-loopback address reads
/// every build log and can start builds; say so where operators look.
fn warn_if_exposed(addr: SocketAddr, has_token: bool) {
    if !has_token && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "no --api-token: build records, logs, metrics and POST /builds/<id>/retry are open to anyone who reaches this address; set --api-token (only /webhook and /healthz stay open)");
    }
}

impl App {
    pub async fn build(args: ServeArgs) -> Result<Self, StartError> {
        let args = args.without_empty_values();
        // A key that cannot sign refuses the start: no image goes out unsigned.
        let signer = args
            .signing_key
            .as_deref()
            .map(crate::signing::Signer::load)
            .transpose()?;
        let work_dir = prepare_work_dir(&args.data_dir)?;
        let instance_id = args.instance_id.clone().unwrap_or_else(host_name);
        let store = crate::store::open(args.database.as_ref(), &args.data_dir).await?;
        // Before the queue starts claiming: releasing after would hand back
        // a build this run had just claimed, and it would run twice.
        release_own_builds(store.as_ref(), &instance_id).await;
        let registry = Registry::new(&registry_settings(&args))?
            .keep_layers_in(&args.data_dir.join("registry-layers.json"));
        let forges = forges(&args)?;
        let settings = PipelineSettings {
            manifest_path: args.manifest.clone(),
            limits: Limits {
                max_bytes: args.max_source_bytes,
                max_entries: args.max_source_entries,
            },
            build_timeout: args.build_timeout,
            build_network: args.build_network.clone(),
            platforms: args.platforms.0.clone(),
            engine: engine_settings(&args)?,
            policy: ContextPolicy {
                allow_syntax_directive: args.allow_syntax_directive,
            },
            work_dir,
            public_url: args.public_url.clone(),
            pr_comment: args.pr_comment,
            signer,
            instance_id: instance_id.clone(),
            lease: args.lease,
            relay: start_relay(&args, &registry).await?,
            build_cache: args.build_cache,
        };
        let slots = args.max_concurrent_builds as usize;
        let mut pipeline = Pipeline::new(store.clone(), forges, registry, settings, slots);
        pipeline.retention = retention(&args, &pipeline);
        let pipeline = Arc::new(pipeline);
        let tracker = TaskTracker::new();
        let queue = Queue::start(
            pipeline.clone(),
            QueueSettings {
                instance: instance_id,
                lease: args.lease,
                poll: args.queue_poll,
                max_builds: slots,
            },
            tracker.clone(),
        );
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: args.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| StartError::Listen {
            addr: args.listen,
            source,
        })?;
        let state = Arc::new(AppState {
            webhook_secret: args.webhook_secret.clone(),
            intake: Intake::new(
                &args.branches,
                args.repositories.0.clone(),
                pipeline.forges.configured(),
                Admissions::start(store.clone(), args.max_queued_builds),
                queue.clone(),
                args.max_queued_builds,
            )
            .with_announcer(check_run_announcer(&pipeline)),
            store,
            queue,
            metrics: pipeline.metrics.clone(),
            hub: pipeline.hub.clone(),
            pipeline,
            api_token: args.api_token.clone(),
            ngrok_api: args.ngrok_api.clone(),
            hooks: Arc::default(),
        });
        warn_if_exposed(addr, args.api_token.is_some());
        Ok(Self {
            addr,
            listener,
            state,
            tracker,
            grace: args.shutdown_grace,
            watch: Watch::from_args(&args),
        })
    }

    /// Serves until `shutdown` resolves, then waits up to the grace period
    /// for running builds. Builds still unfinished stay in the store and run
    /// again at the next start.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        // Connect to the engine now rather than on the first merge.
        let pipeline = self.state.pipeline.clone();
        tokio::spawn(async move {
            if let Err(err) = pipeline.engine().await {
                tracing::warn!(%err, "Docker Engine not reachable yet; builds will try again");
            }
        });
        let Self {
            addr,
            listener,
            state,
            tracker,
            grace,
            watch,
        } = self;
        watch.start(&state);
        forward_notices(&state);
        let routes = crate::webhook::route(state.clone())
            .or(crate::api::routes(state.clone()))
            .unify()
            .recover(crate::api::recover)
            .unify();
        tracing::info!(%addr, "listening");
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<Instant>();
        let stop_builds = tracker.clone();
        let queue = state.queue.clone();
        let signal = async move {
            shutdown.await;
            // No new build starts here from now on; queued ones wait in the
            // store for another instance, or this one's next run.
            queue.stop_claiming();
            stop_builds.close();
            let _ = stopping_tx.send(Instant::now());
        };
        let mut server = tokio::spawn(
            warp::serve(routes)
                .incoming(listener)
                .graceful(signal)
                .run(),
        );
        let stopped_at = tokio::select! {
            _ = &mut server => Instant::now(),
            at = stopping_rx => at.unwrap_or_else(|_| Instant::now()),
        };
        // Open connections (live logs) and running builds share one grace period.
        let deadline = tokio::time::Instant::from_std(stopped_at + grace);
        tracing::info!(
            ?grace,
            "stopped taking webhooks; letting running builds finish"
        );
        if !server.is_finished()
            && tokio::time::timeout_at(deadline, &mut server)
                .await
                .is_err()
        {
            tracing::warn!("connections still open at the end of the grace period; closing them");
            server.abort();
        }
        if tokio::time::timeout_at(deadline, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("grace period over; handing the unfinished builds back to the queue");
            state.queue.hand_back_all(&state.store).await;
        }
    }
}

/// Builds this instance held when it last stopped are not running any more:
/// their leases end now, so they are claimed at once (by this instance, or
/// another) rather than after `--lease`.
async fn release_own_builds(store: &dyn Store, instance: &str) {
    match store.release_instance(instance).await {
        Ok(0) => {}
        Ok(released) => tracing::info!(
            released,
            "builds left unfinished by this instance's last run go back to the queue"
        ),
        Err(err) => {
            tracing::error!(%err, "could not release the builds of this instance's last run; they are taken over once their leases run out")
        }
    }
}

/// Other instances' notices: an admission there may be a build to claim
/// here; log lines stored there wake this instance's watchers of that build.
fn forward_notices(state: &Arc<AppState>) {
    let Some(mut notices) = state.store.notices() else {
        return;
    };
    let state = state.clone();
    tokio::spawn(async move {
        while let Some(notice) = notices.recv().await {
            match notice {
                Notice::Queued => state.queue.wake(),
                Notice::Logged(build) => state.hub.poke(&build),
                Notice::Missed => {
                    state.queue.wake();
                    state.hub.poke_all();
                }
            }
        }
    });
}

/// `--instance-id`'s default, as `hostname` prints it.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "slipway".to_string())
}

/// Temporary space lives in the data dir (it may be large); leftovers of a
/// killed process are removed at start.
fn prepare_work_dir(data_dir: &std::path::Path) -> Result<PathBuf, StartError> {
    let work = data_dir.join("work");
    let err = |source| StartError::DataDir {
        path: data_dir.display().to_string(),
        source,
    };
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(err)?;
    }
    std::fs::create_dir_all(&work).map_err(err)?;
    Ok(work)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}

/// GitHub always; Gitea/Forgejo and GitLab when their API is given.
fn forges(args: &ServeArgs) -> Result<Forges, StartError> {
    let client = |site: Forge, api: &str, token: &Option<crate::secret::Secret>| {
        GitHub::for_site(site, api, token.clone(), args.github_timeout)
    };
    let mut github = client(Forge::GitHub, &args.github_api, &args.github_token)?;
    if let (Some(id), Some(key)) = (args.github_app_id, &args.github_app_key) {
        github = github.as_app(Arc::new(crate::github::app::AppAuth::load(id, key)?));
    }
    let gitea = args
        .gitea_api
        .as_deref()
        .map(|api| client(Forge::Gitea, api, &args.gitea_token))
        .transpose()?;
    let gitlab = args
        .gitlab_api
        .as_deref()
        .map(|api| client(Forge::GitLab, api, &args.gitlab_token))
        .transpose()?;
    Ok(Forges::new(github, gitea, gitlab))
}

/// As a GitHub App, each admitted GitHub build gets its `queued` check run
/// at once, posted in the background; otherwise nothing is announced.
fn check_run_announcer(pipeline: &Arc<Pipeline>) -> Option<crate::intake::Announcer> {
    if !pipeline.forges.github().is_app() {
        return None;
    }
    let pipeline = pipeline.clone();
    Some(Box::new(move |record| {
        let github = pipeline.forges.github();
        if record.forge != Forge::GitHub {
            return;
        }
        let (Ok(repository), Ok(commit)) = (
            crate::types::Repository::parse(&record.repository),
            crate::types::CommitSha::parse(&record.commit),
        ) else {
            return;
        };
        pipeline.announcements.announce(
            github.clone(),
            crate::github::checks::Announcement {
                repository,
                commit,
                build: record.id.clone(),
                existing: record.check_run,
                details_url: pipeline.build_page(record),
            },
        );
    }))
}
