//! Slipway publishes container images when pull requests are merged.
//!
//! The modules follow the data: a delivery arrives at the [`webhook`], the
//! [`trigger`] decides, [`github`] supplies the source, [`context`] turns it
//! into build contexts, the [`engine`] builds, the [`registry`] publishes, and
//! the [`store`] records. The [`queue`] and [`pipeline`] drive a build through
//! those steps; [`api`] shows the results.

pub mod admission;
pub mod api;
pub mod app;
pub mod config;
pub mod context;
pub mod digest;
pub mod engine;
pub mod github;
pub mod intake;
pub mod log;
pub mod manifest;
pub mod metrics;
pub mod pipeline;
pub mod queue;
pub mod registry;
pub mod reply;
pub mod retry;
pub mod secret;
pub mod setup;
pub mod signing;
pub mod state;
pub mod store;
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
