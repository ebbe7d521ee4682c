//! What the background sweep ends, with the server's clock moved by the test (no
//! waiting): temporary accounts (临时帐号) past the app's account lifetime, and
//! messages past history retention.

use std::time::Duration;

use courier::client::fetch_token;

use courier::store::{AppSettings, Conversation, HistoryRange, Order};
use reqwest::Method;
use serde_json::json;

use crate::common::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Sets the test app's account lifetime, as `courier app set --user-ttl-secs` does.
async fn set_user_ttl(s: &TestServer, secs: u64) {
    let settings = AppSettings {
        user_ttl_secs: secs,
        ..AppSettings::default()
    };
    let store = &s.server.as_ref().unwrap().state.store;
    store
        .set_app_settings(s.app.app_id, settings)
        .await
        .unwrap();
}

both_transports!(temporary_accounts_expire_their_tokens_sessions_and_data);

async fn temporary_accounts_expire_their_tokens_sessions_and_data(t: Transport) {
    let s = TestServer::on(t).await;
    let state = s.server.as_ref().unwrap().state.clone();
    let before = s.token_data("regular").await;
    set_user_ttl(&s, 3600).await;
    let guest = s.token_data("guest").await;
    let mut session = s.try_connect(&guest.token, "phone").await.unwrap();
    read_backlog(&mut session).await;

    // A temporary account cannot create topics (the manual: 不能创建群组).
    let path = format!("/api/topic/{}", s.app.app_id);
    let guest_auth = Auth::Token(guest.token.clone());
    let (status, v) = s
        .call(
            Method::POST,
            &path,
            &guest_auth,
            Some(json!({"topicName": "t", "accounts": "regular"})),
        )
        .await;
    assert_eq!(status, 403, "{v}");
    // But it can be a member of one, which it leaves when it expires.
    let owner = Auth::Token(before.token.clone());
    let (status, v) = s
        .call(
            Method::POST,
            &path,
            &owner,
            Some(json!({"topicName": "t", "accounts": "guest"})),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let topic_id = v["data"]["topicInfo"]["topicId"].as_u64().unwrap();

    // Nothing happens before the lifetime ends.
    state.clock.advance(Duration::from_secs(3599));
    let report = courier::sweeper::round(&state).await.unwrap();
    assert!(report.expired.is_empty());

    state.clock.advance(Duration::from_secs(2));
    let report = courier::sweeper::round(&state).await.unwrap();
    assert_eq!(report.expired, vec![guest.mi_user_id]);
    let kick = until_closed(&mut session).await.expect("kicked");
    assert_eq!(kick.code, 7, "{kick:?}");
    // Its token no longer works, on REST or at login.
    let (status, v) = s
        .call(Method::GET, "/api/contact/", &guest_auth, None)
        .await;
    assert_eq!(status, 401, "{v}");
    assert!(matches!(
        s.try_connect(&guest.token, "phone").await,
        Err(courier::client::ClientError::LoginRefused { code: 401, .. })
    ));
    // It left the topic.
    let (status, v) = s
        .call(
            Method::GET,
            &format!("/api/topic/{}/{topic_id}", s.app.app_id),
            &Auth::Token(s.token_data("regular").await.token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert!(!v.to_string().contains("\"guest\""), "{v}");
    // The name is free again: a new account with a new uuid.
    let again = s.token_data("guest").await;
    assert_ne!(again.mi_user_id, guest.mi_user_id);
    // An account created before the lifetime was set never expires.
    let regular = s.token_data("regular").await;
    assert_eq!(regular.mi_user_id, before.mi_user_id);
}

/// An expired account whose name is taken again before the sweep saw it expire is
/// still kicked by the next sweep round.
#[tokio::test]
async fn an_expired_account_replaced_before_the_sweep_is_still_kicked() {
    let s = TestServer::start().await;
    let state = s.server.as_ref().unwrap().state.clone();
    set_user_ttl(&s, 60).await;
    let old = s.token_data("guest").await;
    let mut session = s.try_connect(&old.token, "phone").await.unwrap();
    read_backlog(&mut session).await;
    state.clock.advance(Duration::from_secs(61));
    let new = s.token_data("guest").await;
    assert_ne!(new.mi_user_id, old.mi_user_id);
    let report = courier::sweeper::round(&state).await.unwrap();
    assert!(report.expired.is_empty(), "the store retired it already");
    assert_eq!(report.purged, vec![old.mi_user_id]);
    let kick = until_closed(&mut session).await.expect("kicked");
    assert_eq!(kick.code, 7, "{kick:?}");
}

#[tokio::test]
async fn the_sweep_deletes_history_past_retention_and_nothing_else() {
    let s = TestServer::start().await;
    let state = s.server.as_ref().unwrap().state.clone();
    // A second app keeps its history 30 days only.
    let short = state.store.create_app("short").await.unwrap();
    let settings = AppSettings {
        history_retention_secs: Some(30 * 24 * 3600),
        ..AppSettings::default()
    };
    state
        .store
        .set_app_settings(short.app_id, settings)
        .await
        .unwrap();
    let mut pairs = Vec::new();
    for app in [&s.app, &short] {
        let ann = fetch_token(&s.http(), app.app_id, &app.app_key, &app.app_secret, "ann")
            .await
            .unwrap();
        let ben = fetch_token(&s.http(), app.app_id, &app.app_key, &app.app_secret, "ben")
            .await
            .unwrap();
        let mut client = s.try_connect(&ann.token, "phone").await.unwrap();
        for i in 0..5 {
            send_acked(&mut client, &format!("m{i}"), "ben", "hello").await;
        }
        pairs.push((ann.mi_user_id, ben.mi_user_id));
    }
    let count = |(ann, ben): (u64, u64)| {
        let store = state.store.clone();
        async move {
            store
                .history(HistoryRange {
                    conversation: Conversation::Pair(ann, ben),
                    viewer: ann,
                    from_seq: 0,
                    to_seq: u64::MAX,
                    limit: 1000,
                    order: Order::OldestFirst,
                })
                .await
                .unwrap()
                .len()
        }
    };
    assert_eq!((count(pairs[0]).await, count(pairs[1]).await), (5, 5));
    let report = courier::sweeper::round(&state).await.unwrap();
    assert_eq!(report.messages, 0, "nothing is old yet");

    // 31 days on: the short app's five go, the default app's stay.
    state.clock.advance(31 * DAY);
    let report = courier::sweeper::round(&state).await.unwrap();
    assert_eq!(report.messages, 5);
    assert_eq!((count(pairs[0]).await, count(pairs[1]).await), (5, 0));

    // 181 days on: past the default 180 days, the rest go.
    state.clock.advance(150 * DAY);
    let report = courier::sweeper::round(&state).await.unwrap();
    assert_eq!(report.messages, 5);
    assert_eq!((count(pairs[0]).await, count(pairs[1]).await), (0, 0));
}

/// `courier app set --user-ttl-secs` through a running server's admin API takes
/// effect at once: the next new account is temporary (it may not create a topic),
/// and `0` turns it off again.
#[tokio::test]
async fn the_cli_sets_the_account_lifetime_of_a_running_server() {
    let s = TestServer::start().await;
    let set = |secs: &'static str| async {
        // Not std's blocking wait: the server runs on this test's runtime.
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_courier"))
            .args(["app", "set", "--app-id", &s.app.app_id.to_string()])
            .args(["--user-ttl-secs", secs, "--server", &s.http()])
            .args(["--admin-token", ADMIN_TOKEN])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let create = |account: &'static str| {
        let s = &s;
        async move {
            let auth = Auth::Token(s.token(account).await);
            let path = format!("/api/topic/{}", s.app.app_id);
            let body = json!({"topicName": "t", "accounts": "someone"});
            s.call(Method::POST, &path, &auth, Some(body)).await.0
        }
    };
    assert!(set("600").await.contains("userTtlSecs=600"));
    assert_eq!(create("temp").await, 403);
    assert!(!set("0").await.contains("userTtlSecs"));
    assert_eq!(create("lasting").await, 200);
    assert_eq!(create("temp").await, 403, "still temporary");
}
