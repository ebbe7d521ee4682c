//! The MIMC codec without a socket: the handshake with a real token and signature,
//! refusals, the translation of SECMSG packets into core requests, and of core
//! frames into COMPOUNDs, PACKET_ACKs, pull notifications and KICKs; and a small
//! fuzz of every phase.

use bytes::Bytes;
use prost::Message;

use super::*;
use crate::auth::{self, Claims};
use crate::mimc::outbound::MAX_COMPOUND_PACKETS;
use crate::protocol::{codec, KickReason, Status};

const LIMITS: FrameLimits = FrameLimits {
    max_header_bytes: 1024,
    max_payload_bytes: 64 * 1024,
};
const SECRET: &str = "app-secret";
const APP: u64 = 2882303761517;
const UUID: u64 = 42;

fn token() -> String {
    token_of(SECRET, u64::MAX)
}

fn token_of(secret: &str, expires_ms: u64) -> String {
    auth::issue(
        secret,
        &Claims {
            app_id: APP,
            uuid: UUID,
            account: "ann".into(),
            expires_ms,
        },
    )
}

/// The app, with `previous` the secret before a rotation whose grace ends at `until`.
fn app_of(secret: &str, previous: Option<&str>, until: u64) -> crate::store::App {
    crate::store::App {
        app_id: APP,
        name: "default".into(),
        app_key: "key".into(),
        app_secret: secret.into(),
        created_ms: 0,
        previous_secret: previous.map(str::to_owned),
        previous_secret_until_ms: until,
    }
}

fn app() -> crate::store::App {
    app_of(SECRET, None, 0)
}

fn client_frame(cmd: &str, id: &str, uuid: u64, payload: &[u8]) -> Bytes {
    let header = ims::ClientHeader {
        chid: Some(9),
        uuid: Some(uuid as i64),
        server: Some("xiaomi.com".into()),
        resource: Some("webA".into()),
        cmd: Some(cmd.into()),
        id: Some(id.into()),
        ..Default::default()
    };
    frame::encode(&header.encode_to_vec(), payload)
}

/// Decodes a server frame: (header, payload decrypted when SECMSG).
fn read(frame: &Bytes) -> (ims::ClientHeader, Vec<u8>) {
    let f = frame::decode(frame, LIMITS).unwrap();
    let header = ims::ClientHeader::decode(f.header.as_ref()).unwrap();
    let mut payload = f.payload.to_vec();
    if header.cmd() == "SECMSG" {
        let key_b64 = auth::user_security_key(SECRET, UUID);
        let key = crypto::payload_key(&key_b64, header.id()).unwrap();
        crypto::rc4(&key, &mut payload);
    }
    (header, payload)
}

fn packet(frame: &Bytes) -> pb::MimcPacket {
    let (header, payload) = read(frame);
    assert_eq!(header.cmd(), "SECMSG");
    pb::MimcPacket::decode(payload.as_slice()).unwrap()
}

fn sign(challenge: &str, id: &str, key_secret: &str, token: &str) -> String {
    let key = auth::user_security_key(key_secret, UUID);
    crypto::bind_signature(&crypto::BindSigned {
        challenge,
        chid: 9,
        client_attrs: "",
        cloud_attrs: "",
        uuid: UUID,
        resource: "webA",
        header_id: id,
        kick: "",
        token,
        security_key_b64: &key,
    })
}

fn bind_frame(challenge: &str, key_secret: &str) -> Bytes {
    bind_frame_with(challenge, key_secret, &token())
}

fn bind_frame_with(challenge: &str, key_secret: &str, token: &str) -> Bytes {
    let bind = ims::XmMsgBind {
        token: Some(token.to_owned()),
        kick: Some(String::new()),
        method: Some("XIAOMI-PASS".into()),
        sig: Some(sign(challenge, "web2", key_secret, token)),
        ..Default::default()
    };
    client_frame("BIND", "web2", UUID, &bind.encode_to_vec())
}

