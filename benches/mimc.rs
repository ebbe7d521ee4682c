//! The MIMC web codec's per-message work on the server: RC4 of one SECMSG payload,
//! a delivery turned into a COMPOUND frame (one message per COMPOUND, the live
//! worst case), a ServerAck turned into a PACKET_ACK, and a client's p2p SECMSG turned
//! into the core's Send. The Courier protocol's equivalents are in `codec`.

use bytes::Bytes;
use courier::auth::{self, Claims};
use courier::mimc::session::{FromPeer, MimcSession};
use courier::mimc::{crypto, frame, ims, pb};
use courier::pb::{self as courier_pb, frame::Kind};
use courier::protocol::codec;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use prost::Message;

const SECRET: &str = "secret";
const UUID: u64 = 42;

fn client_frame(cmd: &str, id: &str, payload: &[u8]) -> Bytes {
    let header = ims::ClientHeader {
        chid: Some(9),
        uuid: Some(UUID as i64),
        server: Some("xiaomi.com".into()),
        resource: Some("a3f1c2d4e5b6a7980a1b2c3d4e5f6a7b".into()),
        cmd: Some(cmd.into()),
        id: Some(id.into()),
        ..Default::default()
    };
    frame::encode(&header.encode_to_vec(), payload)
}

/// A session through CONN and BIND, bound.
fn bound() -> MimcSession {
    let limits = frame::FrameLimits {
        max_header_bytes: 1024,
        max_payload_bytes: 64 * 1024,
    };
    let mut s = MimcSession::new(limits, 1, 2);
    let FromPeer::Answer(answer) = s.on_message(&client_frame("CONN", "web1", &[]), 0) else {
        panic!("CONN answered");
    };
    let f = frame::decode(&answer, limits).unwrap();
    let challenge = ims::XmMsgConnResp::decode(f.payload.as_ref())
        .unwrap()
        .challenge()
        .to_owned();
    let token = auth::issue(
        SECRET,
        &Claims {
            app_id: 1,
            uuid: UUID,
            account: "ann".into(),
            expires_ms: u64::MAX,
        },
    );
    let key = auth::user_security_key(SECRET, UUID);
    let sig = crypto::bind_signature(&crypto::BindSigned {
        challenge: &challenge,
        chid: 9,
        client_attrs: "",
        cloud_attrs: "",
        uuid: UUID,
        resource: "a3f1c2d4e5b6a7980a1b2c3d4e5f6a7b",
        header_id: "web2",
        kick: "",
        token: &token,
        security_key_b64: &key,
    });
    let bind = ims::XmMsgBind {
        token: Some(token),
        kick: Some(String::new()),
        method: Some("XIAOMI-PASS".into()),
        sig: Some(sig),
        ..Default::default()
    };
    s.on_message(&client_frame("BIND", "web2", &bind.encode_to_vec()), 0);
    let app = courier::store::App {
        app_id: 1,
        name: "default".into(),
        app_key: "key".into(),
        app_secret: SECRET.into(),
        created_ms: 0,
        previous_secret: None,
        previous_secret_until_ms: 0,
    };
    assert!(matches!(
        s.bind_checked(Ok(Some(&app)), 0),
        FromPeer::Core(_)
    ));
    let ok = courier_pb::LoginResult {
        code: 200,
        account: "ann".into(),
        ..Default::default()
    };
    s.to_peer(&codec::encode(Kind::LoginResult(ok)), &mut Vec::new());
    assert!(s.is_bound());
    s
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("mimc");
    g.throughput(Throughput::Elements(1));
    let mut data = vec![0u8; 200];
    let key = [7u8; 19];
    g.bench_function("rc4_200B", |b| {
        b.iter(|| crypto::rc4_split(&key, b"s1a2b3c4d5e6f7.123", &mut data))
    });
    let mut s = bound();
    let deliver = codec::encode(Kind::Deliver(courier_pb::Deliver {
        sequence: 245_632_339_369_984,
        timestamp: 1_795_658_432_854,
        packet_id: "web17956953887130".into(),
        from_uuid: 7,
        from_account: "13800000001".into(),
        from_resource: "a3f1c2d4e5b6a7980a1b2c3d4e5f6a7b".into(),
        to_account: "13800000002".into(),
        payload: Bytes::from(vec![b'x'; 100]),
        ..Default::default()
    }));
    let mut out = Vec::with_capacity(4);
    g.bench_function("deliver_to_compound_100B", |b| {
        b.iter(|| {
            out.clear();
            s.to_peer(&deliver, &mut out);
            s.flush(&mut out);
        })
    });
    let ack = codec::encode(Kind::ServerAck(courier_pb::ServerAck {
        packet_id: "web17956953887130".into(),
        sequence: 245_632_339_369_984,
        timestamp: 1_795_658_432_854,
        code: 200,
        ..Default::default()
    }));
    g.bench_function("server_ack_to_packet_ack", |b| {
        b.iter(|| {
            out.clear();
            s.to_peer(&ack, &mut out);
        })
    });
    let msg = pb::Mimcp2pMessage {
        from: Some(pb::MimcUser {
            app_id: Some(1),
            app_account: Some("13800000001".into()),
            uuid: Some(UUID),
            resource: Some("a3f1c2d4e5b6a7980a1b2c3d4e5f6a7b".into()),
        }),
        to: Some(pb::MimcUser {
            app_id: Some(1),
            app_account: Some("13800000002".into()),
            ..Default::default()
        }),
        payload: Some(Bytes::from(vec![b'x'; 100])),
        is_store: Some(true),
        biz_type: Some(String::new()),
    };
    let packet = pb::MimcPacket {
        packet_id: Some("web17956953887130".into()),
        package: Some("default".into()),
        r#type: Some(pb::MimcMsgType::P2pMessage as i32),
        payload: Some(msg.encode_to_vec().into()),
        ..Default::default()
    };
    let send = client_frame("SECMSG", "web17956953887130", &packet.encode_to_vec());
    g.bench_function("secmsg_send_to_request_100B", |b| {
        b.iter(|| s.on_message(&send, 0))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
