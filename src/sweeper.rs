//! The background sweep: every `sweep_interval_secs`, bounded passes over the store
//! ([`crate::store::SweepStore::sweep`]) until nothing is left to do, each its own
//! short transaction so the message path is never held up for long. It deletes
//! messages past their app's history retention and expired accounts' data; it kicks the sessions of accounts found
//! expired and reloads the topics they left.

use std::sync::Arc;
use std::time::Duration;

use crate::protocol::KickReason;
use crate::state::AppState;
use crate::store::{SweepPlan, SweepReport};

/// Passes in one round at most: a backlog of deletions larger than this many
/// batches continues at the next interval.
const MAX_PASSES_PER_ROUND: usize = 1000;

/// Runs until shutdown.
pub async fn run(state: Arc<AppState>) {
    let interval = Duration::from_secs(state.config.sweep_interval_secs);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if let Err(e) = round(&state).await {
            crate::log_limited!(warn, error = %e, "sweep: pass failed; retrying next interval");
        }
    }
}

/// Sweeps until a pass finds nothing more (or the round's pass limit); returns the
/// totals.
pub async fn round(state: &AppState) -> Result<SweepReport, crate::store::StoreError> {
    let mut total = SweepReport::default();
    for _ in 0..MAX_PASSES_PER_ROUND {
        if state.shutdown.is_cancelled() {
            break;
        }
        let plan = SweepPlan {
            now_ms: state.clock.now_ms(),
            retention_ms: state.config.history_retention_secs.saturating_mul(1000),
            batch: state.config.sweep_batch,
        };
        let report = state.store.sweep(plan).await?;
        // Purged includes accounts replaced when their name was used again after
        // they expired (the store retired those without the sweep seeing them).
        for &uuid in report.expired.iter().chain(&report.purged) {
            state.hub.kick_user(uuid, KickReason::AccountExpired);
            if let Some(cluster) = &state.cluster {
                cluster.kick_expired_elsewhere(uuid);
            }
        }
        for &topic_id in &report.topics {
            if let Err(e) = state.directory.refresh_topic(topic_id).await {
                tracing::warn!(topic_id, error = %e, "sweep: cannot reload a topic");
            }
            state
                .cluster_invalidate(crate::cluster_pb::invalidate::What::TopicId(topic_id))
                .await;
        }
        total.messages += report.messages;
        total.purged.extend(report.purged);
        total.expired.extend(report.expired);
        total.topics.extend(report.topics);
        if !report.more {
            break;
        }
        // Let queued sends commit between passes.
        tokio::task::yield_now().await;
    }
    if total.messages > 0 || !total.purged.is_empty() || !total.expired.is_empty() {
        tracing::info!(
            messages = total.messages,
            expired_accounts = total.expired.len(),
            purged_accounts = total.purged.len(),
            "sweep: deleted what is past its window"
        );
    }
    Ok(total)
}
