//! Unit tests of the session state machine (`protocol::session`).

use super::*;
use crate::protocol::codes;
use prost::Message;

fn frame(kind: Kind) -> Vec<u8> {
    codec::encode(kind).to_vec()
}

fn decode_reply(event: &SessionEvent) -> Kind {
    let bytes = match event {
        SessionEvent::Reply(b) | SessionEvent::Close(b) => b,
        other => panic!("expected a frame, got {other:?}"),
    };
    pb::Frame::decode(bytes.as_ref()).unwrap().kind.unwrap()
}

fn error_code(event: &SessionEvent) -> u32 {
    match decode_reply(event) {
        Kind::Error(e) => e.code,
        other => panic!("expected Error, got {other:?}"),
    }
}

fn identity() -> Identity {
    Identity {
        app_id: 1,
        uuid: 2,
        account: "a".into(),
        resource: "r".into(),
    }
}

fn send() -> Kind {
    Kind::Send(pb::Send {
        packet_id: "p".into(),
        to_account: "b".into(),
        ..Default::default()
    })
}

fn login() -> Kind {
    Kind::Login(pb::Login {
        protocol_version: 1,
        token: "t".into(),
        resource: "r".into(),
    })
}

#[test]
fn send_before_login_is_refused_without_closing() {
    let mut s = Session::new(SessionConfig::default(), 0);
    let ev = s.on_frame(&frame(send()), 1);
    assert_eq!(error_code(&ev), codes::CONFLICT);
    assert!(!s.is_closed());
}

#[test]
fn login_then_send_then_second_login() {
    let mut s = Session::new(SessionConfig::default(), 0);
    assert!(matches!(
        s.on_frame(&frame(login()), 1),
        SessionEvent::Login { .. }
    ));
    s.login_succeeded(identity());
    assert!(matches!(
        s.on_frame(&frame(send()), 2),
        SessionEvent::Send(_)
    ));
    let ev = s.on_frame(&frame(login()), 3);
    assert_eq!(error_code(&ev), codes::CONFLICT);
    assert_eq!(s.identity(), Some(&identity()));
}

#[test]
fn oversized_frame_closes_garbage_does_not() {
    let cfg = SessionConfig {
        limits: Limits {
            max_frame_bytes: 8,
            ..Limits::default()
        },
        ..SessionConfig::default()
    };
    let mut s = Session::new(cfg, 0);
    assert_eq!(error_code(&s.on_frame(&[1, 2, 3], 1)), codes::BAD_REQUEST);
    assert!(!s.is_closed());
    let ev = s.on_frame(&[0u8; 9], 2);
    assert!(matches!(ev, SessionEvent::Close(_)));
    assert_eq!(error_code(&ev), codes::TOO_LARGE);
    assert!(s.is_closed());
}

#[test]
fn send_needs_packet_id_and_one_target() {
    let mut s = Session::new(SessionConfig::default(), 0);
    s.login_succeeded(identity());
    let no_id = Kind::Send(pb::Send {
        to_account: "b".into(),
        ..Default::default()
    });
    assert_eq!(
        error_code(&s.on_frame(&frame(no_id), 1)),
        codes::BAD_REQUEST
    );
    let both = Kind::Send(pb::Send {
        packet_id: "p".into(),
        to_account: "b".into(),
        topic_id: 9,
        ..Default::default()
    });
    assert_eq!(error_code(&s.on_frame(&frame(both), 1)), codes::BAD_REQUEST);
}

