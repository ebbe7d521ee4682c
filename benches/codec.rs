//! Frame codec: encoding a delivery once, decoding a Send, and the session's whole
//! per-frame path (decode + limits + state checks).

use bytes::Bytes;
use courier::pb::{self, frame::Kind};
use courier::protocol::codec::{self, Limits};
use courier::protocol::session::{Identity, Session, SessionConfig};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn deliver(payload: usize) -> Kind {
    Kind::Deliver(pb::Deliver {
        sequence: 245_632_339_369_984,
        timestamp: 1_795_658_432_854,
        packet_id: "TEXT_12345".into(),
        from_uuid: 42,
        from_account: "13800000001".into(),
        from_resource: "android".into(),
        to_account: "13800000002".into(),
        payload: Bytes::from(vec![b'x'; payload]),
        biz_type: "TEXT".into(),
        ..Default::default()
    })
}

fn send_bytes(payload: usize) -> Bytes {
    codec::encode(Kind::Send(pb::Send {
        packet_id: "TEXT_12345".into(),
        to_account: "13800000002".into(),
        payload: Bytes::from(vec![b'x'; payload]),
        biz_type: "TEXT".into(),
        ..Default::default()
    }))
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    for payload in [100usize, 4096] {
        let kind = deliver(payload);
        g.bench_function(format!("encode_deliver_{payload}B"), |b| {
            b.iter(|| codec::encode(std::hint::black_box(kind.clone())))
        });
        let bytes = send_bytes(payload);
        let limits = Limits::default();
        g.bench_function(format!("decode_send_{payload}B"), |b| {
            b.iter(|| codec::decode(std::hint::black_box(&bytes), &limits))
        });
        let mut session = Session::new(
            SessionConfig {
                max_frames_per_sec: 0,
                ..SessionConfig::default()
            },
            0,
        );
        session.login_succeeded(Identity {
            app_id: 1,
            uuid: 2,
            account: "a".into(),
            resource: "r".into(),
        });
        g.bench_function(format!("session_on_send_{payload}B"), |b| {
            b.iter(|| session.on_frame(std::hint::black_box(&bytes), 1))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
