//! One-to-one messaging: offline delivery, multi-device fan-out, cursors, online-only.

use bytes::Bytes;
use courier::client::Event;
use courier::pb::{self, frame::Kind};

use crate::common::*;

both_transports!(
    manual_example_offline_message_reaches_first_login,
    fans_out_to_every_device_of_both_users,
    cursor_advances_with_acks_and_seeds_new_devices,
    backlog_is_ordered_and_batched,
    large_backlog_sends_newest_batch_and_pull_notice,
    online_only_and_unstored_messages_are_not_kept,
    resource_addressed_message_reaches_only_that_device,
    note_to_self_reaches_other_devices,
    new_device_that_never_acked_resumes_where_it_started,
    ack_beyond_the_newest_sequence_skips_nothing,
);

/// The manual's 言士文学 example: A sends "Hello B" before B ever logged in;
/// B's first login delivers it.
async fn manual_example_offline_message_reaches_first_login(t: Transport) {
    let s = TestServer::on(t).await;
    let (mut a, _) = s.connect_synced("13800000001", "android").await;
    let ack = send_acked(&mut a, "TEXT_12345", "13800000002", "Hello B").await;
    assert!(ack.sequence > 0);

    let (_b, backlog) = s.connect_synced("13800000002", "android").await;
    assert_eq!(backlog.len(), 1);
    let m = &backlog[0];
    assert_eq!(text(m), "Hello B");
    assert_eq!(m.sequence, ack.sequence);
    assert_eq!(m.from_account, "13800000001");
    assert_eq!(m.from_resource, "android");
    assert_eq!(m.to_account, "13800000002");
    assert_eq!(m.packet_id, "TEXT_12345");
}

/// A on two devices, B on three: B's three devices and A's other device get each
/// message once; the sending device gets the ack.
async fn fans_out_to_every_device_of_both_users(t: Transport) {
    let s = TestServer::on(t).await;
    let (mut a1, _) = s.connect_synced("alice", "phone").await;
    let (mut a2, _) = s.connect_synced("alice", "laptop").await;
    let mut bs = Vec::new();
    for r in ["phone", "pad", "web"] {
        bs.push(s.connect_synced("bob", r).await.0);
    }
    let ack = send_acked(&mut a1, "m1", "bob", "hi bob").await;
    for b in bs.iter_mut() {
        let d = next_deliver(b).await;
        assert_eq!((d.sequence, text(&d).as_str()), (ack.sequence, "hi bob"));
    }
    let d = next_deliver(&mut a2).await;
    assert_eq!(d.sequence, ack.sequence);
    assert_eq!(d.to_account, "bob");

    // B answers from the pad: A's two devices and B's two others get it.
    let reply = send_acked(&mut bs[1], "r1", "alice", "hi alice").await;
    let (b_phone, rest) = bs.split_at_mut(1);
    for c in [&mut a1, &mut a2, &mut b_phone[0], &mut rest[1]] {
        let d = next_deliver(c).await;
        assert_eq!(d.sequence, reply.sequence);
    }
    assert!(reply.sequence > ack.sequence);
}

/// Acked messages are not delivered again to that device; a new device of the
/// same user starts at the user's highest cursor.
async fn cursor_advances_with_acks_and_seeds_new_devices(t: Transport) {
    let s = TestServer::on(t).await;
    let (mut a, _) = s.connect_synced("alice", "phone").await;
    let first = send_acked(&mut a, "1", "bob", "one").await;

    let (mut b, backlog) = s.connect_synced("bob", "phone").await;
    assert_eq!(backlog.len(), 1);
    b.ack(first.sequence).await.unwrap();
    // A ping round trip orders the ack before the logout on this connection.
    b.writer.ping(1).await.unwrap();
    wait_for(&mut b, |e| matches!(e, Event::Pong(_)).then_some(())).await;
    b.writer.logout().await.unwrap();
    until_closed(&mut b).await;

    let second = send_acked(&mut a, "2", "bob", "two").await;
    let (_b, backlog) = s.connect_synced("bob", "phone").await;
    assert_eq!(sequences(&backlog), vec![second.sequence]);

    // A device never seen before starts at bob's highest cursor: only "two".
    let (_b2, backlog) = s.connect_synced("bob", "new-tablet").await;
    assert_eq!(sequences(&backlog), vec![second.sequence]);
}

