//! The store conformance suite: what every backend must do, written against
//! `dyn Store` only. A backend's own tests call [`run_all`] with a way to open fresh,
//! empty stores; today the embedded SQLite store runs it, and a PostgreSQL backend
//! will run the same checks.

use std::sync::Arc;

use super::{
    AppSettings, AppendOutcome, Contact, Conversation, HistoryRange, NewMessage, Order, Peer,
    Store, StoreError, StoredMessage, SweepPlan, TimelineRange,
};
use crate::message::{Envelope, Target};

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
        topic_member_limit: Some(7),
        user_ttl_secs: 60,
        history_retention_secs: Some(3600),
    };
    store.set_app_settings(app.app_id, settings).await.unwrap();
    assert_eq!(store.app_settings(app.app_id).await.unwrap(), settings);
    assert!(matches!(
        store.set_app_settings(12345, settings).await,
        Err(StoreError::NotFound(_))
    ));
}

/// A fixed "now" for the checks (2026-01-01), far above the sequence epoch.
pub const NOW: u64 = 1_767_225_600_000;

/// Accounts created while an app has a lifetime expire after it: lookups stop
/// finding them, a new account takes the name (new uuid), and the sweep reports the
/// expired ones once, then deletes their data and memberships.
pub async fn temporary_accounts_expire_and_are_swept(store: &dyn Store) {
    let app = store.create_app("temp").await.unwrap();
    let forever = store
        .account(app.app_id, "keeper", true, NOW)
        .await
        .unwrap()
        .unwrap();
    store
        .set_app_settings(
            app.app_id,
            AppSettings {
                user_ttl_secs: 60,
                ..AppSettings::default()
            },
        )
        .await
        .unwrap();
    let temp = store
        .account(app.app_id, "guest", true, NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(temp.expires_ms, NOW + 60_000);
    // Created before the lifetime was set: never expires.
    assert_eq!(
        store
            .account(app.app_id, "keeper", false, NOW + 3_600_000)
            .await
            .unwrap(),
        Some(forever)
    );
    assert_eq!(
        store
            .account(app.app_id, "guest", false, NOW + 59_999)
            .await
            .unwrap(),
        Some(temp)
    );
    assert_eq!(
        store
            .account(app.app_id, "guest", false, NOW + 60_000)
            .await
            .unwrap(),
        None
    );
    let topic = store
        .create_topic(
            app.app_id,
            forever.uuid,
            "t",
            vec![forever.uuid, temp.uuid],
            10,
            0,
        )
        .await
        .unwrap();
    store
        .set_cursors(vec![(temp.uuid, "phone".into(), 5)])
        .await
        .unwrap();
    store.blacklist_add(temp.uuid, forever.uuid).await.unwrap();
    let plan = SweepPlan {
        now_ms: NOW + 60_000,
        retention_ms: 180 * DAY_MS,
        batch: 100,
    };
    let report = store.sweep(plan.clone()).await.unwrap();
    assert_eq!(report.expired, vec![temp.uuid]);
    assert_eq!(report.purged, vec![temp.uuid]);
    assert_eq!(report.topics, vec![topic.topic_id]);
    assert_eq!(store.cursor(temp.uuid, "phone").await.unwrap(), None);
    assert!(store.blacklist_of(temp.uuid).await.unwrap().is_empty());
    let members = store.topic(topic.topic_id).await.unwrap().unwrap().members;
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].uuid, forever.uuid);
    // Reported once; the name is free again and the uuid is new.
    assert!(store.sweep(plan).await.unwrap().expired.is_empty());
    let again = store
        .account(app.app_id, "guest", true, NOW + 60_000)
        .await
        .unwrap()
        .unwrap();
    assert!(again.uuid != temp.uuid && again.uuid != forever.uuid);
    assert_eq!(again.expires_ms, NOW + 120_000);
    // Recreating an expired name before the sweep ran also gives a new account.
    let next = store
        .account(app.app_id, "guest", true, NOW + 120_000)
        .await
        .unwrap()
        .unwrap();
    assert!(next.uuid != again.uuid);
}

const DAY_MS: u64 = 24 * 3600 * 1000;

