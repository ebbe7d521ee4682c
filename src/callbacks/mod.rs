//! Message callbacks (消息回调): the worker that POSTs the outbox to each app's
//! callback URL.
//!
//! The router writes a callback row in the same transaction as its message
//! (`router::callbacks` decides its kind) and, once committed, hands the callback
//! to the [`Dispatcher`] through the [`OutboxFeed`] — so fresh callbacks are sent
//! without reading them back from the store. The feed is bounded: when it is full
//! the callback is only on disk, and the dispatcher reads it from the store when it
//! has caught up. It also reads the store at start (callbacks left by a crash or a
//! shutdown), when a retry falls due, after a replay, and every [`IDLE_POLL`] when
//! idle.
//!
//! For each app at most `callback_concurrency_per_app` requests are in flight — a
//! slow, hanging or dead receiver holds only its own app's slots, and the message
//! path never waits for any of them. Each request is bounded by
//! `callback_timeout_ms` and `callback_max_response_bytes` and follows no redirect.
//! HTTP 200 deletes the row; anything else retries after `callback_retries_ms`
//! (`schedule`), then marks it failed for the admin API to list and replay.
//! Outcomes are written in batches by a recorder task while sending goes on; a
//! callback stays "known" (never sent twice at once) until its outcome is written.
//! What was in flight at a crash is sent again at the next start with the same
//! delivery id (`body`), so receivers dedup.

pub mod body;
pub mod schedule;
pub mod target;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Callbacks handed from the router to the dispatcher after their commit.
#[derive(Debug)]
pub struct OutboxFeed {
    tx: mpsc::Sender<PendingCallback>,
    rx: parking_lot::Mutex<Option<mpsc::Receiver<PendingCallback>>>,
    /// A callback did not fit the feed: it is only in the store.
    overflowed: AtomicBool,
    /// Read the store now (a replay, an overflow).
    look: Notify,
}

/// Callbacks the feed holds before the router leaves the rest to the store.
pub const FEED_CAPACITY: usize = 8192;

impl OutboxFeed {
    pub fn new() -> Arc<Self> {
        let (tx, rx) = mpsc::channel(FEED_CAPACITY);
        Arc::new(OutboxFeed {
            tx,
            rx: parking_lot::Mutex::new(Some(rx)),
            overflowed: AtomicBool::new(false),
            look: Notify::new(),
        })
    }

    /// Hands committed callbacks to the dispatcher (never waits).
    pub fn offer(&self, callbacks: Vec<PendingCallback>) {
        for cb in callbacks {
            if self.tx.try_send(cb).is_err() {
                self.overflowed.store(true, Ordering::Relaxed);
            }
        }
        if self.overflowed.load(Ordering::Relaxed) {
            self.look.notify_one();
        }
    }

