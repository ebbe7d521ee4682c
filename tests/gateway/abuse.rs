//! Hostile and careless clients (docs/security.md): one test per class of attack,
//! each asserting a bound a user would check — the server's memory, that a stalled
//! socket is closed, that a refused request created nothing, that a bystander is
//! still served. Memory is measured on the real binary (`/proc/PID/status`), with
//! bounds far above the normal figure so a noisy machine cannot flake.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use bytes::Bytes;
use courier::client::{Client, ClientError, Event};
use courier::pb::{self, frame::Kind};
use courier::protocol::codes;
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

const WS_HANDSHAKE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: courier.v1\r\n\r\n";

/// Reads until the end of an HTTP head; returns it.
async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, tcp.read(&mut byte))
            .await
            .expect("head in time")
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed during the head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Reads and discards until the server closes the socket (fails after [`WAIT`]).
async fn until_eof(tcp: &mut TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    tokio::time::timeout(WAIT, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server should close the connection");
}

/// Writes `chunk` `times` times, sampling the server's RSS after each write; stops
/// early (without failing) once one write has been blocked for 3 s, i.e. the server
/// stopped reading. Returns the highest RSS seen, KiB.
async fn flood(gw: &Binary, tcp: &mut TcpStream, chunk: &[u8], times: usize) -> u64 {
    let mut peak = gw.rss_kib();
    for _ in 0..times {
        let written = tokio::time::timeout(Duration::from_secs(3), tcp.write_all(chunk)).await;
        peak = peak.max(gw.rss_kib());
        if !matches!(written, Ok(Ok(()))) {
            break;
        }
    }
    peak
}

#[tokio::test]
async fn ping_flood_without_reading_keeps_memory_bounded_and_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Binary::start(dir.path(), &["--write-timeout-secs", "2"]);
    let before = gw.rss_kib();
    let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
    tcp.write_all(WS_HANDSHAKE).await.unwrap();
    assert!(read_head(&mut tcp).await.starts_with("HTTP/1.1 101"));
    // 1,000 masked pings of 125 bytes per write; ~52 MB of pongs asked for in all.
    let mut ping = vec![0x89u8, 0x80 | 125, 1, 2, 3, 4];
    ping.extend((0..125u8).map(|i| i ^ [1, 2, 3, 4][i as usize % 4]));
    let chunk = ping.repeat(1000);
    let grown = flood(&gw, &mut tcp, &chunk, 400)
        .await
        .saturating_sub(before);
    assert!(
        grown < 24 * 1024,
        "server RSS grew by {grown} KiB under a ping flood (bound 24 MiB)"
    );
    // It never logged in: the server closes it (login timeout).
    until_eof(&mut tcp).await;
}

#[tokio::test]
async fn stalled_headers_silent_and_idle_keepalive_sockets_are_closed() {
    let s = TestServer::start_with(|c| c.http_header_timeout_secs = 1).await;
    let addr = s.http().trim_start_matches("http://").to_owned();
    // Half-sent headers.
    raw_exchange(&addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    // Nothing at all.
    raw_exchange(&addr, b"").await;
    // A kept-alive connection after its answer.
    let answer = raw_exchange(&addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(parse_http(&answer).0, 200);
}

#[tokio::test]
async fn a_client_that_never_reads_its_answers_is_closed() {
    let s = TestServer::start_with(|c| c.write_timeout_secs = 1).await;
    let addr = s.http().trim_start_matches("http://").to_owned();
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    let chunk = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
    // Pipelined requests, answers never read: once the socket buffers are full the
    // server's writes block, and after the write timeout it closes the connection,
    // which makes our writes fail.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server kept a connection whose answers are never read"
        );
        let written = tokio::time::timeout(Duration::from_millis(500), tcp.write_all(&chunk)).await;
        if let Ok(Err(_)) = written {
            break;
        }
    }
}

#[tokio::test]
async fn connections_past_the_limit_get_a_503_envelope() {
    let s = TestServer::start_with(|c| c.max_connections = 4).await;
    let addr = s.http().trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    let answer = raw_exchange(&addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (status, body) = parse_http(&answer);
    assert_eq!(status, 503);
    assert_eq!(body["code"], 503);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("too many connections"));
    // A freed slot serves again.
    held.pop();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the freed slot was never reused"
        );
        let answer = raw_exchange(
            &addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        if parse_http(&answer).0 == 200 {
            break;
        }
    }
}

