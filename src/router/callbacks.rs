//! Which message callback (消息回调) a stored message becomes, decided when the
//! router plans it, so the outbox row commits with the message. "Online" is the
//! recipients' devices registered at that moment:
//!
//! - p2p: `NORMAL_MSG` if a device of the recipient (the addressed one, if the send
//!   names a resource) is online, else `OFFLINE_MSG`; none for a message the
//!   recipient's blacklist blocked (the app would notify someone who refused it);
//! - topic: `NORMAL_TOPIC_MSG` with every member but the sender as `toAccounts` if
//!   all of them are online, else `OFFLINE_TOPIC_MSG` with those who are not.
//!
//! One callback per message: the two kinds of a conversation together report every
//! message once.

use crate::directory::TopicView;
use crate::fanout::Fanout;
use crate::hub::Audience;
use crate::message::Target;
use crate::store::{AppendOutcome, CallbackBatch, NewMessage, PendingCallback};
use crate::store::{CallbackKind, NewCallback};
use crate::submission::Submission;

/// The callback of `sub`, stored at `index` of its append.
pub(super) fn plan(
    presence: &dyn Fanout,
    sub: &Submission,
    topic: Option<&TopicView>,
    index: usize,
) -> Option<NewCallback> {
    let from = sub.envelope.from_uuid;
    match (&sub.envelope.target, topic) {
        (
            Target::User {
                uuid,
                resource,
                blocked,
                ..
            },
            _,
        ) => {
            if *blocked {
                return None;
            }
            let audience = Audience {
                except_conn: sub.from_conn.filter(|_| *uuid == from),
                only_resource: resource.as_deref(),
            };
            let kind = if presence.online(*uuid, audience) > 0 {
                CallbackKind::Normal
            } else {
                CallbackKind::Offline
            };
            Some(NewCallback {
                index,
                kind,
                to_accounts: Vec::new(),
            })
        }
        (Target::Topic { .. }, Some(view)) => {
            let everyone = Audience {
                except_conn: None,
                only_resource: None,
            };
            let others = view.topic.members.iter().filter(|m| m.uuid != from);
            let offline: Vec<String> = others
                .clone()
                .filter(|m| presence.online(m.uuid, everyone) == 0)
                .map(|m| m.account.clone())
                .collect();
            let (kind, to_accounts) = if offline.is_empty() {
                let all = others.map(|m| m.account.clone()).collect();
                (CallbackKind::NormalTopic, all)
            } else {
                (CallbackKind::OfflineTopic, offline)
            };
            Some(NewCallback {
                index,
                kind,
                to_accounts,
            })
        }
        (Target::Topic { .. }, None) => None,
    }
}

/// The callbacks of a router batch as the dispatcher takes them (before the commit).
pub(super) fn pending(
    messages: &[NewMessage],
    callbacks: &[NewCallback],
) -> Vec<(usize, PendingCallback)> {
    callbacks
        .iter()
        .filter_map(|cb| {
            let m = messages.get(cb.index)?;
            Some((
                cb.index,
                PendingCallback {
                    seq: m.seq,
                    app_id: m.envelope.app_id,
                    kind: cb.kind,
                    to_accounts: cb.to_accounts.clone(),
                    attempts: 0,
                    batch: None,
                    message: Some(m.clone()),
                },
            ))
        })
        .collect()
}

/// Those whose message the commit stored, in the store's batches: one per app,
/// keyed by its first callback's sequence.
pub(super) fn committed(
    pending: Vec<(usize, PendingCallback)>,
    outcomes: &[AppendOutcome],
) -> Vec<CallbackBatch> {
    let mut batches: Vec<CallbackBatch> = Vec::new();
    for (i, mut cb) in pending {
        if outcomes.get(i) != Some(&AppendOutcome::Stored) {
            continue;
        }
        let batch = match batches.iter_mut().position(|b| b.app_id == cb.app_id) {
            Some(at) => &mut batches[at],
            None => {
                batches.push(CallbackBatch {
                    batch_id: cb.seq,
                    app_id: cb.app_id,
                    size: 0,
                    callbacks: Vec::new(),
                });
                let last = batches.len() - 1;
                &mut batches[last]
            }
        };
        cb.batch = Some(batch.batch_id);
        batch.size += 1;
        batch.callbacks.push(cb);
    }
    batches
}
