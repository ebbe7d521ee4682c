//! The web demo at /demo: its files are served from the binary, and /demo/token hands
//! out tokens of the default app only where the configuration allows it.

use crate::common::*;

async fn get(s: &TestServer, path: &str) -> (u16, String, String) {
    let resp = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(format!("{}{path}", s.http()))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let kind = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, kind, resp.text().await.unwrap())
}

async fn demo_token(s: &TestServer, body: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/demo/token", s.http()))
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn the_demo_is_served_and_its_tokens_log_in_on_loopback() {
    let s = TestServer::start().await;
    let (status, _, _) = get(&s, "/demo").await;
    assert_eq!(status, 308, "/demo redirects to /demo/");
    let (status, kind, page) = get(&s, "/demo/").await;
    assert_eq!((status, kind.as_str()), (200, "text/html; charset=utf-8"));
    assert!(page.contains("<script type=\"module\" src=\"demo.js\">"));
    let (status, kind, script) = get(&s, "/demo/demo.js").await;
    assert_eq!(
        (status, kind.as_str()),
        (200, "text/javascript; charset=utf-8")
    );
    assert!(
        script.contains("courier.v1"),
        "the bundled SDK speaks the protocol"
    );
    assert_eq!(get(&s, "/demo/nope.js").await.0, 404);

    // The token answer is the token API's, for the default app: it logs in.
    let (status, v) = demo_token(&s, r#"{"account":"alice"}"#).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["appAccount"], "alice");
    assert_eq!(v["data"]["appPackage"], "default");
    let token = v["data"]["token"].as_str().unwrap();
    let mut c = s.try_connect(token, "web").await.unwrap();
    assert!(read_backlog(&mut c).await.is_empty());
    // Bad input: the name rule and JSON, as the token API.
    assert_eq!(demo_token(&s, r#"{"account":""}"#).await.0, 400);
    assert_eq!(demo_token(&s, "not json").await.0, 400);
}

#[tokio::test]
async fn demo_tokens_off_and_demo_off_are_refused() {
    let s = TestServer::start_with(|c| c.demo_tokens = "off".into()).await;
    let (status, v) = demo_token(&s, r#"{"account":"alice"}"#).await;
    assert_eq!(status, 403, "{v}");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("demo tokens are off"));
    assert_eq!(get(&s, "/demo/").await.0, 200, "the page itself stays");

    let s = TestServer::start_with(|c| c.demo = false).await;
    assert_eq!(get(&s, "/demo/").await.0, 404);
    assert_eq!(get(&s, "/demo/demo.js").await.0, 404);
    assert_eq!(demo_token(&s, r#"{"account":"alice"}"#).await.0, 403);
}