/// Backlog arrives in sequence order across batches.
async fn backlog_is_ordered_and_batched(t: Transport) {
    let s = TestServer::on_with(t, |c| {
        c.backlog_batch = 7;
        c.backlog_limit = 100;
    })
    .await;
    let (mut a, _) = s.connect_synced("alice", "phone").await;
    let mut seqs = Vec::new();
    for i in 0..30 {
        seqs.push(
            send_acked(&mut a, &format!("p{i}"), "bob", &format!("m{i}"))
                .await
                .sequence,
        );
    }
    let (_b, backlog) = s.connect_synced("bob", "phone").await;
    assert_eq!(sequences(&backlog), seqs);
    assert_eq!(text(&backlog[29]), "m29");
}

/// Above the backlog limit the newest batch comes with a pull notice, and Pull
/// pages the older messages.
async fn large_backlog_sends_newest_batch_and_pull_notice(t: Transport) {
    let s = TestServer::on_with(t, |c| {
        c.backlog_batch = 5;
        c.backlog_limit = 10;
    })
    .await;
    let (mut a, _) = s.connect_synced("alice", "phone").await;
    let mut seqs = Vec::new();
    for i in 0..23 {
        seqs.push(
            send_acked(&mut a, &format!("p{i}"), "bob", "x")
                .await
                .sequence,
        );
    }
    let mut b = s.connect("bob", "phone").await;
    let notice = wait_for(&mut b, |e| match e {
        Event::PullNotice(n) => Some(n),
        _ => None,
    })
    .await;
    let newest = read_backlog(&mut b).await;
    assert_eq!(sequences(&newest), seqs[18..].to_vec());
    assert_eq!(notice.before_sequence, seqs[18]);

    // Page the rest with Pull.
    let mut paged = Vec::new();
    let mut after = notice.after_sequence;
    loop {
        b.writer
            .pull(after, notice.before_sequence, 4)
            .await
            .unwrap();
        let r = wait_for(&mut b, |e| match e {
            Event::PullResult(r) => Some(r),
            _ => None,
        })
        .await;
        paged.extend(r.messages.iter().map(|d| d.sequence));
        after = r.messages.last().map_or(after, |d| d.sequence);
        if !r.has_more {
            break;
        }
    }
    assert_eq!(paged, seqs[..18].to_vec());
}

/// onlineOnly: delivered to online devices, never stored; the ack says whether
/// anyone received it. isStore=false likewise is not kept.
async fn online_only_and_unstored_messages_are_not_kept(t: Transport) {
    let s = TestServer::on(t).await;
    let (mut a, _) = s.connect_synced("alice", "phone").await;
    let send = |id: &str, online_only: bool, is_store: Option<bool>| {
        Kind::Send(pb::Send {
            packet_id: id.into(),
            to_account: "bob".into(),
            payload: Bytes::from_static(b"typing..."),
            online_only,
            is_store,
            ..Default::default()
        })
    };
    // Nobody online: not delivered, and not stored for later.
    a.send_frame(send("o1", true, None)).await.unwrap();
    let ack = next_ack(&mut a).await;
    assert_eq!(ack.code, 200);
    assert!(!ack.delivered);

    let (mut b, backlog) = s.connect_synced("bob", "phone").await;
    assert!(backlog.is_empty());

    a.send_frame(send("o2", true, None)).await.unwrap();
    let ack = next_ack(&mut a).await;
    assert!(ack.delivered);
    let d = next_deliver(&mut b).await;
    assert!(d.transient);
    assert_eq!(d.packet_id, "o2");

    a.send_frame(send("n1", false, Some(false))).await.unwrap();
    assert!(next_ack(&mut a).await.delivered);
    assert_eq!(next_deliver(&mut b).await.packet_id, "n1");

    let (_b2, backlog) = s.connect_synced("bob", "other").await;
    assert!(
        backlog.is_empty(),
        "transient messages are never stored: {backlog:?}"
    );
}

