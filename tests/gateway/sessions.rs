//! Session lifecycle: single-resource kick, slow consumers, timeouts, logout.

use bytes::Bytes;
use courier::client::Event;
use courier::pb::{self, frame::Kind};
use courier::protocol::codes;

use crate::common::*;

both_transports!(
    second_login_of_same_resource_kicks_the_first,
    slow_consumer_is_kicked_and_resyncs_without_loss,
    idle_connection_is_closed,
    idle_timeout_shorter_than_the_login_timeout_is_kept,
    connection_that_never_logs_in_is_closed,
    logout_takes_the_device_offline,
    ping_gets_pong,
    graceful_shutdown_kicks_and_keeps_messages,
);

async fn second_login_of_same_resource_kicks_the_first(t: Transport) {
    let s = TestServer::on(t).await;
    let (mut old, _) = s.connect_synced("bob", "phone").await;
    let (mut new, _) = s.connect_synced("bob", "phone").await;
    let kick = until_closed(&mut old)
        .await
        .expect("old session gets a Kick");
    assert_eq!(kick.code, codes::KICK_REPLACED);

    // The new session keeps working; another resource is not affected.
    let (mut pad, _) = s.connect_synced("bob", "pad").await;
    let (mut a, _) = s.connect_synced("alice", "phone").await;
    let ack = send_acked(&mut a, "k1", "bob", "still here?").await;
    assert_eq!(next_deliver(&mut new).await.sequence, ack.sequence);
    assert_eq!(next_deliver(&mut pad).await.sequence, ack.sequence);
}

