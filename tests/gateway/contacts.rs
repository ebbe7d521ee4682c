//! The manual's recent contacts (最近通讯列表): users and topics newest first with
//! their last message, as strings; deleting an entry until the next message; a
//! blocked sender never appears.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

/// `(userType, name, last message text)` of each entry, in order.
fn entries(v: &Value) -> Vec<(String, String, String)> {
    use base64::Engine;
    v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no list: {v}"))
        .iter()
        .map(|e| {
            let payload = base64::engine::general_purpose::STANDARD
                .decode(e["lastMessage"]["payload"].as_str().unwrap())
                .unwrap();
            (
                e["userType"].as_str().unwrap().to_owned(),
                e["name"].as_str().unwrap().to_owned(),
                String::from_utf8(payload).unwrap(),
            )
        })
        .collect()
}

fn entry(kind: &str, name: &str, text: &str) -> (String, String, String) {
    (kind.into(), name.into(), text.into())
}

#[tokio::test]
async fn contacts_list_users_and_topics_newest_first_and_deleted_ones_come_back() {
    let s = TestServer::start().await;
    let ann_t = Auth::Token(s.token("ann").await);
    let path = format!("/api/topic/{}", s.app.app_id);
    let (_, v) = s
        .call(
            Method::POST,
            &path,
            &ann_t,
            Some(json!({"topicName": "team", "accounts": "ben"})),
        )
        .await;
    let topic = v["data"]["topicInfo"]["topicId"].as_u64().unwrap();
    let mut ann = s.connect("ann", "phone").await;
    let mut ben = s.connect("ben", "phone").await;
    let mut cy = s.connect("cy", "phone").await;
    send_acked(&mut ann, "a1", "ben", "hi ben").await;
    let last = send_acked(&mut cy, "c1", "ann", "hi ann").await;
    topic_send_acked(&mut ben, "t1", topic, "team news").await;
    // dan is blacklisted by ann: never in her contacts.
    let (status, _) = s
        .call(
            Method::POST,
            "/api/blacklist/",
            &ann_t,
            Some(json!({"blackAccount": "dan"})),
        )
        .await;
    assert_eq!(status, 200);
    let mut dan = s.connect("dan", "phone").await;
    send_acked(&mut dan, "d1", "ann", "let me in").await;

    let (status, v) = s.call(Method::GET, "/api/contact/", &ann_t, None).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        entries(&v),
        vec![
            entry("TOPIC", "team", "team news"),
            entry("USER", "cy", "hi ann"),
            entry("USER", "ben", "hi ben"),
        ]
    );
    // Every value a string, as the manual quotes them.
    let cy_entry = &v["data"][1];
    let cy_uuid = cy_entry["lastMessage"]["fromUuid"].as_str().unwrap();
    assert_eq!(cy_entry["id"].as_str(), Some(cy_uuid));
    assert_eq!(cy_entry["lastMessage"]["fromAccount"], json!("cy"));
    assert_eq!(cy_entry["timestamp"], json!(last.timestamp.to_string()));
    assert_eq!(
        cy_entry["lastMessage"]["sequence"],
        json!(last.sequence.to_string())
    );
    assert_eq!(v["data"][0]["id"], json!(topic.to_string()));
    // dan sees his side: he did send it. So does history: his, not ann's.
    let dan_t = Auth::Token(s.token("dan").await);
    let (_, v) = s.call(Method::GET, "/api/contact", &dan_t, None).await;
    assert_eq!(entries(&v), vec![entry("USER", "ann", "let me in")]);
    let history = json!({"appId": s.app.app_id, "fromAccount": "dan", "toAccount": "ann",
        "utcToTime": 4_000_000_000_000u64, "count": 10});
    for (auth, rows) in [(&dan_t, 1), (&ann_t, 0)] {
        let (status, v) = s
            .call(
                Method::POST,
                "/api/msg/p2p/queryOnCount/",
                auth,
                Some(history.clone()),
            )
            .await;
        assert_eq!(
            (status, v["data"]["row"].clone()),
            (200, json!(rows)),
            "{v}"
        );
    }

    // Delete one user and the topic: the answer is the updated list.
    let (status, v) = s
        .call(
            Method::DELETE,
            "/api/contact/p2p/session?member=cy",
            &ann_t,
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        entries(&v),
        vec![
            entry("TOPIC", "team", "team news"),
            entry("USER", "ben", "hi ben")
        ]
    );
    let (status, v) = s
        .call(
            Method::DELETE,
            &format!("/api/contact/p2t/session?topicId={topic}"),
            &ann_t,
            None,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(entries(&v), vec![entry("USER", "ben", "hi ben")]);
    // They come back with their next message.
    send_acked(&mut cy, "c2", "ann", "me again").await;
    topic_send_acked(&mut ben, "t2", topic, "more news").await;
    let (_, v) = s.call(Method::GET, "/api/contact/", &ann_t, None).await;
    assert_eq!(
        entries(&v),
        vec![
            entry("TOPIC", "team", "more news"),
            entry("USER", "cy", "me again"),
            entry("USER", "ben", "hi ben"),
        ]
    );
    // Deleting a conversation does not take its messages from the backlog.
    drop(ann);
    let mut ann = s.connect("ann", "phone").await;
    let backlog = read_backlog(&mut ann).await;
    assert!(backlog.iter().any(|d| text(d) == "hi ann"), "{backlog:?}");
}

#[tokio::test]
async fn contact_deletes_refuse_bad_input() {
    let s = TestServer::start().await;
    let ann_t = Auth::Token(s.token("ann").await);
    for (path, want) in [
        ("/api/contact/p2p/session", 400),
        ("/api/contact/p2p/session?member=", 400),
        ("/api/contact/p2p/session?member=nobody", 404),
        ("/api/contact/p2t/session?topicId=abc", 400),
        ("/api/contact/p2t/session?topicId=424242", 404),
        ("/api/contact/p2t/session", 400),
    ] {
        let (status, v) = s.call(Method::DELETE, path, &ann_t, None).await;
        assert_eq!(status, want, "{path}: {v}");
        assert_eq!(v["code"], json!(want));
    }
    let (status, _) = s
        .call(Method::GET, "/api/contact/", &Auth::None, None)
        .await;
    assert_eq!(status, 401);
    let (status, _) = s
        .call(
            Method::GET,
            "/api/contact/",
            &Auth::Token("garbage".into()),
            None,
        )
        .await;
    assert_eq!(status, 401);
}
