//! Conformance checks of history, recent contacts, temporary accounts, the sweep
//! and merged paging (issue 9's store calls).

use super::{msg, range, NOW};
use crate::message::Target;
use crate::store::{
    AppSettings, Contact, Conversation, HistoryRange, Order, Peer, Store, StoredMessage, SweepPlan,
    TimelineRange,
};

const DAY_MS: u64 = 24 * 3600 * 1000;

/// Accounts created while an app has a lifetime expire after it: lookups stop
/// finding them, a new account takes the name (new uuid), and the sweep reports the
/// expired ones once, then deletes their data and memberships.
pub(super) async fn temporary_accounts_expire_and_are_swept(store: &dyn Store) {
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

/// History of a pair is both directions in sequence order, from either side;
/// ranges are `[from, to)`; a blocked message is the sender's only; a topic reads
/// only within the viewer's membership intervals.
pub(super) async fn history_reads_conversations_by_range(store: &dyn Store) {
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
pub(super) async fn contacts_follow_the_newest_message(store: &dyn Store) {
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
pub(super) async fn sweep_deletes_what_is_past_its_window(store: &dyn Store) {
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

/// A user with news in many conversations reads them merged in sequence order,
/// page by page from either end, nothing missing or repeated.
pub(super) async fn pages_merge_many_conversations_in_order(store: &dyn Store) {
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
