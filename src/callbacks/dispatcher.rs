//! The dispatcher: takes batches from the feed (or the store), starts requests
//! within each app's slots, counts each batch down to its deletion, pauses apps
//! whose receiver keeps failing, and hands outcomes to the recorder task.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::attempt::Attempt;
use super::{http, target, CallbackConfig, OutboxFeed};
use crate::directory::Directory;
use crate::store::{
    CallbackBatch, CallbackOutcome, CallbackResult, PendingCallback, Store, StoreResult,
};
use crate::time::now_ms;

/// Longest wait between two looks at the store when nothing wakes the dispatcher.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often the queue-depth gauges are read from the store.
const GAUGE_EVERY: Duration = Duration::from_secs(5);
/// While the message path is busy, callbacks run in a share of each such period.
const YIELD_PERIOD_MS: u64 = 1000;
/// Failed attempts in a row after which an app's callbacks pause.
const PAUSE_AFTER_FAILURES: u32 = 8;

/// One finished attempt.
struct Attempted {
    callback: PendingCallback,
    outcome: CallbackOutcome,
}

/// What the recorder writes in one store write.
struct ToRecord {
    attempts: Vec<Attempted>,
    /// `(app, batch)` of batches to delete.
    finished: Vec<(u64, u64)>,
}

/// What the recorder wrote: `(seq, retry due)` of the attempts, and the finished
/// batches; `ok: false` if the write failed (the batches are still on disk).
struct Recorded {
    attempts: Vec<(u64, Option<u64>)>,
    finished: Vec<(u64, u64)>,
    ok: bool,
}

/// How long to wait before looking at an app again when it has no room.
const BUSY_RETRY: Duration = Duration::from_millis(100);

/// Delivers the outbox; see the module docs.
pub struct Dispatcher {
    store: Arc<dyn Store>,
    directory: Arc<Directory>,
    config: Arc<CallbackConfig>,
    client: Arc<http::Client>,
    feed: Arc<OutboxFeed>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

/// The dispatcher's bookkeeping.
#[derive(Default)]
struct Book {
    /// Callbacks waiting for a slot, per app.
    queued: HashMap<u64, VecDeque<PendingCallback>>,
    /// Requests under way, per app.
    in_flight: HashMap<u64, usize>,
    /// Every callback queued, in flight or being recorded: never taken twice.
    known: HashSet<u64>,
    /// Batches being worked through: callbacks without an outcome yet.
    batches: HashMap<u64, usize>,
    /// The batch of each callback queued or in flight from a batch.
    batch_of: HashMap<u64, u64>,
    /// Batches whose deletion the recorder has not confirmed yet.
    finishing: HashSet<u64>,
    /// Per app, the newest batch taken from the store: the feed's copy of it, or
    /// of an older one, comes too late.
    taken_from_store: HashMap<u64, u64>,
    /// Per app, the batch id from which batches are only on disk.
    rescan: HashMap<u64, u64>,
    /// When the earliest retry falls due (unix ms).
    next_retry_ms: Option<u64>,
    /// Failed attempts in a row, per app.
    failures: HashMap<u64, u32>,
    /// Apps whose receiver is failing, with the end of their pause (unix ms).
    paused_until: HashMap<u64, u64>,
    /// `(app, batch)` of batches whose callbacks all have an outcome, to delete.
    finished: Vec<(u64, u64)>,
}

impl Book {
    fn paused(&self, app_id: u64, now: u64) -> bool {
        self.paused_until.get(&app_id).is_some_and(|&end| end > now)
    }

    fn rescan_from(&mut self, app_id: u64, batch_id: u64) {
        let from = self.rescan.entry(app_id).or_insert(batch_id);
        *from = (*from).min(batch_id);
    }

    fn retry_at(&mut self, due: u64) {
        self.next_retry_ms = Some(self.next_retry_ms.map_or(due, |d| d.min(due)));
    }

    /// Whether a batch from the feed must be left to the store: the app has
    /// batches only on disk from an older one on (they are read in order), or
    /// the store already gave this one.
    fn left_to_store(&self, app_id: u64, batch_id: u64) -> bool {
        self.rescan.contains_key(&app_id)
            || self
                .taken_from_store
                .get(&app_id)
                .is_some_and(|&newest| batch_id <= newest)
    }

