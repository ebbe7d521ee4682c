//! Crash safety with the real binary: every acknowledged message survives `kill -9`
//! and is delivered exactly once, in sequence order, after the restart.

use std::process::Command;

use bytes::Bytes;
use courier::client::{fetch_token, Client, Event};
use courier::pb::{self, frame::Kind};
use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn acknowledged_messages_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_courier"))
        .args(["app", "create", "--name", "crash", "--json", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let app: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (app_id, key, secret) = (
        app["appId"].as_u64().unwrap(),
        app["appKey"].as_str().unwrap().to_owned(),
        app["appSecret"].as_str().unwrap().to_owned(),
    );

    let gw = Binary::start(
        dir.path(),
        &["--backlog-limit", "10000", "--backlog-batch", "500"],
    );
    let token = fetch_token(&gw.http, app_id, &key, &secret, "alice")
        .await
        .unwrap()
        .token;
    let mut a = Client::connect(&gw.ws(), &token, "phone").await.unwrap();
    let n = 2000;
    for i in 0..n {
        a.writer
            .feed(Kind::Send(pb::Send {
                packet_id: format!("c{i}"),
                to_account: "bob".into(),
                payload: Bytes::from(format!("msg {i}")),
                ..Default::default()
            }))
            .await
            .unwrap();
    }
    a.writer.flush().await.unwrap();
    // Collect some of the acks, then kill the server mid-stream.
    let mut acked = Vec::new();
    while acked.len() < n / 2 {
        if let Some(Event::ServerAck(ack)) = next(&mut a).await {
            assert_eq!(ack.code, 200);
            acked.push(ack.sequence);
        }
    }
    gw.kill9();
    // Acks that were already on the wire count too.
    while let Ok(Some(ev)) = a.next_event().await {
        if let Event::ServerAck(ack) = ev {
            acked.push(ack.sequence);
        }
    }

    let gw = Binary::start(
        dir.path(),
        &["--backlog-limit", "10000", "--backlog-batch", "500"],
    );
    let token = fetch_token(&gw.http, app_id, &key, &secret, "bob")
        .await
        .unwrap()
        .token;
    let mut b = Client::connect(&gw.ws(), &token, "phone").await.unwrap();
    let mut received = Vec::new();
    loop {
        match next(&mut b).await {
            Some(Event::Deliver(d)) => received.push(d.sequence),
            Some(Event::PullNotice(n)) => panic!("backlog limit hit: {n:?}"),
            Some(Event::SyncDone(_)) => break,
            Some(_) => {}
            None => panic!("closed"),
        }
    }
    let mut sorted = received.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, received, "delivered once each, in sequence order");
    for seq in &acked {
        assert!(received.binary_search(seq).is_ok(), "acked {seq} was lost");
    }
}
