//! Server push API, the manual's 推送消息 section: an app server sends p2p or topic
//! messages as `fromAccount` from `fromResource`. A pushed message goes through the
//! router exactly like one that account sent from a device: same checks (topic
//! membership), same storage, same delivery (to every device of the sender too).
//! The answer comes after the commit, with the server-assigned `packetId`s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::oneshot;

use super::caller::app_from_credentials;
use super::topic::live_topic;
use super::{de_id, parse_json, read_body, success, ApiError};
use crate::directory::TopicView;
use crate::message::{Envelope, Target};
use crate::names;
use crate::protocol::Status;
use crate::router::{AckSink, Submission};

/// One message of a push: whom it is for, and the topic as checked (topic pushes).
type PushTarget = (Target, Option<Arc<TopicView>>);
use crate::state::AppState;
use crate::store::App;
use crate::time::now_ms;

#[derive(utoipa::ToSchema, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PushBody {
    #[serde(deserialize_with = "de_id")]
    app_id: u64,
    app_key: String,
    app_secret: String,
    from_account: String,
    #[serde(default)]
    from_resource: String,
    to_account: Option<String>,
    to_accounts: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_opt_id")]
    topic_id: Option<u64>,
    topic_ids: Option<Vec<serde_json::Value>>,
    msg: String,
    #[serde(default)]
    msg_type: String,
}

fn de_opt_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    de_id(d).map(Some)
}