    /// Takes a batch into the queues; `false` (nothing taken) when the app's
    /// queue is full. It counts the callbacks queued now and those of it still
    /// queued or in flight from an earlier read; callbacks whose outcome is being
    /// recorded are neither (delivered: nothing to do; failed: they get a row).
    fn take(&mut self, batch: CallbackBatch, cap: usize) -> bool {
        let id = batch.batch_id;
        if self.batches.contains_key(&id) || self.finishing.contains(&id) {
            return true;
        }
        let queue = self.queued.entry(batch.app_id).or_default();
        if queue.len() >= cap {
            return false;
        }
        let mut left = 0;
        for cb in batch.callbacks {
            if self.known.insert(cb.seq) {
                self.batch_of.insert(cb.seq, id);
                queue.push_back(cb);
                left += 1;
            } else if self.batch_of.get(&cb.seq) == Some(&id) {
                left += 1;
            }
        }
        if left == 0 {
            self.finishing.insert(id);
            self.finished.push((batch.app_id, id));
        } else {
            self.batches.insert(id, left);
        }
        true
    }

    /// Counts a callback of a batch done; a batch done is to be deleted.
    fn count_down(&mut self, app_id: u64, seq: u64) {
        let Some(batch) = self.batch_of.remove(&seq) else {
            return;
        };
        if let Some(left) = self.batches.get_mut(&batch) {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.batches.remove(&batch);
                self.finishing.insert(batch);
                self.finished.push((app_id, batch));
            }
        }
    }

