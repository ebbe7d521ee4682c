//! Message callbacks (消息回调): delivering the outbox to each app's callback URL.
//!
//! The router writes the callbacks of each commit as one batch per app in the
//! same transaction as the messages (`router::callbacks` decides each one's kind:
//! one store write per commit, not per message) and, once committed, hands the
//! batches to the [`Dispatcher`] through the [`OutboxFeed`] — so fresh callbacks
//! are sent without reading them back. The feed and the dispatcher's queues are
//! bounded: what does not fit stays only on disk, and the dispatcher reads it from
//! the store when it has caught up. It also reads the store at start (what a crash
//! or a shutdown left), when a retry falls due, after a replay, and every second
//! when idle.
//!
//! For each app at most `callback_concurrency_per_app` requests are in flight — a
//! slow, hanging or dead receiver holds only its own app's slots, and the message
//! path never waits for any of them; an app whose receiver keeps failing pauses
//! for the first retry delay, so a dead receiver costs nothing but rows on disk.
//! Each request is bounded by `callback_timeout_ms` and
//! `callback_max_response_bytes` and follows no redirect (`attempt`). HTTP 200
//! means done; anything else writes the callback's own row, retried after
//! `callback_retries_ms` (`schedule`), then failed for the admin API to list and
//! replay. A batch is deleted once each of its callbacks has an outcome. Outcomes
//! are written in batches by a recorder task while sending goes on. What was in
//! flight at a crash is sent again at the next start with the same delivery id
//! (`body`), so receivers dedup. The dispatcher runs on its own threads and yields
//! the CPU to a busy message path: the router reports the size of each batch it
//! commits ([`Pressure`]); while they are large, callbacks go out only in a small
//! share of each second and catch up after the burst.

mod attempt;
pub mod body;
mod dispatcher;
mod http;
pub mod schedule;
pub mod target;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

pub use dispatcher::Dispatcher;

use crate::config::Config;
use crate::store::CallbackBatch;

/// The callback settings, from [`Config`].
#[derive(Debug, Clone)]
pub struct CallbackConfig {
    pub retries: Vec<Duration>,
    pub timeout: Duration,
    pub concurrency_per_app: usize,
    pub max_response_bytes: usize,
    pub refuse_private: bool,
    /// Scheduling of the callback threads.
    pub priority: Priority,
    /// Messages per router batch (moving average) from which the message path
    /// counts as busy; 0: never.
    pub yield_batch: u64,
    /// Percent of each second in which callbacks are sent while the message
    /// path is busy.
    pub yield_share_percent: u64,
}

impl CallbackConfig {
    pub fn from_config(c: &Config) -> Result<Self, crate::config::ConfigError> {
        Ok(CallbackConfig {
            retries: c.callback_retries()?,
            timeout: Duration::from_millis(c.callback_timeout_ms),
            concurrency_per_app: c.callback_concurrency_per_app.max(1),
            max_response_bytes: c.callback_max_response_bytes,
            refuse_private: c.callback_refuse_private,
            priority: if c.callback_idle {
                Priority::Idle
            } else {
                Priority::Nice(c.callback_nice)
            },
            yield_batch: c.callback_yield_batch as u64,
            yield_share_percent: c.callback_yield_share_percent.min(100),
        })
    }
}

/// Batches handed from the router to the dispatcher after their commit.
#[derive(Debug)]
pub struct OutboxFeed {
    tx: mpsc::Sender<CallbackBatch>,
    rx: parking_lot::Mutex<Option<mpsc::Receiver<CallbackBatch>>>,
    /// Per app, the oldest batch that did not fit the feed (it is only on disk).
    lost: parking_lot::Mutex<HashMap<u64, u64>>,
    /// Something is only on disk, or a replay happened: read the store.
    stale: AtomicBool,
    look: Notify,
    /// Callbacks in the feed.
    held: AtomicUsize,
    /// How busy the message path is: see [`Pressure`].
    pressure: Pressure,
}

/// How busy the message path is, from the size of the router's commit batches:
/// sends that arrive faster than they commit queue up, so batches grow with the
/// load (measured: about 11 messages per batch at 20,000 msgs/s, 350–400 at full
/// speed on two cores). A moving average over the last batches, forgotten when no
/// batch came for [`Pressure::FORGET_MS`].
#[derive(Debug, Default)]
pub struct Pressure {
    /// Messages per batch, moving average, in 1/16ths.
    avg_x16: AtomicU64,
    /// When the last batch came (unix ms).
    last_ms: AtomicU64,
}

impl Pressure {
    /// A batch older than this says nothing about now.
    pub const FORGET_MS: u64 = 100;

    /// Counts one router batch of `messages`.
    pub fn note_batch(&self, messages: usize, now_ms: u64) {
        let sample = (messages as u64).saturating_mul(16);
        let last = self.last_ms.load(Ordering::Relaxed);
        let avg = if now_ms.saturating_sub(last) > Self::FORGET_MS {
            // The batches before a pause say nothing about now.
            sample
        } else {
            // Weight 1/8: a burst shows within a few batches (a few ms).
            let old = self.avg_x16.load(Ordering::Relaxed);
            old - old / 8 + sample / 8
        };
        self.avg_x16.store(avg, Ordering::Relaxed);
        self.last_ms.store(now_ms, Ordering::Relaxed);
    }

