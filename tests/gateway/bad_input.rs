//! Bad input gets an Error frame with a code and reason (and a close where the
//! session cannot go on); the server keeps serving everyone else.

use bytes::Bytes;
use courier::auth::{self, Claims};
use courier::client::{Client, ClientError, Event};
use courier::pb::{self, frame::Kind};
use courier::protocol::{codec, codes};

use crate::common::*;

both_transports!(
    garbage_truncated_unknown_and_text_frames_get_errors,
    oversized_frame_closes_oversized_payload_does_not,
    send_before_login_and_second_login_are_refused,
    wrong_expired_and_foreign_tokens_are_refused,
    invalid_sends_are_refused_with_their_packet_id,
    frame_rate_limit_answers_with_an_error,
    topic_send_with_to_resource_is_refused,
);

/// After the abuse, a normal exchange between two other users still works.
async fn still_serving(s: &TestServer) {
    let (mut x, _) = s.connect_synced("xavier", "phone").await;
    let (mut y, _) = s.connect_synced("yolanda", "phone").await;
    let ack = send_acked(&mut x, "ok", "yolanda", "fine").await;
    assert_eq!(next_deliver(&mut y).await.sequence, ack.sequence);
}

async fn garbage_truncated_unknown_and_text_frames_get_errors(t: Transport) {
    let s = TestServer::on(t).await;
    let (mut c, _) = s.connect_synced("mallory", "phone").await;

    c.writer
        .send_raw(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]))
        .await
        .unwrap();
    assert_eq!(next_error(&mut c).await.code, codes::BAD_REQUEST);

    let whole = codec::encode(Kind::Send(pb::Send {
        packet_id: "t".into(),
        to_account: "bob".into(),
        payload: Bytes::from_static(b"truncated payload"),
        ..Default::default()
    }));
    c.writer
        .send_raw(whole.slice(..whole.len() - 4))
        .await
        .unwrap();
    assert_eq!(next_error(&mut c).await.code, codes::BAD_REQUEST);

    // Field number 99 is no frame type of protocol v1.
    c.writer
        .send_raw(Bytes::from_static(&[0x9a, 0x06, 0x00]))
        .await
        .unwrap();
    let e = next_error(&mut c).await;
    assert_eq!(e.code, codes::BAD_REQUEST);
    assert!(e.desc.contains("unknown"), "{}", e.desc);

    if t == Transport::Ws {
        c.writer.send_ws_text("{\"hello\":1}").await.unwrap();
        assert_eq!(next_error(&mut c).await.code, codes::BAD_REQUEST);
    }

    // The session goes on.
    let ack = send_acked(&mut c, "after", "bob", "still works").await;
    assert!(ack.sequence > 0);
    still_serving(&s).await;
}

async fn oversized_frame_closes_oversized_payload_does_not(t: Transport) {
    let s = TestServer::on(t).await;
    let (mut c, _) = s.connect_synced("mallory", "phone").await;
    let big = |n: usize, id: &str| {
        Kind::Send(pb::Send {
            packet_id: id.into(),
            to_account: "bob".into(),
            payload: Bytes::from(vec![0u8; n]),
            ..Default::default()
        })
    };
    c.send_frame(big(15 * 1024 + 1, "too-big")).await.unwrap();
    let e = next_error(&mut c).await;
    assert_eq!(
        (e.code, e.packet_id.as_str()),
        (codes::TOO_LARGE, "too-big")
    );
    send_acked(&mut c, "fits", "bob", "small").await;

    c.send_frame(big(100 * 1024, "huge")).await.unwrap();
    let e = next_error(&mut c).await;
    assert_eq!(e.code, codes::TOO_LARGE);
    assert!(until_closed(&mut c).await.is_none());
    still_serving(&s).await;

    // Nothing of the refused sends was stored.
    let (_b, backlog) = s.connect_synced("bob", "phone").await;
    assert_eq!(packet_ids(&backlog), ["fits"]);
}

async fn send_before_login_and_second_login_are_refused(t: Transport) {
    let s = TestServer::on(t).await;
    let mut c = s.open().await;
    c.send_text("early", "bob", "x").await.unwrap();
    let e = next_error(&mut c).await;
    assert_eq!((e.code, e.packet_id.as_str()), (codes::CONFLICT, "early"));

    let token = s.token("mallory").await;
    c.login(&token, "phone").await.unwrap();
    read_backlog(&mut c).await;
    c.send_frame(Kind::Login(pb::Login {
        protocol_version: 1,
        token: token.clone(),
        resource: "other".into(),
    }))
    .await
    .unwrap();
    assert_eq!(next_error(&mut c).await.code, codes::CONFLICT);
    // Still logged in as before.
    send_acked(&mut c, "later", "bob", "x").await;

    // Nothing sent before login was stored.
    let (_b, backlog) = s.connect_synced("bob", "phone").await;
    assert_eq!(packet_ids(&backlog), ["later"]);
}

