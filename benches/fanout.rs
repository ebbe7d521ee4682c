//! Fan-out: one encoded delivery frame queued on N online devices in process, the
//! way the router delivers a topic message (per member: hub lookup, then a `Bytes`
//! clone into each device's bounded queue; no per-device encoding or allocation).

use std::time::{Duration, Instant};

use bytes::Bytes;
use courier::hub::{Audience, DeviceHandle, DeviceQueue, Hub, Outbound};
use courier::pb::{self, frame::Kind};
use courier::protocol::codec;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    for n in [500usize, 10_000] {
        let hub = Hub::new();
        let mut queues = Vec::with_capacity(n);
        for uuid in 0..n as u64 {
            // The byte budget is never reached here; its accounting is still paid.
            let queue = DeviceQueue::new(4096, usize::MAX);
            let device = DeviceHandle::new(uuid, "phone".into(), queue.clone());
            hub.register(uuid, device).expect("no device limit");
            queues.push(queue);
        }
        let members: Vec<u64> = (0..n as u64).collect();
        let frame = codec::encode(Kind::Deliver(pb::Deliver {
            sequence: 1,
            topic_id: 7,
            from_account: "sender".into(),
            payload: Bytes::from(vec![b'x'; 100]),
            ..Default::default()
        }));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("deliver_to_{n}_devices"), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let out = Outbound {
                        seq: 1,
                        frame: frame.clone(),
                    };
                    let start = Instant::now();
                    let mut delivered = 0;
                    for &uuid in &members {
                        delivered += hub.deliver(uuid, Audience::default(), &out);
                    }
                    timed += start.elapsed();
                    assert_eq!(delivered, n);
                    // Drain outside the timed part, as connection tasks would.
                    for q in &queues {
                        q.try_take();
                    }
                }
                timed
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
