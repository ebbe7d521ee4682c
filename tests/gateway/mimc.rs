//! MIMC web clients at `/mimc` (docs/mimc-compat.md), driven by the Rust MIMC client
//! written from mimc-wire.md: login, p2p both ways, topics, push, the backlog with
//! no redelivery, PULL, kicks, logout, refused BINDs, bad frames, chat with Courier
//! clients, and `kill -9` of the real binary.

use bytes::Bytes;
use courier::client::mimc::{MimcClient, MimcEvent, MimcMessage};
use courier::client::{fetch_token, ClientError, TokenData};
use courier::mimc::{frame, ims, pb};
use prost::Message;
use reqwest::Method;
use serde_json::json;

use crate::common::*;

fn mimc_url(base_http: &str) -> String {
    format!("{}/mimc", base_http.replacen("http", "ws", 1))
}

/// Opens a MIMC connection without the handshake.
async fn open(s: &TestServer, token: &TokenData, resource: &str) -> MimcClient {
    MimcClient::open_with(&mimc_url(&s.http()), &s.options(), token, resource)
        .await
        .unwrap()
}

/// CONN and BIND as the SDK does; panics if refused.
async fn login(s: &TestServer, account: &str, resource: &str) -> MimcClient {
    let token = s.token_data(account).await;
    let mut c = open(s, &token, resource).await;
    let challenge = c.conn().await.unwrap();
    c.bind(&challenge).await.unwrap();
    c
}

async fn next_mimc(c: &mut MimcClient) -> Option<MimcEvent> {
    tokio::time::timeout(WAIT, c.next_event())
        .await
        .expect("timed out waiting for a MIMC event")
        .unwrap()
}

async fn next_ack(c: &mut MimcClient) -> pb::MimcPacketAck {
    loop {
        match next_mimc(c).await {
            Some(MimcEvent::PacketAck(a)) => return a,
            Some(_) => continue,
            None => panic!("closed while waiting for a PACKET_ACK"),
        }
    }
}

async fn next_messages(c: &mut MimcClient) -> Vec<MimcMessage> {
    loop {
        match next_mimc(c).await {
            Some(MimcEvent::Messages { messages, .. }) => return messages,
            Some(_) => continue,
            None => panic!("closed while waiting for messages"),
        }
    }
}

/// Everything that arrives until the server answers a PING: what a PULL or a
/// login pushed comes before it.
async fn messages_until_pong(c: &mut MimcClient) -> Vec<MimcMessage> {
    c.writer().ping().await.unwrap();
    let mut got = Vec::new();
    loop {
        match next_mimc(c).await {
            Some(MimcEvent::Messages {
                messages,
                min_sequence,
                max_sequence,
            }) => {
                assert!(messages.len() <= 100, "COMPOUNDs of at most 100");
                assert!(messages.windows(2).all(|w| w[0].sequence < w[1].sequence));
                assert_eq!(min_sequence, messages[0].sequence);
                assert_eq!(max_sequence, messages.last().unwrap().sequence);
                got.extend(messages);
            }
            Some(MimcEvent::Ping) => return got,
            Some(_) => {}
            None => panic!("closed while waiting for the PING answer"),
        }
    }
}

async fn until_mimc_closed(c: &mut MimcClient) -> Vec<MimcEvent> {
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, c.next_event())
            .await
            .expect("timed out waiting for the close")
        {
            Ok(Some(event)) => seen.push(event),
            Ok(None) | Err(_) => return seen,
        }
    }
}