#[tokio::test]
async fn credentials_are_checked_before_the_body_and_bodies_are_bounded() {
    let s = TestServer::start_with(|c| c.http_body_timeout_secs = 1).await;
    let addr = s.http().trim_start_matches("http://").to_owned();
    let app = s.app.app_id;
    // A forged token with a large announced body that never comes: 401 at once.
    let req = format!(
        "POST /api/topic/{app} HTTP/1.1\r\nHost: x\r\ntoken: forged\r\n\
         Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    );
    let (status, body) = parse_http(&raw_exchange(&addr, req.as_bytes()).await);
    assert_eq!((status, body["code"].as_u64()), (401, Some(401)));
    // An announced body over the route's limit: 413 without reading it.
    let req = "POST /api/push/p2p HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n";
    let (status, body) = parse_http(&raw_exchange(&addr, req.as_bytes()).await);
    assert_eq!((status, body["code"].as_u64()), (413, Some(413)));
    // A body that stalls: 408 after the body timeout.
    let mut req =
        b"POST /api/push/p2p HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n{\"a\":".to_vec();
    req.extend(vec![b' '; 1000]);
    let (status, body) = parse_http(&raw_exchange(&addr, &req).await);
    assert_eq!((status, body["code"].as_u64()), (408, Some(408)));
}

#[tokio::test]
async fn stalled_large_uploads_do_not_hold_memory() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Binary::start(dir.path(), &[]);
    let before = gw.rss_kib();
    let mut socks = Vec::new();
    // 100 uploads announcing 2 MB (over the limit) with 1 MB sent, and 100 announcing
    // 120 KB (under it) with 60 KB sent; all then stall.
    for (announced, sent) in [(2_000_000, 1_000_000), (120_000, 60_000)] {
        let chunk = vec![b' '; sent];
        for _ in 0..100 {
            let mut tcp = TcpStream::connect(gw.addr()).await.unwrap();
            let head = format!(
                "POST /api/push/p2p HTTP/1.1\r\nHost: x\r\nContent-Length: {announced}\r\n\r\n"
            );
            // The server may answer 413 and close while we write: errors are fine.
            let _ = tcp.write_all(head.as_bytes()).await;
            let _ = tokio::time::timeout(Duration::from_millis(200), tcp.write_all(&chunk)).await;
            socks.push(tcp);
        }
    }
    let grown = gw.rss_kib().saturating_sub(before);
    assert!(
        grown < 48 * 1024,
        "server RSS grew by {grown} KiB with 200 stalled uploads (bound 48 MiB)"
    );
    // The ones under the limit are answered 408 once the body timeout passes.
    let mut last = socks.pop().unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, last.read_to_end(&mut answer)).await;
    assert_eq!(parse_http(&answer).0, 408);
}

#[tokio::test]
async fn long_strings_are_refused_with_short_errors() {
    let s = TestServer::start().await;
    let owner = Auth::Token(s.token("owner").await);
    let app = s.app.app_id;
    let body = json!({
        "appId": app, "appKey": s.app.app_key, "appSecret": s.app.app_secret,
        "appAccount": "x".repeat(3000),
    });
    let (status, v) = s
        .call(Method::POST, "/api/account/token", &Auth::None, Some(body))
        .await;
    assert_eq!(status, 400);
    let msg = v["message"].as_str().unwrap();
    assert!(msg.len() < 200 && msg.contains("3000 bytes"), "{msg}");

    let path = format!("/api/topic/{app}");
    let name = json!({"topicName": "n".repeat(10_000)});
    let (status, v) = s.call(Method::POST, &path, &owner, Some(name)).await;
    assert_eq!(status, 400);
    assert!(v["message"].as_str().unwrap().len() < 200, "{v}");

    let ok = json!({"topicName": "fine", "accounts": "a1"});
    let (status, v) = s.call(Method::POST, &path, &owner, Some(ok)).await;
    assert_eq!(status, 200, "{v}");
    let topic = v["data"]["topicInfo"]["topicId"].as_u64().unwrap();
    let bulletin = json!({"bulletin": "b".repeat(5000)});
    let (status, v) = s
        .call(
            Method::PUT,
            &format!("{path}/{topic}"),
            &owner,
            Some(bulletin),
        )
        .await;
    assert_eq!(status, 400);
    assert!(v["message"].as_str().unwrap().contains("bulletin"), "{v}");
}

