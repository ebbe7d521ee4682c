//! The manual's p2p blacklist (单聊黑名单): the three calls in both auth modes, and
//! the one-way block on every path a p2p message takes (live, backlog, push), with
//! the blocked sender answered as if nothing happened.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

both_transports!(blacklisted_senders_reach_no_device_backlog_or_push);

/// `appId` + `appKey` + `appSecret` + `appAccount` headers, as the manual passes them.
async fn call_app(
    s: &TestServer,
    method: Method,
    path: &str,
    account: &str,
    app_id: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", s.http()))
        .header("Content-Type", "application/json")
        .header("appId", app_id)
        .header("appKey", &s.app.app_key)
        .header("appSecret", &s.app.app_secret)
        .header("appAccount", account);
    if let Some(body) = body {
        req = req.body(body.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn is_black(s: &TestServer, auth: &Auth, black: &str) -> bool {
    let (status, v) = s
        .call(
            Method::GET,
            &format!("/api/blacklist/?blackAccount={black}"),
            auth,
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v["data"]["isBlack"].as_bool().unwrap()
}

#[tokio::test]
async fn blacklist_calls_in_both_auth_modes() {
    let s = TestServer::start().await;
    let alice = Auth::Token(s.token("alice").await);
    let app_id = s.app.app_id.to_string();

    // Token mode: add, check (both spellings of the path).
    let (status, v) = s
        .call(
            Method::POST,
            "/api/blacklist/",
            &alice,
            Some(json!({"blackAccount": "bob"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"code": 200, "message": "success", "data": null}));
    assert!(is_black(&s, &alice, "bob").await);
    assert!(!is_black(&s, &alice, "carol").await, "never named");
    assert!(
        !is_black(&s, &Auth::Token(s.token("bob").await), "alice").await,
        "one-way"
    );

    // App mode with the appId header: the same list.
    let (status, v) = call_app(
        &s,
        Method::GET,
        "/api/blacklist?blackAccount=bob",
        "alice",
        &app_id,
        None,
    )
    .await;
    assert_eq!((status, &v["data"]["isBlack"]), (200, &json!(true)), "{v}");
    let (status, _) = call_app(
        &s,
        Method::DELETE,
        "/api/blacklist/?blackAccount=bob",
        "alice",
        &app_id,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert!(!is_black(&s, &alice, "bob").await);
    // Removing what is not there, or an account that does not exist, is fine.
    let (status, _) = s
        .call(
            Method::DELETE,
            "/api/blacklist/?blackAccount=nobody-yet",
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 200);

    // Bad input: envelope, non-200, nothing changed.
    let cases: Vec<(Method, &str, Option<Value>, u16, &str)> = vec![
        (
            Method::POST,
            "/api/blacklist/",
            Some(json!({})),
            400,
            "blackAccount",
        ),
        (
            Method::POST,
            "/api/blacklist/",
            Some(json!({"blackAccount": "alice"})),
            400,
            "itself",
        ),
        (
            Method::POST,
            "/api/blacklist/",
            Some(json!({"blackAccount": ""})),
            400,
            "blackAccount",
        ),
        (Method::GET, "/api/blacklist/", None, 400, "blackAccount"),
        (
            Method::DELETE,
            "/api/blacklist/?blackAccount=",
            None,
            400,
            "blackAccount",
        ),
    ];
    for (method, path, body, code, says) in cases {
        let (status, v) = s.call(method.clone(), path, &alice, body.clone()).await;
        assert_eq!(status, code, "{method} {path} {body:?}: {v}");
        assert_eq!(v["code"], code);
        assert!(v["message"].as_str().unwrap().contains(says), "{v}");
    }
    let (status, v) = s
        .call(
            Method::GET,
            "/api/blacklist/?blackAccount=bob",
            &Auth::None,
            None,
        )
        .await;
    assert_eq!(status, 401, "{v}");
    // Another app's id with this app's key and secret.
    let (status, v) = call_app(
        &s,
        Method::GET,
        "/api/blacklist/?blackAccount=bob",
        "alice",
        "12345",
        None,
    )
    .await;
    assert!(status == 404 || status == 401, "{status} {v}");
    let (status, v) = call_app(
        &s,
        Method::GET,
        "/api/blacklist/?blackAccount=bob",
        "alice",
        "not-a-number",
        None,
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(!is_black(&s, &alice, "alice").await);
}

#[tokio::test]
async fn a_full_blacklist_refuses_one_more() {
    let s = TestServer::start_with(|c| c.max_blacklist_per_user = 2).await;
    let alice = Auth::App("alice".into());
    for black in ["b1", "b2", "b2"] {
        let (status, v) = s
            .call(
                Method::POST,
                "/api/blacklist",
                &alice,
                Some(json!({"blackAccount": black})),
            )
            .await;
        assert_eq!(status, 200, "{black}: {v}");
    }
    let (status, v) = s
        .call(
            Method::POST,
            "/api/blacklist",
            &alice,
            Some(json!({"blackAccount": "b3"})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("full"), "{v}");
    assert!(!is_black(&s, &alice, "b3").await);
}

async fn blacklisted_senders_reach_no_device_backlog_or_push(t: Transport) {
    let s = TestServer::on(t).await;
    let (mut alice, _) = s.connect_synced("alice", "phone").await;
    let (mut bob, _) = s.connect_synced("bob", "phone").await;
    let (mut bob_pad, _) = s.connect_synced("bob", "pad").await;
    let (mut carol, _) = s.connect_synced("carol", "phone").await;
    let (status, _) = s
        .call(
            Method::POST,
            "/api/blacklist/",
            &Auth::Token(s.token("alice").await),
            Some(json!({"blackAccount": "bob"})),
        )
        .await;
    assert_eq!(status, 200);

    // Bob's send: an ordinary ack (alice is online, so "delivered"), his other
    // device syncs it, and alice gets nothing: the next thing she receives is
    // carol's later message.
    let blocked = send_acked(&mut bob, "b-1", "alice", "you blocked me").await;
    assert!(blocked.delivered, "the sender is not told: {blocked:?}");
    assert_eq!(next_deliver(&mut bob_pad).await.sequence, blocked.sequence);
    // Pushed as bob by the app server: blocked too, and the push succeeds.
    let (status, v) = s
        .call(
            Method::POST,
            "/api/push/p2p/",
            &Auth::None,
            Some(json!({
                "appId": s.app.app_id, "appKey": s.app.app_key, "appSecret": s.app.app_secret,
                "fromAccount": "bob", "fromResource": "backend", "toAccount": "alice",
                "msg": "pushed as bob", "msgType": "",
            })),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let marker = send_acked(&mut carol, "c-1", "alice", "from carol").await;
    let d = next_deliver(&mut alice).await;
    assert_eq!(
        (d.sequence, text(&d).as_str()),
        (marker.sequence, "from carol")
    );

    // Nor in the backlog of a device that logs in later.
    let (_alice_pad, backlog) = s.connect_synced("alice", "pad").await;
    assert_eq!(packet_ids(&backlog), ["c-1"]);

    // Bob still sees his own messages in his timeline.
    let (_bob_web, bob_backlog) = s.connect_synced("bob", "web").await;
    assert!(
        bob_backlog.iter().any(|d| d.packet_id == "b-1"),
        "{bob_backlog:?}"
    );

    // Taken off the list: bob's next message arrives.
    let (status, _) = s
        .call(
            Method::DELETE,
            "/api/blacklist/?blackAccount=bob",
            &Auth::App("alice".into()),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let ack = send_acked(&mut bob, "b-2", "alice", "friends again").await;
    let d = next_deliver(&mut alice).await;
    assert_eq!(
        (d.sequence, text(&d).as_str()),
        (ack.sequence, "friends again")
    );
}
