//! One callback request: the body and its signature, the POST with its timeout
//! and answer bound, and what the attempt's outcome is.

use std::sync::Arc;
use std::time::Instant;

use super::{body, schedule, CallbackConfig};
use crate::store::{CallbackOutcome, PendingCallback};
use crate::time::now_ms;

/// One request of one callback.
pub(super) struct Attempt {
    pub(super) client: reqwest::Client,
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
        let request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(body::DELIVERY_HEADER, seq.to_string())
            .header(body::ATTEMPT_HEADER, attempt.to_string())
            .header(body::SIGNATURE_HEADER, signature)
            .body(body);
        let max = self.config.max_response_bytes;
        let exchange = async {
            let mut response = request.send().await.map_err(describe)?;
            let status = response.status();
            // Read (and drop) the answer, so the connection can be reused.
            let mut read = 0usize;
            while let Some(chunk) = response.chunk().await.map_err(describe)? {
                read += chunk.len();
                if read > max {
                    break;
                }
            }
            if status == reqwest::StatusCode::OK {
                Ok(())
            } else if status.is_redirection() {
                Err(format!("HTTP {status} (redirects are not followed)"))
            } else {
                Err(format!("HTTP {status}"))
            }
        };
        match tokio::time::timeout(self.config.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no answer within {} ms",
                self.config.timeout.as_millis()
            )),
        }
    }
}

/// A request error in a few words (reqwest's own text can be long).
fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_connect() {
        "cannot connect"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_body() || e.is_decode() {
        "bad answer"
    } else {
        "request failed"
    };
    let mut text = format!("{kind}: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        text.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    crate::names::truncate(&text, 300)
}
