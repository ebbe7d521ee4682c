//! `/openapi.json` describes every route the server answers, and the route list it
//! is built from is the router's (every method of every path probed).

use reqwest::Method;
use serde_json::Value;

use crate::common::*;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// The path in OpenAPI's spelling.
fn spelled(path: &str) -> String {
    path.replace("{app_id}", "{appId}")
        .replace("{topic_id}", "{topicId}")
}

#[tokio::test]
async fn every_route_is_described_and_the_route_list_is_the_routers() {
    let s = TestServer::start().await;
    let resp = reqwest::get(format!("{}/openapi.json", s.http()))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    let routes = courier::api::route_list();
    assert!(routes.len() > 40, "{} routes", routes.len());
    for r in &routes {
        let op = &doc["paths"][spelled(&r.path)][r.method.to_lowercase()];
        assert!(
            op.is_object(),
            "{} {} is not in /openapi.json",
            r.method,
            r.path
        );
        assert!(op["summary"].is_string(), "{} {}", r.method, r.path);
    }
    // Schemas come from the handlers' types.
    let token = &doc["components"]["schemas"]["TokenData"]["properties"];
    assert!(token["miUserSecurityKey"].is_object(), "{token}");
    let settings = &doc["components"]["schemas"]["AppSettings"]["properties"];
    assert!(settings["callbackUrl"].is_object(), "{settings}");

    // Probe every method of every path without credentials: a listed method is
    // routed (whatever it answers, not 405 and not "no such path"); any other is 405.
    let http = reqwest::Client::new();
    let mut paths: Vec<&str> = routes.iter().map(|r| r.path.as_str()).collect();
    paths.dedup();
    for path in paths {
        let url = format!(
            "{}{}",
            s.http(),
            path.replace("{app_id}", &s.app.app_id.to_string())
                .replace("{topic_id}", "1")
        );
        for method in METHODS {
            let listed = routes.iter().any(|r| r.path == path && r.method == method);
            let resp = http
                .request(Method::from_bytes(method.as_bytes()).unwrap(), &url)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            if listed {
                assert_ne!(status, 405, "{method} {path}");
                assert!(!body.contains("no such path"), "{method} {path}: {body}");
            } else {
                assert_eq!(status, 405, "{method} {path} answers but is not listed");
            }
        }
    }
}