    /// Asks the dispatcher to read the store (after a replay).
    pub fn wake(&self) {
        self.overflowed.store(true, Ordering::Relaxed);
        self.look.notify_one();
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
    feed: Arc<OutboxFeed>,
}

/// The dispatcher's bookkeeping.
#[derive(Default)]
struct Book {
    /// Due callbacks waiting for a slot, per app.
    queued: HashMap<u64, VecDeque<PendingCallback>>,
    /// Requests under way, per app.
    in_flight: HashMap<u64, usize>,
    /// Every callback queued, in flight or being recorded: never taken twice.
    known: HashSet<u64>,
    /// When the earliest retry written falls due (unix ms).
    next_retry_ms: Option<u64>,
    /// Failed attempts in a row, per app.
    failures: HashMap<u64, u32>,
    /// Apps whose receiver is failing, with the end of their pause (unix ms).
    paused_until: HashMap<u64, u64>,
}

impl Book {
    fn paused(&self, app_id: u64, now: u64) -> bool {
        self.paused_until.get(&app_id).is_some_and(|&end| end > now)
    }
}

/// Failed attempts in a row after which an app's callbacks pause.
const PAUSE_AFTER_FAILURES: u32 = 8;

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        directory: Arc<Directory>,
        config: CallbackConfig,
        feed: Arc<OutboxFeed>,
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
            feed,
        })
    }

    /// Runs until `stop` fires; requests under way are then abandoned (their rows
    /// stay pending and are sent again after the next start).
    pub async fn run(self, stop: CancellationToken) {
        let Some(mut feed) = self.feed.rx.lock().take() else {
            tracing::error!("callbacks: the outbox feed has a dispatcher already");
            return;
        };
        let (done_tx, mut done_rx) = mpsc::channel::<Attempted>(1024);
        let (record_tx, record_rx) = mpsc::channel::<Vec<Attempted>>(64);
        let (recorded_tx, mut recorded_rx) = mpsc::channel::<Vec<(u64, u64, Option<u64>)>>(64);
        let recorder = tokio::spawn(record(self.store.clone(), record_rx, recorded_tx));
        let mut tasks = JoinSet::new();
        let mut book = Book::default();
        let mut fresh = Vec::new();
        let mut finished = Vec::new();
        let mut recorded = Vec::new();
        // Read the store at once: what a crash or a shutdown left.
        let mut look_at = tokio::time::Instant::now();
        let mut next_gauge = Instant::now();
        loop {
            let mut look_now = false;
            // Wake for the next look, or sooner for the earliest retry.
            let wake = match book.next_retry_ms {
                Some(due) => {
                    let wait = Duration::from_millis(due.saturating_sub(now_ms()));
                    look_at.min(tokio::time::Instant::now() + wait)
                }
                None => look_at,
            };
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                n = done_rx.recv_many(&mut finished, 1024) => {
                    for a in &finished {
                        if let Some(n) = book.in_flight.get_mut(&a.app_id) {
                            *n = n.saturating_sub(1);
                        }
                        self.note_outcome(&mut book, a);
                    }
                    if n > 0 && record_tx.send(std::mem::take(&mut finished)).await.is_err() {
                        break;
                    }
                }
                _ = recorded_rx.recv_many(&mut recorded, 64) => {
                    for (seq, _app, retry_due) in recorded.drain(..).flatten() {
                        book.known.remove(&seq);
                        if let Some(due) = retry_due {
                            book.next_retry_ms = Some(book.next_retry_ms.map_or(due, |d| d.min(due)));
                        }
                    }
                }
                n = feed.recv_many(&mut fresh, 1024) => {
                    if n == 0 {
                        break;
                    }
                    let now = now_ms();
                    for cb in fresh.drain(..) {
                        if book.paused(cb.app_id, now) {
                            // Left in the store: read when the pause ends.
                            continue;
                        }
                        let queue = book.queued.entry(cb.app_id).or_default();
                        if queue.len() >= self.queue_cap() {
                            // Memory stays bounded: the store has it.
                            self.feed.overflowed.store(true, Ordering::Relaxed);
                            continue;
                        }
                        if book.known.insert(cb.seq) {
                            queue.push_back(cb);
                        }
                    }
                }
                _ = self.feed.look.notified() => look_now = true,
                _ = tokio::time::sleep_until(wake) => look_now = wake >= look_at,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
            let now = now_ms();
            if book.next_retry_ms.is_some_and(|due| due <= now) {
                book.next_retry_ms = None;
                look_now = true;
            }
            // Read the store when told to, or when it may hold what the feed lost
            // and the queues have room again.
            let overflowed = self.feed.overflowed.load(Ordering::Relaxed);
            let idle = book.queued.values().all(VecDeque::is_empty);
            if look_now || (overflowed && idle) {
                self.feed.overflowed.store(false, Ordering::Relaxed);
                if let Err(e) = self.look(&mut book, now).await {
                    crate::log_limited!(warn, error = %e, "callbacks: reading the outbox failed");
                }
                look_at = tokio::time::Instant::now() + IDLE_POLL;
            }
            if let Err(e) = self.start_due(&mut book, &mut tasks, &done_tx).await {
                crate::log_limited!(warn, error = %e, "callbacks: app lookup failed");
            }
            if next_gauge.elapsed() >= GAUGE_EVERY {
                next_gauge = Instant::now();
                if let Ok((pending, failed)) = self.store.callback_counts(None).await {
                    metrics::gauge!(crate::telemetry::CALLBACKS_PENDING).set(pending as f64);
                    metrics::gauge!(crate::telemetry::CALLBACKS_FAILED).set(failed as f64);
                }
            }
        }
        tasks.shutdown().await;
        drop(record_tx);
        let _ = recorder.await;
    }

    /// Counts an app's failures in a row; past [`PAUSE_AFTER_FAILURES`] its
    /// callbacks pause until the first retry delay has passed: a dead receiver then
    /// costs nothing but the rows waiting on disk (they are not charged attempts).
    fn note_outcome(&self, book: &mut Book, a: &Attempted) {
        if a.outcome == CallbackOutcome::Delivered {
            book.failures.remove(&a.app_id);
            book.paused_until.remove(&a.app_id);
            return;
        }
        let failures = {
            let n = book.failures.entry(a.app_id).or_insert(0);
            *n += 1;
            *n
        };
        if failures < PAUSE_AFTER_FAILURES || book.paused(a.app_id, now_ms()) {
            return;
        }
        let pause = self
            .config
            .retries
            .first()
            .copied()
            .unwrap_or(IDLE_POLL)
            .max(Duration::from_millis(100));
        let end = now_ms().saturating_add(pause.as_millis() as u64);
        book.paused_until.insert(a.app_id, end);
        book.next_retry_ms = Some(book.next_retry_ms.map_or(end, |d| d.min(end)));
        book.failures.remove(&a.app_id);
        // Its queued callbacks wait in the store.
        if let Some(queue) = book.queued.remove(&a.app_id) {
            for cb in queue {
                book.known.remove(&cb.seq);
            }
        }
        crate::log_limited!(warn, app_id = a.app_id, pause_ms = pause.as_millis() as u64, "callbacks: the receiver keeps failing; pausing this app's callbacks");
    }

    /// Queues the due callbacks of every app that the store has and the
    /// dispatcher does not know yet (at most a few slots' worth per app).
    /// Callbacks queued in memory per app, at most.
    fn queue_cap(&self) -> usize {
        self.config.concurrency_per_app.saturating_mul(8).max(64)
    }

    async fn look(&self, book: &mut Book, now: u64) -> StoreResult<()> {
        let per_app = self.queue_cap();
        let mut after = 0;
        while let Some((app_id, due_ms)) = self.store.next_callback_app(after).await? {
            after = app_id;
            if book.paused(app_id, now) {
                continue;
            }
            if due_ms > now {
                book.next_retry_ms = Some(book.next_retry_ms.map_or(due_ms, |d| d.min(due_ms)));
                continue;
            }
            let queued = book.queued.get(&app_id).map_or(0, VecDeque::len);
            if queued >= per_app {
                continue;
            }
            // Known rows come back too: read past them.
            let limit = per_app + book.known.len().min(per_app * 4);
            let rows = self.store.due_callbacks(app_id, now, limit).await?;
            let full = rows.len() == limit;
            let queue = book.queued.entry(app_id).or_default();
            for row in rows {
                if queue.len() >= per_app {
                    break;
                }
                if book.known.insert(row.seq) {
                    queue.push_back(row);
                }
            }
            if full {
                // More is due than was read: read again once these are sent.
                self.feed.overflowed.store(true, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Starts queued callbacks while their app has free slots.
    async fn start_due(
        &self,
        book: &mut Book,
        tasks: &mut JoinSet<()>,
        done: &mpsc::Sender<Attempted>,
    ) -> StoreResult<()> {
        let limit = self.config.concurrency_per_app;
        let apps: Vec<u64> = book
            .queued
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(&app, _)| app)
            .collect();
        for app_id in apps {
            let busy = book.in_flight.get(&app_id).copied().unwrap_or(0);
            if busy >= limit {
                continue;
            }
            let entry = self.directory.app_entry(app_id).await?;
            let queue = book.queued.entry(app_id).or_default();
            let mut started = 0;
            while busy + started < limit {
                let Some(row) = queue.pop_front() else {
                    break;
                };
                let target = entry.as_ref().and_then(|e| {
                    let url = e.settings.callback_url.clone()?;
                    Some((url, e.app.app_secret.clone()))
                });
                let Some((url, secret)) = target else {
                    let error = "the app has no callback URL".to_owned();
                    let outcome = CallbackOutcome::Failed { now_ms: now_ms(), error };
                    let seq = row.seq;
                    // Recorded like any attempt (the slot count is given back there).
                    *book.in_flight.entry(app_id).or_default() += 1;
                    let _ = done.try_send(Attempted { app_id, seq, outcome });
                    continue;
                };
                started += 1;
                let attempt = Attempt {
                    client: self.client.clone(),
                    url,
                    secret,
                    config: self.config.clone(),
                };
                let done = done.clone();
                tasks.spawn(async move {
                    let seq = row.seq;
                    let outcome = attempt.run(row).await;
                    let _ = done.send(Attempted { app_id, seq, outcome }).await;
                });
            }
            *book.in_flight.entry(app_id).or_default() += started;
        }
        Ok(())
    }
}

/// Writes finished attempts, a batch per store write, and reports back
/// `(seq, app, retry due)` once written (a failed write leaves the rows pending:
/// they are sent again).
async fn record(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<Vec<Attempted>>,
    recorded: mpsc::Sender<Vec<(u64, u64, Option<u64>)>>,
) {
    let mut batches = Vec::new();
    while rx.recv_many(&mut batches, 64).await > 0 {
        let attempts: Vec<Attempted> = batches.drain(..).flatten().collect();
        let outcomes = attempts
            .iter()
            .map(|a| (a.seq, a.outcome.clone()))
            .collect();
        if let Err(e) = store.record_callbacks(outcomes).await {
            crate::log_limited!(error, error = %e, "callbacks: recording outcomes failed; they will be sent again");
        }
        let done = attempts
            .into_iter()
            .map(|a| {
                let retry = match a.outcome {
                    CallbackOutcome::Retry { due_ms, .. } => Some(due_ms),
                    _ => None,
                };
                (a.seq, a.app_id, retry)
            })
            .collect();
        if recorded.send(done).await.is_err() {
            return;
        }
    }
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

/// Niceness of the callback threads: they get the CPU the message path leaves.
pub const CALLBACK_NICE: i32 = 10;
/// Worker threads of the callback runtime.
const CALLBACK_THREADS: usize = 2;

/// Runs the dispatcher on its own runtime, on threads of lower scheduling
/// priority ([`CALLBACK_NICE`]): callbacks use the CPU the message path leaves,
/// so a burst of sends is not slowed by their callbacks (which catch up after).
/// The returned thread ends when `stop` fires or the feed's senders are gone.
pub fn spawn(dispatcher: Dispatcher, stop: CancellationToken) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("callbacks".into())
        .spawn(move || {
            lower_priority();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(CALLBACK_THREADS)
                .thread_name("callbacks")
                .on_thread_start(lower_priority)
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => runtime.block_on(dispatcher.run(stop)),
                Err(e) => tracing::error!(error = %e, "callbacks: cannot start their runtime"),
            }
        })
}

/// Lowers the calling thread's scheduling priority (Linux: niceness is per thread).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid has no preconditions; setpriority only reads its arguments.
    unsafe {
        let tid = libc::gettid();
        if libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, CALLBACK_NICE) != 0 {
            tracing::debug!("callbacks: cannot lower the thread priority");
        }
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