#[tokio::test]
async fn names_follow_one_rule_everywhere() {
    let s = TestServer::start().await;
    let token_for = |account: &str| {
        json!({
            "appId": s.app.app_id, "appKey": s.app.app_key, "appSecret": s.app.app_secret,
            "appAccount": account,
        })
    };
    for bad in ["a\u{0}b", "a\u{202E}b", "a\u{7}", "  "] {
        let (status, v) = s
            .call(
                Method::POST,
                "/api/account/token",
                &Auth::None,
                Some(token_for(bad)),
            )
            .await;
        assert_eq!(status, 400, "{bad:?}: {v}");
    }
    let (status, v) = s
        .call(
            Method::POST,
            "/api/account/token",
            &Auth::None,
            Some(token_for(" bob ")),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["data"]["appAccount"], "bob");
    // The same rule in topic member lists: nothing is half-created.
    let owner = Auth::Token(s.token("owner").await);
    let path = format!("/api/topic/{}", s.app.app_id);
    let body = json!({"topicName": "t", "accounts": ["fresh1", "bad\u{202E}"]});
    let (status, _) = s.call(Method::POST, &path, &owner, Some(body)).await;
    assert_eq!(status, 400);
    let store = &s.server.as_ref().unwrap().state.store;
    assert_eq!(
        store
            .account(s.app.app_id, "fresh1", false, u64::MAX)
            .await
            .unwrap(),
        None
    );
    // And on the wire: a Send and a Login resource.
    let (mut a, _) = s.connect_synced("alice", "phone").await;
    a.send_text("p1", "eve\u{202E}", "x").await.unwrap();
    let err = next_error(&mut a).await;
    assert_eq!(
        (err.code, err.packet_id.as_str()),
        (codes::BAD_REQUEST, "p1")
    );
    let token = s.token("alice").await;
    let refused = Client::connect(&s.ws(), &token, "ph\u{0}one").await;
    assert!(matches!(
        refused,
        Err(ClientError::LoginRefused { code: 400, .. })
    ));
}