/// CONN; returns the challenge.
fn conn(s: &mut MimcSession) -> String {
    let conn = ims::XmMsgConn {
        version: Some(106),
        udid: Some("websocket".into()),
        sdk: Some(31),
        ..Default::default()
    };
    let FromPeer::Answer(answer) =
        s.on_message(&client_frame("CONN", "web1", 0, &conn.encode_to_vec()), 0)
    else {
        panic!("CONN is answered");
    };
    let (header, payload) = read(&answer);
    assert_eq!((header.cmd(), header.id()), ("CONN", "web1"));
    let resp = ims::XmMsgConnResp::decode(payload.as_slice()).unwrap();
    let challenge = resp.challenge().to_owned();
    assert_eq!(challenge.len(), 24);
    challenge
}

/// A session through CONN and a good BIND, the core's login accepted.
fn bound() -> MimcSession {
    let mut s = MimcSession::new(LIMITS, 0x1234_5678_9abc_def0_1122_3344_5566_7788, 7);
    let challenge = conn(&mut s);
    assert_eq!(
        s.on_message(&bind_frame(&challenge, SECRET), 0),
        FromPeer::CheckBind { app_id: APP }
    );
    match s.bind_checked(Ok(Some(&app())), 0) {
        FromPeer::Core(Inbound::Request(kind)) => match *kind {
            Kind::Login(l) => assert_eq!((l.token, l.resource.as_str()), (token(), "webA")),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    let mut out = Vec::new();
    let ok = courier::LoginResult {
        code: 200,
        account: "ann".into(),
        uuid: UUID,
        app_id: APP,
        ..Default::default()
    };
    s.to_peer(&codec::encode(Kind::LoginResult(ok)), &mut out);
    let (header, payload) = read(&out[0]);
    assert_eq!(header.cmd(), "BIND");
    assert!(ims::XmMsgBindResp::decode(payload.as_slice())
        .unwrap()
        .result());
    assert!(s.is_bound());
    s
}

fn core_kind(step: FromPeer) -> Kind {
    match step {
        FromPeer::Core(Inbound::Request(kind)) => *kind,
        other => panic!("{other:?}"),
    }
}

fn secmsg(kind: pb::MimcMsgType, payload: Vec<u8>) -> Bytes {
    let packet = pb::MimcPacket {
        packet_id: Some("web77".into()),
        r#type: Some(kind as i32),
        payload: Some(payload.into()),
        ..Default::default()
    };
    client_frame("SECMSG", "web77", UUID, &packet.encode_to_vec())
}

#[test]
fn a_signed_bind_becomes_a_core_login_and_a_bad_one_is_refused() {
    bound();
    // Signed with a key of another secret: refused, closed with 1008.
    let refusal = |bind: Bytes, app: Result<Option<&crate::store::App>, ()>, now: u64| {
        let mut s = MimcSession::new(LIMITS, 1, 2);
        let challenge = conn(&mut s);
        let _ = challenge;
        s.on_message(&bind, 0);
        match s.bind_checked(app, now) {
            FromPeer::Close(close) => {
                assert_eq!(close.code, 1008);
                assert!(s.refused());
                let (_, payload) = read(&close.last.unwrap());
                let r = ims::XmMsgBindResp::decode(payload.as_slice()).unwrap();
                assert!(!r.result());
                (r.error_type().to_owned(), r.error_reason().to_owned())
            }
            other => panic!("{other:?}"),
        }
    };
    let with_challenge = |key_secret: &str, token: &str| {
        let mut s = MimcSession::new(LIMITS, 1, 2);
        bind_frame_with(&conn(&mut s), key_secret, token)
    };
    assert_eq!(
        refusal(
            with_challenge("other-secret", &token()),
            Ok(Some(&app())),
            0
        ),
        ("auth".to_owned(), "invalid-sig".to_owned())
    );
    // A token expired, of another app's secret, of no app; a store failure.
    let expiring = token_of(SECRET, 1_000);
    assert_eq!(
        refusal(with_challenge(SECRET, &expiring), Ok(Some(&app())), 1_000).1,
        "token-expired"
    );
    let foreign = token_of("other-secret", u64::MAX);
    assert_eq!(
        refusal(
            with_challenge("other-secret", &foreign),
            Ok(Some(&app())),
            0
        )
        .1,
        "invalid-token"
    );
    assert_eq!(
        refusal(with_challenge(SECRET, &token()), Ok(None), 0).1,
        "invalid-token"
    );
    assert_eq!(
        refusal(with_challenge(SECRET, &token()), Err(()), 0).1,
        "internal-error"
    );

    // After a rotation, a token of the previous secret (within its grace) binds with
    // that secret's user key, and only with it.
    let rotated = app_of("new-secret", Some("old-secret"), 2_000);
    let old_token = token_of("old-secret", 1_500);
    let mut s = MimcSession::new(LIMITS, 3, 4);
    let challenge = conn(&mut s);
    s.on_message(&bind_frame_with(&challenge, "old-secret", &old_token), 0);
    assert!(matches!(
        s.bind_checked(Ok(Some(&rotated)), 500),
        FromPeer::Core(_)
    ));
    assert_eq!(
        refusal(
            with_challenge("new-secret", &old_token),
            Ok(Some(&rotated)),
            500
        )
        .1,
        "invalid-sig"
    );
    // A header uuid that is not the token's: refused before any lookup.
    let mut s = MimcSession::new(LIMITS, 5, 6);
    conn(&mut s);
    let bind = ims::XmMsgBind {
        token: Some(token()),
        ..Default::default()
    };
    assert!(matches!(
        s.on_message(
            &client_frame("BIND", "web2", UUID + 1, &bind.encode_to_vec()),
            0
        ),
        FromPeer::Close(Close { code: 1008, .. })
    ));
}

#[test]
fn core_refusals_carry_the_strings_the_sdks_act_on() {
    let cases = [
        (
            Status::Unauthorized,
            "token expired",
            ("token-expired", "token-expired"),
        ),
        (
            Status::Unauthorized,
            "token signature is invalid",
            ("auth", "invalid-token"),
        ),
        (
            Status::RateLimited,
            "too many devices",
            ("bind", "too-many-devices"),
        ),
        (
            Status::BadRequest,
            "resource is empty",
            ("bind", "invalid-resource"),
        ),
    ];
    for (status, desc, want) in cases {
        let mut s = MimcSession::new(LIMITS, 1, 2);
        let challenge = conn(&mut s);
        s.on_message(&bind_frame(&challenge, SECRET), 0);
        s.bind_checked(Ok(Some(&app())), 0);
        let refusal = courier::LoginResult {
            code: status.code(),
            desc: desc.into(),
            ..Default::default()
        };
        let mut out = Vec::new();
        s.to_peer(&codec::encode(Kind::LoginResult(refusal)), &mut out);
        let (_, payload) = read(&out[0]);
        let r = ims::XmMsgBindResp::decode(payload.as_slice()).unwrap();
        assert_eq!((r.error_type(), r.error_reason()), want);
        assert_eq!(r.error_desc(), desc);
        assert!(s.refused() && !s.is_bound());
    }
}

#[test]
fn secmsg_packets_become_core_requests() {
    let mut s = bound();
    let p2p = pb::Mimcp2pMessage {
        to: Some(pb::MimcUser {
            app_account: Some("bob".into()),
            ..Default::default()
        }),
        payload: Some(Bytes::from_static(b"hi")),
        biz_type: Some("text".into()),
        ..Default::default()
    };
    match core_kind(s.on_message(&secmsg(pb::MimcMsgType::P2pMessage, p2p.encode_to_vec()), 0)) {
        Kind::Send(send) => {
            assert_eq!(
                (send.packet_id.as_str(), send.to_account.as_str()),
                ("web77", "bob")
            );
            assert_eq!(
                (&send.payload[..], send.biz_type.as_str()),
                (&b"hi"[..], "text")
            );
            assert_eq!(send.is_store, Some(true), "isStore defaults to true");
        }
        other => panic!("{other:?}"),
    }
    let p2t = pb::Mimcp2tMessage {
        to: Some(pb::MimcGroup {
            topic_id: Some(99),
            ..Default::default()
        }),
        is_store: Some(false),
        ..Default::default()
    };
    match core_kind(s.on_message(&secmsg(pb::MimcMsgType::P2tMessage, p2t.encode_to_vec()), 0)) {
        Kind::Send(send) => assert_eq!((send.topic_id, send.is_store), (99, Some(false))),
        other => panic!("{other:?}"),
    }
    let ack = pb::MimcSequenceAck {
        sequence: Some(12345),
        ..Default::default()
    };
    match core_kind(s.on_message(
        &secmsg(pb::MimcMsgType::SequenceAck, ack.encode_to_vec()),
        0,
    )) {
        Kind::Ack(a) => assert_eq!(a.sequence, 12345),
        other => panic!("{other:?}"),
    }
    let negative = pb::MimcSequenceAck {
        sequence: Some(-5),
        ..Default::default()
    };
    match core_kind(s.on_message(
        &secmsg(pb::MimcMsgType::SequenceAck, negative.encode_to_vec()),
        0,
    )) {
        Kind::Ack(a) => assert_eq!(a.sequence, 0),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        s.on_message(&secmsg(pb::MimcMsgType::Pull, Vec::new()), 5_000),
        FromPeer::Core(Inbound::Resync)
    );
    // One PULL per second: the next within it is ignored.
    let pull = secmsg(pb::MimcMsgType::Pull, Vec::new());
    assert_eq!(s.on_message(&pull, 5_900), FromPeer::Nothing);
    assert_eq!(s.on_message(&pull, 6_000), FromPeer::Core(Inbound::Resync));
    assert_eq!(
        s.on_message(&secmsg(pb::MimcMsgType::UcPacket, Vec::new()), 0),
        FromPeer::Nothing
    );
    // An inner message that does not decode: refused in a PACKET_ACK.
    match s.on_message(&secmsg(pb::MimcMsgType::P2pMessage, vec![0x0a, 0xff]), 0) {
        FromPeer::Answer(frame) => {
            let p = packet(&frame);
            let ack = pb::MimcPacketAck::decode(p.payload()).unwrap();
            assert_eq!(
                (ack.packet_id(), ack.code(), ack.sequence()),
                ("web77", 400, 0)
            );
            assert!(!ack.error_msg().is_empty());
        }
        other => panic!("{other:?}"),
    }
    // PING goes to the core; UBND writes a KICK and logs out.
    assert!(matches!(
        core_kind(s.on_message(&client_frame("PING", "p", UUID, &[]), 0)),
        Kind::Ping(_)
    ));
    match s.on_message(&client_frame("UBND", "u", UUID, &[]), 0) {
        FromPeer::Logout { kick, logout } => {
            let (header, payload) = read(&kick);
            assert_eq!(header.cmd(), "KICK");
            assert_eq!(
                ims::XmMsgBindResp::decode(payload.as_slice())
                    .unwrap()
                    .error_reason(),
                "logout"
            );
            assert!(matches!(core_kind(FromPeer::Core(logout)), Kind::Logout(_)));
        }
        other => panic!("{other:?}"),
    }
}

fn deliver(sequence: u64, topic_id: u64) -> Bytes {
    codec::encode(Kind::Deliver(courier::Deliver {
        sequence,
        timestamp: 1_700_000_000_000,
        packet_id: format!("p{sequence}"),
        from_uuid: 7,
        from_account: "bob".into(),
        from_resource: "phone".into(),
        to_account: "ann".into(),
        topic_id,
        payload: Bytes::from_static(b"hello"),
        ..Default::default()
    }))
}

fn list(frame: &Bytes) -> pb::MimcPacketList {
    let p = packet(frame);
    assert_eq!(p.r#type(), pb::MimcMsgType::Compound);
    pb::MimcPacketList::decode(p.payload()).unwrap()
}

#[test]
fn deliveries_leave_as_sorted_compounds_for_this_connection() {
    let mut s = bound();
    let mut out = Vec::new();
    s.to_peer(&deliver(30, 0), &mut out);
    s.to_peer(&deliver(20, 5), &mut out);
    assert!(out.is_empty(), "gathered until the flush");
    s.flush(&mut out);
    assert_eq!(out.len(), 1);
    let l = list(&out[0]);
    assert_eq!((l.uuid(), l.resource()), (UUID, "webA"));
    assert_eq!((l.min_sequence(), l.max_sequence()), (20, 30));
    assert_eq!(l.status, None, "absent means normal");
    let seqs: Vec<_> = l.packets.iter().map(|p| p.sequence()).collect();
    assert_eq!(seqs, [20, 30]);
    let topic = &l.packets[0];
    assert_eq!(topic.r#type(), pb::MimcMsgType::P2tMessage);
    let m = pb::Mimcp2tMessage::decode(topic.payload()).unwrap();
    assert_eq!(m.to.unwrap().topic_id(), 5);
    let p2p = &l.packets[1];
    assert_eq!(
        (p2p.r#type(), p2p.packet_id(), p2p.timestamp()),
        (pb::MimcMsgType::P2pMessage, "p30", 1_700_000_000_000)
    );
    let m = pb::Mimcp2pMessage::decode(p2p.payload()).unwrap();
    let from = m.from.unwrap();
    assert_eq!(
        (
            from.app_account(),
            from.resource(),
            from.uuid(),
            from.app_id()
        ),
        ("bob", "phone", 7, APP)
    );
    assert_eq!(
        (m.to.unwrap().app_account(), &m.payload.unwrap()[..]),
        ("ann", &b"hello"[..])
    );

    // A full COMPOUND leaves at once; a batch is cut into COMPOUNDs of 100.
    let mut out = Vec::new();
    for seq in 1..=MAX_COMPOUND_PACKETS as u64 + 1 {
        s.to_peer(&deliver(seq, 0), &mut out);
    }
    assert_eq!(out.len(), 1);
    s.flush(&mut out);
    assert_eq!(list(&out[1]).packets.len(), 1);
    let batch = courier::DeliverBatch {
        messages: (1..=250)
            .map(|sequence| courier::Deliver {
                sequence,
                ..Default::default()
            })
            .collect(),
    };
    let mut out = Vec::new();
    s.to_peer(&codec::encode(Kind::DeliverBatch(batch)), &mut out);
    let sizes: Vec<_> = out.iter().map(|f| list(f).packets.len()).collect();
    assert_eq!(sizes, [100, 100, 50]);
    // Every frame has its own header id (RC4 keystreams never repeat).
    let mut ids: Vec<_> = out.iter().map(|f| read(f).0.id().to_owned()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3);
}

#[test]
fn acks_errors_notices_and_kicks_have_their_mimc_form() {
    let mut s = bound();
    let mut out = Vec::new();
    let ack = courier::ServerAck {
        packet_id: "web5".into(),
        sequence: 88,
        timestamp: 99,
        code: 200,
        ..Default::default()
    };
    s.to_peer(&codec::encode(Kind::ServerAck(ack)), &mut out);
    s.to_peer(
        &codec::error_frame(Status::Forbidden, "not a member", "web6"),
        &mut out,
    );
    s.to_peer(
        &codec::error_frame(Status::RateLimited, "frames dropped", ""),
        &mut out,
    );
    s.to_peer(
        &codec::encode(Kind::SyncDone(courier::SyncDone { count: 3 })),
        &mut out,
    );
    assert_eq!(
        out.len(),
        2,
        "an error with no packet id and SyncDone have no MIMC form"
    );
    let ok = pb::MimcPacketAck::decode(packet(&out[0]).payload()).unwrap();
    // Written field by field: the bytes prost writes for the same packet.
    let expected = pb::MimcPacket {
        packet_id: Some("web5".into()),
        r#type: Some(pb::MimcMsgType::PacketAck as i32),
        payload: Some(
            pb::MimcPacketAck {
                packet_id: Some("web5".into()),
                uuid: Some(UUID),
                resource: Some("webA".into()),
                sequence: Some(88),
                timestamp: Some(99),
                code: Some(200),
                ..Default::default()
            }
            .encode_to_vec()
            .into(),
        ),
        ..Default::default()
    };
    assert_eq!(read(&out[0]).1, expected.encode_to_vec());
    let refused = pb::MimcPacketAck::decode(packet(&out[1]).payload()).unwrap();
    let expected_refusal = pb::MimcPacketAck {
        packet_id: Some("web6".into()),
        uuid: Some(UUID),
        resource: Some("webA".into()),
        sequence: Some(0),
        timestamp: Some(0),
        error_msg: Some("not a member".into()),
        code: Some(Status::Forbidden.code() as i32),
        ..Default::default()
    };
    assert_eq!(refused, expected_refusal);
    assert_eq!(
        (
            ok.packet_id(),
            ok.sequence(),
            ok.timestamp(),
            ok.code(),
            ok.error_msg()
        ),
        ("web5", 88, 99, 200, "")
    );
    assert_eq!((ok.uuid(), ok.resource()), (UUID, "webA"));
    let refused = pb::MimcPacketAck::decode(packet(&out[1]).payload()).unwrap();
    assert_eq!(
        (
            refused.packet_id(),
            refused.sequence(),
            refused.code(),
            refused.error_msg()
        ),
        ("web6", 0, 403, "not a member")
    );

    let mut out = Vec::new();
    let notice = courier::PullNotice {
        after_sequence: 10,
        before_sequence: 50,
    };
    s.to_peer(&codec::encode(Kind::PullNotice(notice)), &mut out);
    let l = list(&out[0]);
    assert_eq!(l.status(), pb::MimcPushStatus::StatusExceedCountLimit);
    assert_eq!(
        (l.min_sequence(), l.max_sequence(), l.packets.len()),
        (11, 49, 0)
    );

    let mut out = Vec::new();
    s.to_peer(
        &codec::encode(Kind::Pong(courier::Pong::default())),
        &mut out,
    );
    s.to_peer(&codec::kick_frame(KickReason::Replaced), &mut out);
    assert_eq!(read(&out[0]).0.cmd(), "PING");
    let (header, payload) = read(&out[1]);
    assert_eq!(header.cmd(), "KICK");
    let k = ims::XmMsgBindResp::decode(payload.as_slice()).unwrap();
    assert_eq!(
        (k.error_type(), k.error_reason()),
        ("kick", "single-resource-kick")
    );
}

#[test]
fn order_violations_close_and_a_second_bind_is_answered() {
    let secmsg_frame = secmsg(pb::MimcMsgType::Pull, Vec::new());
    let mut s = MimcSession::new(LIMITS, 1, 2);
    assert!(matches!(
        s.on_message(&secmsg_frame, 0),
        FromPeer::Close(Close { code: 1002, .. })
    ));
    assert_eq!(
        s.on_message(&secmsg_frame, 0),
        FromPeer::Nothing,
        "closed: nothing more"
    );
    let mut s = MimcSession::new(LIMITS, 1, 2);
    assert!(
        matches!(
            s.on_message(&bind_frame("x", SECRET), 0),
            FromPeer::Close(_)
        ),
        "BIND before CONN"
    );
    let mut s = MimcSession::new(LIMITS, 1, 2);
    conn(&mut s);
    assert!(matches!(
        s.on_message(&client_frame("CONN", "again", 0, &[]), 0),
        FromPeer::Close(_)
    ));
    let mut s = bound();
    match s.on_message(&bind_frame("x", SECRET), 0) {
        FromPeer::Answer(frame) => {
            let (_, payload) = read(&frame);
            assert_eq!(
                ims::XmMsgBindResp::decode(payload.as_slice())
                    .unwrap()
                    .error_reason(),
                "already-bound"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(s.is_bound());
}

#[test]
fn any_bytes_in_any_phase_are_handled_without_a_panic() {
    let mut x: u32 = 0x9e37_79b9;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    let p2p = pb::Mimcp2pMessage::default().encode_to_vec();
    let samples = [
        client_frame("CONN", "web1", 0, &[]),
        bind_frame("0123", SECRET),
        secmsg(pb::MimcMsgType::P2pMessage, p2p),
        client_frame("UBND", "u", UUID, &[]),
    ];
    for round in 0..4_000 {
        let mut s = if round % 2 == 0 {
            bound()
        } else {
            MimcSession::new(LIMITS, 1, 2)
        };
        let mut bytes = samples[round % samples.len()].to_vec();
        for _ in 0..3 {
            let r = next();
            let at = r as usize % bytes.len();
            bytes[at] = (r >> 8) as u8;
        }
        // Re-checksum half of them so the mutation reaches the protobuf parsers.
        if round % 4 < 2 && bytes.len() >= 18 {
            let end = bytes.len() - 4;
            let sum = frame::adler32(&bytes[..end]).to_be_bytes();
            bytes[end..].copy_from_slice(&sum);
        }
        let _ = s.on_message(&Bytes::from(bytes), 0);
    }
}
