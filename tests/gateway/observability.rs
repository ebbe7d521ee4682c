//! What an operator runs on: `/healthz`, `/readyz`, `/metrics` (parsed as a
//! Prometheus scraper would, its counters moving with traffic) and JSON logs.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use reqwest::Method;
use serde_json::json;

use crate::common::*;

/// Every sample of a scrape, keyed by `name{label="value",…}` (labels sorted).
async fn scrape(s: &TestServer) -> HashMap<String, f64> {
    let resp = reqwest::get(format!("{}/metrics", s.http())).await.unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = resp.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    parsed
        .samples
        .into_iter()
        .filter_map(|sample| {
            let value = match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let mut labels: Vec<String> = sample
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            labels.sort();
            Some((format!("{}{{{}}}", sample.metric, labels.join(",")), value))
        })
        .collect()
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn health_readiness_and_metrics_that_move_with_traffic() {
    let s = TestServer::start().await;
    for (path, status) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let resp = reqwest::get(format!("{}{path}", s.http())).await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body, json!({"status": status}));
    }
    // The recorder is shared by every server in this process: compare before/after.
    let before = scrape(&s).await;
    let mut ann = s.connect("ann", "phone").await;
    let mut ben = s.connect("ben", "phone").await;
    read_backlog(&mut ben).await;
    for i in 0..3 {
        send_acked(&mut ann, &format!("m{i}"), "ben", "hello").await;
        next_deliver(&mut ben).await;
    }
    let (status, _) = s
        .call(Method::GET, "/api/contact/", &Auth::App("ann".into()), None)
        .await;
    assert_eq!(status, 200);
    let after = scrape(&s).await;
    let moved = |key: &str| get(&after, key) - get(&before, key);
    assert!(
        moved(r#"courier_logins_total{result="ok"}"#) >= 2.0,
        "{after:?}"
    );
    assert!(moved(r#"courier_sends_total{kind="p2p"}"#) >= 3.0);
    assert!(moved(r#"courier_frames_in_total{type="send"}"#) >= 3.0);
    assert!(moved(r#"courier_frames_out_total{type="deliver"}"#) >= 3.0);
    assert!(moved("courier_deliveries_total{}") >= 3.0);
    assert!(moved("courier_store_commit_seconds_count{}") >= 1.0);
    assert!(
        moved(r#"courier_http_requests_total{route="/api/contact/",status="200"}"#) >= 1.0,
        "{after:?}"
    );
    assert!(get(&after, r#"courier_sessions{transport="ws"}"#) >= 2.0);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start courier");
    let stderr = child.stderr.take().unwrap();
    let line = BufReader::new(stderr)
        .lines()
        .next()
        .expect("a log line")
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).expect(&line);
    assert!(v["level"].is_string() && v["fields"].is_object(), "{v}");
}
