//! The embedded store's writer thread (group commit: every queued operation in one
//! transaction, each in its own savepoint, one fsync'd commit, then the answers) and
//! its checkpointer thread.

use rusqlite::Connection;
use tokio::sync::mpsc;

use crate::store::{StoreError, StoreResult};

/// Completes a write operation once its transaction's commit result is known.
pub(super) type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// A write operation, run by the writer thread inside the open transaction.
/// Given `None` (the transaction could not begin) it must not touch the database and
/// only yields a completion to answer with the error.
pub(super) type WriteOp = Box<dyn FnOnce(Option<&Connection>) -> Completion + Send>;

/// Commits between the writer's own checkpoint passes.
const WRITER_CHECKPOINT_EVERY: u32 = 64;

/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

pub(super) fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    conn.execute_batch("SAVEPOINT op")?;
    let result = f(conn).and_then(|v| {
        conn.execute_batch("RELEASE op")?;
        Ok(v)
    });
    if result.is_err() {
        // Undo this op's writes so they do not commit with the others.
        let _ = conn.execute_batch("ROLLBACK TO op; RELEASE op");
    }
    result
}

pub(super) fn writer_loop(conn: Connection, mut rx: mpsc::Receiver<WriteOp>, max_ops: usize) {
    let mut completions: Vec<Completion> = Vec::new();
    let mut commits_since_checkpoint = 0u32;
    while let Some(first) = rx.blocking_recv() {
        commits_since_checkpoint += 1;
        if commits_since_checkpoint >= WRITER_CHECKPOINT_EVERY {
            // Under constant load the background checkpointer never catches up with
            // the end of the WAL, so the WAL could never restart and would grow
            // without bound. Between transactions nothing is appended, so this pass
            // (copying only what the background pass has not) lets the next
            // transaction restart the WAL from its beginning.
            commits_since_checkpoint = 0;
            if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
                tracing::debug!(error = %e, "store: writer checkpoint skipped");
            }
        }
        let t_begin = std::time::Instant::now();
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            let err = StoreError::from(e);
            tracing::error!(error = %err, "store: cannot begin transaction");
            // Answer without running: outside a transaction its writes would commit
            // on their own while its caller is told it failed.
            first(None)(Err(err));
            continue;
        }
        completions.push(first(Some(&conn)));
        while completions.len() < max_ops {
            match rx.try_recv() {
                Ok(op) => completions.push(op(Some(&conn))),
                Err(_) => break,
            }
        }
        let t_commit = std::time::Instant::now();
        let committed = conn.execute_batch("COMMIT").map_err(|e| {
            let _ = conn.execute_batch("ROLLBACK");
            let err = StoreError::from(e);
            tracing::error!(error = %err, "store: commit failed");
            err
        });
        metrics::histogram!(crate::telemetry::STORE_COMMIT_SECONDS)
            .record(t_begin.elapsed().as_secs_f64());
        metrics::histogram!(crate::telemetry::STORE_COMMIT_OPS).record(completions.len() as f64);
        tracing::trace!(
            ops = completions.len(),
            work_us = (t_commit - t_begin).as_micros() as u64,
            commit_us = t_commit.elapsed().as_micros() as u64,
            "store: group commit"
        );
        for done in completions.drain(..) {
            done(committed.clone());
        }
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
        tracing::warn!(error = %e, "store: final checkpoint failed");
    }
}

pub(super) fn checkpoint_loop(conn: Connection, stop: std::sync::mpsc::Receiver<()>) {
    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
        stop.recv_timeout(CHECKPOINT_INTERVAL)
    {
        if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
            tracing::warn!(error = %e, "store: checkpoint failed");
        }
    }
}
