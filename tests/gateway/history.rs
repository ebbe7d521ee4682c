//! The manual's message history (消息漫游): the six queries under every spelling,
//! their ranges at the boundaries, paging by count back to the first message, who
//! may read what (sides of a conversation, members and former members of a topic),
//! and what history leaves out (online-only sends, blocked messages).

use bytes::Bytes;
use courier::pb::{self, frame::Kind};
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

async fn query(s: &TestServer, auth: &Auth, path: &str, body: Value) -> (u16, Value) {
    s.call(Method::POST, path, auth, Some(body)).await
}

/// `(sequence, ts, text)` of an answer's messages.
fn found(v: &Value) -> Vec<(u64, u64, String)> {
    use base64::Engine;
    v["data"]["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages: {v}"))
        .iter()
        .map(|m| {
            let payload = base64::engine::general_purpose::STANDARD
                .decode(m["payload"].as_str().unwrap())
                .unwrap();
            (
                m["sequence"].as_u64().unwrap(),
                m["ts"].as_u64().unwrap(),
                String::from_utf8(payload).unwrap(),
            )
        })
        .collect()
}

async fn create_topic(s: &TestServer, owner: &Auth, members: &str) -> u64 {
    let path = format!("/api/topic/{}", s.app.app_id);
    let body = json!({"topicName": "team", "accounts": members});
    let (status, v) = s.call(Method::POST, &path, owner, Some(body)).await;
    assert_eq!(status, 200, "{v}");
    v["data"]["topicInfo"]["topicId"].as_u64().unwrap()
}

