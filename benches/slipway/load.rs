//! A webhook load generator on loopback: signed deliveries over keep-alive
//! HTTP/1.1 connections, one reqwest client (so one connection) per worker.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

/// One delivery to send.
pub struct Delivery {
    pub event: &'static str,
    pub body: Bytes,
    pub signature: String,
}

/// Makes the n-th delivery of a run.
pub type Generator = Arc<dyn Fn(u64) -> Delivery + Send + Sync>;

/// What a run measured.
#[derive(Default)]
pub struct LoadResult {
    /// Latencies of answered requests inside the measured window, in µs.
    pub latencies_us: Vec<u32>,
    /// Answers by HTTP status (0: no answer), measured window only.
    pub statuses: BTreeMap<u16, u64>,
    /// Length of the measured window.
    pub window: Duration,
}

impl LoadResult {
    pub fn sorted(mut self) -> Self {
        self.latencies_us.sort_unstable();
        self
    }

    pub fn answered(&self) -> u64 {
        self.latencies_us.len() as u64
    }

    pub fn rate(&self) -> f64 {
        self.answered() as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// Requests answered with something other than `expected`, or not at all.
    pub fn unexpected(&self, expected: u16) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| **s != expected)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn percentile_us(&self, p: f64) -> f64 {
        super::common::percentile(&self.latencies_us, p) as f64
    }

    pub fn max_us(&self) -> f64 {
        self.latencies_us.last().copied().unwrap_or(0) as f64
    }

    fn merge(&mut self, other: LoadResult) {
        self.latencies_us.extend(other.latencies_us);
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// Sends one delivery; returns the status (0 when there was no answer).
async fn send(client: &reqwest::Client, url: &str, delivery: Delivery) -> u16 {
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .header("x-github-event", delivery.event)
        .header("x-github-delivery", uuid::Uuid::new_v4().to_string())
        .header("x-hub-signature-256", delivery.signature)
        .body(delivery.body)
        .send()
        .await;
    match sent {
        Ok(resp) => {
            let status = resp.status().as_u16();
            // Read the whole answer so the connection can be reused.
            match resp.bytes().await {
                Ok(_) => status,
                Err(_) => 0,
            }
        }
        Err(_) => 0,
    }
}

/// Closed loop: `connections` workers each send, wait for the answer, and
/// send again. The first `warmup` is not measured.
pub async fn closed_loop(
    url: &str,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    generator: Generator,
) -> LoadResult {
    let counter = Arc::new(AtomicU64::new(0));
    let begin = Instant::now();
    let measure_from = begin + warmup;
    let deadline = measure_from + duration;
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (url, counter, generator) = (url.to_string(), counter.clone(), generator.clone());
            tokio::spawn(async move {
                let client = client();
                let mut result = LoadResult::default();
                loop {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let delivery = generator(n);
                    let started = Instant::now();
                    if started >= deadline {
                        break;
                    }
                    let status = send(&client, &url, delivery).await;
                    if started < measure_from {
                        continue;
                    }
                    *result.statuses.entry(status).or_default() += 1;
                    if status != 0 {
                        let us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
                        result.latencies_us.push(us);
                    }
                }
                result
            })
        })
        .collect();
    let mut total = LoadResult {
        window: duration,
        ..Default::default()
    };
    for worker in workers {
        total.merge(worker.await.expect("load worker"));
    }
    total.sorted()
}

/// Open loop at a fixed rate: request i is due at start + i/rate, spread
/// over `workers` connections. Latency counts from when the request was due
/// if it went out late because its connection was still busy (so a stall
/// is not hidden by sending less), else from when it went out (so the
/// timer's millisecond granularity is not charged to the server).
pub async fn fixed_rate(
    url: &str,
    rate: f64,
    workers: usize,
    warmup: Duration,
    duration: Duration,
    generator: Generator,
) -> LoadResult {
    let total_requests = ((warmup + duration).as_secs_f64() * rate).round() as u64;
    let warmup_requests = (warmup.as_secs_f64() * rate).round() as u64;
    let begin = Instant::now() + Duration::from_millis(50);
    let handles: Vec<_> = (0..workers as u64)
        .map(|k| {
            let (url, generator) = (url.to_string(), generator.clone());
            tokio::spawn(async move {
                let client = client();
                let mut result = LoadResult::default();
                let mut previous_end = begin;
                let mut i = k;
                while i < total_requests {
                    let due = begin + Duration::from_secs_f64(i as f64 / rate);
                    let delivery = generator(i);
                    tokio::time::sleep_until(due).await;
                    let sent = Instant::now();
                    let from = if previous_end > due { due } else { sent };
                    let status = send(&client, &url, delivery).await;
                    let end = Instant::now();
                    previous_end = end;
                    if i >= warmup_requests {
                        *result.statuses.entry(status).or_default() += 1;
                        if status != 0 {
                            let us = (end - from).as_micros().min(u32::MAX as u128) as u32;
                            result.latencies_us.push(us);
                        }
                    }
                    i += workers as u64;
                }
                result
            })
        })
        .collect();
    let mut total = LoadResult::default();
    for handle in handles {
        total.merge(handle.await.expect("load worker"));
    }
    // The window the measured requests were due in; `rate()` is then the
    // answered rate, which falls short of `rate` only if answers were lost.
    total.window = duration;
    total.sorted()
}
