//! Message callbacks (消息回调): the worker that POSTs the outbox to each app's
//! callback URL.
//!
//! The router writes a callback row in the same transaction as its message
//! (`router::callbacks` decides its kind) and wakes the [`Dispatcher`]. The
//! dispatcher walks the apps with due callbacks, and for each starts at most
//! `callback_concurrency_per_app` requests — a slow, hanging or dead receiver holds
//! only its own app's slots, and the message path never waits for any of them.
//! Each request is bounded by `callback_timeout_ms` and `callback_max_response_bytes`
//! and follows no redirect. HTTP 200 deletes the row; anything else retries after
//! `callback_retries_ms` (`schedule`), then marks it failed for the admin API to
//! list and replay. Outcomes are written in batches, and the rows stay on disk
//! until then: what was pending at a crash or shutdown is sent again at the next
//! start, with the same delivery id (`body`), so receivers dedup.

pub mod body;
pub mod schedule;
pub mod target;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::directory::Directory;
use crate::store::{CallbackOutcome, PendingCallback, Store, StoreResult};
use crate::time::now_ms;

/// Longest wait between two looks at the outbox when nothing wakes the dispatcher.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often the queue-depth gauges are read from the store.
const GAUGE_EVERY: Duration = Duration::from_secs(5);

/// The callback settings, from [`Config`].
#[derive(Debug, Clone)]
pub struct CallbackConfig {
    pub retries: Vec<Duration>,
    pub timeout: Duration,
    pub concurrency_per_app: usize,
    pub max_response_bytes: usize,
    pub max_url_bytes: usize,
    pub refuse_private: bool,
}

impl CallbackConfig {
    pub fn from_config(c: &Config) -> Result<Self, crate::config::ConfigError> {
        Ok(CallbackConfig {
            retries: c.callback_retries()?,
            timeout: Duration::from_millis(c.callback_timeout_ms),
            concurrency_per_app: c.callback_concurrency_per_app.max(1),
            max_response_bytes: c.callback_max_response_bytes,
            max_url_bytes: c.callback_max_url_bytes,
            refuse_private: c.callback_refuse_private,
        })
    }
}

/// One finished attempt.
struct Attempted {
    app_id: u64,
    seq: u64,
    outcome: CallbackOutcome,
}