fn texts(messages: &[MimcMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect()
}

#[tokio::test]
async fn login_p2p_both_ways_and_ping() {
    let s = TestServer::start().await;
    let mut alice = login(&s, "alice", "webA").await;
    let mut bob = login(&s, "bob", "webB").await;

    alice
        .writer()
        .send_p2p("web1", "bob", &b"Hello B"[..])
        .await
        .unwrap();
    let ack = next_ack(&mut alice).await;
    assert_eq!(ack.packet_id(), "web1");
    assert!(ack.sequence() > 0 && ack.timestamp() > 0);
    assert_eq!((ack.code(), ack.error_msg()), (200, ""));
    let got = next_messages(&mut bob).await;
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(texts(&got), ["Hello B"]);
    assert_eq!((m.packet_id.as_str(), m.sequence), ("web1", ack.sequence()));
    assert_eq!(
        (
            m.from_account.as_str(),
            m.from_resource.as_str(),
            m.to_account.as_str()
        ),
        ("alice", "webA", "bob")
    );
    assert!(m.is_store && m.topic_id.is_none());

    bob.writer()
        .send_p2p("web2", "alice", "你好 A".as_bytes().to_vec())
        .await
        .unwrap();
    let back = next_ack(&mut bob).await;
    let got = next_messages(&mut alice).await;
    assert_eq!(texts(&got), ["你好 A"]);
    assert_eq!(got[0].sequence, back.sequence());
    assert!(back.sequence() > ack.sequence());

    // PING is answered with a PING.
    assert!(messages_until_pong(&mut alice).await.is_empty());
}

#[tokio::test]
async fn mimc_and_courier_users_share_one_timeline() {
    let s = TestServer::start().await;
    let mut alice_web = login(&s, "alice", "webA").await;
    let (mut alice_phone, _) = s.connect_synced("alice", "phone").await;
    let (mut bob, _) = s.connect_synced("bob", "phone").await;

    alice_web
        .writer()
        .send_p2p("m1", "bob", &b"from the web"[..])
        .await
        .unwrap();
    let ack = next_ack(&mut alice_web).await;
    let d = next_deliver(&mut bob).await;
    assert_eq!(text(&d), "from the web");
    assert_eq!(
        (d.sequence as i64, d.from_resource.as_str()),
        (ack.sequence(), "webA")
    );
    // Alice's other device (Courier) sees her own send.
    assert_eq!(next_deliver(&mut alice_phone).await.sequence, d.sequence);

    let reply = send_acked(&mut bob, "c1", "alice", "from the app").await;
    let got = next_messages(&mut alice_web).await;
    assert_eq!(texts(&got), ["from the app"]);
    assert_eq!(got[0].sequence as u64, reply.sequence);
    assert_eq!(got[0].from_account, "bob");
    assert_eq!(
        next_deliver(&mut alice_phone).await.sequence,
        reply.sequence
    );

    // Alice's Courier device sends: her web session gets the copy, as a p2p
    // message to bob.
    let mine = send_acked(&mut alice_phone, "c2", "bob", "from my phone").await;
    let got = next_messages(&mut alice_web).await;
    assert_eq!(got[0].sequence as u64, mine.sequence);
    assert_eq!(
        (got[0].from_resource.as_str(), got[0].to_account.as_str()),
        ("phone", "bob")
    );

    // The push API reaches a MIMC client as an ordinary P2P message.
    let (status, v) = s
        .call(
            Method::POST,
            "/api/push/p2p/",
            &Auth::None,
            Some(json!({
                "appId": s.app.app_id, "appKey": s.app.app_key, "appSecret": s.app.app_secret,
                "fromAccount": "server-bot", "fromResource": "backend",
                "toAccount": "alice", "msg": "pushed", "msgType": "",
            })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let got = next_messages(&mut alice_web).await;
    assert_eq!(texts(&got), ["pushed"]);
    assert_eq!(
        (got[0].from_account.as_str(), got[0].from_resource.as_str()),
        ("server-bot", "backend")
    );
}

#[tokio::test]
async fn topic_messages_reach_mimc_and_courier_members() {
    let s = TestServer::start().await;
    let (status, v) = s
        .call(
            Method::POST,
            &format!("/api/topic/{}", s.app.app_id),
            &Auth::App("alice".into()),
            Some(json!({"topicName": "team", "accounts": "alice,bob,carol"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let topic_id = v["data"]["topicInfo"]["topicId"].as_u64().unwrap();
    let mut alice = login(&s, "alice", "webA").await;
    let mut bob = login(&s, "bob", "webB").await;
    let (mut carol, _) = s.connect_synced("carol", "phone").await;

    alice
        .writer()
        .send_p2t("t1", topic_id, &b"hi team"[..])
        .await
        .unwrap();
    let ack = next_ack(&mut alice).await;
    assert_eq!(ack.code(), 200, "{}", ack.error_msg());
    let got = next_messages(&mut bob).await;
    assert_eq!(texts(&got), ["hi team"]);
    assert_eq!(
        (got[0].topic_id, got[0].sequence),
        (Some(topic_id), ack.sequence())
    );
    assert_eq!(got[0].from_account, "alice");
    let d = next_deliver(&mut carol).await;
    assert_eq!((d.topic_id, text(&d).as_str()), (topic_id, "hi team"));

    // Not a member: refused in the ack, with the reason in errorMsg.
    let mut dave = login(&s, "dave", "webD").await;
    dave.writer()
        .send_p2t("t2", topic_id, &b"let me in"[..])
        .await
        .unwrap();
    let refused = next_ack(&mut dave).await;
    assert_eq!((refused.code(), refused.sequence()), (403, 0));
    assert!(!refused.error_msg().is_empty());
}

#[tokio::test]
async fn the_backlog_is_pushed_after_bind_in_pages_and_acked_messages_do_not_come_again() {
    let s = TestServer::start_with(|c| {
        c.backlog_limit = 1000;
        c.backlog_batch = 250;
    })
    .await;
    let (mut alice, _) = s.connect_synced("alice", "phone").await;
    let mut expected = Vec::new();
    for i in 0..230 {
        expected.push(
            send_acked(&mut alice, &format!("b{i}"), "bob", &format!("m{i}"))
                .await
                .sequence as i64,
        );
    }
    // Offline: everything comes after BIND, in COMPOUNDs of at most 100, sorted.
    let mut bob = login(&s, "bob", "webB").await;
    let got = messages_until_pong(&mut bob).await;
    assert_eq!(got.iter().map(|m| m.sequence).collect::<Vec<_>>(), expected);

    // Logged out after acking: only what came since arrives at the next BIND.
    bob.writer().logout().await.unwrap();
    until_mimc_closed(&mut bob).await;
    let later = send_acked(&mut alice, "late", "bob", "later").await;
    let mut bob = login(&s, "bob", "webB").await;
    let got = messages_until_pong(&mut bob).await;
    assert_eq!(texts(&got), ["later"]);
    assert_eq!(got[0].sequence as u64, later.sequence);
}

#[tokio::test]
async fn pull_pushes_what_was_not_acked_again() {
    let s = TestServer::start().await;
    let (mut alice, _) = s.connect_synced("alice", "phone").await;
    for i in 0..3 {
        send_acked(&mut alice, &format!("p{i}"), "bob", &format!("m{i}")).await;
    }
    let mut bob = login(&s, "bob", "webB").await;
    bob.auto_ack = false;
    let first = messages_until_pong(&mut bob).await;
    assert_eq!(texts(&first), ["m0", "m1", "m2"]);
    bob.writer().pull().await.unwrap();
    let again = messages_until_pong(&mut bob).await;
    assert_eq!(again, first, "not acked: PULL pushes them again");
    // A second PULL within a second is ignored (each re-reads the backlog).
    bob.writer().pull().await.unwrap();
    assert!(messages_until_pong(&mut bob).await.is_empty());
    let clock = &s.server.as_ref().unwrap().state.clock;
    clock.advance(std::time::Duration::from_secs(2));
    // Out-of-order acks: the larger one wins.
    bob.writer().ack(first[2].sequence).await.unwrap();
    bob.writer().ack(first[0].sequence).await.unwrap();
    bob.writer().pull().await.unwrap();
    assert!(messages_until_pong(&mut bob).await.is_empty());
    // Unacked again after a later message: the next PULL brings only that one.
    let later = send_acked(&mut alice, "p8", "bob", "later").await;
    assert_eq!(
        next_messages(&mut bob).await[0].sequence as u64,
        later.sequence
    );
    clock.advance(std::time::Duration::from_secs(2));
    bob.writer().pull().await.unwrap();
    assert_eq!(texts(&messages_until_pong(&mut bob).await), ["later"]);
    bob.writer().ack(later.sequence as i64).await.unwrap();
    // An ack beyond every sequence assigned is clamped: a message sent next arrives.
    bob.writer().ack(i64::MAX).await.unwrap();
    let next = send_acked(&mut alice, "p9", "bob", "after").await;
    let got = next_messages(&mut bob).await;
    assert_eq!(got[0].sequence as u64, next.sequence);
}

#[tokio::test]
async fn a_second_bind_of_the_same_resource_kicks_the_first() {
    let s = TestServer::start().await;
    let mut first = login(&s, "bob", "webB").await;
    let _second = login(&s, "bob", "webB").await;
    let seen = until_mimc_closed(&mut first).await;
    match seen.last() {
        Some(MimcEvent::Kick(k)) => {
            assert_eq!(
                (k.error_type(), k.error_reason()),
                ("kick", "single-resource-kick")
            )
        }
        other => panic!("expected a KICK, got {other:?}"),
    }
}

#[tokio::test]
async fn logout_answers_with_a_kick_and_later_messages_wait_offline() {
    let s = TestServer::start().await;
    let mut bob = login(&s, "bob", "webB").await;
    bob.writer().logout().await.unwrap();
    let seen = until_mimc_closed(&mut bob).await;
    match seen.last() {
        Some(MimcEvent::Kick(k)) => assert_eq!(k.error_reason(), "logout"),
        other => panic!("expected a KICK, got {other:?}"),
    }
    let (mut alice, _) = s.connect_synced("alice", "phone").await;
    send_acked(&mut alice, "x", "bob", "while away").await;
    let mut bob = login(&s, "bob", "webB").await;
    assert_eq!(texts(&messages_until_pong(&mut bob).await), ["while away"]);
}

async fn bind_refusal(c: &mut MimcClient, id: &str, sig: &str) -> (String, String) {
    match c.bind_with(id, sig).await {
        Err(ClientError::BindRefused {
            error_type, reason, ..
        }) => {
            assert!(
                until_mimc_closed(c).await.is_empty(),
                "closed after the refusal"
            );
            (error_type, reason)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn binds_with_a_bad_signature_a_foreign_token_or_an_expired_token_are_refused() {
    let s = TestServer::start_with(|c| c.token_ttl_secs = 60).await;
    let token = s.token_data("bob").await;

    // A signature made with the wrong key.
    let mut c = open(&s, &token, "webB").await;
    c.conn().await.unwrap();
    let refused = bind_refusal(&mut c, "web1", "xcMQImaOQr/I3nCL/qkVLj0vhQI=").await;
    assert_eq!(refused, ("auth".into(), "invalid-sig".into()));

    // A BIND signed for another connection's challenge.
    let mut c = open(&s, &token, "webB").await;
    let _ = c.conn().await.unwrap();
    let mut other = open(&s, &token, "webB").await;
    let stolen = other.conn().await.unwrap();
    let refused = match c.bind(&stolen).await {
        Err(ClientError::BindRefused { reason, .. }) => reason,
        r => panic!("{r:?}"),
    };
    assert_eq!(refused, "invalid-sig");

    // Alice's token presented with bob's uuid in the header.
    let alice = s.token_data("alice").await;
    let forged = TokenData {
        token: alice.token.clone(),
        ..s.token_data("bob").await
    };
    let mut c = open(&s, &forged, "webB").await;
    let challenge = c.conn().await.unwrap();
    match c.bind(&challenge).await {
        Err(ClientError::BindRefused { reason, .. }) => assert_eq!(reason, "invalid-token"),
        r => panic!("{r:?}"),
    }

    // Expired: token-expired, which the native SDKs answer with a new token.
    s.server
        .as_ref()
        .unwrap()
        .state
        .clock
        .advance(std::time::Duration::from_secs(61));
    let mut c = open(&s, &token, "webB").await;
    let challenge = c.conn().await.unwrap();
    match c.bind(&challenge).await {
        Err(ClientError::BindRefused {
            error_type, reason, ..
        }) => assert_eq!(
            (error_type.as_str(), reason.as_str()),
            ("token-expired", "token-expired")
        ),
        r => panic!("{r:?}"),
    }
    // A fresh token works.
    login(&s, "bob", "webB").await;
}

/// A frame with this header and payload, as bytes to corrupt.
fn raw_frame(cmd: &str, id: &str, payload: &[u8]) -> Vec<u8> {
    let header = ims::ClientHeader {
        server: Some("xiaomi.com".into()),
        cmd: Some(cmd.into()),
        id: Some(id.into()),
        ..Default::default()
    };
    frame::encode(&header.encode_to_vec(), payload).to_vec()
}

#[tokio::test]
async fn bad_frames_close_the_connection_and_store_nothing() {
    let s = TestServer::start().await;
    let token = s.token_data("mallory").await;
    let conn = raw_frame("CONN", "web1", &[]);
    let secmsg = {
        let msg = pb::Mimcp2pMessage {
            to: Some(pb::MimcUser {
                app_account: Some("bob".into()),
                ..Default::default()
            }),
            payload: Some(Bytes::from_static(b"sneaky")),
            ..Default::default()
        };
        let packet = pb::MimcPacket {
            packet_id: Some("p1".into()),
            r#type: Some(pb::MimcMsgType::P2pMessage as i32),
            payload: Some(msg.encode_to_vec().into()),
            ..Default::default()
        };
        raw_frame("SECMSG", "p1", &packet.encode_to_vec())
    };
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut bad_magic = conn.clone();
    bad_magic[0] = 0xC3;
    cases.push(("bad magic", bad_magic));
    let mut bad_sum = conn.clone();
    *bad_sum.last_mut().unwrap() ^= 1;
    cases.push(("checksum", bad_sum));
    let mut long = conn.clone();
    long[10..14].copy_from_slice(&(u32::MAX).to_be_bytes());
    cases.push(("payload length beyond the frame", long));
    let mut header_len = conn.clone();
    header_len[8..10].copy_from_slice(&2000u16.to_be_bytes());
    cases.push(("header over the limit", header_len));
    cases.push(("truncated", conn[..10].to_vec()));
    cases.push(("SECMSG before BIND", secmsg.clone()));
    cases.push((
        "garbage protobuf in CONN",
        raw_frame("CONN", "web1", &[0xff, 0xff, 0xff]),
    ));
    for (what, bytes) in cases {
        let mut c = open(&s, &token, "webM").await;
        c.writer().send_raw(Bytes::from(bytes)).await.unwrap();
        assert!(
            until_mimc_closed(&mut c).await.is_empty(),
            "{what}: closed, no answer"
        );
    }
    // A text message.
    let mut c = open(&s, &token, "webM").await;
    c.writer().send_ws_text("CONN").await.unwrap();
    assert!(until_mimc_closed(&mut c).await.is_empty(), "text: closed");
    // Garbage in a SECMSG after BIND.
    let mut c = login(&s, "mallory", "webM").await;
    c.writer()
        .send_raw(Bytes::from(raw_frame("SECMSG", "p2", &[0x0a, 0xff])))
        .await
        .unwrap();
    assert!(
        until_mimc_closed(&mut c).await.is_empty(),
        "garbage SECMSG: closed"
    );

    // Nothing reached bob.
    let (_, backlog) = s.connect_synced("bob", "phone").await;
    assert!(backlog.is_empty(), "{backlog:?}");
}

#[tokio::test]
async fn a_second_bind_and_a_replayed_send_are_answered_without_harm() {
    let s = TestServer::start().await;
    let mut alice = login(&s, "alice", "webA").await;
    let mut bob = login(&s, "bob", "webB").await;
    // A second BIND on a bound connection: refused, the session goes on.
    match alice.bind_with("web9", "sig").await {
        Err(ClientError::BindRefused { reason, .. }) => assert_eq!(reason, "already-bound"),
        r => panic!("{r:?}"),
    }
    // The same SECMSG twice (same header id and packetId): one message, two acks
    // with the same sequence.
    alice
        .writer()
        .send_p2p("dup", "bob", &b"once"[..])
        .await
        .unwrap();
    alice
        .writer()
        .send_p2p("dup", "bob", &b"once"[..])
        .await
        .unwrap();
    let (a, b) = (next_ack(&mut alice).await, next_ack(&mut alice).await);
    assert_eq!(a.sequence(), b.sequence());
    assert_eq!(texts(&next_messages(&mut bob).await), ["once"]);
    assert!(messages_until_pong(&mut bob).await.is_empty());
    // Unknown packet types and commands are ignored.
    let odd = pb::MimcPacket {
        r#type: Some(pb::MimcMsgType::RtsSignal as i32),
        ..Default::default()
    };
    alice.writer().send_packet(odd).await.unwrap();
    assert!(messages_until_pong(&mut alice).await.is_empty());
}

#[tokio::test]
async fn acked_messages_of_a_mimc_client_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(["app", "create", "--name", "mimc", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let app: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (app_id, key, secret) = (
        app["appId"].as_u64().unwrap(),
        app["appKey"].as_str().unwrap().to_owned(),
        app["appSecret"].as_str().unwrap().to_owned(),
    );
    let gw = Binary::start(dir.path(), &["--backlog-limit", "10000"]);
    let token = fetch_token(&gw.http, app_id, &key, &secret, "alice")
        .await
        .unwrap();
    let mut a = MimcClient::connect(&mimc_url(&gw.http), &token, "webA")
        .await
        .unwrap();
    let n = 500;
    for i in 0..n {
        let id = format!("k{i}");
        a.writer()
            .send_p2p(&id, "bob", id.clone().into_bytes())
            .await
            .unwrap();
    }
    let mut acked = Vec::new();
    while acked.len() < n / 2 {
        let ack = next_ack(&mut a).await;
        assert_eq!(ack.code(), 200);
        acked.push(ack.sequence());
    }
    gw.kill9();
    while let Ok(Ok(Some(event))) =
        tokio::time::timeout(std::time::Duration::from_secs(5), a.next_event()).await
    {
        if let MimcEvent::PacketAck(ack) = event {
            acked.push(ack.sequence());
        }
    }

    let gw = Binary::start(dir.path(), &["--backlog-limit", "10000"]);
    let token = fetch_token(&gw.http, app_id, &key, &secret, "bob")
        .await
        .unwrap();
    let mut bob = MimcClient::connect(&mimc_url(&gw.http), &token, "webB")
        .await
        .unwrap();
    let got: Vec<i64> = messages_until_pong(&mut bob)
        .await
        .iter()
        .map(|m| m.sequence)
        .collect();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(got, sorted, "in order, once each");
    for seq in &acked {
        assert!(got.contains(seq), "acked {seq} lost");
    }
}