#[test]
fn oversized_payload_is_refused_with_its_packet_id() {
    let mut s = Session::new(SessionConfig::default(), 0);
    s.login_succeeded(identity());
    let big = Kind::Send(pb::Send {
        packet_id: "big".into(),
        to_account: "b".into(),
        payload: vec![0u8; 15 * 1024 + 1].into(),
        ..Default::default()
    });
    match decode_reply(&s.on_frame(&frame(big), 1)) {
        Kind::Error(e) => {
            assert_eq!(e.code, codes::TOO_LARGE);
            assert_eq!(e.packet_id, "big");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn ping_is_answered_in_any_state() {
    let mut s = Session::new(SessionConfig::default(), 0);
    let ev = s.on_frame(&frame(Kind::Ping(pb::Ping { nonce: 7 })), 5);
    assert!(matches!(
        decode_reply(&ev),
        Kind::Pong(pb::Pong { nonce: 7, .. })
    ));
}

#[test]
fn login_timeout_then_idle_timeout() {
    let cfg = SessionConfig {
        login_timeout_ms: 100,
        idle_timeout_ms: 1000,
        ..SessionConfig::default()
    };
    let mut s = Session::new(cfg, 0);
    assert_eq!(s.next_deadline_ms(), 100);
    assert!(s.check_timeout(99).is_none());
    assert!(s.check_timeout(100).is_some());
    assert!(s.is_closed());

    let mut s = Session::new(cfg, 0);
    s.on_frame(&frame(login()), 10);
    s.login_succeeded(identity());
    assert_eq!(s.next_deadline_ms(), 1010);
    s.on_frame(&frame(Kind::Ping(pb::Ping { nonce: 1 })), 500);
    assert!(s.check_timeout(1010).is_none());
    assert!(s.check_timeout(1500).is_some());
}

#[test]
fn rate_limit_answers_every_send_and_the_first_other_frame() {
    let cfg = SessionConfig {
        max_frames_per_sec: 2,
        ..SessionConfig::default()
    };
    let mut s = Session::new(cfg, 0);
    s.login_succeeded(identity());
    assert!(matches!(
        s.on_frame(&frame(send()), 1),
        SessionEvent::Send(_)
    ));
    assert!(matches!(
        s.on_frame(&frame(send()), 2),
        SessionEvent::Send(_)
    ));
    assert_eq!(s.read_paused_until_ms(2), None);
    // Refused Sends each get an error with their packet id.
    for now in [3, 4] {
        match decode_reply(&s.on_frame(&frame(send()), now)) {
            Kind::Error(e) => {
                assert_eq!((e.code, e.packet_id.as_str()), (codes::RATE_LIMITED, "p"))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    // Over the limit the transport stops reading until the window ends.
    assert_eq!(s.read_paused_until_ms(4), Some(1000));
    assert_eq!(s.read_paused_until_ms(1000), None);
    // Other frames beyond the first refused one are dropped silently.
    let ping = frame(Kind::Ping(pb::Ping { nonce: 1 }));
    assert_eq!(s.on_frame(&ping, 5), SessionEvent::None);
    assert!(matches!(
        s.on_frame(&frame(send()), 1001),
        SessionEvent::Send(_)
    ));
    let mut s = Session::new(cfg, 0);
    s.on_frame(&ping, 1);
    s.on_frame(&ping, 2);
    assert_eq!(error_code(&s.on_frame(&ping, 3)), codes::RATE_LIMITED);
    assert_eq!(s.on_frame(&ping, 4), SessionEvent::None);
}

#[test]
fn client_sending_server_frames_gets_an_error() {
    let mut s = Session::new(SessionConfig::default(), 0);
    let ev = s.on_frame(&frame(Kind::Pong(pb::Pong::default())), 1);
    assert_eq!(error_code(&ev), codes::BAD_REQUEST);
}

/// Arbitrary bytes, and mutations of valid frames (flipped and truncated), never
/// panic the session, logged in or not.
#[test]
fn random_and_mutated_frames_never_panic() {
    let mut rng_state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let valid = [
        frame(send()),
        frame(login()),
        frame(Kind::Ping(pb::Ping { nonce: 3 })),
    ];
    let cfg = SessionConfig {
        max_frames_per_sec: 0,
        ..SessionConfig::default()
    };
    for round in 0..20_000u64 {
        let mut s = Session::new(cfg, 0);
        if round % 2 == 0 {
            s.login_succeeded(identity());
        }
        let buf: Vec<u8> = if round % 3 == 0 {
            let len = (next() % 64) as usize;
            (0..len).map(|_| next() as u8).collect()
        } else {
            let mut b = valid[(next() % 3) as usize].clone();
            let flips = 1 + next() % 4;
            for _ in 0..flips {
                let i = (next() as usize) % b.len();
                b[i] = next() as u8;
            }
            if next() % 4 == 0 {
                b.truncate((next() as usize) % b.len());
            }
            b
        };
        let _ = s.on_frame(&buf, round);
    }
}

#[test]
fn nul_in_packet_id_or_biz_type_is_refused() {
    let mut s = Session::new(SessionConfig::default(), 0);
    s.on_frame(&frame(login()), 1);
    s.login_succeeded(identity());
    for (packet_id, biz_type) in [("p\0", ""), ("p", "t\0x")] {
        let bad = Kind::Send(pb::Send {
            packet_id: packet_id.into(),
            to_account: "b".into(),
            biz_type: biz_type.into(),
            ..Default::default()
        });
        let ev = s.on_frame(&frame(bad), 2);
        assert_eq!(error_code(&ev), codes::BAD_REQUEST);
        assert!(!s.is_closed());
    }
}
