//! The store conformance suite: what every backend must do, written against
//! `dyn Store` only. A backend's own tests call [`run_all`] with a way to open fresh,
//! empty stores; today the embedded SQLite store runs it, and a PostgreSQL backend
//! will run the same checks.

use std::sync::Arc;

use super::{
    AppSettings, AppendOutcome, NewMessage, Order, Store, StoreError, StoredMessage, TimelineRange,
};
use crate::message::{Envelope, Target};

mod apps;
mod history;
use apps::*;
use history::*;

/// Runs every check, each on a fresh store from `fresh` (whose second value, e.g.
/// a temp dir, is kept until the check ends).
pub async fn run_all<G>(mut fresh: impl FnMut() -> (Arc<dyn Store>, G)) {
    macro_rules! check {
        ($($name:ident),* $(,)?) => {$(
            let (store, guard) = fresh();
            $name(store.as_ref()).await;
            store.close();
            drop(guard);
        )*};
    }
    check!(
        apps_and_accounts,
        cursors_only_advance,
        append_builds_both_timelines_and_dedups,
        resource_addressed_messages_reach_only_that_device,
        newest_first_reads_the_end_of_the_range,
        topic_messages_are_read_within_membership_intervals,
        blacklists_are_one_way_and_blocked_messages_stay_with_the_sender,
        temporary_accounts_expire_and_are_swept,
        history_reads_conversations_by_range,
        contacts_follow_the_newest_message,
        sweep_deletes_what_is_past_its_window,
        pages_merge_many_conversations_in_order,
        apps_are_renamed_rotated_and_deleted,
        callbacks_are_written_with_their_messages,
        callbacks_retry_fail_and_replay,
    );
}

/// A p2p message `from` → `to` with sequence `seq`.
pub fn msg(seq: u64, from: u64, to: u64, packet: &str) -> NewMessage {
    NewMessage {
        seq,
        ts: 1000 + seq,
        envelope: Envelope {
            app_id: 1,
            from_uuid: from,
            from_account: format!("u{from}"),
            from_resource: "phone".into(),
            packet_id: packet.into(),
            target: Target::User {
                uuid: to,
                account: format!("u{to}"),
                resource: None,
                blocked: false,
            },
            biz_type: "TEXT".into(),
            payload: bytes::Bytes::from(format!("m{seq}")),
        },
    }
}

/// The whole timeline of `uuid` after `after`, oldest first.
pub fn range(uuid: u64, after: u64) -> TimelineRange {
    TimelineRange {
        uuid,
        after,
        before: 0,
        limit: 100,
        order: Order::OldestFirst,
    }
}

/// Apps are listed and found; an account is created once and found again; a batch
/// of accounts keeps its order and creates only the missing ones; settings persist.
pub async fn apps_and_accounts(store: &dyn Store) {
    let app = store.create_app("demo").await.unwrap();
    assert_eq!(store.list_apps().await.unwrap(), vec![app.clone()]);
    assert_eq!(store.app(app.app_id).await.unwrap(), Some(app.clone()));
    assert_eq!(
        store.account(app.app_id, "bob", false, NOW).await.unwrap(),
        None
    );
    let bob = store
        .account(app.app_id, "bob", true, NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bob.expires_ms, 0);
    assert_eq!(
        store.account(app.app_id, "bob", true, NOW).await.unwrap(),
        Some(bob)
    );
    let names = vec!["amy".to_owned(), "bob".to_owned(), "cy".to_owned()];
    let accounts = store.accounts(app.app_id, names, NOW).await.unwrap();
    assert_eq!(accounts[1], bob);
    assert!(accounts[0].uuid != accounts[2].uuid && accounts[0].uuid != bob.uuid);
    assert_eq!(
        store.account(app.app_id, "cy", false, NOW).await.unwrap(),
        Some(accounts[2])
    );
    assert_eq!(
        store.app_settings(app.app_id).await.unwrap(),
        AppSettings::default()
    );
    let settings = AppSettings {
        callback_url: Some("http://127.0.0.1:9/cb".into()),
        user_ttl_secs: 60,
        max_payload_bytes: Some(100),
        topic_member_limit: Some(7),
        offline_ttl_secs: Some(600),
        backlog_limit: Some(5),
        history_retention_secs: Some(3600),
        contacts_window_secs: Some(7200),
        send_rate_per_user: Some(3),
    };
    store
        .set_app_settings(app.app_id, settings.clone())
        .await
        .unwrap();
    assert_eq!(store.app_settings(app.app_id).await.unwrap(), settings);
    assert!(matches!(
        store.set_app_settings(12345, settings).await,
        Err(StoreError::NotFound(_))
    ));
}

