//! Cluster mode: three gateway nodes sharing one PostgreSQL schema and one NATS
//! (`scripts/postgres`, `scripts/nats`, or the servers `scripts/test` started), each
//! test on its own schema and subject prefix. What a user has on one node holds
//! across nodes: one timeline for devices on different nodes, dedup of a retry on
//! another node, the single-resource kick, topic fan-out and membership changes,
//! online-only outcomes, the push API, blacklists; and nothing acked is lost when a
//! node is killed or NATS restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use courier::client::{fetch_token, Client, Event};
use courier::pb::{self, frame::Kind};
use courier::protocol::codes;
use reqwest::Method;
use serde_json::json;

use crate::common::*;
use crate::services::{Nats, Postgres};

/// A cluster of three in-process nodes and the servers it runs on.
struct Fixture {
    s: TestServer,
    nats: Nats,
    _pg: Postgres,
}

async fn cluster(nats: Nats) -> Fixture {
    cluster_of(nats, 3).await
}

/// `nodes` nodes on a fresh schema (and subject prefix) of the suite's PostgreSQL.
async fn cluster_of(nats: Nats, nodes: usize) -> Fixture {
    let pg = Postgres::start();
    let name = fresh_schema_name();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path().to_path_buf());
    config.store_kind = "postgres".into();
    config.postgres_url = pg.fresh(&name).await;
    config.nats_url = nats.url.clone();
    config.cluster_subject_prefix = name;
    let s = TestServer::nodes(config, nodes, Transport::Ws, dir).await;
    Fixture { s, nats, _pg: pg }
}

/// Reads deliveries until `n` distinct sequences came; returns them (a duplicate
/// fails the test when `exactly_once`).
async fn distinct_deliveries(client: &mut Client, n: usize, exactly_once: bool) -> BTreeSet<u64> {
    let mut seen = BTreeSet::new();
    while seen.len() < n {
        let d = match tokio::time::timeout(WAIT, client.next_event()).await {
            Ok(Ok(Some(Event::Deliver(d)))) => d,
            Ok(Ok(Some(_))) => continue,
            other => panic!("{} of {n} deliveries came, then {other:?}", seen.len()),
        };
        let new = seen.insert(d.sequence);
        assert!(
            new || !exactly_once,
            "sequence {} delivered twice",
            d.sequence
        );
    }
    seen
}

fn transient(packet_id: &str, to: &str, to_resource: &str) -> Kind {
    Kind::Send(pb::Send {
        packet_id: packet_id.into(),
        to_account: to.into(),
        to_resource: to_resource.into(),
        online_only: true,
        payload: bytes::Bytes::from_static(b"typing"),
        ..Default::default()
    })
}

#[tokio::test]
async fn devices_on_different_nodes_see_one_timeline() {
    let f = cluster(Nats::start()).await;
    let s = &f.s;
    let (mut phone, _) = s.connect_synced_at(0, "bob", "phone").await;
    let (mut pad, _) = s.connect_synced_at(1, "bob", "pad").await;
    let (mut alice, _) = s.connect_synced_at(2, "alice", "phone").await;
    let (mut alice_pad, _) = s.connect_synced_at(1, "alice", "pad").await;
    let (mut carol, _) = s.connect_synced_at(0, "carol", "phone").await;
    // Senders on two nodes, to bob's devices on two nodes (one of them the
    // sender's own node).
    let mut acked = BTreeSet::new();
    let mut from_alice = BTreeSet::new();
    for i in 0..10 {
        let a = send_acked(&mut alice, &format!("a{i}"), "bob", "from alice").await;
        from_alice.insert(a.sequence);
        acked.insert(a.sequence);
        acked.insert(
            send_acked(&mut carol, &format!("c{i}"), "bob", "from carol")
                .await
                .sequence,
        );
    }
    assert_eq!(distinct_deliveries(&mut phone, 20, true).await, acked);
    assert_eq!(distinct_deliveries(&mut pad, 20, true).await, acked);
    // The sender's other device, on a third node, sees what she sent.
    assert_eq!(
        distinct_deliveries(&mut alice_pad, 10, true).await,
        from_alice
    );
    // A new device reads the one timeline, in sequence order.
    let (_tablet, backlog) = s.connect_synced_at(2, "bob", "tablet").await;
    assert_eq!(sequences(&backlog), acked.into_iter().collect::<Vec<_>>());
}

