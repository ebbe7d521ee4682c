//! Metrics an operator scrapes at `/metrics` (Prometheus text format): the names,
//! the process-wide recorder (the `metrics` facade with
//! `metrics-exporter-prometheus` rendering it), and its upkeep. Code on the message
//! path records through the `metrics` macros with the names below; recording is a
//! few atomic operations and never blocks.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Open connections by transport (`ws`, `quic`), before and after login.
pub const CONNECTIONS: &str = "courier_connections";
/// Logged-in sessions by transport.
pub const SESSIONS: &str = "courier_sessions";
/// Login attempts by `result` (`ok`, `unauthorized`, `too_many_devices`, …).
pub const LOGINS: &str = "courier_logins_total";
/// Inbound frames by `type` (`login`, `send`, `ack`, `pull`, `logout`, `other`).
pub const FRAMES_IN: &str = "courier_frames_in_total";
/// Outbound frames by `type` (`deliver`, `server_ack`, `reply`, `kick`).
pub const FRAMES_OUT: &str = "courier_frames_out_total";
/// Messages routed by `kind` (`p2p`, `topic`, `push_p2p`, `push_topic`).
pub const SENDS: &str = "courier_sends_total";
/// Deliveries queued on online devices.
pub const DELIVERIES: &str = "courier_deliveries_total";
/// Cumulative acks received from devices.
pub const DEVICE_ACKS: &str = "courier_device_acks_total";
/// Kicks by `reason` (`replaced`, `slow_consumer`, `idle`, `login_timeout`, …).
pub const KICKS: &str = "courier_kicks_total";
/// Seconds from a group commit's `BEGIN` to the end of its `COMMIT` (fsync).
pub const STORE_COMMIT_SECONDS: &str = "courier_store_commit_seconds";
/// Write operations in one group commit.
pub const STORE_COMMIT_OPS: &str = "courier_store_commit_ops";
/// Messages sent in one login backlog.
pub const BACKLOG_MESSAGES: &str = "courier_backlog_messages";
/// HTTP requests by `route` (the path pattern) and `status`.
pub const HTTP_REQUESTS: &str = "courier_http_requests_total";
/// HTTP request latency by `route`, seconds.
pub const HTTP_SECONDS: &str = "courier_http_request_seconds";
/// Callback attempts by `result` (`delivered`, `retry`, `failed`).
pub const CALLBACKS: &str = "courier_callbacks_total";
/// Seconds one callback request took (to the receiver's answer or the timeout).
pub const CALLBACK_SECONDS: &str = "courier_callback_seconds";
/// Callbacks waiting in the outbox (read every 5 s).
pub const CALLBACKS_PENDING: &str = "courier_callbacks_pending";
/// Callbacks that used every retry, kept until replayed (read every 5 s).
pub const CALLBACKS_FAILED: &str = "courier_callbacks_failed";

const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder once (several servers in one process, as in
/// the tests, share it). `None` if another recorder was installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("ops".into()), COUNT_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("messages".into()), COUNT_BUCKETS)
                });
            match builder.and_then(|b| b.install_recorder()) {
                Ok(handle) => Some(handle),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed; /metrics is off");
                    None
                }
            }
        })
        .as_ref()
}

/// The metrics in Prometheus text format.
pub fn render() -> Option<String> {
    let handle = handle()?;
    handle.run_upkeep();
    Some(handle.render())
}

/// Drains histogram samples into their buckets every few seconds, so memory does
/// not grow between scrapes. Runs until `stop`.
pub async fn upkeep(stop: tokio_util::sync::CancellationToken) {
    let Some(handle) = handle() else {
        return;
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => handle.run_upkeep(),
        }
    }
}