/// Delivers the outbox; see the module docs.
pub struct Dispatcher {
    store: Arc<dyn Store>,
    directory: Arc<Directory>,
    config: CallbackConfig,
    client: reqwest::Client,
    ready: Arc<Notify>,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        directory: Arc<Directory>,
        config: CallbackConfig,
        ready: Arc<Notify>,
    ) -> Result<Self, reqwest::Error> {
        let mut client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.timeout)
            .pool_max_idle_per_host(config.concurrency_per_app)
            .user_agent(concat!("courier/", env!("CARGO_PKG_VERSION")));
        if config.refuse_private {
            client = client.dns_resolver(Arc::new(target::PublicOnly));
        }
        Ok(Dispatcher {
            store,
            directory,
            config,
            client: client.build()?,
            ready,
        })
    }

    /// Runs until `stop` fires; requests under way are then abandoned (their rows
    /// stay pending and are sent again after the next start).
    pub async fn run(self, stop: CancellationToken) {
        let (done_tx, mut done_rx) = mpsc::channel::<Attempted>(1024);
        let mut tasks = JoinSet::new();
        let mut in_flight: HashMap<u64, HashSet<u64>> = HashMap::new();
        let mut next_look = tokio::time::Instant::now();
        let mut next_gauge = Instant::now();
        let mut finished = Vec::new();
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = done_rx.recv_many(&mut finished, 1024) => {}
                _ = self.ready.notified() => {}
                _ = tokio::time::sleep_until(next_look) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            }
            while let Ok(more) = done_rx.try_recv() {
                finished.push(more);
            }
            if !finished.is_empty() {
                self.record(&mut finished, &mut in_flight).await;
            }
            let wake = match self.look(&mut in_flight, &mut tasks, &done_tx).await {
                Ok(wake) => wake,
                Err(e) => {
                    crate::log_limited!(warn, error = %e, "callbacks: reading the outbox failed");
                    IDLE_POLL
                }
            };
            next_look = tokio::time::Instant::now() + wake;
            if next_gauge.elapsed() >= GAUGE_EVERY {
                next_gauge = Instant::now();
                if let Ok((pending, failed)) = self.store.callback_counts(None).await {
                    metrics::gauge!(crate::telemetry::CALLBACKS_PENDING).set(pending as f64);
                    metrics::gauge!(crate::telemetry::CALLBACKS_FAILED).set(failed as f64);
                }
            }
        }
        tasks.shutdown().await;
    }

    /// Writes finished attempts in one store write, then frees their slots (a
    /// failed write leaves the rows pending: they are sent again).
    async fn record(
        &self,
        finished: &mut Vec<Attempted>,
        in_flight: &mut HashMap<u64, HashSet<u64>>,
    ) {
        let outcomes = finished
            .iter()
            .map(|a| (a.seq, a.outcome.clone()))
            .collect();
        if let Err(e) = self.store.record_callbacks(outcomes).await {
            crate::log_limited!(error, error = %e, "callbacks: recording outcomes failed; they will be sent again");
        }
        for a in finished.drain(..) {
            if let Some(seqs) = in_flight.get_mut(&a.app_id) {
                seqs.remove(&a.seq);
            }
        }
    }

    /// Starts what is due for every app with free slots; returns how long until the
    /// next callback falls due (at most [`IDLE_POLL`]).
    async fn look(
        &self,
        in_flight: &mut HashMap<u64, HashSet<u64>>,
        tasks: &mut JoinSet<()>,
        done: &mpsc::Sender<Attempted>,
    ) -> StoreResult<Duration> {
        let now = now_ms();
        let mut wake = IDLE_POLL;
        let mut after = 0;
        let limit = self.config.concurrency_per_app;
        while let Some((app_id, due_ms)) = self.store.next_callback_app(after).await? {
            after = app_id;
            if due_ms > now {
                wake = wake.min(Duration::from_millis(due_ms - now));
                continue;
            }
            let busy = in_flight.entry(app_id).or_default();
            if busy.len() >= limit {
                continue;
            }
            // The rows in flight are among the earliest due: read past them.
            let rows = self.store.due_callbacks(app_id, now, limit).await?;
            let entry = self.directory.app_entry(app_id).await?;
            let mut unsendable = Vec::new();
            for row in rows {
                if busy.len() >= limit {
                    break;
                }
                if busy.contains(&row.seq) {
                    continue;
                }
                let url = entry.as_ref().and_then(|e| e.settings.callback_url.clone());
                let (Some(url), Some(entry)) = (url, entry.as_ref()) else {
                    let error = "the app has no callback URL".to_owned();
                    unsendable.push((row.seq, CallbackOutcome::Failed { now_ms: now, error }));
                    continue;
                };
                busy.insert(row.seq);
                let attempt = Attempt {
                    client: self.client.clone(),
                    url,
                    secret: entry.app.app_secret.clone(),
                    config: self.config.clone(),
                };
                let done = done.clone();
                tasks.spawn(async move {
                    let seq = row.seq;
                    let outcome = attempt.run(row).await;
                    let _ = done
                        .send(Attempted {
                            app_id,
                            seq,
                            outcome,
                        })
                        .await;
                });
            }
            if !unsendable.is_empty() {
                self.store.record_callbacks(unsendable).await?;
            }
        }
        Ok(wake)
    }
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

/// One request of one callback.
struct Attempt {
    client: reqwest::Client,
    url: String,
    secret: String,
    config: CallbackConfig,
}

impl Attempt {
    async fn run(self, row: PendingCallback) -> CallbackOutcome {
        let attempt = row.attempts.saturating_add(1);
        let Some(body) = body::body(&row) else {
            let error = "the message is no longer stored".to_owned();
            return CallbackOutcome::Failed {
                now_ms: now_ms(),
                error,
            };
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
        let url = target::check(&self.url, usize::MAX, self.config.refuse_private)
            .map_err(|e| e.to_string())?;
        let signature = body::signature(&self.secret, &body);
        let request = self
            .client
            .post(url)
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