/// History of a pair is both directions in sequence order, from either side;
/// ranges are `[from, to)`; a blocked message is the sender's only; a topic reads
/// only within the viewer's membership intervals.
pub async fn history_reads_conversations_by_range(store: &dyn Store) {
    let mut batch = vec![
        msg(10, 1, 2, "a"),
        msg(11, 2, 1, "b"),
        msg(12, 1, 3, "c"),
        msg(13, 1, 2, "d"),
    ];
    let mut blocked = msg(14, 2, 1, "e");
    if let Target::User { blocked: b, .. } = &mut blocked.envelope.target {
        *b = true;
    }
    batch.push(blocked);
    store.append(batch).await.unwrap();
    let read = |viewer, from_seq, to_seq, limit, order| HistoryRange {
        conversation: Conversation::Pair(2, 1),
        viewer,
        from_seq,
        to_seq,
        limit,
        order,
    };
    let seqs = |v: Vec<StoredMessage>| v.iter().map(|m| m.seq).collect::<Vec<_>>();
    let all = store
        .history(read(1, 0, u64::MAX, 100, Order::OldestFirst))
        .await
        .unwrap();
    assert_eq!(
        seqs(all),
        vec![10, 11, 13],
        "the blocked one is not user 1's"
    );
    let sender = store
        .history(read(2, 0, u64::MAX, 100, Order::OldestFirst))
        .await
        .unwrap();
    assert_eq!(
        seqs(sender),
        vec![10, 11, 13, 14],
        "the sender sees its own"
    );
    let bounded = store
        .history(read(1, 11, 13, 100, Order::OldestFirst))
        .await
        .unwrap();
    assert_eq!(seqs(bounded), vec![11], "[from, to)");
    let newest = store
        .history(read(1, 0, 14, 2, Order::NewestFirst))
        .await
        .unwrap();
    assert_eq!(seqs(newest), vec![13, 11]);
    assert!(store
        .history(read(1, 13, 13, 100, Order::OldestFirst))
        .await
        .unwrap()
        .is_empty());

    // Topic: member 5 belongs over (20, 30), leaves, and rejoins after 40.
    let topic = store
        .create_topic(1, 4, "t", vec![4, 5], 10, 20)
        .await
        .unwrap();
    let t = topic.topic_id;
    let tmsg = |seq: u64| {
        let mut m = msg(seq, 4, 0, &format!("t{seq}"));
        m.envelope.target = Target::Topic { topic_id: t };
        m
    };
    store
        .append((21..=50).step_by(5).map(tmsg).collect())
        .await
        .unwrap();
    store.remove_members(t, vec![5], 30).await.unwrap();
    store.add_members(t, vec![5], 10, 40).await.unwrap();
    let topic_read = |viewer| HistoryRange {
        conversation: Conversation::Topic(t),
        viewer,
        from_seq: 0,
        to_seq: u64::MAX,
        limit: 100,
        order: Order::OldestFirst,
    };
    let member = store.history(topic_read(5)).await.unwrap();
    assert_eq!(seqs(member), vec![21, 26, 41, 46]);
    let owner = store.history(topic_read(4)).await.unwrap();
    assert_eq!(seqs(owner), vec![21, 26, 31, 36, 41, 46]);
    assert!(store.history(topic_read(9)).await.unwrap().is_empty());
    assert!(store.was_member(5, t).await.unwrap());
    assert!(!store.was_member(9, t).await.unwrap());
}

/// Contacts: both sides of a p2p conversation, newest first, with the last message
/// and the peer's name; topics from their log within the membership; a cleared
/// entry is gone until a newer message; `since` drops old conversations.
pub async fn contacts_follow_the_newest_message(store: &dyn Store) {
    store
        .append(vec![
            msg(10, 1, 2, "a"),
            msg(11, 3, 1, "b"),
            msg(12, 2, 1, "c"),
        ])
        .await
        .unwrap();
    let topic = store
        .create_topic(1, 1, "team", vec![1, 2], 10, 0)
        .await
        .unwrap();
    let mut tm = msg(13, 2, 0, "t");
    tm.envelope.target = Target::Topic {
        topic_id: topic.topic_id,
    };
    store.append(vec![tm]).await.unwrap();
    let peers = |cs: Vec<Contact>| {
        cs.iter()
            .map(|c| (c.peer, c.name.clone(), c.last.seq))
            .collect::<Vec<_>>()
    };
    let mine = store.contacts(1, 0, 100).await.unwrap();
    assert_eq!(
        peers(mine),
        vec![
            (Peer::Topic(topic.topic_id), "team".to_owned(), 13),
            (Peer::User(2), "u2".to_owned(), 12),
            (Peer::User(3), "u3".to_owned(), 11),
        ]
    );
    let two = store.contacts(2, 0, 100).await.unwrap();
    assert_eq!(two[1].peer, Peer::User(1));
    assert_eq!(two[1].name, "u1");
    assert_eq!(
        peers(store.contacts(1, 12, 100).await.unwrap()).len(),
        2,
        "since"
    );
    assert_eq!(
        peers(store.contacts(1, 0, 2).await.unwrap()).len(),
        2,
        "the newest `limit` only"
    );
    store.clear_contact(1, Peer::User(2)).await.unwrap();
    store
        .clear_contact(1, Peer::Topic(topic.topic_id))
        .await
        .unwrap();
    assert_eq!(
        peers(store.contacts(1, 0, 100).await.unwrap()),
        vec![(Peer::User(3), "u3".to_owned(), 11)]
    );
    let mut tm = msg(15, 2, 0, "t2");
    tm.envelope.target = Target::Topic {
        topic_id: topic.topic_id,
    };
    store.append(vec![msg(14, 1, 2, "d"), tm]).await.unwrap();
    assert_eq!(
        peers(store.contacts(1, 0, 100).await.unwrap()),
        vec![
            (Peer::Topic(topic.topic_id), "team".to_owned(), 15),
            (Peer::User(2), "u2".to_owned(), 14),
            (Peer::User(3), "u3".to_owned(), 11),
        ]
    );
}

