//! History and recent-contacts reads on the embedded store at the issue 9 scale:
//! a store holding 10,000,000 messages, one conversation of 1,000,000 of them, and
//! a user with 1,000 p2p conversations and 200 topics.
//!
//! `cargo bench --bench history` (the first run builds the store in
//! `target/bench-data/`, about 2 GB and a few minutes; later runs reuse it).
//! Under `cargo test` it runs once on a 20,000-message store as a check.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use courier::message::{Envelope, Sequenced, Target};
use courier::sequence::floor_at;
use courier::store::sqlite::{SqliteOptions, SqliteStore};
use courier::store::{Conversation, HistoryRange, HistoryStore, MessageStore, Order, TopicStore};
use criterion::{criterion_group, criterion_main, Criterion};

/// Messages in the store, and every how many one belongs to the big conversation.
fn scale() -> (u64, u64) {
    if std::env::args().any(|a| a == "--bench") {
        (10_000_000, 10)
    } else {
        (20_000, 10)
    }
}

const ANN: u64 = 1;
const BEN: u64 = 2;
/// The user with 1,000 conversations and 200 topics.
const CY: u64 = 3;
const OTHERS: u64 = 10_000;

fn message(seq: u64, from: u64, to: u64) -> Sequenced {
    Sequenced {
        seq,
        ts: courier::sequence::time_of(seq),
        envelope: Envelope {
            app_id: 1,
            from_uuid: from,
            from_account: format!("user-{from}"),
            from_resource: "phone".into(),
            packet_id: format!("p{seq}"),
            target: Target::User {
                uuid: to,
                account: format!("user-{to}"),
                resource: None,
                blocked: false,
            },
            biz_type: "TEXT".into(),
            payload: bytes::Bytes::from(vec![b'x'; 100]),
        },
    }
}

/// Builds the store once (or reuses it); returns it and the first sequence used.
fn store(rt: &tokio::runtime::Runtime) -> (Arc<SqliteStore>, u64) {
    let (total, every) = scale();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/bench-data")
        .join(format!("history-{total}"));
    let done = dir.join("complete");
    // Recent enough for the contacts window: one hour ago.
    let base_file = dir.join("base");
    if !done.exists() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("bench dir");
        let now = courier::time::now_ms();
        let base = floor_at(now - 3_600_000);
        std::fs::write(&base_file, base.to_string()).expect("base");
        let store = SqliteStore::open(&dir, SqliteOptions::default()).expect("open");
        rt.block_on(async {
            let mut seq = base;
            let mut rng = 0x9e37_79b9_7f4a_7c15u64;
            let batch = 20_000;
            let mut written = 0;
            while written < total {
                let mut messages = Vec::with_capacity(batch);
                for i in 0..batch as u64 {
                    let n = written + i;
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let m = if n % every == 0 {
                        if n % (2 * every) == 0 {
                            message(seq, ANN, BEN)
                        } else {
                            message(seq, BEN, ANN)
                        }
                    } else {
                        let from = 100 + rng % OTHERS;
                        message(seq, from, 100 + (from + 1 + rng % 7) % OTHERS)
                    };
                    messages.push(m);
                    seq += 1;
                }
                store.append(messages).await.expect("append");
                written += batch as u64;
            }
            // Cy: 1,000 conversations and 200 topics, each with a message.
            let mut messages = Vec::new();
            for peer in 0..1_000 {
                messages.push(message(seq, CY, 1_000_000 + peer));
                seq += 1;
            }
            store.append(messages).await.expect("append");
            for t in 0..200 {
                let topic = store
                    .create_topic(1, CY, &format!("topic-{t}"), vec![CY, ANN], 10, base)
                    .await
                    .expect("topic");
                let mut m = message(seq, ANN, 0);
                m.envelope.target = Target::Topic {
                    topic_id: topic.topic_id,
                };
                seq += 1;
                store.append(vec![m]).await.expect("append");
            }
        });
        store.close();
        std::fs::write(&done, "").expect("marker");
    }
    let base: u64 = std::fs::read_to_string(&base_file)
        .expect("base")
        .parse()
        .expect("base");
    let store = SqliteStore::open(&dir, SqliteOptions::default()).expect("open");
    (Arc::new(store), base)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (store, base) = store(&rt);
    let (total, _) = scale();
    let mut g = c.benchmark_group("history");
    g.measurement_time(Duration::from_secs(5));
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut position = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        base + rng % total
    };
    let range = |from_seq, to_seq, limit, order| HistoryRange {
        conversation: Conversation::Pair(ANN, BEN),
        viewer: ANN,
        from_seq,
        to_seq,
        limit,
        order,
    };
    // What queryOnCount reads for count = 20: the 21 newest before a point.
    g.bench_function("p2p_by_count_20_in_1M_of_10M", |b| {
        b.iter(|| {
            let r = range(0, position(), 21, Order::NewestFirst);
            rt.block_on(store.history(r)).expect("history")
        })
    });
    // What queryOnSequence reads for a span holding ~100 of the conversation's
    // messages (every 10th sequence is theirs).
    g.bench_function("p2p_by_sequence_100_in_1M_of_10M", |b| {
        b.iter(|| {
            let start = position();
            let r = range(start, start + 1_000, 1_000, Order::OldestFirst);
            rt.block_on(store.history(r)).expect("history")
        })
    });
    // What GET /api/contact/ reads: 1,000 users and 200 topics.
    g.bench_function("contacts_1000_users_200_topics", |b| {
        b.iter(|| {
            let found = rt.block_on(store.contacts(CY, 0, 2_000)).expect("contacts");
            assert_eq!(found.len(), 1_200);
            found
        })
    });
    g.finish();
    store.close();
}

criterion_group!(benches, bench);
criterion_main!(benches);
