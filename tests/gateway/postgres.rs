//! The gateway on the PostgreSQL store (`store_kind = "postgres"`), against a
//! private PostgreSQL started by `scripts/postgres` on 127.0.0.1 (or
//! `COURIER_TEST_POSTGRES_URL`): what a client sees is what it sees on the
//! embedded store — acks after commit, backlog after a restart, dedup of retries.

use crate::common::*;
use crate::services::Postgres;

#[tokio::test]
async fn messages_survive_a_restart_and_retries_dedup_on_postgres() {
    let pg = Postgres::start();
    let url = pg.fresh("gateway_p2p").await;
    let mut s = TestServer::start_with(|c| {
        c.store_kind = "postgres".into();
        c.postgres_url = url;
    })
    .await;
    let (mut a, _) = s.connect_synced("alice", "phone").await;
    let (mut b, _) = s.connect_synced("bob", "phone").await;
    let live = send_acked(&mut a, "pg-1", "bob", "hello").await;
    let got = next_deliver(&mut b).await;
    assert_eq!(got.sequence, live.sequence);
    assert_eq!(text(&got), "hello");
    drop(b);

    // Bob offline: stored, then read as backlog after the gateway restarts.
    let offline = send_acked(&mut a, "pg-2", "bob", "while away").await;
    drop(a);
    s.restart().await;
    let (mut a, _) = s.connect_synced("alice", "laptop").await;
    // A retry of an acked send, after the restart: the same message.
    let again = send_acked(&mut a, "pg-2", "bob", "while away").await;
    assert_eq!(again.sequence, offline.sequence);
    let (_bob, backlog) = s.connect_synced("bob", "tablet").await;
    assert_eq!(
        sequences(&backlog),
        vec![live.sequence, offline.sequence],
        "a new device of bob reads his whole timeline once"
    );
}

#[tokio::test]
async fn postgres_down_at_start_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path().to_path_buf());
    config.store_kind = "postgres".into();
    // Nothing listens on port 1.
    config.postgres_url = "postgres://courier@127.0.0.1:1/courier".into();
    config.postgres_connect_secs = 0;
    let Err(err) = courier::server::start(config).await else {
        panic!("a gateway without its database must not start");
    };
    assert!(
        err.to_string().contains("cannot connect to postgres"),
        "{err}"
    );
}

#[tokio::test]
async fn a_database_restart_fails_sends_honestly_and_service_resumes() {
    let pg = Postgres::private();
    let url = pg.fresh("gateway_restart").await;
    let s = TestServer::start_with(|c| {
        c.store_kind = "postgres".into();
        c.postgres_url = url;
    })
    .await;
    let (mut a, _) = s.connect_synced("alice", "phone").await;
    let (mut b, _) = s.connect_synced("bob", "phone").await;
    let before = send_acked(&mut a, "r-1", "bob", "before").await;
    assert_eq!(next_deliver(&mut b).await.sequence, before.sequence);

    pg.run("stop");
    a.send_text("r-2", "bob", "while down").await.unwrap();
    let ack = next_ack(&mut a).await;
    assert_eq!(ack.packet_id, "r-2");
    assert_ne!(ack.code, 200, "no success without the database: {ack:?}");
    assert_eq!(ack.sequence, 0);

    // Same port again: the gateway's pool reconnects by itself.
    let again = pg.run("start");
    assert_eq!(again, pg.url);
    let retried = send_acked(&mut a, "r-2", "bob", "while down").await;
    assert!(retried.sequence > before.sequence);
    // Bob gets the retried message, once: the failed attempt was never delivered.
    let got = next_deliver(&mut b).await;
    assert_eq!(
        (got.sequence, text(&got)),
        (retried.sequence, "while down".to_owned())
    );
    let after = send_acked(&mut a, "r-3", "bob", "after").await;
    assert_eq!(next_deliver(&mut b).await.sequence, after.sequence);
}

#[tokio::test]
async fn a_second_node_with_the_same_id_is_refused() {
    let pg = Postgres::start();
    let url = pg.fresh("gateway_node_ids").await;
    let first_url = url.clone();
    let _first = TestServer::start_with(|c| {
        c.store_kind = "postgres".into();
        c.postgres_url = first_url;
        c.node_id = 3;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path().to_path_buf());
    config.store_kind = "postgres".into();
    config.postgres_url = url.clone();
    config.node_id = 3;
    let Err(err) = courier::server::start(config.clone()).await else {
        panic!("two live nodes with one node_id must not both start");
    };
    assert!(err.to_string().contains("node_id 3 is held"), "{err}");
    // Another id is fine.
    config.node_id = 4;
    let second = courier::server::start(config).await.unwrap();
    second.shutdown().await.unwrap();
}
