//! Topic REST API (manual 群聊消息) in both auth modes, and topic messages over the
//! socket: fan-out, offline backlog, membership changes taking effect at once.

use bytes::Bytes;
use courier::pb::{self, frame::Kind};
use courier::protocol::codes;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::*;

both_transports!(
    topic_messages_fan_out_online_and_offline,
    membership_changes_cut_delivery,
    invited_member_reads_from_the_invitation_on,
    per_app_member_limit_applies_at_once,
    membership_changes_publish_a_change_event,
);

fn accounts_of(data: &Value) -> Vec<String> {
    data["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["account"].as_str().unwrap().to_owned())
        .collect()
}

/// Creates a topic owned by `owner` with `members`; returns its id.
async fn create(s: &TestServer, owner: &Auth, name: &str, members: &str) -> u64 {
    let path = format!("/api/topic/{}", s.app.app_id);
    let (status, v) = s
        .call(
            Method::POST,
            &path,
            owner,
            Some(json!({"topicName": name, "accounts": members})),
        )
        .await;
    assert_eq!((status, &v["code"]), (200, &json!(200)), "{v}");
    v["data"]["topicInfo"]["topicId"].as_u64().unwrap()
}

async fn topic_send(c: &mut courier::client::Client, packet_id: &str, topic_id: u64, text: &str) {
    c.send_frame(Kind::Send(pb::Send {
        packet_id: packet_id.into(),
        topic_id,
        payload: Bytes::copy_from_slice(text.as_bytes()),
        ..Default::default()
    }))
    .await
    .unwrap();
}

async fn auth(s: &TestServer, mode: &str, account: &str) -> Auth {
    match mode {
        "token" => Auth::Token(s.token(account).await),
        _ => Auth::App(account.to_owned()),
    }
}

async fn member_names(s: &TestServer, path: &str, owner: &Auth) -> Vec<String> {
    let (_, v) = s.call(Method::GET, path, owner, None).await;
    accounts_of(&v["data"])
}

#[tokio::test]
async fn every_call_in_both_auth_modes() {
    let s = TestServer::start().await;
    let app = s.app.app_id;
    for mode in ["token", "app"] {
        let owner = auth(&s, mode, "owner").await;
        let u1 = auth(&s, mode, "user1").await;

        // Create: owner first, then the accounts in order; uuids match the token API's.
        let (status, v) = s
            .call(
                Method::POST,
                &format!("/api/topic/{app}"),
                &owner,
                Some(json!({"topicName": "book club", "accounts": "user1,user2,user3"})),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["message"], "success");
        let d = &v["data"];
        let topic_id = d["topicInfo"]["topicId"].as_u64().unwrap();
        assert_eq!(d["topicInfo"]["ownerAccount"], "owner");
        assert_eq!(d["topicInfo"]["topicName"], "book club");
        assert_eq!(d["topicInfo"]["bulletin"], "");
        assert_eq!(accounts_of(d), ["owner", "user1", "user2", "user3"]);
        let owner_uuid = d["topicInfo"]["ownerUuid"].as_u64().unwrap();
        assert_eq!(d["members"][0]["uuid"].as_u64().unwrap(), owner_uuid);
        let token_answer = courier::client::fetch_token(
            &s.http(),
            app,
            &s.app.app_key,
            &s.app.app_secret,
            "user1",
        )
        .await
        .unwrap();
        assert_eq!(
            d["members"][1]["uuid"].as_u64().unwrap(),
            token_answer.mi_user_id
        );

        // Get one, as a member.
        let path = format!("/api/topic/{app}/{topic_id}");
        let (status, v) = s.call(Method::GET, &path, &u1, None).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            accounts_of(&v["data"]),
            ["owner", "user1", "user2", "user3"]
        );

        // List mine.
        let (_, v) = s
            .call(Method::GET, &format!("/api/topic/{app}/account"), &u1, None)
            .await;
        let mine = v["data"].as_array().unwrap();
        assert!(mine.iter().any(|t| t["topicId"].as_u64() == Some(topic_id)));
        let t = mine
            .iter()
            .find(|t| t["topicId"].as_u64() == Some(topic_id))
            .unwrap();
        assert_eq!(t["ownerAccount"], "owner");
        assert_eq!(t["topicName"], "book club");

        // Invite (any member may).
        let (status, v) = s
            .call(
                Method::POST,
                &format!("{path}/accounts"),
                &u1,
                Some(json!({"accounts": "user4,user5"})),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            accounts_of(&v["data"]),
            ["owner", "user1", "user2", "user3", "user4", "user5"]
        );

        // Owner kicks user4 and user5.
        let (status, v) = s
            .call(
                Method::DELETE,
                &format!("{path}/accounts?accounts=user4,user5"),
                &owner,
                None,
            )
            .await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(
            accounts_of(&v["data"]),
            ["owner", "user1", "user2", "user3"]
        );

        // user1 quits.
        let (status, v) = s
            .call(Method::DELETE, &format!("{path}/account"), &u1, None)
            .await;
        assert_eq!(
            (status, v.clone()),
            (200, json!({"code":200,"message":"success","data":null}))
        );

        // The owner cannot quit.
        let (_, v) = s
            .call(Method::DELETE, &format!("{path}/account"), &owner, None)
            .await;
        assert_eq!(
            v,
            json!({"code":500,"message":"quit topic fail","data":null})
        );

        // Owner updates: new owner user2, new name, new bulletin.
        let (status, v) = s
            .call(
                Method::PUT,
                &path,
                &owner,
                Some(json!({"ownerAccount":"user2","topicName":"new name","bulletin":"hi all"})),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        let info = &v["data"]["topicInfo"];
        assert_eq!(info["ownerAccount"], "user2");
        assert_eq!(info["topicName"], "new name");
        assert_eq!(info["bulletin"], "hi all");
        assert_eq!(accounts_of(&v["data"]), ["owner", "user2", "user3"]);
        // A subset: only the bulletin (by the new owner).
        let user2 = auth(&s, mode, "user2").await;
        let (_, v) = s
            .call(
                Method::PUT,
                &path,
                &user2,
                Some(json!({"bulletin": "only this"})),
            )
            .await;
        assert_eq!(v["data"]["topicInfo"]["topicName"], "new name");
        assert_eq!(v["data"]["topicInfo"]["bulletin"], "only this");

        // The former owner can no longer dismiss; the new one can.
        let (status, _) = s.call(Method::DELETE, &path, &owner, None).await;
        assert_eq!(status, 403);
        let (status, v) = s.call(Method::DELETE, &path, &user2, None).await;
        assert_eq!(status, 200);
        assert_eq!(v, json!({"code":200,"message":"success！","data":null}));
        let (status, _) = s.call(Method::GET, &path, &user2, None).await;
        assert_eq!(status, 404);
    }
}

/// A request and the error code and words its answer must carry.
type Case = (Method, String, Auth, Option<Value>, u16, &'static str);

#[tokio::test]
async fn permission_and_input_failures_change_nothing() {
    let s = TestServer::start_with(|c| c.topic_member_limit = 4).await;
    let app = s.app.app_id;
    let owner = Auth::App("owner".into());
    let member = Auth::App("member".into());
    let stranger = Auth::App("stranger".into());
    let topic_id = create(&s, &owner, "t", "member").await;
    let path = format!("/api/topic/{app}/{topic_id}");

    let cases: Vec<Case> = vec![
        (
            Method::GET,
            path.clone(),
            stranger.clone(),
            None,
            403,
            "not a member",
        ),
        (
            Method::POST,
            format!("{path}/accounts"),
            stranger.clone(),
            Some(json!({"accounts":"x"})),
            403,
            "not a member",
        ),
        (
            Method::DELETE,
            format!("{path}/accounts?accounts=member"),
            member.clone(),
            None,
            403,
            "owner",
        ),
        (
            Method::PUT,
            path.clone(),
            member.clone(),
            Some(json!({"topicName":"mine"})),
            403,
            "owner",
        ),
        (
            Method::DELETE,
            path.clone(),
            member.clone(),
            None,
            403,
            "owner",
        ),
        (
            Method::DELETE,
            format!("{path}/account"),
            stranger.clone(),
            None,
            403,
            "not a member",
        ),
        (
            Method::GET,
            format!("/api/topic/{app}/12345"),
            owner.clone(),
            None,
            404,
            "unknown topic",
        ),
        (
            Method::GET,
            format!("/api/topic/{app}/abc"),
            owner.clone(),
            None,
            400,
            "topicId",
        ),
        (
            Method::GET,
            format!("/api/topic/{}/{topic_id}", app + 1),
            owner.clone(),
            None,
            404,
            "appId",
        ),
        (
            Method::GET,
            path.clone(),
            Auth::None,
            None,
            401,
            "credentials",
        ),
        (
            Method::GET,
            path.clone(),
            Auth::Token("garbage".into()),
            None,
            401,
            "token",
        ),
        // Over the member limit (4): owner + member + 3 more. Nothing is added.
        (
            Method::POST,
            format!("{path}/accounts"),
            owner.clone(),
            Some(json!({"accounts":"a,b,c"})),
            400,
            "limit",
        ),
        (
            Method::POST,
            format!("{path}/accounts"),
            owner.clone(),
            Some(json!({"accounts":""})),
            400,
            "empty",
        ),
        (
            Method::POST,
            format!("{path}/accounts"),
            owner.clone(),
            Some(json!({"accounts": 5})),
            400,
            "invalid JSON",
        ),
        (
            Method::POST,
            format!("/api/topic/{app}"),
            owner.clone(),
            Some(json!({"accounts":"x"})),
            400,
            "topicName",
        ),
        (
            Method::DELETE,
            format!("{path}/accounts?accounts=member,nobody"),
            owner.clone(),
            None,
            400,
            "nobody",
        ),
        (
            Method::DELETE,
            format!("{path}/accounts"),
            owner.clone(),
            None,
            400,
            "accounts",
        ),
        (
            Method::PUT,
            path.clone(),
            owner.clone(),
            Some(json!({"ownerAccount":"stranger"})),
            400,
            "not a member",
        ),
        (
            Method::PUT,
            path.clone(),
            owner.clone(),
            Some(json!({})),
            400,
            "nothing to update",
        ),
    ];
    for (method, p, auth, body, code, words) in cases {
        let (status, v) = s.call(method.clone(), &p, &auth, body.clone()).await;
        assert_eq!(status, code, "{method} {p} {body:?}: {v}");
        assert_eq!(v["code"], code);
        let msg = v["message"].as_str().unwrap();
        assert!(
            msg.contains(words),
            "{method} {p}: {msg:?} should mention {words:?}"
        );
        assert_eq!(
            member_names(&s, &path, &owner).await,
            ["owner", "member"],
            "after {method} {p}"
        );
    }
    // Within the limit it works.
    let (status, _) = s
        .call(
            Method::POST,
            &format!("{path}/accounts"),
            &owner,
            Some(json!({"accounts":"a,b"})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        member_names(&s, &path, &owner).await,
        ["owner", "member", "a", "b"]
    );
}

#[tokio::test]
async fn token_wins_when_both_auth_modes_are_present() {
    let s = TestServer::start().await;
    let app = s.app.app_id;
    let topic_id = create(&s, &Auth::App("owner".into()), "t", "member").await;
    let path = format!("/api/topic/{app}/{topic_id}");
    // Token of a stranger + app headers of a member: the stranger is who calls.
    let both = Auth::Both {
        token: s.token("stranger").await,
        account: "member".into(),
    };
    let (status, _) = s.call(Method::GET, &path, &both, None).await;
    assert_eq!(status, 403);
    let both = Auth::Both {
        token: s.token("member").await,
        account: "stranger".into(),
    };
    let (status, _) = s.call(Method::GET, &path, &both, None).await;
    assert_eq!(status, 200);
}

/// Several members with several devices, online and offline: each device gets each
/// topic message once, in order; the sender's other devices too.
async fn topic_messages_fan_out_online_and_offline(t: Transport) {
    let s = TestServer::on(t).await;
    let topic_id = create(&s, &Auth::App("ann".into()), "family", "ben,cat,dan").await;
    let (mut ann_phone, _) = s.connect_synced("ann", "phone").await;
    let (mut ann_pad, _) = s.connect_synced("ann", "pad").await;
    let (mut ben_phone, _) = s.connect_synced("ben", "phone").await;
    let (mut ben_web, _) = s.connect_synced("ben", "web").await;
    let (mut cat_phone, _) = s.connect_synced("cat", "phone").await;
    // dan is offline.

    let mut seqs = Vec::new();
    for i in 0..3 {
        topic_send(
            &mut ann_phone,
            &format!("t{i}"),
            topic_id,
            &format!("hello {i}"),
        )
        .await;
        let ack = next_ack(&mut ann_phone).await;
        assert_eq!(ack.code, 200, "{ack:?}");
        seqs.push(ack.sequence);
    }
    for device in [&mut ann_pad, &mut ben_phone, &mut ben_web, &mut cat_phone] {
        for (i, seq) in seqs.iter().enumerate() {
            let d = next_deliver(device).await;
            assert_eq!(d.sequence, *seq);
            assert_eq!(d.topic_id, topic_id);
            assert_eq!(d.from_account, "ann");
            assert_eq!(text(&d), format!("hello {i}"));
        }
    }
    // dan logs in later on two devices: both get the backlog in order.
    for r in ["phone", "laptop"] {
        let (_dan, backlog) = s.connect_synced("dan", r).await;
        assert_eq!(sequences(&backlog), seqs);
        assert!(backlog.iter().all(|d| d.topic_id == topic_id));
    }
    // p2p and topic messages interleave in one backlog, by sequence.
    let (mut eve, _) = s.connect_synced("eve", "phone").await;
    let p2p = send_acked(&mut eve, "p", "dan", "private").await;
    topic_send(&mut ben_phone, "t-ben", topic_id, "from ben").await;
    let t = next_ack(&mut ben_phone).await;
    let (_dan, backlog) = s.connect_synced("dan", "tablet").await;
    let got: Vec<u64> = backlog.iter().map(|d| d.sequence).collect();
    let mut want = seqs.clone();
    want.extend([p2p.sequence, t.sequence]);
    assert_eq!(got, want);
}

/// Kick, quit and dismiss cut delivery at once; a non-member's send is refused.
async fn membership_changes_cut_delivery(t: Transport) {
    let s = TestServer::on(t).await;
    let app = s.app.app_id;
    let owner = Auth::App("ann".into());
    let topic_id = create(&s, &owner, "t", "ben,cat").await;
    let path = format!("/api/topic/{app}/{topic_id}");
    let (mut ann, _) = s.connect_synced("ann", "phone").await;
    let (mut ben, _) = s.connect_synced("ben", "phone").await;
    let (mut cat, _) = s.connect_synced("cat", "phone").await;

    topic_send(&mut ann, "before", topic_id, "all of you").await;
    let before = next_ack(&mut ann).await;
    assert_eq!(next_deliver(&mut ben).await.sequence, before.sequence);
    assert_eq!(next_deliver(&mut cat).await.sequence, before.sequence);

    // Kick ben; quit cat.
    let (status, _) = s
        .call(
            Method::DELETE,
            &format!("{path}/accounts?accounts=ben"),
            &owner,
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = s
        .call(
            Method::DELETE,
            &format!("{path}/account"),
            &Auth::App("cat".into()),
            None,
        )
        .await;
    assert_eq!(status, 200);

    topic_send(&mut ann, "after", topic_id, "just me").await;
    let after = next_ack(&mut ann).await;
    assert_eq!(after.code, 200);
    // Ben's and cat's next delivery is a p2p marker, not the topic message.
    let marker = send_acked(&mut ann, "m-ben", "ben", "marker").await;
    assert_eq!(next_deliver(&mut ben).await.sequence, marker.sequence);
    let marker = send_acked(&mut ann, "m-cat", "cat", "marker").await;
    assert_eq!(next_deliver(&mut cat).await.sequence, marker.sequence);
    // Nor does it show up in a new device's backlog; the message before does.
    let (_ben2, backlog) = s.connect_synced("ben", "new").await;
    assert!(backlog.iter().all(|d| d.sequence != after.sequence));

    // A former member's send is refused with an error ack.
    topic_send(&mut ben, "ben-again", topic_id, "let me in").await;
    let refused = next_ack(&mut ben).await;
    assert_eq!(refused.code, codes::FORBIDDEN);
    assert_eq!(refused.sequence, 0);

    // Dismissed: no more sends, even from the owner.
    let (status, _) = s.call(Method::DELETE, &path, &owner, None).await;
    assert_eq!(status, 200);
    topic_send(&mut ann, "dismissed", topic_id, "anyone?").await;
    let refused = next_ack(&mut ann).await;
    assert_eq!(refused.code, codes::NOT_FOUND);
    // Unknown topic.
    topic_send(&mut ann, "nowhere", 424242, "?").await;
    assert_eq!(next_ack(&mut ann).await.code, codes::NOT_FOUND);
}

/// Someone invited later sees only what was sent after the invitation.
async fn invited_member_reads_from_the_invitation_on(t: Transport) {
    let s = TestServer::on(t).await;
    let app = s.app.app_id;
    let owner = Auth::App("ann".into());
    let topic_id = create(&s, &owner, "t", "").await;
    let (mut ann, _) = s.connect_synced("ann", "phone").await;
    topic_send(&mut ann, "old", topic_id, "before you came").await;
    next_ack(&mut ann).await;
    let (status, _) = s
        .call(
            Method::POST,
            &format!("/api/topic/{app}/{topic_id}/accounts"),
            &owner,
            Some(json!({"accounts": "zoe"})),
        )
        .await;
    assert_eq!(status, 200);
    topic_send(&mut ann, "new", topic_id, "welcome").await;
    let welcome = next_ack(&mut ann).await;
    let (_zoe, backlog) = s.connect_synced("zoe", "phone").await;
    assert_eq!(sequences(&backlog), vec![welcome.sequence]);
}

/// An app's own member limit (`courier app set --topic-member-limit`) overrides the
/// server's default at once.
async fn per_app_member_limit_applies_at_once(t: Transport) {
    let s = TestServer::on(t).await;
    let app = s.app.app_id;
    let owner = Auth::App("ann".into());
    let topic_id = create(&s, &owner, "t", "ben").await;
    let limit = json!({"settings": {"topicMemberLimit": 3}});
    let (status, _) = s
        .admin(Method::PATCH, &format!("/admin/apps/{app}"), Some(limit))
        .await;
    assert_eq!(status, 200);
    let path = format!("/api/topic/{app}/{topic_id}/accounts");
    let (status, v) = s
        .call(
            Method::POST,
            &path,
            &owner,
            Some(json!({"accounts": "cat,dan"})),
        )
        .await;
    assert_eq!(status, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("limit is 3"));
    let (status, _) = s
        .call(
            Method::POST,
            &path,
            &owner,
            Some(json!({"accounts": "cat"})),
        )
        .await;
    assert_eq!(status, 200);
}

/// Every membership change goes through the topics service, which tells its
/// subscribers (other nodes' caches, later) the topic and its new version.
async fn membership_changes_publish_a_change_event(t: Transport) {
    let s = TestServer::on(t).await;
    let owner = Auth::App("owner".into());
    let mut events = s.server.as_ref().unwrap().state.topics.subscribe();
    let topic = create(&s, &owner, "t", "ann,ben").await;
    let created = events.recv().await.unwrap();
    assert_eq!(created.topic_id, topic);
    let path = format!("/api/topic/{}/{topic}/accounts?accounts=ben", s.app.app_id);
    let (status, v) = s.call(Method::DELETE, &path, &owner, None).await;
    assert_eq!(status, 200, "{v}");
    let kicked = events.recv().await.unwrap();
    assert_eq!(kicked.topic_id, topic);
    assert!(kicked.version > created.version);
    // The router's view follows: ben's send to the topic is refused.
    let (mut ben, _) = s.connect_synced("ben", "phone").await;
    topic_send(&mut ben, "b1", topic, "still here?").await;
    assert_eq!(next_ack(&mut ben).await.code, 403);
}
