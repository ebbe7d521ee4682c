//! The admin API: its token, app CRUD, secret rotation, and every per-app setting
//! taking effect at once on a running server.

use courier::client::{fetch_token, ClientError, Event};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn admin_calls_need_the_token_and_are_off_without_one() {
    let s = TestServer::start().await;
    let url = format!("{}/admin/apps", s.http());
    let http = reqwest::Client::new();
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic dGVzdA=="),
        Some(ADMIN_TOKEN),
    ] {
        let mut req = http.get(&url);
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{auth:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], 401);
        assert!(body["message"].as_str().unwrap().contains("admin token"));
    }
    // A wrong token is refused before a large body is read.
    let resp = http
        .post(&url)
        .header("Authorization", "Bearer wrong")
        .body(vec![b'x'; 1 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let (status, body) = s.admin(Method::GET, "/admin/apps", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"][0]["appId"], s.app.app_id);

    let off = TestServer::start_with(|c| c.admin_token.clear()).await;
    let resp = http
        .get(format!("{}/admin/apps", off.http()))
        .bearer_auth("")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("admin API is off"));
}

#[tokio::test]
async fn apps_are_created_changed_and_deleted() {
    let s = TestServer::start().await;
    let (status, body) = s
        .admin(
            Method::POST,
            "/admin/apps",
            Some(json!({"name": "shop", "settings": {"topicMemberLimit": 3}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let app = body["data"].clone();
    let id = app["appId"].as_u64().unwrap();
    assert_eq!(app["name"], "shop");
    assert_eq!(app["settings"]["topicMemberLimit"], 3);
    assert_eq!(app["settings"]["callbackUrl"], Value::Null);
    let (key, secret) = (
        app["appKey"].as_str().unwrap(),
        app["appSecret"].as_str().unwrap(),
    );
    // The new app works at once.
    let token = fetch_token(&s.http(), id, key, secret, "amy")
        .await
        .unwrap();
    let mut amy = s.try_connect(&token.token, "phone").await.unwrap();
    read_backlog(&mut amy).await;

    let (_, list) = s.admin(Method::GET, "/admin/apps", None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    let path = format!("/admin/apps/{id}");
    let (status, body) = s
        .admin(Method::PATCH, &path, Some(json!({"name": "store"})))
        .await;
    assert_eq!((status, &body["data"]["name"]), (200, &json!("store")));
    assert_eq!(body["data"]["settings"]["topicMemberLimit"], 3, "kept");
    let (_, body) = s.admin(Method::GET, &path, None).await;
    assert_eq!(body["data"]["name"], "store");

    // Bad input: clear errors, nothing changed.
    for (patch, want) in [
        (
            json!({"settings": {"callbackUrl": "ftp://example.com/"}}),
            "http",
        ),
        (json!({"settings": {"callbackUrl": "not a url"}}), "URL"),
        (
            json!({"settings": {"maxPayloadBytes": 100_000_000}}),
            "maxPayloadBytes",
        ),
        (json!({"settings": {"unknown": 1}}), "unknown"),
        (json!({"name": ""}), "name"),
    ] {
        let (status, body) = s.admin(Method::PATCH, &path, Some(patch.clone())).await;
        assert_eq!(status, 400, "{patch}");
        assert!(body["message"].as_str().unwrap().contains(want), "{body}");
    }
    let (status, _) = s.admin(Method::GET, "/admin/apps/12345", None).await;
    assert_eq!(status, 404);
    let (status, _) = s.admin(Method::GET, "/admin/apps/abc", None).await;
    assert_eq!(status, 400);

    // Deleted: no token, its session kicked, gone from the list.
    let (status, body) = s.admin(Method::DELETE, &path, None).await;
    assert_eq!(status, 200, "{body}");
    let err = fetch_token(&s.http(), id, key, secret, "amy").await;
    assert!(err.is_err());
    let kick = until_closed(&mut amy).await.expect("kicked");
    assert_eq!(kick.code, 7);
    assert!(matches!(
        s.try_connect(&token.token, "phone").await,
        Err(ClientError::LoginRefused { code: 401, .. })
    ));
    let (_, list) = s.admin(Method::GET, "/admin/apps", None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (status, _) = s.admin(Method::DELETE, &path, None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_rotated_secret_is_refused_and_issued_tokens_keep_working() {
    let s = TestServer::start().await;
    let old = s.token("amy").await;
    let path = format!("/admin/apps/{}/secret", s.app.app_id);
    let (status, body) = s.admin(Method::POST, &path, None).await;
    assert_eq!(status, 200);
    let new_secret = body["data"]["appSecret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, s.app.app_secret);
    let app = &s.app;
    let refused = fetch_token(&s.http(), app.app_id, &app.app_key, &app.app_secret, "amy").await;
    assert!(refused.is_err(), "the old secret is refused at once");
    let fresh = fetch_token(&s.http(), app.app_id, &app.app_key, &new_secret, "amy")
        .await
        .unwrap();
    // A token issued before the rotation and one after both log in.
    for token in [old, fresh.token] {
        let mut c = s.try_connect(&token, "phone").await.unwrap();
        read_backlog(&mut c).await;
    }
    // App-header calls with the old secret are refused too.
    let (status, _) = s
        .call(
            Method::GET,
            "/api/blacklist",
            &Auth::App("amy".into()),
            None,
        )
        .await;
    assert_eq!(status, 401);
}

/// Sets one setting of the test app through the admin API.
async fn set(s: &TestServer, settings: Value) {
    let path = format!("/admin/apps/{}", s.app.app_id);
    let (status, body) = s
        .admin(Method::PATCH, &path, Some(json!({ "settings": settings })))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn payload_limit_and_send_rate_apply_at_once() {
    let s = TestServer::start().await;
    let (mut a, _) = s.connect_synced("alice", "phone").await;
    send_acked(&mut a, "p0", "bob", "twelve bytes").await;
    set(&s, json!({"maxPayloadBytes": 10})).await;
    a.send_text("p1", "bob", "twelve bytes").await.unwrap();
    let err = next_error(&mut a).await;
    assert_eq!((err.code, err.packet_id.as_str()), (413, "p1"));
    assert!(err.desc.contains("limit of 10"), "{}", err.desc);
    send_acked(&mut a, "p2", "bob", "ten bytes!").await;
    let push = json!({
        "appId": s.app.app_id, "appKey": s.app.app_key, "appSecret": s.app.app_secret,
        "fromAccount": "alice", "toAccount": "bob", "msg": "twelve bytes", "msgType": "",
    });
    let (status, _) = s
        .call(Method::POST, "/api/push/p2p", &Auth::None, Some(push))
        .await;
    assert_eq!(status, 413);

    // 1 message/s per user, bursts of 2: the third send in a row is refused.
    set(&s, json!({"maxPayloadBytes": null, "sendRatePerUser": 1})).await;
    let mut codes = Vec::new();
    for i in 0..3 {
        a.send_text(&format!("r{i}"), "bob", "hi").await.unwrap();
        codes.push(
            wait_for(&mut a, |e| match e {
                Event::ServerAck(ack) => Some(ack.code),
                Event::Error(err) => Some(err.code),
                _ => None,
            })
            .await,
        );
    }
    assert_eq!(codes, vec![200, 200, 429]);
    set(&s, json!({"sendRatePerUser": null})).await;
    send_acked(&mut a, "r9", "bob", "hi").await;
}

#[tokio::test]
async fn backlog_settings_apply_at_the_next_login() {
    let s = TestServer::start_with(|c| c.backlog_batch = 5).await;
    let (mut a, _) = s.connect_synced("alice", "phone").await;
    for i in 0..12 {
        send_acked(&mut a, &format!("p{i}"), "bob", "x").await;
    }
    // Over the app's backlog limit: the newest batch and a PullNotice.
    set(&s, json!({"backlogLimit": 10})).await;
    let mut b = s.connect("bob", "phone").await;
    wait_for(&mut b, |e| match e {
        Event::PullNotice(n) => Some(n),
        _ => None,
    })
    .await;
    assert_eq!(read_backlog(&mut b).await.len(), 5);
    drop(b);
    // An offline window of 0: nothing is delivered at login any more.
    set(&s, json!({"backlogLimit": null, "offlineTtlSecs": 0})).await;
    let (_, backlog) = s.connect_synced("bob", "tablet").await;
    assert!(backlog.is_empty(), "{} delivered", backlog.len());
    set(&s, json!({"offlineTtlSecs": null})).await;
    let (_, backlog) = s.connect_synced("bob", "laptop").await;
    assert_eq!(backlog.len(), 12);
}

#[tokio::test]
async fn topic_limit_contacts_window_and_retention_apply_at_once() {
    let s = TestServer::start().await;
    let owner = Auth::Token(s.token("owner").await);
    let create = |accounts: &'static str| {
        let s = &s;
        let owner = owner.clone();
        async move {
            let path = format!("/api/topic/{}", s.app.app_id);
            let body = json!({"topicName": "t", "accounts": accounts});
            s.call(Method::POST, &path, &owner, Some(body)).await.0
        }
    };
    assert_eq!(create("a,b,c").await, 200);
    set(&s, json!({"topicMemberLimit": 3})).await;
    assert_eq!(create("a,b,c").await, 400, "4 members over a limit of 3");
    assert_eq!(create("a,b").await, 200);

    // Contacts: a window of one minute hides a conversation two minutes old.
    let (mut a, _) = s.connect_synced("owner", "phone").await;
    send_acked(&mut a, "c1", "peer", "hello").await;
    let state = s.server.as_ref().unwrap().state.clone();
    state.clock.advance(std::time::Duration::from_secs(120));
    let users = || async {
        let (_, list) = s.call(Method::GET, "/api/contact/", &owner, None).await;
        let entries = list["data"].as_array().unwrap().clone();
        entries
            .into_iter()
            .filter(|c| c["userType"] == "USER")
            .count()
    };
    assert_eq!(users().await, 1);
    set(&s, json!({"contactsWindowSecs": 60})).await;
    assert_eq!(users().await, 0);

    // Retention of 60 s: the sweep deletes the two-minute-old message.
    set(&s, json!({"historyRetentionSecs": 60})).await;
    let report = courier::sweeper::round(&state).await.unwrap();
    assert_eq!(report.messages, 1);
}