#[tokio::test]
async fn oversized_member_lists_are_refused_before_any_account_is_created() {
    let s = TestServer::start_with(|c| c.topic_member_limit = 10).await;
    let owner = Auth::Token(s.token("owner").await);
    let path = format!("/api/topic/{}", s.app.app_id);
    let store = s.server.as_ref().unwrap().state.store.clone();
    // More names than one call may carry.
    let many: Vec<String> = (0..20_000).map(|i| format!("m{i}")).collect();
    let body = json!({"topicName": "big", "accounts": many.join(",")});
    let (status, v) = s.call(Method::POST, &path, &owner, Some(body)).await;
    assert_eq!(status, 400);
    assert!(
        v["message"].as_str().unwrap().contains("too many accounts"),
        "{v}"
    );
    assert_eq!(
        store
            .account(s.app.app_id, "m1", false, u64::MAX)
            .await
            .unwrap(),
        None
    );
    // Within the per-call cap but over the member limit: refused, nothing created.
    let body = json!({"topicName": "big", "accounts": many[..50].join(",")});
    let (status, v) = s.call(Method::POST, &path, &owner, Some(body)).await;
    assert_eq!(status, 400);
    assert!(
        v["message"].as_str().unwrap().contains("member limit"),
        "{v}"
    );
    assert_eq!(
        store
            .account(s.app.app_id, "m2", false, u64::MAX)
            .await
            .unwrap(),
        None
    );
    let body = json!({"topicName": "small", "accounts": "a,b"});
    let (status, v) = s.call(Method::POST, &path, &owner, Some(body)).await;
    assert_eq!(status, 200);
    let topic = v["data"]["topicInfo"]["topicId"].as_u64().unwrap();
    let invite = json!({"accounts": many[..50].join(",")});
    let (status, _) = s
        .call(
            Method::POST,
            &format!("{path}/{topic}/accounts"),
            &owner,
            Some(invite),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        store
            .account(s.app.app_id, "m3", false, u64::MAX)
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn a_non_reading_device_is_kicked_at_its_byte_budget() {
    let s = TestServer::start_with(|c| {
        c.device_queue_bytes = 1024 * 1024;
        c.max_inflight_sends = 32;
        c.backlog_limit = 1000;
    })
    .await;
    let (mut bob, _) = s.connect_synced("bob", "phone").await;
    let (mut alice, _) = s.connect_synced("alice", "phone").await;
    let payload = Bytes::from(vec![b'x'; 14 * 1024]);
    let total = 1000;
    // Far less than device_queue_frames (4096) frames, far more than 1 MiB.
    for w in 0..total / 25 {
        for i in 0..25 {
            alice
                .writer
                .feed(Kind::Send(pb::Send {
                    packet_id: format!("b{w}-{i}"),
                    to_account: "bob".into(),
                    payload: payload.clone(),
                    ..Default::default()
                }))
                .await
                .unwrap();
        }
        alice.writer.flush().await.unwrap();
        for _ in 0..25 {
            assert_eq!(next_ack(&mut alice).await.code, 200);
        }
    }
    let mut got = 0;
    let mut kick = None;
    loop {
        match tokio::time::timeout(WAIT, bob.next_event())
            .await
            .expect("bob ends")
        {
            Ok(Some(Event::Deliver(_))) => got += 1,
            Ok(Some(Event::Kick(k))) => kick = Some(k),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    assert!(got < total, "bob got all {got} without being cut off");
    if let Some(k) = kick {
        assert_eq!(k.code, codes::KICK_SLOW_CONSUMER);
    }
    // Nothing stored is lost: the next login's backlog holds all of it.
    let token = s.token("bob").await;
    let mut bob = Client::connect(&s.ws(), &token, "phone").await.unwrap();
    let mut backlog = 0;
    loop {
        match next(&mut bob).await {
            Some(Event::Deliver(_)) => backlog += 1,
            Some(Event::SyncDone(_)) => break,
            Some(_) => {}
            None => panic!("closed during backlog"),
        }
    }
    assert_eq!(backlog, total);
}

#[tokio::test]
async fn devices_per_user_are_capped_and_the_newest_is_refused() {
    let s = TestServer::start_with(|c| c.max_devices_per_user = 2).await;
    // The limit is each node's (docs/cluster.md).
    s.pin();
    let (_a, _) = s.connect_synced("bob", "phone").await;
    let (_b, _) = s.connect_synced("bob", "pad").await;
    let token = s.token("bob").await;
    let third = Client::connect(&s.ws(), &token, "web").await;
    assert!(matches!(
        third,
        Err(ClientError::LoginRefused { code: 429, .. })
    ));
    // The same resource again replaces its device instead.
    let (_a2, _) = s.connect_synced("bob", "phone").await;
}

#[tokio::test]
async fn a_fast_sender_and_its_reader_are_never_kicked() {
    let s = TestServer::start().await;
    let (bob, _) = s.connect_synced("bob", "phone").await;
    let (alice, _) = s.connect_synced("alice", "phone").await;
    let total = 9_500;
    let reader = tokio::spawn(async move {
        let mut bob = bob;
        let mut got = 0;
        while got < total {
            match next(&mut bob).await {
                Some(Event::Deliver(d)) => {
                    got += 1;
                    if got % 500 == 0 {
                        bob.ack(d.sequence).await.unwrap();
                    }
                }
                Some(Event::Kick(k)) => panic!("reader kicked: {k:?}"),
                Some(_) => {}
                None => panic!("reader closed after {got}"),
            }
        }
    });
    // Everything at once, as fast as the socket takes it; acks read concurrently.
    let (mut writer, mut acks) = alice.split();
    let sender = tokio::spawn(async move {
        for i in 0..total {
            writer
                .feed(Kind::Send(pb::Send {
                    packet_id: format!("f{i}"),
                    to_account: "bob".into(),
                    payload: Bytes::from(vec![b'h'; 512]),
                    ..Default::default()
                }))
                .await
                .unwrap();
        }
        writer.flush().await.unwrap();
        writer
    });
    let mut acked = 0;
    while acked < total {
        match tokio::time::timeout(WAIT, acks.next_event())
            .await
            .expect("acks")
        {
            Ok(Some(Event::ServerAck(a))) => {
                assert_eq!(a.code, 200, "{a:?}");
                acked += 1;
            }
            Ok(Some(Event::Kick(k))) => panic!("sender kicked: {k:?}"),
            Ok(Some(Event::Error(e))) => panic!("sender refused: {e:?}"),
            Ok(Some(_)) => {}
            other => panic!("sender closed after {acked}: {other:?}"),
        }
    }
    sender.await.unwrap();
    reader.await.unwrap();
}

#[tokio::test]
async fn state_creating_calls_have_quotas_and_caches_evict_correctly() {
    let s = TestServer::start_with(|c| {
        c.rest_rate_per_account = 1;
        c.topic_cache = 16;
    })
    .await;
    // Quotas are counted by each node (docs/cluster.md).
    s.pin();
    let path = format!("/api/topic/{}", s.app.app_id);
    let owner = Auth::Token(s.token("owner").await);
    let (mut refused, mut created) = (0, 0);
    let started = std::time::Instant::now();
    for i in 0..10 {
        let (status, v) = s
            .call(
                Method::POST,
                &path,
                &owner,
                Some(json!({"topicName": format!("t{i}")})),
            )
            .await;
        match status {
            200 => created += 1,
            429 => {
                refused += 1;
                assert_eq!(v["code"], 429);
            }
            other => panic!("{other}: {v}"),
        }
    }
    // A burst of 2, then 1 per second: however slow the machine, no more got through.
    let allowed = 2 + started.elapsed().as_secs() as usize + 1;
    assert!(
        created <= allowed,
        "{created} creates got through in {:?} ({refused} refused)",
        started.elapsed()
    );

    // Many topics through a 16-entry cache: every member's send is still accepted.
    let mut topics = Vec::new();
    for i in 0..40 {
        let creator = Auth::App(format!("creator{i}"));
        let body = json!({"topicName": "c", "accounts": "alice"});
        let (status, v) = s.call(Method::POST, &path, &creator, Some(body)).await;
        assert_eq!(status, 200, "{v}");
        topics.push(v["data"]["topicInfo"]["topicId"].as_u64().unwrap());
    }
    let (mut alice, _) = s.connect_synced("alice", "phone").await;
    for (i, topic) in topics.iter().enumerate() {
        alice
            .send_frame(Kind::Send(pb::Send {
                packet_id: format!("t{i}"),
                topic_id: *topic,
                payload: Bytes::from_static(b"hi"),
                ..Default::default()
            }))
            .await
            .unwrap();
        let ack = next_ack(&mut alice).await;
        assert_eq!(ack.code, 200, "{ack:?}");
    }
}

#[tokio::test]
async fn errors_below_the_handlers_keep_the_envelope_and_the_data_dir_is_private() {
    // A data dir the server creates itself (tempfile's own dirs are 0700 already),
    // for the embedded store whatever store the suite runs on.
    let s = TestServer::start_with(|c| {
        c.data_dir = c.data_dir.join("data");
        c.store_kind = "embedded".into();
    })
    .await;
    let app = s.app.app_id;
    let owner = Auth::Token(s.token("owner").await);
    for path in [
        "/api/topic/%FF/1".to_owned(),
        format!("/api/topic/{app}/1/accounts?accounts=a&accounts=b"),
    ] {
        let method = if path.contains('?') {
            Method::DELETE
        } else {
            Method::GET
        };
        let (status, v) = s.call(method, &path, &owner, None).await;
        assert_eq!(status, 400, "{path}: {v}");
        assert_eq!(v["code"], 400);
        assert!(v["data"].is_null());
    }
    let dir = &s.config.data_dir;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir), 0o700);
    assert_eq!(mode(&dir.join("courier.db")), 0o600);
}