#[tokio::test]
async fn a_retry_on_another_node_gets_the_same_sequence() {
    let f = cluster(Nats::start()).await;
    let s = &f.s;
    let (mut bob, _) = s.connect_synced_at(2, "bob", "phone").await;
    let (mut alice, _) = s.connect_synced_at(0, "alice", "phone").await;
    let first = send_acked(&mut alice, "p-1", "bob", "once").await;
    assert_eq!(next_deliver(&mut bob).await.sequence, first.sequence);
    drop(alice);
    // The client lost its ack and retries through another node.
    let (mut alice, _) = s.connect_synced_at(1, "alice", "phone").await;
    let retry = send_acked(&mut alice, "p-1", "bob", "once").await;
    assert_eq!(retry.sequence, first.sequence);
    // Bob is not given the retry: the next thing he gets is the next message.
    let next = send_acked(&mut alice, "p-2", "bob", "twice").await;
    let d = next_deliver(&mut bob).await;
    assert_eq!((d.sequence, d.packet_id.as_str()), (next.sequence, "p-2"));
}

#[tokio::test]
async fn a_login_on_another_node_kicks_the_same_resource() {
    let f = cluster(Nats::start()).await;
    let s = &f.s;
    let (mut old, _) = s.connect_synced_at(0, "bob", "phone").await;
    let (mut other, _) = s.connect_synced_at(2, "bob", "pad").await;
    let (_new, _) = s.connect_synced_at(1, "bob", "phone").await;
    let kick = until_closed(&mut old)
        .await
        .expect("old session gets a Kick");
    assert_eq!(kick.code, codes::KICK_REPLACED);
    // Another resource of bob stays.
    let (mut alice, _) = s.connect_synced_at(0, "alice", "phone").await;
    let ack = send_acked(&mut alice, "hi", "bob", "still here?").await;
    assert_eq!(next_deliver(&mut other).await.sequence, ack.sequence);
}

