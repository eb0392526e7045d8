//! Slipway publishes container images when pull requests are merged.
//!
//! The modules follow the data, in this order:
//! 1. intake: a delivery arrives at the [`webhook`] (or a missed merge is
//!    found by [`github::catch_up`]); [`trigger`] reads it, [`intake`]
//!    decides whether it becomes a build and admits it ([`admission`]);
//! 2. queue: [`queue`] claims builds from the [`store`] and runs them;
//! 3. source: the merge's [`forge`] (GitHub, Gitea/Forgejo, GitLab; one REST
//!    client in [`github`]) supplies the merge commit's tarball;
//! 4. context: [`context`] turns it into each service's build context;
//! 5. build: the [`engine`] builds, with BuildKit or the classic builder,
//!    once per [`platform`], with the registry's previous version as cache;
//! 6. publish: the [`registry`] receives the image (an index for several
//!    platforms), [`signing`] signs it, [`tags`] decides which tags move;
//!    [`retention`] then deletes the versions no longer kept;
//! 7. record: the [`store`] keeps records and logs; [`api`] shows them.
//!
//! [`pipeline`] drives one build through steps 3 to 7. [`state`] is what the
//! handlers share; [`app`] wires everything and is imported by nothing.
//! Leaf types ([`secret`], [`types`], [`digest`], [`platform`]) import
//! nothing from the crate. `scripts/import-cycles.py` keeps the imports free of circles.

pub mod admission;
pub mod api;
pub mod app;
pub mod config;
pub mod context;
pub mod digest;
pub mod engine;
pub mod forge;
pub mod github;
pub mod intake;
pub mod log;
pub mod manifest;
pub mod metrics;
pub mod pipeline;
pub mod platform;
pub mod queue;
pub mod registry;
pub mod reply;
pub mod retention;
pub mod retry;
pub mod secret;
pub mod setup;
pub mod signing;
pub mod state;
pub mod store;
pub mod tags;
pub mod trigger;
pub mod types;
pub mod webhook;

pub use app::{shutdown_signal, App, StartError};

/// Runs `slipway serve` until SIGTERM or SIGINT.
pub async fn serve(args: config::ServeArgs) -> Result<(), StartError> {
    let app = App::build(args).await?;
    app.run(shutdown_signal()).await;
    Ok(())
}