/// A fixed "now" for the checks (2026-01-01), far above the sequence epoch.
pub const NOW: u64 = 1_767_225_600_000;

/// Device cursors never move back; the user's highest is the max of its devices.
pub async fn cursors_only_advance(store: &dyn Store) {
    store
        .set_cursors(vec![(9, "phone".into(), 5)])
        .await
        .unwrap();
    store
        .set_cursors(vec![(9, "phone".into(), 3)])
        .await
        .unwrap();
    store.set_cursors(vec![(9, "pad".into(), 4)]).await.unwrap();
    store.flush().await.unwrap();
    assert_eq!(store.cursor(9, "phone").await.unwrap(), Some(5));
    assert_eq!(store.cursor(9, "tablet").await.unwrap(), None);
    assert_eq!(store.max_cursor(9).await.unwrap(), 5);
    assert_eq!(store.max_cursor(10).await.unwrap(), 0);
}

pub async fn append_builds_both_timelines_and_dedups(store: &dyn Store) {
    let out = store
        .append(vec![
            msg(10, 1, 2, "a"),
            msg(11, 2, 1, "b"),
            msg(12, 1, 2, "a"),
        ])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            AppendOutcome::Stored,
            AppendOutcome::Stored,
            AppendOutcome::Duplicate { seq: 10, ts: 1010 }
        ]
    );
    let seqs = |v: Vec<StoredMessage>| v.iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(store.timeline(range(2, 0), "x").await.unwrap()),
        vec![10, 11]
    );
    assert_eq!(
        seqs(store.timeline(range(1, 10), "x").await.unwrap()),
        vec![11]
    );
    assert_eq!(store.count_after(2, "x", 0, 1).await.unwrap(), 1);
    assert_eq!(store.count_after(2, "x", 0, 10).await.unwrap(), 2);
    assert_eq!(store.max_sequence().await.unwrap(), 11);
}

pub async fn resource_addressed_messages_reach_only_that_device(store: &dyn Store) {
    let mut m = msg(7, 1, 2, "x");
    m.envelope.target = Target::User {
        uuid: 2,
        account: "u2".into(),
        resource: Some("watch".into()),
        blocked: false,
    };
    store.append(vec![m, msg(8, 1, 2, "y")]).await.unwrap();
    let seqs = |v: Vec<StoredMessage>| v.iter().map(|m| m.seq).collect::<Vec<_>>();
    assert_eq!(
        seqs(store.timeline(range(2, 0), "phone").await.unwrap()),
        vec![8]
    );
    assert_eq!(
        seqs(store.timeline(range(2, 0), "watch").await.unwrap()),
        vec![7, 8]
    );
    // The sender's devices see what they sent.
    assert_eq!(
        seqs(store.timeline(range(1, 0), "tablet").await.unwrap()),
        vec![7, 8]
    );
}

pub async fn newest_first_reads_the_end_of_the_range(store: &dyn Store) {
    let batch = (1..=5).map(|i| msg(i, 1, 2, &format!("p{i}"))).collect();
    store.append(batch).await.unwrap();
    let r = TimelineRange {
        limit: 2,
        order: Order::NewestFirst,
        ..range(2, 0)
    };
    let got: Vec<u64> = store
        .timeline(r, "x")
        .await
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(got, vec![5, 4]);
}

