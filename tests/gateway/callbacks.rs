//! Message callbacks against a real HTTP receiver (axum on 127.0.0.1:0): the
//! manual's four bodies, the signature, the retry schedule, failure and replay,
//! isolation between apps, and `kill -9` with callbacks pending.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use bytes::Bytes;
use courier::client::{fetch_token, Client};
use courier::pb::{self, frame::Kind};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::common::*;

/// What the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// 500 to the first `n` attempts of each delivery id, then 200.
    FailFirst(u32),
    /// A redirect to another URL, always.
    Redirect,
    /// No answer, ever (until the mode changes).
    Hang,
    /// 200 with a 4 MiB body.
    Huge,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    delivery: u64,
    attempt: u32,
    signature: String,
    body: Bytes,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

struct Receiver {
    url: String,
    mode: Arc<Mutex<Mode>>,
    rx: mpsc::UnboundedReceiver<Received>,
    _task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(mode: Mode) -> Receiver {
        Receiver::on("127.0.0.1:0".parse().unwrap(), mode).await
    }

    async fn on(addr: SocketAddr, mode: Mode) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let mode = Arc::new(Mutex::new(mode));
        let (tx, rx) = mpsc::unbounded_channel();
        let seen: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
        let state = (mode.clone(), tx, seen);
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(hook))
            .with_state(state);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url,
            mode,
            rx,
            _task: task,
        }
    }

    async fn next(&mut self) -> Received {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("no callback arrived in time")
            .expect("receiver stopped")
    }
}

type HookState = (
    Arc<Mutex<Mode>>,
    mpsc::UnboundedSender<Received>,
    Arc<Mutex<HashMap<u64, u32>>>,
);

