//! One callback request: the body and its signature, the POST with its timeout
//! and answer bound, and what the attempt's outcome is.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue};
use hyper::StatusCode;

use super::{body, http, schedule, CallbackConfig};
use crate::store::{CallbackOutcome, PendingCallback};
use crate::time::now_ms;

/// One request of one callback.
pub(super) struct Attempt {
    pub(super) client: Arc<http::Client>,
    /// Checked by the dispatcher (`target::check`) before the attempt.
    pub(super) url: reqwest::Url,
    pub(super) secret: Arc<str>,
    pub(super) config: Arc<CallbackConfig>,
}

impl Attempt {
    pub(super) async fn run(self, row: &PendingCallback) -> CallbackOutcome {
        let attempt = row.attempts.saturating_add(1);
        let Some(body) = body::body(row) else {
            // Deleted by retention before its callback went out: nothing to send.
            crate::log_limited!(
                warn,
                seq = row.seq,
                app_id = row.app_id,
                "callback dropped: its message is no longer stored"
            );
            metrics::counter!(crate::telemetry::CALLBACKS, "result" => "dropped").increment(1);
            return CallbackOutcome::Delivered;
        };
        let started = Instant::now();
        let result = self.post(row.seq, attempt, body).await;
        metrics::histogram!(crate::telemetry::CALLBACK_SECONDS)
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                metrics::counter!(crate::telemetry::CALLBACKS, "result" => "delivered")
                    .increment(1);
                CallbackOutcome::Delivered
            }
            Err(error) => {
                crate::log_limited!(info, seq = row.seq, app_id = row.app_id, attempt, %error, "callback attempt failed");
                let outcome =
                    schedule::after_failure(attempt, error, now_ms(), &self.config.retries);
                let label = match outcome {
                    CallbackOutcome::Failed { .. } => "failed",
                    _ => "retry",
                };
                metrics::counter!(crate::telemetry::CALLBACKS, "result" => label).increment(1);
                outcome
            }
        }
    }

    /// POSTs `body`; `Ok` only for HTTP 200 within the timeout.
    async fn post(&self, seq: u64, attempt: u32, body: Vec<u8>) -> Result<(), String> {
        let signature = body::signature(&self.secret, &body);
        let header = |text: String| HeaderValue::from_str(&text).map_err(|e| e.to_string());
        let headers = [
            (
                HeaderName::from_static(body::DELIVERY_HEADER),
                HeaderValue::from(seq),
            ),
            (
                HeaderName::from_static(body::ATTEMPT_HEADER),
                HeaderValue::from(attempt),
            ),
            (
                HeaderName::from_static(body::SIGNATURE_HEADER),
                header(signature)?,
            ),
        ];
        let exchange = self.client.post(
            &self.url,
            &headers,
            Bytes::from(body),
            self.config.max_response_bytes,
        );
        match tokio::time::timeout(self.config.timeout, exchange).await {
            Ok(Ok(StatusCode::OK)) => Ok(()),
            Ok(Ok(status)) if status.is_redirection() => {
                Err(format!("HTTP {status} (redirects are not followed)"))
            }
            Ok(Ok(status)) => Err(format!("HTTP {status}")),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(format!(
                "no answer within {} ms",
                self.config.timeout.as_millis()
            )),
        }
    }
}