    /// Forgets the queued callbacks of an app; their batches are read again.
    fn drop_queue(&mut self, app_id: u64) {
        let Some(queue) = self.queued.remove(&app_id) else {
            return;
        };
        for cb in queue {
            self.known.remove(&cb.seq);
            if let Some(batch) = self.batch_of.remove(&cb.seq) {
                self.batches.remove(&batch);
                self.rescan_from(app_id, batch);
            }
        }
    }
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        directory: Arc<Directory>,
        config: CallbackConfig,
        feed: Arc<OutboxFeed>,
    ) -> Result<Self, crate::tls::TlsError> {
        let client = http::Client::new(config.refuse_private, config.concurrency_per_app)?;
        Ok(Dispatcher {
            store,
            directory,
            config: Arc::new(config),
            client: Arc::new(client),
            feed,
        })
    }

    /// Scheduling of the callback threads.
    pub(super) fn priority(&self) -> super::Priority {
        self.config.priority
    }

    /// Callbacks queued in memory per app (a batch may pass it once).
    fn queue_cap(&self) -> usize {
        self.config.concurrency_per_app.saturating_mul(8).max(64)
    }

    /// Runs until `stop` fires or the feed's senders are gone; requests under way
    /// are then abandoned (their callbacks stay on disk and are sent again after
    /// the next start).
    pub async fn run(self, stop: CancellationToken) {
        let Some(mut feed) = self.feed.rx.lock().take() else {
            tracing::error!("callbacks: the outbox feed has a dispatcher already");
            return;
        };
        let (done_tx, mut done_rx) = mpsc::channel::<Attempted>(1024);
        // Unbounded both ways, so neither side ever waits on the other (what they
        // carry is bounded by the callbacks known, and by the batches in memory).
        let (record_tx, record_rx) = mpsc::unbounded_channel::<ToRecord>();
        let (recorded_tx, mut recorded_rx) = mpsc::unbounded_channel::<Recorded>();
        let recorder = tokio::spawn(record(self.store.clone(), record_rx, recorded_tx));
        let mut tasks = JoinSet::new();
        let mut book = Book::default();
        // What a crash or a shutdown left: every app's batches (read again until
        // it works), and the rows.
        let mut start_scan = true;
        let mut fresh = Vec::new();
        let mut finished = Vec::new();
        let mut recorded = Vec::new();
        let mut look_at = tokio::time::Instant::now();
        let mut next_gauge = Instant::now();
        let cap = self.queue_cap();
        loop {
            let wake = match book.next_retry_ms {
                Some(due) => {
                    let wait = Duration::from_millis(due.saturating_sub(now_ms()));
                    look_at.min(tokio::time::Instant::now() + wait)
                }
                None => look_at,
            };
            let mut look_rows = false;
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = recorded_rx.recv_many(&mut recorded, 64) => {
                    for r in recorded.drain(..) {
                        for (seq, retry_due) in r.attempts {
                            book.known.remove(&seq);
                            if let Some(due) = retry_due {
                                book.retry_at(due);
                            }
                        }
                        for (app, batch) in r.finished {
                            book.finishing.remove(&batch);
                            if !r.ok {
                                // Still on disk: read it again.
                                book.rescan_from(app, batch);
                            }
                        }
                    }
                }
                _ = done_rx.recv_many(&mut finished, 1024) => {
                    for a in &finished {
                        let app = a.callback.app_id;
                        if let Some(n) = book.in_flight.get_mut(&app) {
                            *n = n.saturating_sub(1);
                        }
                        self.note_outcome(&mut book, a);
                        book.count_down(app, a.callback.seq);
                    }
                }
                n = feed.recv_many(&mut fresh, 256) => {
                    if n == 0 {
                        break;
                    }
                    let now = now_ms();
                    for batch in fresh.drain(..) {
                        let (app, id) = (batch.app_id, batch.batch_id);
                        self.feed.received(batch.callbacks.len());
                        if book.left_to_store(app, id) {
                            continue;
                        }
                        // A paused app's batches, or one over the queue bound, wait on disk.
                        if book.paused(app, now) || !book.take(batch, cap) {
                            book.rescan_from(app, id);
                        }
                    }
                }
                _ = self.feed.look.notified() => look_rows = true,
                _ = tokio::time::sleep_until(wake) => look_rows = true,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
            if !finished.is_empty() || !book.finished.is_empty() {
                let batch = ToRecord {
                    attempts: std::mem::take(&mut finished),
                    finished: std::mem::take(&mut book.finished),
                };
                if record_tx.send(batch).is_err() {
                    break;
                }
            }
            for (app, from) in self.feed.take_lost() {
                book.rescan_from(app, from);
            }
            let now = now_ms();
            if start_scan {
                match self.store.callback_batch_apps().await {
                    Ok(apps) => {
                        start_scan = false;
                        for app in apps {
                            book.rescan_from(app, 0);
                        }
                    }
                    Err(e) => {
                        crate::log_limited!(warn, error = %e, "callbacks: cannot read the outbox; retrying");
                        book.retry_at(now + IDLE_POLL.as_millis() as u64);
                    }
                }
            }
            if book.next_retry_ms.is_some_and(|due| due <= now) {
                book.next_retry_ms = None;
                look_rows = true;
            }
            if look_rows || self.feed.stale.swap(false, Ordering::Relaxed) {
                if let Err(e) = self.look_rows(&mut book, now).await {
                    crate::log_limited!(warn, error = %e, "callbacks: reading the outbox failed");
                }
                look_at = tokio::time::Instant::now() + IDLE_POLL;
            }
            if let Err(e) = self.look_batches(&mut book, now).await {
                crate::log_limited!(warn, error = %e, "callbacks: reading the outbox failed");
            }
            if let Err(e) = self.start_due(&mut book, &mut tasks, &done_tx).await {
                crate::log_limited!(warn, error = %e, "callbacks: app lookup failed");
            }
            if next_gauge.elapsed() >= GAUGE_EVERY {
                next_gauge = Instant::now();
                self.client.sweep();
                if let Ok((pending, failed)) = self.store.callback_counts(None).await {
                    metrics::gauge!(crate::telemetry::CALLBACKS_PENDING).set(pending as f64);
                    metrics::gauge!(crate::telemetry::CALLBACKS_FAILED).set(failed as f64);
                }
            }
        }
        tasks.shutdown().await;
        drop(record_tx);
        drop(recorded_rx);
        let _ = recorder.await;
    }

    /// Counts an app's failures in a row; past [`PAUSE_AFTER_FAILURES`] its
    /// callbacks pause until the first retry delay has passed: a dead receiver then
    /// costs nothing but the callbacks waiting on disk (they are not charged
    /// attempts).
    fn note_outcome(&self, book: &mut Book, a: &Attempted) {
        let app = a.callback.app_id;
        if a.outcome == CallbackOutcome::Delivered {
            book.failures.remove(&app);
            book.paused_until.remove(&app);
            return;
        }
        let failures = {
            let n = book.failures.entry(app).or_insert(0);
            *n += 1;
            *n
        };
        if failures < PAUSE_AFTER_FAILURES || book.paused(app, now_ms()) {
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
        book.paused_until.insert(app, end);
        book.retry_at(end);
        book.failures.remove(&app);
        // Its queued callbacks wait on disk; their batches are read again later.
        book.drop_queue(app);
        crate::log_limited!(
            warn,
            app_id = app,
            pause_ms = pause.as_millis() as u64,
            "callbacks: the receiver keeps failing; pausing this app's callbacks"
        );
    }

    /// Queues the retries that are due (callbacks with their own row).
    async fn look_rows(&self, book: &mut Book, now: u64) -> StoreResult<()> {
        let cap = self.queue_cap();
        let mut after = 0;
        while let Some((app_id, due_ms)) = self.store.next_callback_app(after).await? {
            after = app_id;
            if book.paused(app_id, now) {
                continue;
            }
            if due_ms > now {
                book.retry_at(due_ms);
                continue;
            }
            let queued = book.queued.get(&app_id).map_or(0, VecDeque::len);
            if queued >= cap {
                book.retry_at(now + BUSY_RETRY.as_millis() as u64);
                continue;
            }
            // Known rows come back too: read past them.
            let limit = cap + book.known.len().min(cap * 4);
            let rows = self.store.due_callbacks(app_id, now, limit).await?;
            let full = rows.len() == limit;
            let queue = book.queued.entry(app_id).or_default();
            for row in rows {
                if queue.len() >= cap {
                    break;
                }
                if book.known.insert(row.seq) {
                    queue.push_back(row);
                }
            }
            if full {
                // More is due than was read: look again soon.
                book.retry_at(now + BUSY_RETRY.as_millis() as u64);
            }
        }
        Ok(())
    }

    /// Reads the batches that are only on disk, for apps with room.
    async fn look_batches(&self, book: &mut Book, now: u64) -> StoreResult<()> {
        let cap = self.queue_cap();
        let apps: Vec<(u64, u64)> = book.rescan.iter().map(|(&a, &f)| (a, f)).collect();
        for (app_id, from) in apps {
            let queued = book.queued.get(&app_id).map_or(0, VecDeque::len);
            // Refilled when half empty, not one callback at a time: each read
            // costs a query, whatever it brings.
            if book.paused(app_id, now) || queued > cap / 2 {
                continue;
            }
            let budget = cap - queued;
            let batches = self.store.callback_batches(app_id, from, budget).await?;
            let read: usize = batches.iter().map(|b| b.size.max(1)).sum();
            let all = read < budget;
            let mut next = from;
            let mut stopped = false;
            for batch in batches {
                let id = batch.batch_id;
                if !book.take(batch, cap) {
                    next = id;
                    stopped = true;
                    break;
                }
                let newest = book.taken_from_store.entry(app_id).or_insert(id);
                *newest = (*newest).max(id);
                next = id.saturating_add(1);
            }
            if all && !stopped {
                book.rescan.remove(&app_id);
            } else {
                book.rescan.insert(app_id, next);
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
        let now = now_ms();
        let batch_average = self.feed.pressure.batch_average(now);
        if let Some(resume) = yielding(batch_average, &self.config, now) {
            crate::log_limited!(
                info,
                batch_average,
                share_percent = self.config.yield_share_percent,
                "callbacks: the message path is busy; callbacks yield it the CPU"
            );
            book.retry_at(resume);
            return Ok(());
        }
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
            // Checked again here (the setting may predate callback_refuse_private).
            let target = match entry.as_ref() {
                Some(e) => match e.settings.callback_url.as_deref() {
                    Some(url) => match target::check(url, usize::MAX, self.config.refuse_private) {
                        Ok(url) => Ok((url, Arc::<str>::from(e.app.app_secret.as_str()))),
                        Err(e) => Err(Some(e.to_string())),
                    },
                    None => Err(Some("the app has no callback URL".to_owned())),
                },
                // The app was deleted: its callbacks go with it.
                None => Err(None),
            };
            let queue = book.queued.entry(app_id).or_default();
            let mut started = 0;
            while busy + started < limit {
                let Some(callback) = queue.pop_front() else {
                    break;
                };
                started += 1;
                let done = done.clone();
                let (url, secret) = match &target {
                    Ok((url, secret)) => (url.clone(), secret.clone()),
                    Err(error) => {
                        // Recorded like any attempt (a deleted app's: dropped).
                        let outcome = match error {
                            Some(error) => CallbackOutcome::Failed {
                                now_ms: now_ms(),
                                error: error.clone(),
                            },
                            None => CallbackOutcome::Delivered,
                        };
                        tasks.spawn(async move {
                            let _ = done.send(Attempted { callback, outcome }).await;
                        });
                        continue;
                    }
                };
                let attempt = Attempt {
                    client: self.client.clone(),
                    url,
                    secret,
                    config: self.config.clone(),
                };
                tasks.spawn(async move {
                    let outcome = attempt.run(&callback).await;
                    let _ = done.send(Attempted { callback, outcome }).await;
                });
            }
            *book.in_flight.entry(app_id).or_default() += started;
        }
        Ok(())
    }
}

/// While the message path is busy (its commit batches average at least
/// `yield_batch` messages), callbacks yield it the CPU: they are sent only in the
/// first `yield_share_percent` of each [`YIELD_PERIOD_MS`], so they still move,
/// and wait (on disk if need be) the rest of it. `Some(when to look again)` while
/// they wait.
fn yielding(batch_average: u64, config: &CallbackConfig, now: u64) -> Option<u64> {
    let busy = config.yield_batch > 0 && batch_average >= config.yield_batch;
    let window = config.yield_share_percent.min(100) * YIELD_PERIOD_MS / 100;
    let into_period = now % YIELD_PERIOD_MS;
    (busy && into_period >= window).then(|| now - into_period + YIELD_PERIOD_MS)
}

/// Writes outcomes and finished batches, one store write per batch of them, and
/// reports back what was written (a failed write leaves them on disk as they
/// were: they are sent again).
async fn record(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<ToRecord>,
    recorded: mpsc::UnboundedSender<Recorded>,
) {
    let mut pending = Vec::new();
    while rx.recv_many(&mut pending, 64).await > 0 {
        let mut results = Vec::new();
        let mut finished = Vec::new();
        let mut done = Vec::new();
        for batch in pending.drain(..) {
            finished.extend(batch.finished);
            for a in batch.attempts {
                let retry = match a.outcome {
                    CallbackOutcome::Retry { due_ms, .. } => Some(due_ms),
                    _ => None,
                };
                done.push((a.callback.seq, retry));
                // A batch's callback has no row: delivered, there is nothing to write.
                if a.outcome == CallbackOutcome::Delivered && a.callback.batch.is_some() {
                    continue;
                }
                results.push(CallbackResult {
                    seq: a.callback.seq,
                    app_id: a.callback.app_id,
                    kind: a.callback.kind,
                    to_accounts: a.callback.to_accounts,
                    outcome: a.outcome,
                });
            }
        }
        let ids = finished.iter().map(|&(_, batch)| batch).collect();
        let ok = match store.record_callbacks(results, ids).await {
            Ok(()) => true,
            Err(e) => {
                crate::log_limited!(error, error = %e, "callbacks: recording outcomes failed; they will be sent again");
                false
            }
        };
        let report = Recorded {
            attempts: done,
            finished,
            ok,
        };
        if recorded.send(report).is_err() {
            return;
        }
    }
}

#[cfg(test)]
#[path = "dispatcher_tests.rs"]
mod tests;