#[tokio::test]
async fn topics_fan_out_across_nodes_and_membership_changes_reach_every_node() {
    let f = cluster(Nats::start()).await;
    let s = &f.s;
    let app = s.app.app_id;
    let (status, v) = s
        .call_at(
            1,
            Method::POST,
            &format!("/api/topic/{app}"),
            &Auth::App("alice".into()),
            Some(json!({"topicName": "t", "accounts": "bob,carol"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let topic = v["data"]["topicInfo"]["topicId"].as_u64().unwrap();
    let (mut alice, _) = s.connect_synced_at(0, "alice", "phone").await;
    let (mut bob, _) = s.connect_synced_at(1, "bob", "phone").await;
    let (mut carol, _) = s.connect_synced_at(2, "carol", "phone").await;
    let first = topic_send_acked(&mut alice, "t1", topic, "hello all").await;
    assert_eq!(next_deliver(&mut bob).await.sequence, first.sequence);
    assert_eq!(next_deliver(&mut carol).await.sequence, first.sequence);
    // Node 2 has the topic cached now; dave joins through node 0.
    let second = topic_send_acked(&mut carol, "t2", topic, "hi").await;
    assert_eq!(next_deliver(&mut alice).await.sequence, second.sequence);
    assert_eq!(next_deliver(&mut bob).await.sequence, second.sequence);
    let (status, v) = s
        .call_at(
            0,
            Method::POST,
            &format!("/api/topic/{app}/{topic}/accounts"),
            &Auth::App("alice".into()),
            Some(json!({"accounts": "dave"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    // Dave, on node 2, may send to it at once, and everyone gets it.
    let (mut dave, _) = s.connect_synced_at(2, "dave", "phone").await;
    let third = topic_send_acked(&mut dave, "t3", topic, "I'm in").await;
    for member in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(next_deliver(member).await.sequence, third.sequence);
    }
    let fourth = topic_send_acked(&mut bob, "t4", topic, "welcome").await;
    assert_eq!(next_deliver(&mut dave).await.sequence, fourth.sequence);
}

#[tokio::test]
async fn online_only_outcomes_count_every_node() {
    let f = cluster(Nats::start()).await;
    let s = &f.s;
    let (mut alice, _) = s.connect_synced_at(0, "alice", "phone").await;
    let (mut bob, _) = s.connect_synced_at(1, "bob", "phone").await;
    alice.send_frame(transient("t1", "bob", "")).await.unwrap();
    let ack = next_ack(&mut alice).await;
    assert!(ack.delivered, "bob's phone on node 1 took it: {ack:?}");
    assert_eq!(next_deliver(&mut bob).await.packet_id, "t1");
    // Nobody of carol is online anywhere.
    alice
        .send_frame(transient("t2", "carol", ""))
        .await
        .unwrap();
    assert!(!next_ack(&mut alice).await.delivered);
    // Bob is online on node 1, but not with that resource.
    alice
        .send_frame(transient("t3", "bob", "pad"))
        .await
        .unwrap();
    assert!(!next_ack(&mut alice).await.delivered);
}

#[tokio::test]
async fn pushes_and_blacklists_work_from_any_node() {
    let f = cluster(Nats::start()).await;
    let s = &f.s;
    let (mut bob, _) = s.connect_synced_at(0, "bob", "phone").await;
    let push = json!({
        "appId": s.app.app_id, "appKey": s.app.app_key, "appSecret": s.app.app_secret,
        "fromAccount": "server-bot", "fromResource": "backend", "msgType": "",
        "toAccount": "bob", "msg": "pushed on node 2",
    });
    let (status, v) = s
        .call_at(2, Method::POST, "/api/push/p2p/", &Auth::None, Some(push))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(text(&next_deliver(&mut bob).await), "pushed on node 2");

    // Node 2 reads bob's (empty) blacklist for alice's first message.
    let (mut alice, _) = s.connect_synced_at(2, "alice", "phone").await;
    let ok = send_acked(&mut alice, "b1", "bob", "before").await;
    assert_eq!(next_deliver(&mut bob).await.sequence, ok.sequence);
    // Bob blacklists alice through node 1; node 2 is told.
    let (status, v) = s
        .call_at(
            1,
            Method::POST,
            "/api/blacklist/",
            &Auth::App("bob".into()),
            Some(json!({"blackAccount": "alice"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let node2 = s.node(2).state.clone();
    let (bob_id, alice_id) = (
        node2.directory.uuid(s.app.app_id, "bob").await.unwrap(),
        node2.directory.uuid(s.app.app_id, "alice").await.unwrap(),
    );
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let told = tokio::time::timeout(WAIT, async {
        while !node2.blacklists.blocks(bob_id, alice_id).await.unwrap() {
            tick.tick().await;
        }
    });
    told.await
        .expect("node 2 drops its cached blacklist of bob");
    send_acked(&mut alice, "b2", "bob", "blocked").await;
    // Bob does not get it: the next thing he gets is carol's.
    let (mut carol, _) = s.connect_synced_at(2, "carol", "phone").await;
    let after = send_acked(&mut carol, "c1", "bob", "after").await;
    assert_eq!(next_deliver(&mut bob).await.sequence, after.sequence);
}

/// Sends `n` messages from `account` to `to` through `urls` (the first, then the
/// next when a node goes away), retrying an unanswered send with the same packetId.
/// Returns packetId → acked sequence.
async fn send_through(
    token: String,
    urls: Vec<String>,
    account: &str,
    to: &str,
    n: usize,
    acked_total: Arc<AtomicUsize>,
) -> BTreeMap<String, u64> {
    let mut acked = BTreeMap::new();
    let mut node = 0;
    let mut client = Client::connect(&urls[node], &token, "phone").await.unwrap();
    let mut i = 0;
    while i < n {
        let packet_id = format!("{account}-{i}");
        let sent = client.send_text(&packet_id, to, "load").await;
        let ack = match sent {
            Ok(()) => loop {
                match tokio::time::timeout(WAIT, client.next_event()).await {
                    Ok(Ok(Some(Event::ServerAck(a)))) => break Some(a),
                    Ok(Ok(Some(_))) => continue,
                    Ok(Ok(None) | Err(_)) => break None,
                    Err(_) => panic!("no ack and no close within {WAIT:?}"),
                }
            },
            Err(_) => None,
        };
        match ack {
            Some(ack) if ack.code == 200 => {
                assert_eq!(ack.packet_id, packet_id);
                if let Some(before) = acked.insert(packet_id, ack.sequence) {
                    assert_eq!(before, ack.sequence);
                }
                acked_total.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            Some(ack) => panic!("send refused: {ack:?}"),
            None => {
                // The node went away: on to the next one, same packetId.
                node = (node + 1).min(urls.len() - 1);
                client = Client::connect(&urls[node], &token, "phone").await.unwrap();
            }
        }
    }
    acked
}

#[tokio::test]
async fn a_node_killed_under_load_loses_no_acked_message() {
    let pg = Postgres::start();
    let nats = Nats::start();
    let name = fresh_schema_name();
    let url = pg.fresh(&name).await;
    let app = {
        let config = courier::store::StoreConfig::Postgres {
            url: url.clone(),
            options: courier::store::postgres::PgOptions::default(),
        };
        let store = courier::store::open(&config).await.unwrap();
        let app = store.create_app("default").await.unwrap();
        tokio::task::spawn_blocking(move || store.close())
            .await
            .unwrap();
        app
    };
    let dir = tempfile::tempdir().unwrap();
    let nodes: Vec<Binary> = (0..3)
        .map(|id| {
            let id = id.to_string();
            Binary::start(
                dir.path(),
                &[
                    "--store-kind",
                    "postgres",
                    "--postgres-url",
                    &url,
                    "--nats-url",
                    &nats.url,
                    "--cluster-subject-prefix",
                    &name,
                    "--node-id",
                    &id,
                ],
            )
        })
        .collect();
    let http = nodes[0].http.clone();
    let token = async |account: &str| {
        fetch_token(&http, app.app_id, &app.app_key, &app.app_secret, account)
            .await
            .unwrap()
            .token
    };
    let bob_token = token("bob").await;
    let mut phone = Client::connect(&nodes[0].ws(), &bob_token, "phone")
        .await
        .unwrap();
    let mut pad = Client::connect(&nodes[2].ws(), &bob_token, "pad")
        .await
        .unwrap();
    read_backlog(&mut phone).await;
    read_backlog(&mut pad).await;

    // Four senders on node 1, which is killed once 100 messages are acked; they
    // go on through node 0.
    let acked_total = Arc::new(AtomicUsize::new(0));
    let urls = vec![nodes[1].ws(), nodes[0].ws()];
    let mut senders = Vec::new();
    for account in ["alice", "carol", "dave", "erin"] {
        let token = token(account).await;
        senders.push(send_through(
            token,
            urls.clone(),
            account,
            "bob",
            100,
            acked_total.clone(),
        ));
    }
    let send_all = futures_util::future::join_all(senders);
    tokio::pin!(send_all);
    let mut nodes = nodes.into_iter();
    let (node0, node1, node2) = (
        nodes.next().unwrap(),
        nodes.next().unwrap(),
        nodes.next().unwrap(),
    );
    let mut node1 = Some(node1);
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let results = loop {
        tokio::select! {
            results = &mut send_all => break results,
            _ = tick.tick() => {
                if acked_total.load(Ordering::Relaxed) >= 100 {
                    if let Some(node) = node1.take() {
                        node.kill9();
                    }
                }
            }
        }
    };
    assert!(node1.is_none(), "node 1 was killed mid-run");
    let mut expected = BTreeSet::new();
    for acked in &results {
        expected.extend(acked.values().copied());
    }
    assert_eq!(
        expected.len(),
        400,
        "every send acked once, distinct sequences"
    );
    // Every acked message reaches both of bob's devices (by sequence; the ones node
    // 1 committed but never published come with the resync after its loss).
    for device in [&mut phone, &mut pad] {
        let got = distinct_deliveries(device, 400, false).await;
        assert_eq!(got, expected);
    }
    drop((node0, node2));
}

#[tokio::test]
async fn a_nats_restart_loses_no_acked_message() {
    let f = cluster(Nats::private()).await;
    let s = &f.s;
    let (mut bob, _) = s.connect_synced_at(0, "bob", "phone").await;
    let (mut bob_pad, _) = s.connect_synced_at(1, "bob", "pad").await;
    let (mut alice, _) = s.connect_synced_at(1, "alice", "phone").await;
    let mut expected = BTreeSet::new();
    let send = async |alice: &mut Client, round: &str| {
        let mut sent = BTreeSet::new();
        for i in 0..20 {
            let ack = send_acked(alice, &format!("{round}-{i}"), "bob", round).await;
            sent.insert(ack.sequence);
        }
        sent
    };
    let before = send(&mut alice, "before").await;
    expected.extend(&before);
    assert_eq!(distinct_deliveries(&mut bob, 20, true).await, before);
    assert_eq!(distinct_deliveries(&mut bob_pad, 20, true).await, before);

    f.nats.stop();
    // NATS is down: sends are stored and acked, and delivered on their own node.
    let during = send(&mut alice, "during").await;
    expected.extend(&during);
    assert_eq!(distinct_deliveries(&mut bob_pad, 20, false).await, during);

    f.nats.restart();
    let after = send(&mut alice, "after").await;
    expected.extend(&after);
    // Bob's phone on node 0 missed what was published while NATS was down; the
    // resync after the reconnect brings it (and duplicates are his to drop).
    let mut got = BTreeSet::new();
    while !expected.is_subset(&got) {
        got.insert(next_deliver(&mut bob).await.sequence);
    }
    assert!(expected.is_subset(&got));
}

#[tokio::test]
async fn a_node_starts_and_serves_its_own_devices_while_nats_is_down() {
    let nats = Nats::private();
    nats.stop();
    let f = cluster_of(nats, 1).await;
    let s = &f.s;
    let (mut bob, _) = s.connect_synced_at(0, "bob", "phone").await;
    let (mut alice, _) = s.connect_synced_at(0, "alice", "phone").await;
    let ack = send_acked(&mut alice, "m1", "bob", "no NATS needed").await;
    assert_eq!(next_deliver(&mut bob).await.sequence, ack.sequence);
    alice.send_frame(transient("t1", "bob", "")).await.unwrap();
    assert!(
        next_ack(&mut alice).await.delivered,
        "a device of this node took it"
    );
}
