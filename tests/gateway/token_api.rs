//! `POST /api/account/token`, exactly as the manual's 安全认证 section.

use serde_json::{json, Value};

use crate::common::*;

async fn post(s: &TestServer, body: String) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/api/account/token", s.http()))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn token_answer_has_the_manuals_shape() {
    let s = TestServer::start().await;
    let app = &s.app;
    let body = json!({"appId": app.app_id, "appKey": app.app_key, "appSecret": app.app_secret,
                      "appAccount": "13800000001"});
    let (status, v) = post(&s, body.to_string()).await;
    assert_eq!(status, 200);
    assert_eq!(v["code"], 200);
    assert_eq!(v["message"], "success");
    let d = &v["data"];
    // Strings of decimal digits, as the MIMC service served them (the MIMC SDKs
    // compare and encode them as strings).
    assert_eq!(d["appId"], json!(app.app_id.to_string()));
    assert_eq!(d["appAccount"], "13800000001");
    assert_eq!(d["miChid"], 9);
    assert!(d["appPackage"].is_string());
    let uuid: u64 = d["miUserId"].as_str().unwrap().parse().unwrap();
    assert!(uuid > 0);
    assert_eq!(
        d["miUserSecurityKey"].as_str().unwrap().len() % 4,
        0,
        "padded base64"
    );
    assert!(!d["miUserSecurityKey"].as_str().unwrap().is_empty());
    assert!(!d["token"].as_str().unwrap().is_empty());

    // Same account, same uuid; appId may be sent as a string too.
    let body = json!({"appId": app.app_id.to_string(), "appKey": app.app_key,
                      "appSecret": app.app_secret, "appAccount": "13800000001"});
    let (_, again) = post(&s, body.to_string()).await;
    assert_eq!(again["data"]["miUserId"], d["miUserId"]);
    let body = json!({"appId": app.app_id, "appKey": app.app_key, "appSecret": app.app_secret,
                      "appAccount": "13800000002"});
    let (_, other) = post(&s, body.to_string()).await;
    assert_ne!(other["data"]["miUserId"], d["miUserId"]);
}

#[tokio::test]
async fn bad_token_requests_get_the_envelope_with_an_error_code() {
    let s = TestServer::start().await;
    let app = &s.app;
    let cases = [
        (
            json!({"appId": app.app_id, "appKey": "wrong", "appSecret": app.app_secret,
                "appAccount": "a"})
            .to_string(),
            401,
            "appKey",
        ),
        (
            json!({"appId": app.app_id, "appKey": app.app_key, "appSecret": "wrong",
                "appAccount": "a"})
            .to_string(),
            401,
            "appSecret",
        ),
        (
            json!({"appId": 12345, "appKey": app.app_key, "appSecret": app.app_secret,
                "appAccount": "a"})
            .to_string(),
            404,
            "unknown appId",
        ),
        (
            json!({"appId": app.app_id, "appKey": app.app_key, "appSecret": app.app_secret})
                .to_string(),
            400,
            "appAccount",
        ),
        (
            json!({"appId": app.app_id, "appKey": app.app_key, "appSecret": app.app_secret,
                "appAccount": ""})
            .to_string(),
            400,
            "appAccount",
        ),
        (
            json!({"appId": "abc", "appKey": app.app_key, "appSecret": app.app_secret,
                "appAccount": "a"})
            .to_string(),
            400,
            "numeric",
        ),
        ("{not json".to_string(), 400, "invalid JSON"),
        (String::new(), 400, "empty"),
    ];
    for (body, code, words) in cases {
        let (status, v) = post(&s, body.clone()).await;
        assert_eq!(v["code"], code, "body {body}: {v}");
        assert_eq!(status, code, "body {body}");
        assert!(v["data"].is_null());
        let msg = v["message"].as_str().unwrap();
        assert!(
            msg.contains(words),
            "message {msg:?} should mention {words:?}"
        );
    }
}

#[tokio::test]
async fn healthz_answers() {
    let s = TestServer::start().await;
    let v: Value = reqwest::get(format!("{}/healthz", s.http()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "ok");
}
