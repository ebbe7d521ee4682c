//! A retried Send with the same (sender, packetId) yields the same sequence and
//! exactly one delivery — on the same connection, a new one, or after a restart.

use courier::client::Event;

use crate::common::*;

both_transports!(
    retry_on_same_and_new_connection_is_deduplicated,
    retry_after_restart_is_deduplicated,
    burst_of_retries_is_one_message,
    retried_online_only_send_reports_the_original_outcome,
);

async fn retry_on_same_and_new_connection_is_deduplicated(t: Transport) {
    let s = TestServer::on(t).await;
    let (mut b, _) = s.connect_synced("bob", "phone").await;
    let (mut a, _) = s.connect_synced("alice", "phone").await;
    let first = send_acked(&mut a, "dup-1", "bob", "once").await;
    let again = send_acked(&mut a, "dup-1", "bob", "once").await;
    assert_eq!(again.sequence, first.sequence);
    assert_eq!(again.timestamp, first.timestamp);

    // New connection (another device of alice, even), same packet id.
    let (mut a2, _) = s.connect_synced("alice", "laptop").await;
    // The laptop sees the original once, in its backlog or live; not the retries.
    let third = send_acked(&mut a2, "dup-1", "bob", "once").await;
    assert_eq!(third.sequence, first.sequence);

    // Bob got exactly one delivery: the next one he sees is a fresh message.
    let marker = send_acked(&mut a, "marker", "bob", "after").await;
    assert_eq!(next_deliver(&mut b).await.sequence, first.sequence);
    assert_eq!(next_deliver(&mut b).await.sequence, marker.sequence);

    // A different sender may reuse the packet id: it is a different message.
    let (mut c, _) = s.connect_synced("carol", "phone").await;
    let other = send_acked(&mut c, "dup-1", "bob", "mine").await;
    assert_ne!(other.sequence, first.sequence);
}

async fn retry_after_restart_is_deduplicated(t: Transport) {
    let mut s = TestServer::on(t).await;
    let (mut a, _) = s.connect_synced("alice", "phone").await;
    let first = send_acked(&mut a, "r-1", "bob", "hello").await;
    drop(a);
    s.restart().await;

    let (mut a, _) = s.connect_synced("alice", "phone").await;
    // Two retries back to back, before the store has answered the first: both get
    // the original sequence.
    a.send_text("r-1", "bob", "hello").await.unwrap();
    a.send_text("r-1", "bob", "hello").await.unwrap();
    let again = next_ack(&mut a).await;
    assert_eq!(again.sequence, first.sequence);
    assert_eq!(next_ack(&mut a).await.sequence, first.sequence);
    let fresh = send_acked(&mut a, "r-2", "bob", "new").await;
    assert!(
        fresh.sequence > first.sequence,
        "sequences keep increasing across restarts"
    );

    let (_b, backlog) = s.connect_synced("bob", "phone").await;
    let seqs = sequences(&backlog);
    assert_eq!(seqs, vec![first.sequence, fresh.sequence]);
}

/// Retries fired back to back before the first commit still yield one message.
async fn burst_of_retries_is_one_message(t: Transport) {
    let s = TestServer::on(t).await;
    let (mut a, _) = s.connect_synced("alice", "phone").await;
    for _ in 0..5 {
        a.send_text("burst", "bob", "x").await.unwrap();
    }
    let mut seqs = Vec::new();
    while seqs.len() < 5 {
        if let Some(Event::ServerAck(ack)) = next(&mut a).await {
            seqs.push(ack.sequence);
        }
    }
    assert!(seqs.iter().all(|s| *s == seqs[0]));
    let (_b, backlog) = s.connect_synced("bob", "phone").await;
    assert_eq!(backlog.len(), 1);
}

/// A retried online-only send that reached nobody says so again.
async fn retried_online_only_send_reports_the_original_outcome(t: Transport) {
    use courier::pb::{self, frame::Kind};
    let s = TestServer::on(t).await;
    let (mut a, _) = s.connect_synced("alice", "phone").await;
    let typing = Kind::Send(pb::Send {
        packet_id: "typing".into(),
        to_account: "bob".into(),
        online_only: true,
        ..Default::default()
    });
    a.send_frame(typing.clone()).await.unwrap();
    assert!(!next_ack(&mut a).await.delivered);
    a.send_frame(typing.clone()).await.unwrap();
    assert!(!next_ack(&mut a).await.delivered);
    // Back to back, likely in one batch with the original's retry.
    let again = Kind::Send(pb::Send {
        packet_id: "typing-2".into(),
        ..match typing {
            Kind::Send(s) => s,
            _ => unreachable!(),
        }
    });
    a.writer.feed(again.clone()).await.unwrap();
    a.writer.feed(again).await.unwrap();
    a.writer.flush().await.unwrap();
    assert!(!next_ack(&mut a).await.delivered);
    assert!(!next_ack(&mut a).await.delivered);
}
