//! A whole session, driven with no socket and a test clock: login, a backlog that
//! holds more than the limit (newest page + PullNotice), live dedup against the
//! backlog, a send, an ack clamped to the newest sequence, then the idle timeout;
//! and the login timeout of a connection that never logs in.

use prost::Message;

use super::session::*;
use super::{codec, codes, PROTOCOL_VERSION};
use crate::pb::{self, frame::Kind};
use crate::protocol::backlog::{self, BacklogRules, BacklogStep, BacklogSync};
use crate::sequence::{Sequencer, EPOCH_MS};
use bytes::Bytes;

fn kinds(frames: &[Bytes]) -> Vec<Kind> {
    frames
        .iter()
        .map(|f| pb::Frame::decode(f.as_ref()).unwrap().kind.unwrap())
        .collect()
}

fn reply(event: SessionEvent) -> Kind {
    match event {
        SessionEvent::Reply(b) | SessionEvent::Close(b) => kinds(&[b]).remove(0),
        other => panic!("expected a frame, got {other:?}"),
    }
}

#[test]
fn login_backlog_live_ack_and_timeouts() {
    const DAY: u64 = 24 * 3600 * 1000;
    let t0 = EPOCH_MS + 30 * DAY;
    let cfg = SessionConfig {
        login_timeout_ms: 10_000,
        idle_timeout_ms: 2_000,
        ..SessionConfig::default()
    };
    let mut s = Session::new(cfg, t0);
    assert_eq!(s.next_deadline_ms(), t0 + 10_000);

    // Login: the resource is trimmed by the name rule; the token goes out to check.
    let login = Kind::Login(pb::Login {
        protocol_version: PROTOCOL_VERSION,
        token: "tok".into(),
        resource: " phone ".into(),
    });
    let ev = s.on_frame(&codec::encode(login), t0 + 5);
    assert_eq!(
        ev,
        SessionEvent::Login {
            token: "tok".into(),
            resource: "phone".into()
        }
    );
    s.login_succeeded(Identity {
        app_id: 1,
        uuid: 7,
        account: "bob".into(),
        resource: "phone".into(),
    });
    // The idle deadline now comes before the login deadline.
    assert_eq!(s.next_deadline_ms(), t0 + 5 + 2_000);
    match kinds(&[s.login_result(0, t0 + 6).unwrap()]).remove(0) {
        Kind::LoginResult(r) => assert_eq!((r.code, r.uuid, r.cursor), (200, 7, 0)),
        other => panic!("{other:?}"),
    }

    // Backlog: five messages pending, limit 3, pages of 2.
    let mut seq = Sequencer::new(0, 0);
    let stored: Vec<u64> = (0..5).map(|i| seq.next(t0 - 3_600_000 + i)).collect();
    let rules = BacklogRules {
        limit: 3,
        batch: 2,
        ttl_ms: 7 * DAY,
    };
    let (mut sync, (after, cap)) = BacklogSync::start(0, t0, rules);
    assert_eq!(cap, 4);
    assert!(after < stored[0]);
    let read = sync.on_count(5);
    assert!(read.newest_first && read.limit == 2);
    // The store answers newest first.
    let page = [stored[4], stored[3]]
        .iter()
        .map(|&sequence| pb::Deliver {
            sequence,
            ..Default::default()
        })
        .collect();
    let (frames, step) = sync.on_page(page);
    let got = kinds(&frames);
    match &got[0] {
        Kind::PullNotice(n) => {
            assert_eq!((n.after_sequence, n.before_sequence), (after, stored[3]))
        }
        other => panic!("{other:?}"),
    }
    match &got[1] {
        Kind::DeliverBatch(b) => assert_eq!(
            b.messages.iter().map(|m| m.sequence).collect::<Vec<_>>(),
            [stored[3], stored[4]]
        ),
        other => panic!("{other:?}"),
    }
    match step {
        BacklogStep::Finish(last) => match kinds(&last).remove(0) {
            Kind::SyncDone(d) => assert_eq!(d.count, 2),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }

    // Live traffic queued during the backlog: what it carried is skipped.
    let live = seq.next(t0);
    assert!(!backlog::relays(stored[4], sync.through()));
    assert!(backlog::relays(live, sync.through()));
    assert!(backlog::relays(0, sync.through()), "acks always pass");

    // A send, and an ack beyond anything assigned, clamped to the newest sequence.
    let send = Kind::Send(pb::Send {
        packet_id: "p1".into(),
        to_account: " ann ".into(),
        ..Default::default()
    });
    match s.on_frame(&codec::encode(send), t0 + 100) {
        SessionEvent::Send(send) => assert_eq!(send.to_account, "ann"),
        other => panic!("{other:?}"),
    }
    let ack = Kind::Ack(pb::Ack { sequence: u64::MAX });
    match s.on_frame(&codec::encode(ack), t0 + 200) {
        SessionEvent::Ack(n) => assert_eq!(backlog::clamp_ack(n, live), live),
        other => panic!("{other:?}"),
    }

    // Idle timeout, counted from the last frame received.
    assert_eq!(s.next_deadline_ms(), t0 + 200 + 2_000);
    assert!(s.check_timeout(t0 + 2_199).is_none());
    match kinds(&[s.check_timeout(t0 + 2_200).unwrap()]).remove(0) {
        Kind::Kick(k) => assert_eq!(k.code, codes::KICK_IDLE),
        other => panic!("{other:?}"),
    }
    assert!(s.is_closed());

    // A connection that never logs in: the login timeout; a wrong version is refused.
    let mut idle = Session::new(cfg, t0);
    assert!(idle.check_timeout(t0 + 9_999).is_none());
    match kinds(&[idle.check_timeout(t0 + 10_000).unwrap()]).remove(0) {
        Kind::Kick(k) => assert_eq!(k.code, codes::KICK_LOGIN_TIMEOUT),
        other => panic!("{other:?}"),
    }
    let mut old = Session::new(cfg, t0);
    let v2 = Kind::Login(pb::Login {
        protocol_version: 2,
        token: "tok".into(),
        resource: "phone".into(),
    });
    match reply(old.on_frame(&codec::encode(v2), t0 + 1)) {
        Kind::LoginResult(r) => assert_eq!(r.code, codes::BAD_REQUEST),
        other => panic!("{other:?}"),
    }
    assert!(old.is_closed());
}