async fn hook(
    axum::extract::State((mode, tx, seen)): axum::extract::State<HookState>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let got = Received {
        delivery: header("x-courier-delivery").parse().unwrap(),
        attempt: header("x-courier-attempt").parse().unwrap(),
        signature: header("x-courier-signature"),
        body,
    };
    let delivery = got.delivery;
    let _ = tx.send(got);
    let mode = *mode.lock();
    match mode {
        Mode::FailFirst(n) => {
            let tries = {
                let mut seen = seen.lock();
                let t = seen.entry(delivery).or_insert(0);
                *t += 1;
                *t
            };
            if tries <= n {
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            } else {
                (StatusCode::OK, "ok").into_response()
            }
        }
        Mode::Redirect => (
            StatusCode::FOUND,
            [("location", "http://127.0.0.1:9/elsewhere")],
        )
            .into_response(),
        Mode::Hang => {
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
        Mode::Huge => (StatusCode::OK, vec![b'x'; 4 << 20]).into_response(),
    }
}

/// The signature header a receiver expects for `body` under `secret`.
fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// A server whose callbacks retry after 50, 100 and 150 ms.
async fn server() -> TestServer {
    TestServer::start_with(|c| c.callback_retries_ms = "50,100,150".into()).await
}

async fn set_callback(s: &TestServer, app_id: u64, url: &str) {
    let path = format!("/admin/apps/{app_id}");
    let body = json!({"settings": {"callbackUrl": url}});
    let (status, answer) = s.admin(Method::PATCH, &path, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
}

/// Waits until the admin API counts `want` = (pending, failed) for the app.
async fn wait_counts(s: &TestServer, app_id: u64, want: (u64, u64)) {
    let path = format!("/admin/apps/{app_id}/callbacks");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, body) = s.admin(Method::GET, &path, None).await;
        let got = (
            body["data"]["pending"].as_u64().unwrap(),
            body["data"]["failed"].as_u64().unwrap(),
        );
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "callbacks stayed at {got:?}, want {want:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn callbacks_carry_the_manuals_bodies_signed_and_are_retried() {
    let s = server().await;
    // NORMAL_MSG vs OFFLINE_MSG is decided by the devices of the node that commits
    // (docs/cluster.md): on a cluster, bob's device must be on that node.
    s.pin();
    let mut hook = Receiver::start(Mode::FailFirst(2)).await;
    set_callback(&s, s.app.app_id, &hook.url).await;
    let (mut alice, _) = s.connect_synced("alice", "phone").await;
    let (_bob, _) = s.connect_synced("bob", "phone").await;
    let owner = Auth::Token(s.token("alice").await);
    let topic_path = format!("/api/topic/{}", s.app.app_id);
    let mut topics = Vec::new();
    for accounts in ["bob", "bob,carl"] {
        let body = json!({"topicName": "t", "accounts": accounts});
        let (_, t) = s.call(Method::POST, &topic_path, &owner, Some(body)).await;
        topics.push(t["data"]["topicInfo"]["topicId"].as_u64().unwrap());
    }

    let to_bob = send_acked(&mut alice, "p1", "bob", "hi bob").await;
    let to_carl = send_acked(&mut alice, "p2", "carl", "hi carl").await;
    let all_on = topic_send_acked(&mut alice, "t1", topics[0], "all here").await;
    let carl_off = topic_send_acked(&mut alice, "t2", topics[1], "carl away").await;
    // A message not stored makes no callback.
    alice
        .send_frame(Kind::Send(pb::Send {
            packet_id: "o1".into(),
            to_account: "bob".into(),
            payload: Bytes::from_static(b"typing"),
            online_only: true,
            ..Default::default()
        }))
        .await
        .unwrap();
    next_ack(&mut alice).await;

    // Each callback: two failed attempts and a third that succeeds, same delivery id.
    let mut attempts: HashMap<u64, Vec<u32>> = HashMap::new();
    let mut bodies: HashMap<u64, Received> = HashMap::new();
    while attempts.values().map(Vec::len).sum::<usize>() < 12 {
        let got = hook.next().await;
        assert_eq!(got.signature, sign(&s.app.app_secret, &got.body));
        attempts.entry(got.delivery).or_default().push(got.attempt);
        bodies.insert(got.delivery, got);
    }
    for seq in [
        to_bob.sequence,
        to_carl.sequence,
        all_on.sequence,
        carl_off.sequence,
    ] {
        assert_eq!(attempts[&seq], vec![1, 2, 3], "delivery {seq}");
    }
    let app_id = s.app.app_id;
    assert_eq!(
        bodies[&to_bob.sequence].json(),
        json!({"msgType": "NORMAL_MSG", "fromAppId": app_id, "fromAccount": "alice",
               "toAppId": app_id, "toAccount": "bob", "payload": "aGkgYm9i",
               "timestamp": to_bob.timestamp})
    );
    assert_eq!(bodies[&to_carl.sequence].json()["msgType"], "OFFLINE_MSG");
    assert_eq!(bodies[&to_carl.sequence].json()["toAccount"], "carl");
    assert_eq!(
        bodies[&all_on.sequence].json(),
        json!({"msgType": "NORMAL_TOPIC_MSG", "appId": app_id, "topicId": topics[0],
               "fromAccount": "alice", "toAccounts": ["bob"], "payload": "YWxsIGhlcmU=",
               "timestamp": all_on.timestamp})
    );
    let offline = bodies[&carl_off.sequence].json();
    assert_eq!(offline["msgType"], "OFFLINE_TOPIC_MSG");
    assert_eq!(offline["toAccounts"], json!(["carl"]));
    wait_counts(&s, app_id, (0, 0)).await;
    assert!(
        hook.rx.try_recv().is_err(),
        "nothing more (no online-only callback)"
    );
}

#[tokio::test]
async fn a_callback_out_of_retries_is_failed_listed_and_replayed() {
    let s = server().await;
    let mut hook = Receiver::start(Mode::Redirect).await;
    set_callback(&s, s.app.app_id, &hook.url).await;
    let (mut alice, _) = s.connect_synced("alice", "phone").await;
    let ack = send_acked(&mut alice, "p1", "bob", "hello").await;
    // The first attempt and three retries, then it is failed.
    for attempt in 1..=4 {
        let got = hook.next().await;
        assert_eq!((got.delivery, got.attempt), (ack.sequence, attempt));
    }
    let app_id = s.app.app_id;
    wait_counts(&s, app_id, (0, 1)).await;
    let path = format!("/admin/apps/{app_id}/callbacks/failed");
    let (_, list) = s.admin(Method::GET, &path, None).await;
    let failed = &list["data"][0];
    assert_eq!(failed["sequence"], ack.sequence);
    assert_eq!(failed["msgType"], "OFFLINE_MSG");
    assert_eq!(failed["attempts"], 4);
    assert!(
        failed["lastError"]
            .as_str()
            .unwrap()
            .contains("redirects are not followed"),
        "{failed}"
    );
    assert!(
        hook.rx.try_recv().is_err(),
        "no attempt after the last retry"
    );

    // Replayed once the receiver is fixed: delivered with the same delivery id.
    *hook.mode.lock() = Mode::FailFirst(0);
    let replay = format!("/admin/apps/{app_id}/callbacks/replay");
    let (status, body) = s.admin(Method::POST, &replay, Some(json!({}))).await;
    assert_eq!((status, &body["data"]["replayed"]), (200, &json!(1)));
    let got = hook.next().await;
    assert_eq!((got.delivery, got.attempt), (ack.sequence, 1));
    wait_counts(&s, app_id, (0, 0)).await;
}

#[tokio::test]
async fn a_hanging_receiver_holds_up_neither_sends_nor_other_apps() {
    let s = TestServer::start_with(|c| {
        c.callback_concurrency_per_app = 2;
        c.callback_timeout_ms = 600_000;
    })
    .await;
    let hanging = Receiver::start(Mode::Hang).await;
    set_callback(&s, s.app.app_id, &hanging.url).await;
    let (mut alice, _) = s.connect_synced("alice", "phone").await;
    for i in 0..20 {
        send_acked(&mut alice, &format!("p{i}"), "bob", "x").await;
    }
    // Another app with a working receiver gets its callback at once.
    let (_, created) = s
        .admin(Method::POST, "/admin/apps", Some(json!({"name": "other"})))
        .await;
    let other = &created["data"];
    let other_id = other["appId"].as_u64().unwrap();
    let mut fine = Receiver::start(Mode::FailFirst(0)).await;
    set_callback(&s, other_id, &fine.url).await;
    let token = fetch_token(
        &s.http(),
        other_id,
        other["appKey"].as_str().unwrap(),
        other["appSecret"].as_str().unwrap(),
        "zed",
    )
    .await
    .unwrap();
    let mut zed = s.try_connect(&token.token, "phone").await.unwrap();
    read_backlog(&mut zed).await;
    let ack = send_acked(&mut zed, "z1", "yan", "hello").await;
    assert_eq!(fine.next().await.delivery, ack.sequence);
    // The hanging app's callbacks are all still pending, on disk.
    wait_counts(&s, s.app.app_id, (20, 0)).await;
}

#[tokio::test]
async fn pending_callbacks_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut hook = Receiver::start(Mode::Hang).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_courier"))
        .args([
            "app",
            "create",
            "--name",
            "cb",
            "--json",
            "--callback-url",
            &hook.url,
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(app["settings"]["callbackUrl"], hook.url.as_str());
    let (app_id, key, secret) = (
        app["appId"].as_u64().unwrap(),
        app["appKey"].as_str().unwrap().to_owned(),
        app["appSecret"].as_str().unwrap().to_owned(),
    );
    let args = ["--callback-retries-ms", "50,100,150"];
    let gw = Binary::start(dir.path(), &args);
    let token = fetch_token(&gw.http, app_id, &key, &secret, "alice")
        .await
        .unwrap()
        .token;
    let mut a = Client::connect(&gw.ws(), &token, "phone").await.unwrap();
    let mut acked = Vec::new();
    for i in 0..50 {
        let ack = send_acked(&mut a, &format!("k{i}"), "bob", "x").await;
        acked.push(ack.sequence);
    }
    // The receiver has the first requests hanging when the gateway dies.
    hook.next().await;
    gw.kill9();
    // What reached the receiver before the kill was never answered.
    while hook.rx.try_recv().is_ok() {}
    *hook.mode.lock() = Mode::FailFirst(0);

    let _gw = Binary::start(dir.path(), &args);
    let mut delivered: Vec<u64> = Vec::new();
    while delivered.len() < acked.len() {
        let got = hook.next().await;
        assert_eq!(got.signature, sign(&secret, &got.body));
        // A receiver dedups by delivery id.
        if !delivered.contains(&got.delivery) {
            delivered.push(got.delivery);
        }
    }
    delivered.sort_unstable();
    assert_eq!(
        delivered, acked,
        "every acked message's callback, once each by id"
    );
}

/// A receiver answering 200 with a huge body is done (only the status counts, the
/// body read is bounded); one answering garbage is retried, then failed with a
/// clear error; a URL into a private network is refused when that is switched on.
#[tokio::test]
async fn huge_and_garbage_answers_and_private_urls() {
    let s = TestServer::start_with(|c| {
        c.callback_retries_ms = "20,20,20".into();
        c.callback_max_response_bytes = 1024;
    })
    .await;
    let mut hook = Receiver::start(Mode::Huge).await;
    set_callback(&s, s.app.app_id, &hook.url).await;
    let (mut alice, _) = s.connect_synced("alice", "phone").await;
    let ack = send_acked(&mut alice, "h1", "bob", "big answer").await;
    let got = hook.next().await;
    assert_eq!((got.delivery, got.attempt), (ack.sequence, 1));
    wait_counts(&s, s.app.app_id, (0, 0)).await;

    // A server that answers garbage and closes.
    let garbage = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", garbage.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut tcp, _)) = garbage.accept().await {
            let mut buf = [0u8; 4096];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp.write_all(b"\x00\x01 not HTTP at all\r\n\r\n").await;
        }
    });
    set_callback(&s, s.app.app_id, &url).await;
    let ack = send_acked(&mut alice, "g1", "bob", "garbage answer").await;
    wait_counts(&s, s.app.app_id, (0, 1)).await;
    let path = format!("/admin/apps/{}/callbacks/failed", s.app.app_id);
    let (_, list) = s.admin(Method::GET, &path, None).await;
    assert_eq!(list["data"][0]["sequence"], ack.sequence);
    assert_eq!(list["data"][0]["attempts"], 4);
    assert!(!list["data"][0]["lastError"].as_str().unwrap().is_empty());

    let strict = TestServer::start_with(|c| c.callback_refuse_private = true).await;
    let path = format!("/admin/apps/{}", strict.app.app_id);
    for url in [
        "http://127.0.0.1:9/cb",
        "http://169.254.169.254/latest",
        "http://[::1]/",
    ] {
        let body = json!({"settings": {"callbackUrl": url}});
        let (status, answer) = strict.admin(Method::PATCH, &path, Some(body)).await;
        assert_eq!(status, 400, "{url}");
        assert!(
            answer["message"].as_str().unwrap().contains("non-public"),
            "{answer}"
        );
    }
}
