//! Counters for `/metrics`, in Prometheus text format.

use std::collections::BTreeMap;
use std::sync::Mutex;

use warp::http::StatusCode;

#[derive(Default)]
pub struct Metrics {
    deliveries: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Counts a webhook answer by what it meant.
    pub fn delivery(&self, status: StatusCode) {
        let outcome = match status.as_u16() {
            202 => "accepted",
            200 => "answered",
            401 => "rejected_signature",
            413 => "rejected_too_large",
            415 => "rejected_content_type",
            400 => "rejected_payload",
            405 => "rejected_method",
            503 => "rejected_queue_full",
            _ => "error",
        };
        let mut map = self.deliveries.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(outcome).or_default() += 1;
    }

    pub fn render(&self) -> String {
        let map = self.deliveries.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::from(
            "# HELP slipway_webhook_deliveries_total Webhook deliveries by outcome.\n# TYPE slipway_webhook_deliveries_total counter\n",
        );
        for (outcome, count) in map.iter() {
            out.push_str(&format!(
                "slipway_webhook_deliveries_total{{outcome=\"{outcome}\"}} {count}\n"
            ));
        }
        out
    }
}