/// The sweep deletes messages past retention (per-app override first) with their
/// rows, and nothing else.
pub async fn sweep_deletes_what_is_past_its_window(store: &dyn Store) {
    use crate::sequence::floor_at;
    let app = store.create_app("sweep").await.unwrap();
    let short = store.create_app("short").await.unwrap();
    store
        .set_app_settings(
            short.app_id,
            AppSettings {
                history_retention_secs: Some(24 * 3600),
                ..AppSettings::default()
            },
        )
        .await
        .unwrap();
    let at = |days_ago: u64, app_id: u64, packet: &str| {
        let mut m = msg(floor_at(NOW - days_ago * DAY_MS), 1, 2, packet);
        m.envelope.app_id = app_id;
        m
    };
    store
        .append(vec![
            at(200, app.app_id, "ancient"),
            at(10, app.app_id, "old"),
            at(3, short.app_id, "short-old"),
            at(1, app.app_id, "recent"),
        ])
        .await
        .unwrap();
    let plan = SweepPlan {
        now_ms: NOW,
        retention_ms: 180 * DAY_MS,
        batch: 100,
    };
    let report = store.sweep(plan.clone()).await.unwrap();
    assert_eq!(report.messages, 2, "past 180 days, and the 1-day app's");
    assert!(!report.more);
    let pair = HistoryRange {
        conversation: Conversation::Pair(1, 2),
        viewer: 1,
        from_seq: 0,
        to_seq: u64::MAX,
        limit: 100,
        order: Order::OldestFirst,
    };
    let kept: Vec<String> = store
        .history(pair)
        .await
        .unwrap()
        .iter()
        .map(|m| m.envelope.packet_id.clone())
        .collect();
    assert_eq!(kept, vec!["old", "recent"]);
    let timeline: Vec<String> = store
        .timeline(range(2, 0), "phone")
        .await
        .unwrap()
        .iter()
        .map(|m| m.envelope.packet_id.clone())
        .collect();
    assert_eq!(timeline, vec!["old", "recent"]);
    let again = store.sweep(plan).await.unwrap();
    assert_eq!(again.messages, 0);
    // A batch limit stops a pass and says there is more.
    store
        .append(
            (0..5)
                .map(|i| {
                    let mut m = at(300, app.app_id, &format!("b{i}"));
                    m.seq += i;
                    m
                })
                .collect(),
        )
        .await
        .unwrap();
    let limited = store
        .sweep(SweepPlan {
            now_ms: NOW,
            retention_ms: 180 * DAY_MS,
            batch: 3,
        })
        .await
        .unwrap();
    assert_eq!(limited.messages, 3);
    assert!(limited.more);
}

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

/// A user with news in many conversations reads them merged in sequence order,
/// page by page from either end, nothing missing or repeated.
pub async fn pages_merge_many_conversations_in_order(store: &dyn Store) {
    let mut all = Vec::new();
    let mut seq = 100;
    for round in 0..4 {
        let mut batch = Vec::new();
        for peer in 2..=30u64 {
            // Interleaved: every conversation has messages spread over the range.
            let (from, to) = if (peer + round) % 2 == 0 {
                (1, peer)
            } else {
                (peer, 1)
            };
            batch.push(msg(seq, from, to, &format!("p{seq}")));
            all.push(seq);
            seq += 1;
        }
        store.append(batch).await.unwrap();
    }
    for (order, limit) in [
        (Order::OldestFirst, 7),
        (Order::NewestFirst, 5),
        (Order::OldestFirst, 200),
    ] {
        let mut read = Vec::new();
        let (mut after, mut before) = (0, 0);
        loop {
            let page = store
                .timeline(
                    TimelineRange {
                        uuid: 1,
                        after,
                        before,
                        limit,
                        order,
                    },
                    "phone",
                )
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= limit);
            match order {
                Order::OldestFirst => after = page.last().unwrap().seq,
                Order::NewestFirst => before = page.last().unwrap().seq,
            }
            read.extend(page.iter().map(|m| m.seq));
        }
        if order == Order::NewestFirst {
            read.reverse();
        }
        assert_eq!(read, all, "{order:?} in pages of {limit}");
    }
    assert_eq!(
        store.count_after(1, "phone", 0, 1000).await.unwrap(),
        all.len()
    );
}