async fn wrong_expired_and_foreign_tokens_are_refused(t: Transport) {
    let s = TestServer::on(t).await;
    let refused = |r: Result<Client, ClientError>| match r {
        Err(ClientError::LoginRefused { code, desc }) => (code, desc),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("login should be refused"),
    };

    let (code, desc) = refused(s.try_connect("not-a-token", "phone").await);
    assert_eq!(code, codes::UNAUTHORIZED);
    assert!(desc.contains("malformed"), "{desc}");

    let real = s.token("mallory").await;
    let tampered = format!("{}x", &real[..real.len() - 1]);
    let (code, _) = refused(s.try_connect(&tampered, "phone").await);
    assert_eq!(code, codes::UNAUTHORIZED);

    let app = &s.app;
    let expired = auth::issue(
        &app.app_secret,
        &Claims {
            app_id: app.app_id,
            uuid: 1,
            account: "mallory".into(),
            expires_ms: 1,
        },
    );
    let (code, desc) = refused(s.try_connect(&expired, "phone").await);
    assert_eq!(code, codes::UNAUTHORIZED);
    assert!(desc.contains("expired"), "{desc}");

    // A token of another app (signed with that app's secret) names an unknown app here.
    let foreign = auth::issue(
        "someone else's secret",
        &Claims {
            app_id: app.app_id + 1,
            uuid: 1,
            account: "mallory".into(),
            expires_ms: u64::MAX,
        },
    );
    let (code, _) = refused(s.try_connect(&foreign, "phone").await);
    assert_eq!(code, codes::UNAUTHORIZED);
    // And one claiming this app but signed with another secret.
    let forged = auth::issue(
        "someone else's secret",
        &Claims {
            app_id: app.app_id,
            uuid: 1,
            account: "mallory".into(),
            expires_ms: u64::MAX,
        },
    );
    let (code, desc) = refused(s.try_connect(&forged, "phone").await);
    assert_eq!(code, codes::UNAUTHORIZED);
    assert!(desc.contains("signature"), "{desc}");

    let (code, _) = refused(s.try_connect(&real, "").await);
    assert_eq!(code, codes::BAD_REQUEST);
    still_serving(&s).await;
}

async fn invalid_sends_are_refused_with_their_packet_id(t: Transport) {
    let s = TestServer::on(t).await;
    let (mut c, _) = s.connect_synced("mallory", "phone").await;
    c.send_frame(Kind::Send(pb::Send {
        to_account: "bob".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    assert_eq!(next_error(&mut c).await.code, codes::BAD_REQUEST);
    c.send_frame(Kind::Send(pb::Send {
        packet_id: "nowhere".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    let e = next_error(&mut c).await;
    assert_eq!(
        (e.code, e.packet_id.as_str()),
        (codes::BAD_REQUEST, "nowhere")
    );
    // A server-to-client frame from a client.
    c.send_frame(Kind::Deliver(pb::Deliver::default()))
        .await
        .unwrap();
    assert_eq!(next_error(&mut c).await.code, codes::BAD_REQUEST);
    // Nothing in between was an ack.
    c.writer.ping(9).await.unwrap();
    let ev = wait_for(&mut c, |e| match e {
        Event::Pong(_) | Event::ServerAck(_) => Some(e),
        _ => None,
    })
    .await;
    assert!(matches!(ev, Event::Pong(_)));
}

async fn frame_rate_limit_answers_with_an_error(t: Transport) {
    let s = TestServer::on_with(t, |c| c.max_frames_per_sec = 5).await;
    let (mut c, _) = s.connect_synced("mallory", "phone").await;
    for i in 0..20 {
        c.writer
            .feed(Kind::Ping(pb::Ping { nonce: i }))
            .await
            .unwrap();
    }
    c.writer.flush().await.unwrap();
    let e = next_error(&mut c).await;
    assert_eq!(e.code, codes::RATE_LIMITED);
    still_serving(&s).await;
}

async fn topic_send_with_to_resource_is_refused(t: Transport) {
    let s = TestServer::on(t).await;
    let (mut c, _) = s.connect_synced("mallory", "phone").await;
    c.send_frame(Kind::Send(pb::Send {
        packet_id: "tr".into(),
        topic_id: 5,
        to_resource: "watch".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    let e = next_error(&mut c).await;
    assert_eq!((e.code, e.packet_id.as_str()), (codes::BAD_REQUEST, "tr"));
}

#[tokio::test]
async fn wrong_method_and_unknown_path_get_the_envelope() {
    let s = TestServer::start().await;
    let (status, v) = s
        .call(
            reqwest::Method::GET,
            "/api/account/token",
            &Auth::None,
            None,
        )
        .await;
    assert_eq!((status, v["code"].as_u64()), (405, Some(405)));
    let (status, v) = s
        .call(reqwest::Method::GET, "/api/nothing/here", &Auth::None, None)
        .await;
    assert_eq!((status, v["code"].as_u64()), (404, Some(404)));
}

/// Text messages count against the frame rate limit like any frame.
#[tokio::test]
async fn text_messages_are_rate_limited_too() {
    let s = TestServer::start_with(|c| c.max_frames_per_sec = 3).await;
    let mut c = courier::client::Client::open(&s.ws()).await.unwrap();
    for _ in 0..10 {
        c.writer.send_ws_text("hi").await.unwrap();
    }
    let mut codes_seen = Vec::new();
    while codes_seen.len() < 4 {
        codes_seen.push(next_error(&mut c).await.code);
    }
    assert_eq!(
        codes_seen,
        [
            codes::BAD_REQUEST,
            codes::BAD_REQUEST,
            codes::BAD_REQUEST,
            codes::RATE_LIMITED
        ]
    );
}
