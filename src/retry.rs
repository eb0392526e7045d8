//! Retrying transient failures with exponential backoff.

use std::future::Future;
use std::time::Duration;

/// How many attempts, and the first pause; each later pause doubles.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub attempts: u32,
    pub first_pause: Duration,
}

impl Backoff {
    /// GitHub's API: short hiccups, about 4 s of retrying in all.
    pub const GITHUB: Backoff = Backoff {
        attempts: 5,
        first_pause: Duration::from_millis(250),
    };
    /// The registry: long enough to ride out a restart (about 15 s in all).
    pub const REGISTRY: Backoff = Backoff {
        attempts: 6,
        first_pause: Duration::from_millis(500),
    };
}

/// Runs `op` until it succeeds, fails with an error `is_transient` rejects,
/// or runs out of attempts.
pub async fn with_backoff<T, E, F, Fut>(
    policy: Backoff,
    what: &str,
    mut op: F,
    is_transient: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let mut pause = policy.first_pause;
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(err) if attempt < policy.attempts && is_transient(&err) => {
                tracing::warn!(%err, attempt, "{what}: transient failure, retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const QUICK: Backoff = Backoff {
        attempts: 3,
        first_pause: Duration::from_millis(1),
    };

    #[tokio::test]
    async fn retries_transient_errors_only_and_gives_up() {
        let calls = AtomicU32::new(0);
        let result: Result<(), String> = with_backoff(
            QUICK,
            "op",
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("transient".to_string())
            },
            |_| true,
        )
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let calls = AtomicU32::new(0);
        let result: Result<(), String> = with_backoff(
            QUICK,
            "op",
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err("fatal".to_string())
            },
            |_| false,
        )
        .await;
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicU32::new(0);
        let result = with_backoff(
            QUICK,
            "op",
            || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0 => Err("once".to_string()),
                    _ => Ok(7),
                }
            },
            |_| true,
        )
        .await;
        assert_eq!(result, Ok(7));
    }
}
