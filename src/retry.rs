//! Retrying transient failures with exponential backoff.

use std::future::Future;
use std::time::Duration;

/// Attempts, and the first pause; each later pause doubles.
const ATTEMPTS: u32 = 5;
const FIRST_PAUSE: Duration = Duration::from_millis(250);

pub type Attempt = u32;

/// Runs `op` until it succeeds, fails with an error `is_transient` rejects,
/// or runs out of attempts.
pub async fn with_backoff<T, E, F, Fut>(
    what: &str,
    mut op: F,
    is_transient: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut pause = FIRST_PAUSE;
    let mut attempt: Attempt = 1;
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(err) if attempt < ATTEMPTS && is_transient(&err) => {
                tracing::warn!(%err, attempt, "{what}: transient failure, retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
}