/// A message addressed to one resource reaches only that device of the recipient.
async fn resource_addressed_message_reaches_only_that_device(t: Transport) {
    let s = TestServer::on(t).await;
    let (mut a, _) = s.connect_synced("alice", "phone").await;
    let (mut watch, _) = s.connect_synced("bob", "watch").await;
    let (mut phone, _) = s.connect_synced("bob", "phone").await;
    a.send_frame(Kind::Send(pb::Send {
        packet_id: "w1".into(),
        to_account: "bob".into(),
        to_resource: "watch".into(),
        payload: Bytes::from_static(b"buzz"),
        ..Default::default()
    }))
    .await
    .unwrap();
    let ack = next_ack(&mut a).await;
    assert_eq!(next_deliver(&mut watch).await.sequence, ack.sequence);
    let open = send_acked(&mut a, "all", "bob", "everyone").await;
    // The phone's first delivery is the later, unaddressed message.
    assert_eq!(next_deliver(&mut phone).await.sequence, open.sequence);
}

/// Sending to oneself reaches one's other devices.
async fn note_to_self_reaches_other_devices(t: Transport) {
    let s = TestServer::on(t).await;
    let (mut a1, _) = s.connect_synced("alice", "phone").await;
    let (mut a2, _) = s.connect_synced("alice", "laptop").await;
    let ack = send_acked(&mut a1, "self", "alice", "note").await;
    assert_eq!(next_deliver(&mut a2).await.sequence, ack.sequence);
}

/// A new device that leaves before acking resumes where it started, even if another
/// device of the user acked further meanwhile: nothing is skipped for it.
async fn new_device_that_never_acked_resumes_where_it_started(t: Transport) {
    let s = TestServer::on(t).await;
    let (mut tablet, _) = s.connect_synced("bob", "tablet").await;
    tablet.writer.logout().await.unwrap();
    until_closed(&mut tablet).await;

    let (mut a, _) = s.connect_synced("alice", "phone").await;
    let ack = send_acked(&mut a, "while-away", "bob", "did you see this?").await;
    let (mut phone, backlog) = s.connect_synced("bob", "phone").await;
    assert_eq!(backlog[0].sequence, ack.sequence);
    phone.ack(ack.sequence).await.unwrap();
    phone.writer.ping(1).await.unwrap();
    wait_for(&mut phone, |e| matches!(e, Event::Pong(_)).then_some(())).await;

    let (_tablet, backlog) = s.connect_synced("bob", "tablet").await;
    assert_eq!(sequences(&backlog), vec![ack.sequence]);
}

/// An ack beyond every sequence does not make the device skip what comes later.
async fn ack_beyond_the_newest_sequence_skips_nothing(t: Transport) {
    let s = TestServer::on(t).await;
    let (mut b, _) = s.connect_synced("bob", "phone").await;
    b.ack(u64::MAX).await.unwrap();
    b.writer.ping(1).await.unwrap();
    wait_for(&mut b, |e| matches!(e, Event::Pong(_)).then_some(())).await;
    b.writer.logout().await.unwrap();
    until_closed(&mut b).await;
    let (mut a, _) = s.connect_synced("alice", "phone").await;
    let ack = send_acked(&mut a, "later", "bob", "after the big ack").await;
    let (_b, backlog) = s.connect_synced("bob", "phone").await;
    assert_eq!(sequences(&backlog), vec![ack.sequence]);
}