fn id_of(v: &serde_json::Value) -> Option<u64> {
    match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A checked push request: who sends what.
struct Push {
    app: App,
    from_uuid: u64,
    from_account: Arc<str>,
    from_resource: Arc<str>,
    payload: Bytes,
}

static PACKET_COUNTER: AtomicU64 = AtomicU64::new(0);

fn new_packet_id() -> String {
    format!(
        "push-{:012x}-{}",
        rand::random::<u64>() & 0xffff_ffff_ffff,
        PACKET_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Reads and checks a push body; `targets` says how many messages it asks for
/// (what the app's quota is charged).
async fn check(
    state: &AppState,
    body: Body,
    targets: impl Fn(&PushBody) -> usize,
) -> Result<(Push, PushBody), ApiError> {
    let body = read_body(state, body, state.config.body_limit_push_bytes).await?;
    let req: PushBody = parse_json(&body)?;
    let app = app_from_credentials(state, req.app_id, &req.app_key, &req.app_secret).await?;
    let from_account = names::name("fromAccount", &req.from_account)?.to_owned();
    let from_resource = match req.from_resource.trim() {
        "" => String::new(),
        r => names::name("fromResource", r)?.to_owned(),
    };
    let count = targets(&req);
    let max = state.config.max_names_per_call;
    if count > max {
        crate::log_limited!(info, max, "push refused: too many targets");
        return Err(ApiError::bad_request(format!(
            "too many targets: at most {max} per call (max_names_per_call)"
        )));
    }
    let cost = u32::try_from(count).unwrap_or(u32::MAX);
    state.quotas.charge(app.app_id, None, cost, now_ms())?;
    let payload = match req.msg_type.as_str() {
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(req.msg.trim())
            .map_err(|e| ApiError::bad_request(format!("msg is not valid base64: {e}")))?,
        "" => req.msg.as_bytes().to_vec(),
        other => {
            return Err(ApiError::bad_request(format!(
                "msgType must be \"base64\" or \"\", got {}",
                names::quote(other)
            )))
        }
    };
    let entry = state.directory.cached_app(app.app_id);
    let settings = entry.as_ref().map(|e| &e.settings);
    let limit = settings
        .and_then(|s| s.max_payload_bytes)
        .map_or(state.config.max_payload_bytes, |n| n as usize)
        .min(state.config.max_payload_bytes);
    if payload.len() > limit {
        return Err(ApiError::new(
            413,
            format!("msg is {} bytes, over the limit of {limit}", payload.len()),
        ));
    }
    let from_uuid = state
        .directory
        .uuid(app.app_id, &from_account)
        .await
        .map_err(ApiError::internal)?;
    let rate = settings.and_then(|s| s.send_rate_per_user);
    state.quotas.charge_send(from_uuid, rate, cost, now_ms())?;
    Ok((
        Push {
            app,
            from_uuid,
            from_account: from_account.as_str().into(),
            from_resource: from_resource.as_str().into(),
            payload: payload.into(),
        },
        req,
    ))
}

/// Submits every message, then waits for every ack; answers with their packet ids.
async fn send_all(
    state: &AppState,
    push: &Push,
    targets: Vec<PushTarget>,
) -> Result<Vec<String>, ApiError> {
    let mut pending = Vec::with_capacity(targets.len());
    for (target, topic_snapshot) in targets {
        let (tx, rx) = oneshot::channel();
        let packet_id = new_packet_id();
        let sub = Submission {
            envelope: Envelope {
                app_id: push.app.app_id,
                from_uuid: push.from_uuid,
                from_account: push.from_account.to_string(),
                from_resource: push.from_resource.to_string(),
                packet_id: packet_id.clone(),
                target,
                biz_type: String::new(),
                payload: push.payload.clone(),
            },
            topic_snapshot,
            from_conn: None,
            persist: true,
            ack: AckSink::Caller(tx),
            inflight: None,
        };
        state
            .router
            .submit(sub)
            .await
            .map_err(|_| ApiError::new(503, "server shutting down"))?;
        pending.push((packet_id, rx));
    }
    let mut ids = Vec::with_capacity(pending.len());
    for (packet_id, rx) in pending {
        let ack = rx
            .await
            .map_err(|_| ApiError::new(503, "server shutting down"))?;
        if ack.code != Status::Ok.code() {
            let code = u16::try_from(ack.code).unwrap_or(500);
            return Err(ApiError::new(code, ack.desc));
        }
        ids.push(packet_id);
    }
    Ok(ids)
}

/// The p2p targets of a push: every name checked first, then one store call for
/// the accounts the cache does not know.
async fn user_targets(
    state: &AppState,
    push: &Push,
    raw: &[String],
) -> Result<Vec<PushTarget>, ApiError> {
    let app_id = push.app.app_id;
    let names = raw
        .iter()
        .map(|r| names::name("toAccount", r).map(str::to_owned))
        .collect::<Result<Vec<_>, _>>()?;
    let uuids = state
        .directory
        .uuids(app_id, names.clone())
        .await
        .map_err(ApiError::internal)?;
    let mut targets = Vec::with_capacity(names.len());
    for (account, uuid) in names.into_iter().zip(uuids) {
        // A recipient who blacklisted the sender gets nothing; the push still succeeds.
        let blocked = state
            .blacklists
            .blocks(uuid, push.from_uuid)
            .await
            .map_err(ApiError::internal)?;
        let target = Target::User {
            uuid,
            account,
            resource: None,
            blocked,
        };
        targets.push((target, None));
    }
    Ok(targets)
}

/// Checks the topic exists, is live and has the sender as a member.
async fn topic_target(
    state: &AppState,
    push: &Push,
    topic_id: u64,
) -> Result<PushTarget, ApiError> {
    let view = live_topic(state, push.app.app_id, topic_id).await?;
    if !view.is_member(push.from_uuid) {
        return Err(ApiError::new(
            403,
            format!("{} is not a member of topic {topic_id}", push.from_account),
        ));
    }
    Ok((Target::Topic { topic_id }, Some(view)))
}

/// `POST /api/push/p2p/`
pub async fn p2p(State(state): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    let (push, req) = check(&state, body, |_| 1).await?;
    let to = req
        .to_account
        .ok_or_else(|| ApiError::bad_request("toAccount is required"))?;
    let targets = user_targets(&state, &push, &[to]).await?;
    let ids = send_all(&state, &push, targets).await?;
    Ok(success(json!({"packetId": ids[0]})))
}

/// `POST /api/push/p2p/more`
pub async fn p2p_more(
    State(state): State<Arc<AppState>>,
    body: Body,
) -> Result<Response, ApiError> {
    let (push, req) = check(&state, body, |r| r.to_accounts.as_ref().map_or(1, Vec::len)).await?;
    let to = req
        .to_accounts
        .ok_or_else(|| ApiError::bad_request("toAccounts is required"))?;
    if to.is_empty() {
        return Err(ApiError::bad_request("toAccounts is empty"));
    }
    let targets = user_targets(&state, &push, &to).await?;
    let ids = send_all(&state, &push, targets).await?;
    Ok(success(json!({"packetIds": ids})))
}

/// `POST /api/push/p2t/`
pub async fn p2t(State(state): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    let (push, req) = check(&state, body, |_| 1).await?;
    let topic_id = req
        .topic_id
        .ok_or_else(|| ApiError::bad_request("topicId is required"))?;
    let target = topic_target(&state, &push, topic_id).await?;
    let ids = send_all(&state, &push, vec![target]).await?;
    Ok(success(json!({"packetId": ids[0]})))
}

/// `POST /api/push/p2t/more`
pub async fn p2t_more(
    State(state): State<Arc<AppState>>,
    body: Body,
) -> Result<Response, ApiError> {
    let (push, req) = check(&state, body, |r| r.topic_ids.as_ref().map_or(1, Vec::len)).await?;
    let raw = req
        .topic_ids
        .ok_or_else(|| ApiError::bad_request("topicIds is required"))?;
    if raw.is_empty() {
        return Err(ApiError::bad_request("topicIds is empty"));
    }
    // Check every topic before sending anything: all or nothing.
    let mut targets = Vec::with_capacity(raw.len());
    for v in &raw {
        let id = id_of(v).ok_or_else(|| {
            ApiError::bad_request(format!(
                "topicIds holds a non-numeric id {}",
                names::quote(&v.to_string())
            ))
        })?;
        targets.push(topic_target(&state, &push, id).await?);
    }
    let ids = send_all(&state, &push, targets).await?;
    Ok(success(json!({"packetIds": ids})))
}