    /// The average batch, or 0 if no batch came lately.
    pub fn batch_average(&self, now_ms: u64) -> u64 {
        let last = self.last_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) > Self::FORGET_MS {
            return 0;
        }
        self.avg_x16.load(Ordering::Relaxed) / 16
    }
}

/// Batches the feed holds before the router leaves the rest to the store.
pub const FEED_CAPACITY: usize = 1024;
/// Callbacks the feed holds (their messages with them) before the router leaves
/// the rest to the store.
pub const FEED_MAX_CALLBACKS: usize = 16_384;

impl OutboxFeed {
    pub fn new() -> Arc<Self> {
        let (tx, rx) = mpsc::channel(FEED_CAPACITY);
        Arc::new(OutboxFeed {
            tx,
            rx: parking_lot::Mutex::new(Some(rx)),
            lost: parking_lot::Mutex::new(HashMap::new()),
            stale: AtomicBool::new(false),
            look: Notify::new(),
            held: AtomicUsize::new(0),
            pressure: Pressure::default(),
        })
    }

    /// Hands committed batches to the dispatcher (never waits).
    pub fn offer(&self, batches: Vec<CallbackBatch>) {
        for batch in batches {
            let n = batch.callbacks.len();
            let room = self.held.fetch_add(n, Ordering::Relaxed) + n <= FEED_MAX_CALLBACKS;
            let sent = if room {
                self.tx.try_send(batch).map_err(|e| match e {
                    mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
                })
            } else {
                Err(batch)
            };
            if let Err(batch) = sent {
                self.held.fetch_sub(n, Ordering::Relaxed);
                let mut lost = self.lost.lock();
                let oldest = lost.entry(batch.app_id).or_insert(batch.batch_id);
                *oldest = (*oldest).min(batch.batch_id);
                self.stale.store(true, Ordering::Relaxed);
            }
        }
    }

    /// The router committed a batch of `messages` sends (see [`Pressure`]).
    pub fn note_batch(&self, messages: usize) {
        self.pressure.note_batch(messages, crate::time::now_ms());
    }

    /// Asks the dispatcher to read the store (after a replay).
    pub fn wake(&self) {
        self.stale.store(true, Ordering::Relaxed);
        self.look.notify_one();
    }

    /// The dispatcher took `n` callbacks out of the feed.
    fn received(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::Relaxed);
    }

    fn take_lost(&self) -> HashMap<u64, u64> {
        std::mem::take(&mut *self.lost.lock())
    }
}

/// Worker threads of the callback runtime.
const CALLBACK_THREADS: usize = 2;

/// Runs the dispatcher on its own runtime, on threads scheduled as
/// `callback_idle` / `callback_nice` say.
/// The returned thread ends when `stop` fires or the feed's senders are gone.
pub fn spawn(
    dispatcher: Dispatcher,
    stop: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let priority = dispatcher.priority();
    std::thread::Builder::new()
        .name("callbacks".into())
        .spawn(move || {
            lower_priority(priority);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(CALLBACK_THREADS)
                .thread_name("callbacks")
                .on_thread_start(move || lower_priority(priority))
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => runtime.block_on(dispatcher.run(stop)),
                Err(e) => tracing::error!(error = %e, "callbacks: cannot start their runtime"),
            }
        })
}

/// How the callback threads are scheduled, from `callback_idle` / `callback_nice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Linux SCHED_IDLE: runs only on CPU no other thread wants, and any other
    /// thread that wakes up takes the CPU from it at once.
    Idle,
    /// A niceness, 0 (normal) to 19 (lowest).
    Nice(i32),
}

/// Lowers the calling thread's scheduling priority (Linux: the policy and the
/// niceness are per thread; elsewhere nothing changes). Also used by the load
/// generator's callback receiver.
pub fn lower_priority(priority: Priority) {
    #[cfg(target_os = "linux")]
    // SAFETY: gettid has no preconditions; sched_setscheduler and setpriority
    // only read their arguments.
    unsafe {
        let tid = libc::gettid();
        let ok = match priority {
            Priority::Idle => {
                let param = libc::sched_param { sched_priority: 0 };
                libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) == 0
            }
            Priority::Nice(nice) if nice > 0 => {
                libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) == 0
            }
            Priority::Nice(_) => true,
        };
        if !ok {
            tracing::debug!(?priority, "callbacks: cannot lower the thread priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = priority;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressure_follows_the_batch_sizes_and_forgets_when_idle() {
        let p = Pressure::default();
        assert_eq!(p.batch_average(1_000), 0);
        for i in 0..40 {
            p.note_batch(400, 1_000 + i);
        }
        let busy = p.batch_average(1_040);
        assert!((300..=400).contains(&busy), "{busy}");
        for i in 0..40 {
            p.note_batch(10, 1_040 + i);
        }
        let calm = p.batch_average(1_080);
        assert!(calm < 20, "{calm}");
        p.note_batch(400, 2_000);
        assert_eq!(p.batch_average(2_000 + Pressure::FORGET_MS + 1), 0);
        // After a pause, the first batch starts the average afresh.
        p.note_batch(5, 3_000);
        assert_eq!(p.batch_average(3_000), 5);
    }
}