#[tokio::test]
async fn p2p_history_by_sequence_time_and_count_from_either_side() {
    let s = TestServer::start().await;
    let mut ann = s.connect("ann", "phone").await;
    let mut ben = s.connect("ben", "phone").await;
    let mut sent = Vec::new();
    for i in 0..12 {
        let (from, to) = if i % 3 == 2 {
            (&mut ben, "ann")
        } else {
            (&mut ann, "ben")
        };
        let ack = send_acked(from, &format!("p{i}"), to, &format!("m{i}")).await;
        sent.push((ack.sequence, ack.timestamp, format!("m{i}")));
    }
    // Not history: online-only and isStore=false, and another conversation.
    for (i, (store, online)) in [(Some(false), false), (None, true)].into_iter().enumerate() {
        ann.send_frame(Kind::Send(pb::Send {
            packet_id: format!("transient{i}"),
            to_account: "ben".into(),
            payload: Bytes::from_static(b"gone"),
            is_store: store,
            online_only: online,
            ..Default::default()
        }))
        .await
        .unwrap();
        next_ack(&mut ann).await;
    }
    send_acked(&mut ann, "other", "cy", "not yours").await;

    let app_id = s.app.app_id;
    let ann_t = Auth::Token(s.token("ann").await);
    let ben_t = Auth::Token(s.token("ben").await);
    let (first, last) = (sent[0].clone(), sent[11].clone());

    // By sequence, [startSeq, stopSeq), from both sides, fields as the manual shows.
    let body = json!({"appId": app_id, "toAccount": "ben", "fromAccount": "ann",
        "startSeq": sent[2].0, "stopSeq": sent[5].0});
    let (status, v) = query(&s, &ann_t, "/api/msg/p2p/queryOnSequence/", body.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(found(&v), sent[2..5].to_vec());
    assert_eq!(v["data"]["row"], json!(3));
    assert_eq!(v["data"]["timestamp"], json!(sent[2].1));
    assert_eq!(v["data"]["appId"], json!(app_id));
    let m = &v["data"]["messages"][0];
    assert_eq!(
        (m["fromAccount"].as_str(), m["toAccount"].as_str()),
        (Some("ben"), Some("ann"))
    );
    let (_, from_ben) = query(&s, &ben_t, "/api/msg/p2p/queryOnSequence", body).await;
    assert_eq!(
        found(&from_ben),
        sent[2..5].to_vec(),
        "either side reads it"
    );
    let empty = json!({"appId": app_id, "toAccount": "ben", "fromAccount": "ann",
        "startSeq": sent[3].0, "stopSeq": sent[3].0});
    let (status, v) = query(&s, &ann_t, "/api/msg/p2p/queryOnSequence/", empty).await;
    assert_eq!((status, v["data"]["row"].clone()), (200, json!(0)), "{v}");

    // By time, [utcFromTime, utcToTime), in all four spellings; no `timestamp`.
    let (from, to) = (sent[3].1, sent[9].1);
    let expected: Vec<_> = sent
        .iter()
        .filter(|m| m.1 >= from && m.1 < to)
        .cloned()
        .collect();
    for path in [
        "/api/msg/p2p/query/",
        "/api/msg/p2p/query",
        "/api/msg/p2p/queryOnTime",
        "/api/msg/p2p/queryOnTime/",
    ] {
        let body = json!({"appId": app_id, "toAccount": "ann", "fromAccount": "ben",
            "utcFromTime": from, "utcToTime": to});
        let (status, v) = query(&s, &ben_t, path, body).await;
        assert_eq!(status, 200, "{path}: {v}");
        assert_eq!(found(&v), expected, "{path}");
        assert!(v["data"].get("timestamp").is_none(), "{v}");
    }
    // Numbers as strings are read too (the manual prints them unquoted).
    let body = json!({"appId": app_id.to_string(), "toAccount": "ben", "fromAccount": "ann",
        "utcFromTime": first.1.to_string(), "utcToTime": (last.1 + 1).to_string()});
    let (_, v) = query(&s, &ann_t, "/api/msg/p2p/queryOnTime", body).await;
    assert_eq!(found(&v), sent);

    // By count: page back from the end, feeding `timestamp` in as utcToTime, to the
    // very first message: every message once, none missing.
    let mut to = last.1 + 1;
    let mut paged: Vec<(u64, u64, String)> = Vec::new();
    loop {
        let body = json!({"appId": app_id, "toAccount": "ben", "fromAccount": "ann",
            "utcToTime": to, "count": 5});
        let (status, v) = query(&s, &ann_t, "/api/msg/p2p/queryOnCount/", body).await;
        assert_eq!(status, 200, "{v}");
        let page = found(&v);
        if page.is_empty() {
            assert_eq!(v["data"]["timestamp"], json!(0));
            break;
        }
        assert!(
            page.len() <= 5 || page.iter().all(|m| m.1 == page[0].1),
            "{v}"
        );
        assert!(page.iter().all(|m| m.1 < to), "utcToTime is exclusive");
        assert_eq!(v["data"]["timestamp"], json!(page[0].1), "the earliest ts");
        to = page[0].1;
        paged.splice(0..0, page);
    }
    assert_eq!(paged, sent);
}

#[tokio::test]
async fn history_refuses_bad_queries_and_other_peoples_conversations() {
    let s = TestServer::start().await;
    let mut ann = s.connect("ann", "phone").await;
    send_acked(&mut ann, "p1", "ben", "hello").await;
    let app_id = s.app.app_id;
    let ann_t = Auth::Token(s.token("ann").await);
    let cy_t = Auth::Token(s.token("cy").await);
    let ann_app = Auth::App("ann".into());
    let now = 1_800_000_000_000u64;
    let pair = |extra: Value| {
        let mut body = json!({"appId": app_id, "toAccount": "ben", "fromAccount": "ann"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let cases: Vec<(&Auth, &str, Value, u16)> = vec![
        (
            &cy_t,
            "/api/msg/p2p/queryOnCount/",
            pair(json!({"utcToTime": now, "count": 5})),
            403,
        ),
        (
            &ann_t,
            "/api/msg/p2p/queryOnTime",
            pair(json!({"utcFromTime": now, "utcToTime": now - 1})),
            400,
        ),
        (
            &ann_t,
            "/api/msg/p2p/queryOnTime",
            pair(json!({"utcFromTime": now - 86_400_001, "utcToTime": now})),
            400,
        ),
        (
            &ann_t,
            "/api/msg/p2p/queryOnCount/",
            pair(json!({"utcToTime": now, "count": 0})),
            400,
        ),
        (
            &ann_t,
            "/api/msg/p2p/queryOnCount/",
            pair(json!({"utcToTime": now, "count": -3})),
            400,
        ),
        (
            &ann_t,
            "/api/msg/p2p/queryOnCount/",
            pair(json!({"utcToTime": now, "count": 1001})),
            400,
        ),
        (
            &ann_t,
            "/api/msg/p2p/queryOnCount/",
            pair(json!({"utcToTime": now})),
            400,
        ),
        (
            &ann_t,
            "/api/msg/p2p/queryOnCount/",
            pair(json!({"utcToTime": "soon", "count": 2})),
            400,
        ),
        (
            &ann_t,
            "/api/msg/p2p/queryOnSequence/",
            pair(json!({"startSeq": 9, "stopSeq": 3})),
            400,
        ),
        (
            &ann_t,
            "/api/msg/p2p/queryOnCount/",
            json!({"appId": app_id, "toAccount": "nobody", "fromAccount": "ann", "utcToTime": now, "count": 2}),
            404,
        ),
        (
            &ann_t,
            "/api/msg/p2p/queryOnCount/",
            json!({"appId": app_id + 1, "toAccount": "ben", "fromAccount": "ann", "utcToTime": now, "count": 2}),
            403,
        ),
        (
            &ann_app,
            "/api/msg/p2p/queryOnCount/",
            pair(json!({"utcToTime": now, "count": 2})),
            401,
        ),
        (
            &Auth::None,
            "/api/msg/p2p/queryOnCount/",
            pair(json!({"utcToTime": now, "count": 2})),
            401,
        ),
    ];
    for (auth, path, body, want) in cases {
        let (status, v) = query(&s, auth, path, body.clone()).await;
        assert_eq!(status, want, "{body}: {v}");
        assert_eq!(v["code"], json!(want), "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert!(v["data"].is_null(), "no data leaks: {v}");
    }
    // Malformed JSON gets the envelope too.
    let (status, v) = s
        .call(Method::POST, "/api/msg/p2p/queryOnCount/", &ann_t, None)
        .await;
    assert_eq!((status, v["code"].clone()), (400, json!(400)), "{v}");
}

#[tokio::test]
async fn topic_history_follows_membership_intervals() {
    let s = TestServer::start().await;
    let owner = Auth::Token(s.token("ann").await);
    let topic = create_topic(&s, &owner, "ben").await;
    let mut ann = s.connect("ann", "phone").await;
    topic_send_acked(&mut ann, "t1", topic, "before cy").await;
    let path = format!("/api/topic/{}/{topic}/accounts", s.app.app_id);
    let (status, _) = s
        .call(Method::POST, &path, &owner, Some(json!({"accounts": "cy"})))
        .await;
    assert_eq!(status, 200);
    topic_send_acked(&mut ann, "t2", topic, "with cy").await;
    let quit = format!("/api/topic/{}/{topic}/account", s.app.app_id);
    let cy_t = Auth::Token(s.token("cy").await);
    let (status, v) = s.call(Method::DELETE, &quit, &cy_t, None).await;
    assert_eq!(status, 200, "{v}");
    topic_send_acked(&mut ann, "t3", topic, "after cy").await;

    let app_id = s.app.app_id;
    let texts = |v: &Value| found(v).into_iter().map(|m| m.2).collect::<Vec<_>>();
    let by_count = |account: &str| {
        json!({"appId": app_id, "account": account, "topicId": topic,
            "utcToTime": 4_000_000_000_000u64, "count": 50})
    };
    let ben_t = Auth::Token(s.token("ben").await);
    let (status, v) = query(&s, &ben_t, "/api/msg/p2t/queryOnCount/", by_count("ben")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(texts(&v), ["before cy", "with cy", "after cy"]);
    assert!(v["data"]["messages"][0].get("toAccount").is_none());
    // A former member reads only what was sent while it belonged.
    let (status, v) = query(&s, &cy_t, "/api/msg/p2t/queryOnCount/", by_count("cy")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(texts(&v), ["with cy"]);

    // By sequence: toAccount is the topic; by time: data.topicId, both spellings.
    let all = found(
        &query(&s, &ben_t, "/api/msg/p2t/queryOnCount/", by_count("ben"))
            .await
            .1,
    );
    let body = json!({"appId": app_id, "account": "ben", "topicId": topic.to_string(),
        "startSeq": all[1].0, "stopSeq": all[2].0 + 1});
    let (status, v) = query(&s, &ben_t, "/api/msg/p2t/queryOnSequence/", body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(texts(&v), ["with cy", "after cy"]);
    assert_eq!(
        v["data"]["messages"][0]["toAccount"],
        json!(topic.to_string())
    );
    assert_eq!(v["data"]["timestamp"], json!(all[1].1));
    for path in [
        "/api/msg/p2t/query/",
        "/api/msg/p2t/queryOnTime/",
        "/api/msg/p2t/queryOnTime",
    ] {
        let body = json!({"appId": app_id, "account": "ben", "topicId": topic,
            "utcFromTime": all[0].1, "utcToTime": all[2].1 + 1});
        let (status, v) = query(&s, &ben_t, path, body).await;
        assert_eq!(status, 200, "{path}: {v}");
        assert_eq!(v["data"]["topicId"], json!(topic));
        assert_eq!(v["data"]["row"], json!(3));
        assert!(v["data"].get("timestamp").is_none());
    }

    // Never a member, the token of another account, an unknown topic.
    let dan_t = Auth::Token(s.token("dan").await);
    let (status, v) = query(&s, &dan_t, "/api/msg/p2t/queryOnCount/", by_count("dan")).await;
    assert_eq!(status, 403, "{v}");
    let (status, v) = query(&s, &dan_t, "/api/msg/p2t/queryOnCount/", by_count("ben")).await;
    assert_eq!(status, 403, "{v}");
    let mut unknown = by_count("ben");
    unknown["topicId"] = json!(424242);
    let (status, v) = query(&s, &ben_t, "/api/msg/p2t/queryOnCount/", unknown).await;
    assert_eq!(status, 404, "{v}");
}
