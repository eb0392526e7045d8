//! What the HTTP handlers and background tasks share, built by the wiring
//! (`app`) and handed to them; it imports no handler, so none of them
//! reaches back into the wiring.

use std::sync::Arc;
use std::time::Duration;

use crate::github::hook_keeper::HookBoard;
use crate::intake::Intake;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::queue::Queue;
use crate::secret::Secret;
use crate::store::log::LogHub;
use crate::store::Store;

/// What request handlers share.
pub struct AppState {
    pub webhook_secret: Secret,
    pub store: Arc<dyn Store>,
    /// Every new build goes through it: the webhook, retries and catch-up.
    pub intake: Intake,
    pub queue: Queue,
    pub pipeline: Arc<Pipeline>,
    pub metrics: Arc<Metrics>,
    pub hub: Arc<LogHub>,
    pub api_token: Option<Secret>,
    pub ngrok_api: Option<String>,
    /// The hooks `--manage-hooks` keeps, for the page.
    pub hooks: Arc<HookBoard>,
}

impl AppState {
    /// The public URL of the tunnel in front of the service, when known.
    pub async fn tunnel_url(&self) -> Option<String> {
        let api = self.ngrok_api.as_deref()?;
        let lookup = crate::setup::tunnel::public_url(api);
        match tokio::time::timeout(Duration::from_secs(2), lookup).await {
            Ok(Ok(url)) => Some(url),
            _ => None,
        }
    }
}
