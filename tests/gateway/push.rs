//! Push API (manual 推送消息): messages an app server sends as an account are stored
//! and delivered like that account's own sends.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

both_transports!(
    p2p_push_is_delivered_and_stored_like_a_send,
    batch_pushes_reach_every_recipient_and_topic,
);

fn body(s: &TestServer, extra: Value) -> Value {
    let mut b = json!({
        "appId": s.app.app_id, "appKey": s.app.app_key, "appSecret": s.app.app_secret,
        "fromAccount": "server-bot", "fromResource": "backend", "msgType": "",
    });
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

async fn push(s: &TestServer, path: &str, b: Value) -> (u16, Value) {
    s.call(Method::POST, path, &Auth::None, Some(b)).await
}

async fn topic(s: &TestServer, owner: &str, members: &str) -> u64 {
    let (status, v) = s
        .call(
            Method::POST,
            &format!("/api/topic/{}", s.app.app_id),
            &Auth::App(owner.into()),
            Some(json!({"topicName": "t", "accounts": members})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    v["data"]["topicInfo"]["topicId"].as_u64().unwrap()
}

async fn p2p_push_is_delivered_and_stored_like_a_send(t: Transport) {
    let s = TestServer::on(t).await;
    let (mut bob, _) = s.connect_synced("bob", "phone").await;
    let (mut bot_device, _) = s.connect_synced("server-bot", "phone").await;
    let (status, v) = push(
        &s,
        "/api/push/p2p/",
        body(&s, json!({"toAccount": "bob", "msg": "Hello B"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["code"], 200);
    assert_eq!(v["message"], "success");
    let packet_id = v["data"]["packetId"].as_str().unwrap().to_owned();

    let d = next_deliver(&mut bob).await;
    assert_eq!(text(&d), "Hello B");
    assert_eq!(d.packet_id, packet_id);
    assert_eq!(
        (d.from_account.as_str(), d.from_resource.as_str()),
        ("server-bot", "backend")
    );
    // The sender's own devices see it too, as for any send.
    assert_eq!(next_deliver(&mut bot_device).await.sequence, d.sequence);

    // base64: binary payload.
    let (status, _) = push(
        &s,
        "/api/push/p2p",
        body(
            &s,
            json!({"toAccount": "carol", "msg": "AAEC/w==", "msgType": "base64"}),
        ),
    )
    .await;
    assert_eq!(status, 200);
    // carol was offline: it is in her backlog.
    let (_carol, backlog) = s.connect_synced("carol", "phone").await;
    assert_eq!(backlog.len(), 1);
    assert_eq!(backlog[0].payload.as_ref(), &[0u8, 1, 2, 255]);
}

async fn batch_pushes_reach_every_recipient_and_topic(t: Transport) {
    let s = TestServer::on(t).await;
    let (status, v) = push(
        &s,
        "/api/push/p2p/more",
        body(&s, json!({"toAccounts": ["u1", "u2", "u3"], "msg": "news"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let ids = v["data"]["packetIds"].as_array().unwrap();
    assert_eq!(ids.len(), 3);
    for (i, u) in ["u1", "u2", "u3"].iter().enumerate() {
        let (_c, backlog) = s.connect_synced(u, "phone").await;
        assert_eq!(backlog.len(), 1);
        assert_eq!(backlog[0].packet_id, ids[i].as_str().unwrap());
        assert_eq!(text(&backlog[0]), "news");
    }

    let t1 = topic(&s, "server-bot", "ann,ben").await;
    let t2 = topic(&s, "server-bot", "ann,cat").await;
    let (mut ann, _) = s.connect_synced("ann", "phone").await;
    let (status, v) = push(
        &s,
        "/api/push/p2t/",
        body(&s, json!({"topicId": t1, "msg": "to t1"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["data"]["packetId"].is_string());
    let d = next_deliver(&mut ann).await;
    assert_eq!((d.topic_id, text(&d).as_str()), (t1, "to t1"));

    let (status, v) = push(
        &s,
        "/api/push/p2t/more",
        body(&s, json!({"topicIds": [t1, t2], "msg": "to both"})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["packetIds"].as_array().unwrap().len(), 2);
    let got: Vec<u64> = vec![
        next_deliver(&mut ann).await.topic_id,
        next_deliver(&mut ann).await.topic_id,
    ];
    assert_eq!(got, vec![t1, t2]);
    let (_ben, backlog) = s.connect_synced("ben", "phone").await;
    assert_eq!(
        backlog.iter().map(text).collect::<Vec<_>>(),
        ["to t1", "to both"]
    );
}

#[tokio::test]
async fn bad_pushes_get_the_envelope_and_send_nothing() {
    let s = TestServer::start().await;
    let mine = topic(&s, "server-bot", "ann").await;
    let theirs = topic(&s, "someone", "ann").await;
    let cases = vec![
        (
            "/api/push/p2p/",
            body(
                &s,
                json!({"toAccount": "ann", "msg": "x", "appSecret": "nope"}),
            ),
            401,
            "appSecret",
        ),
        (
            "/api/push/p2p/",
            body(
                &s,
                json!({"toAccount": "ann", "msg": "%%%", "msgType": "base64"}),
            ),
            400,
            "base64",
        ),
        (
            "/api/push/p2p/",
            body(
                &s,
                json!({"toAccount": "ann", "msg": "x", "msgType": "hex"}),
            ),
            400,
            "msgType",
        ),
        (
            "/api/push/p2p/",
            body(&s, json!({"msg": "x"})),
            400,
            "toAccount",
        ),
        (
            "/api/push/p2p/",
            body(&s, json!({"toAccount": "ann"})),
            400,
            "msg",
        ),
        (
            "/api/push/p2p/",
            body(
                &s,
                json!({"toAccount": "ann", "msg": "x", "fromAccount": ""}),
            ),
            400,
            "fromAccount",
        ),
        (
            "/api/push/p2p/",
            body(&s, json!({"toAccount": 7, "msg": "x"})),
            400,
            "invalid JSON",
        ),
        (
            "/api/push/p2p/",
            body(
                &s,
                json!({"toAccount": "ann", "msg": "x".repeat(16 * 1024)}),
            ),
            413,
            "limit",
        ),
        (
            "/api/push/p2p/more",
            body(&s, json!({"toAccounts": [], "msg": "x"})),
            400,
            "empty",
        ),
        (
            "/api/push/p2t/",
            body(&s, json!({"topicId": 99999, "msg": "x"})),
            404,
            "unknown topic",
        ),
        (
            "/api/push/p2t/",
            body(&s, json!({"topicId": theirs, "msg": "x"})),
            403,
            "not a member",
        ),
        // All or nothing: one topic of the batch is not the sender's.
        (
            "/api/push/p2t/more",
            body(&s, json!({"topicIds": [mine, theirs], "msg": "x"})),
            403,
            "not a member",
        ),
        (
            "/api/push/p2t/more",
            body(&s, json!({"topicIds": [], "msg": "x"})),
            400,
            "empty",
        ),
    ];
    for (path, b, code, words) in cases {
        let (status, v) = push(&s, path, b.clone()).await;
        assert_eq!(status, code, "{path} {b}: {v}");
        assert_eq!(v["code"], code);
        assert!(v["data"].is_null());
        let msg = v["message"].as_str().unwrap();
        assert!(
            msg.contains(words),
            "{path}: {msg:?} should mention {words:?}"
        );
    }
    let (status, v) = s
        .call(Method::POST, "/api/push/p2p/", &Auth::None, None)
        .await;
    assert_eq!((status, v["code"].as_u64()), (400, Some(400)));
    // Nothing reached ann.
    let (_ann, backlog) = s.connect_synced("ann", "phone").await;
    assert!(backlog.is_empty(), "{backlog:?}");
}