pub async fn topic_messages_are_read_within_membership_intervals(store: &dyn Store) {
    let topic = store
        .create_topic(1, 1, "t", vec![2, 3], 10, 5)
        .await
        .unwrap();
    assert_eq!(
        topic.members.iter().map(|m| m.uuid).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let in_topic = |seq: u64| {
        let mut m = msg(seq, 1, 0, &format!("t{seq}"));
        m.envelope.target = Target::Topic {
            topic_id: topic.topic_id,
        };
        m
    };
    // Stored once: no timeline rows, one topic-log row each.
    store.append(vec![in_topic(4), in_topic(10)]).await.unwrap();
    store
        .remove_members(topic.topic_id, vec![2], 11)
        .await
        .unwrap();
    store.append(vec![in_topic(12)]).await.unwrap();
    let added = store
        .add_members(topic.topic_id, vec![2, 3], 10, 13)
        .await
        .unwrap();
    assert_eq!(added, vec![2], "3 was already a member");
    store
        .append(vec![in_topic(14), msg(15, 9, 2, "p2p")])
        .await
        .unwrap();
    let seqs = |v: Vec<StoredMessage>| v.iter().map(|m| m.seq).collect::<Vec<_>>();
    // 4 predates the topic; 12 was sent while 2 was out; p2p 15 merges in order.
    assert_eq!(
        seqs(store.timeline(range(2, 0), "x").await.unwrap()),
        vec![10, 14, 15]
    );
    assert_eq!(
        seqs(store.timeline(range(3, 0), "x").await.unwrap()),
        vec![10, 12, 14]
    );
    assert_eq!(store.count_after(2, "x", 0, 100).await.unwrap(), 3);
    for cap in 0..=3 {
        assert_eq!(store.count_after(2, "x", 0, cap).await.unwrap(), cap);
    }
    assert_eq!(store.count_after(2, "x", 14, 100).await.unwrap(), 1);
    let newest = TimelineRange {
        limit: 2,
        order: Order::NewestFirst,
        ..range(2, 0)
    };
    assert_eq!(
        seqs(store.timeline(newest, "x").await.unwrap()),
        vec![15, 14]
    );
    store.dismiss_topic(topic.topic_id, 16).await.unwrap();
    store.append(vec![in_topic(17)]).await.unwrap();
    assert_eq!(
        seqs(store.timeline(range(3, 14), "x").await.unwrap()),
        Vec::<u64>::new()
    );
    assert!(store.topics_of(3).await.unwrap().is_empty());
}

async fn blacklists_are_one_way_and_blocked_messages_stay_with_the_sender(store: &dyn Store) {
    store.blacklist_add(1, 2).await.unwrap();
    store.blacklist_add(1, 2).await.unwrap();
    store.blacklist_add(1, 3).await.unwrap();
    let mut list = store.blacklist_of(1).await.unwrap();
    list.sort();
    assert_eq!(list, vec![2, 3]);
    assert!(store.blacklist_of(2).await.unwrap().is_empty(), "one-way");
    store.blacklist_remove(1, 3).await.unwrap();
    store.blacklist_remove(1, 9).await.unwrap();
    assert_eq!(store.blacklist_of(1).await.unwrap(), vec![2]);

    // A message 2 → 1 that 1 blocked: in 2's timeline only, and read back blocked.
    let mut blocked = msg(10, 2, 1, "p-blocked");
    if let Target::User { blocked: b, .. } = &mut blocked.envelope.target {
        *b = true;
    }
    store
        .append(vec![blocked.clone(), msg(11, 2, 1, "p-ok")])
        .await
        .unwrap();
    let seen = |uuid| async move {
        store
            .timeline(range(uuid, 0), "phone")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.seq)
            .collect::<Vec<_>>()
    };
    assert_eq!(seen(1).await, vec![11], "the recipient never sees it");
    assert_eq!(seen(2).await, vec![10, 11], "the sender does");
    let read = store.timeline(range(2, 0), "phone").await.unwrap();
    assert_eq!(read[0], blocked);
}
