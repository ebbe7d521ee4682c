//! Embedded store append throughput: one group commit (transaction + fsync) per
//! batch of p2p messages, each with its dedup entry and two timeline rows.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use courier::message::{Envelope, Target};
use courier::store::sqlite::{SqliteOptions, SqliteStore};
use courier::store::{MessageStore, NewMessage};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn batch(next: &AtomicU64, n: usize, users: u64) -> Vec<NewMessage> {
    (0..n)
        .map(|_| {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let from = i % users;
            NewMessage {
                seq: i + 1,
                ts: 1_795_658_432_854,
                envelope: Envelope {
                    app_id: 1,
                    from_uuid: from,
                    from_account: format!("user-{from}"),
                    from_resource: "phone".into(),
                    packet_id: format!("p-{i}"),
                    target: Target::User {
                        uuid: (from + 1) % users,
                        account: format!("user-{}", (from + 1) % users),
                        resource: None,
                        blocked: false,
                    },
                    biz_type: "TEXT".into(),
                    payload: Bytes::from(vec![b'x'; 100]),
                },
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("store");
    let next = AtomicU64::new(0);
    let mut g = c.benchmark_group("store_append");
    for size in [1usize, 100, 1000] {
        g.throughput(Throughput::Elements(size as u64));
        g.bench_function(format!("batch_{size}_users_1000"), |b| {
            b.to_async(&rt).iter_batched(
                || batch(&next, size, 1000),
                |msgs| async { store.append(msgs).await.expect("append") },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