/// A device that stops reading is kicked when its queue fills; it reconnects and
/// gets every stored message from its cursor, in order, none lost.
async fn slow_consumer_is_kicked_and_resyncs_without_loss(t: Transport) {
    let s = TestServer::on_with(t, |c| {
        c.device_queue_frames = 128;
        c.max_inflight_sends = 64;
        c.backlog_limit = 5000;
        c.backlog_batch = 200;
    })
    .await;
    let (mut slow, _) = s.connect_synced("bob", "phone").await;
    let (mut a, _) = s.connect_synced("alice", "phone").await;
    let payload = Bytes::from(vec![b'x'; 8 * 1024]);
    let total = 3000;
    let window = 100;
    // Alice sends in windows of 100 (her acks fit her queue); bob does not read.
    let mut acked = Vec::new();
    for w in 0..total / window {
        for i in 0..window {
            a.writer
                .feed(Kind::Send(pb::Send {
                    packet_id: format!("s{w}-{i}"),
                    to_account: "bob".into(),
                    payload: payload.clone(),
                    ..Default::default()
                }))
                .await
                .unwrap();
        }
        a.writer.flush().await.unwrap();
        while acked.len() < (w + 1) * window {
            if let Some(Event::ServerAck(ack)) = next(&mut a).await {
                assert_eq!(ack.code, 200);
                acked.push(ack.sequence);
            }
        }
    }

    // Bob reads what was written before the kick, then the connection ends.
    let mut got_live = Vec::new();
    let mut kick = None;
    loop {
        match tokio::time::timeout(WAIT, slow.next_event())
            .await
            .expect("slow close")
        {
            Ok(Some(Event::Deliver(d))) => got_live.push(d.sequence),
            Ok(Some(Event::Kick(k))) => kick = Some(k),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    assert!(
        got_live.len() < total,
        "bob was cut off before everything arrived"
    );
    if let Some(k) = kick {
        assert_eq!(k.code, codes::KICK_SLOW_CONSUMER);
    }

    // Resync: everything after the (never advanced) cursor, in order.
    let (_bob, backlog) = s.connect_synced("bob", "phone").await;
    let seqs = sequences(&backlog);
    assert_eq!(seqs, acked);
}

async fn idle_connection_is_closed(t: Transport) {
    let s = TestServer::on_with(t, |c| c.idle_timeout_secs = 1).await;
    let (mut b, _) = s.connect_synced("bob", "phone").await;
    let kick = until_closed(&mut b).await.expect("idle kick");
    assert_eq!(kick.code, codes::KICK_IDLE);
}

/// The idle timeout applies from login even when it is shorter than the login
/// timeout (it used to wait for the login deadline).
async fn idle_timeout_shorter_than_the_login_timeout_is_kept(t: Transport) {
    let s = TestServer::on_with(t, |c| {
        c.idle_timeout_secs = 1;
        c.login_timeout_secs = 60; // beyond WAIT: a kick at the login deadline fails the test
    })
    .await;
    let (mut b, _) = s.connect_synced("bob", "phone").await;
    let kick = until_closed(&mut b).await.expect("idle kick");
    assert_eq!(kick.code, codes::KICK_IDLE);
}

async fn connection_that_never_logs_in_is_closed(t: Transport) {
    let s = TestServer::on_with(t, |c| c.login_timeout_secs = 1).await;
    let mut c = s.open().await;
    let kick = until_closed(&mut c).await;
    match t {
        Transport::Ws => assert_eq!(kick.expect("kick").code, codes::KICK_LOGIN_TIMEOUT),
        // A QUIC stream the client never wrote to does not exist for the server
        // yet: the connection is closed (code NO_SESSION_STREAM) with no frame.
        Transport::Quic => assert!(kick.is_none()),
    }
    // A QUIC stream with a partial Login gets the login-timeout kick like WebSocket.
    if t == Transport::Quic {
        let mut c = s.open().await;
        c.writer
            .send_unframed(bytes::Bytes::from_static(&[0, 0, 0, 9, 0x0a]))
            .await
            .unwrap();
        let kick = until_closed(&mut c).await.expect("kick");
        assert_eq!(kick.code, codes::KICK_LOGIN_TIMEOUT);
    }
}

async fn logout_takes_the_device_offline(t: Transport) {
    let s = TestServer::on(t).await;
    let (mut b, _) = s.connect_synced("bob", "phone").await;
    b.writer.logout().await.unwrap();
    assert!(until_closed(&mut b).await.is_none());
    let (mut a, _) = s.connect_synced("alice", "phone").await;
    let ack = a
        .send_frame(Kind::Send(pb::Send {
            packet_id: "o".into(),
            to_account: "bob".into(),
            online_only: true,
            ..Default::default()
        }))
        .await;
    ack.unwrap();
    assert!(
        !next_ack(&mut a).await.delivered,
        "bob is offline after logout"
    );
}

async fn ping_gets_pong(t: Transport) {
    let s = TestServer::on(t).await;
    let (mut b, _) = s.connect_synced("bob", "phone").await;
    b.writer.ping(42).await.unwrap();
    let pong = wait_for(&mut b, |e| match e {
        Event::Pong(p) => Some(p),
        _ => None,
    })
    .await;
    assert_eq!(pong.nonce, 42);
}

/// Shutdown kicks sessions with a reason and acked messages survive it.
async fn graceful_shutdown_kicks_and_keeps_messages(t: Transport) {
    let mut s = TestServer::on(t).await;
    // Node 0 is shut down: its devices are the ones kicked.
    s.pin();
    let (mut a, _) = s.connect_synced("alice", "phone").await;
    let ack = send_acked(&mut a, "before-stop", "bob", "kept").await;
    let shutdown = tokio::spawn({
        let server = s.server.take().unwrap();
        async move { server.shutdown().await }
    });
    let kick = until_closed(&mut a).await.expect("shutdown kick");
    assert_eq!(kick.code, codes::KICK_SHUTDOWN);
    shutdown.await.unwrap().unwrap();

    let server = courier::server::start(s.config.clone()).await.unwrap();
    s.server = Some(server);
    let (_b, backlog) = s.connect_synced("bob", "phone").await;
    assert_eq!(sequences(&backlog), vec![ack.sequence]);
}
