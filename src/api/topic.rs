//! Topic (group) REST API, the manual's 群聊消息 section: create, get one, list mine,
//! invite, quit, kick, update, dismiss. Every call authenticates the user (see
//! `caller`) and checks who may do what (member, owner); the change itself — limit,
//! sequence boundary, store write, cache refresh — is `crate::topics::Topics`'s, so a
//! membership change applies to every message sent after the call returns.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::caller::{authenticate, Caller};
use super::{parse_json, read_body, success, ApiError};
use crate::directory::TopicView;
use crate::names;
use crate::state::AppState;
use crate::store::{StoreError, Topic, TopicSummary, TopicUpdate};
use crate::time::now_ms;
use crate::topics::TopicError;

#[derive(utoipa::ToSchema, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TopicInfo {
    topic_id: u64,
    owner_uuid: u64,
    owner_account: String,
    topic_name: String,
    bulletin: String,
}

#[derive(utoipa::ToSchema, Serialize)]
pub(crate) struct MemberJson {
    uuid: u64,
    account: String,
}

#[derive(utoipa::ToSchema, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TopicWithMembers {
    topic_info: TopicInfo,
    members: Vec<MemberJson>,
}

fn info(t: &Topic) -> TopicInfo {
    TopicInfo {
        topic_id: t.topic_id,
        owner_uuid: t.owner_uuid,
        owner_account: t.owner_account.clone(),
        topic_name: t.name.clone(),
        bulletin: t.bulletin.clone(),
    }
}

fn summary(t: TopicSummary) -> TopicInfo {
    TopicInfo {
        topic_id: t.topic_id,
        owner_uuid: t.owner_uuid,
        owner_account: t.owner_account,
        topic_name: t.name,
        bulletin: t.bulletin,
    }
}

fn with_members(t: &Topic) -> Response {
    success(TopicWithMembers {
        topic_info: info(t),
        members: t
            .members
            .iter()
            .map(|m| MemberJson {
                uuid: m.uuid,
                account: m.account.clone(),
            })
            .collect(),
    })
}

/// `"a,b,c"` as the manual writes it, or a JSON list.
#[derive(utoipa::ToSchema, Deserialize)]
#[serde(untagged)]
pub(crate) enum Accounts {
    Csv(String),
    List(Vec<String>),
}

impl Accounts {
    /// The names, each checked by the one name rule, duplicates dropped (first kept);
    /// refused when more than `max` are given.
    fn names(self, max: usize) -> Result<Vec<String>, ApiError> {
        let raw: Vec<String> = match self {
            Accounts::Csv(s) => {
                if s.matches(',').count() >= max {
                    return Err(too_many_names(max));
                }
                s.split(',').map(str::to_owned).collect()
            }
            Accounts::List(v) => v,
        };
        if raw.len() > max {
            return Err(too_many_names(max));
        }
        let mut seen = HashSet::with_capacity(raw.len());
        let mut names = Vec::with_capacity(raw.len());
        for a in &raw {
            if a.trim().is_empty() {
                continue;
            }
            let name = names::name("account", a)?;
            if seen.insert(name) {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }
}

fn too_many_names(max: usize) -> ApiError {
    crate::log_limited!(info, max, "rest call refused: too many names");
    ApiError::bad_request(format!(
        "too many accounts: at most {max} per call (max_names_per_call)"
    ))
}

pub(super) fn parse_id(raw: &str, what: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "{what} must be a number, got {}",
            names::quote(raw)
        ))
    })
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Invalid(msg) => ApiError::bad_request(msg),
        StoreError::NotFound(msg) => ApiError::new(404, format!("not found: {msg}")),
        other => ApiError::internal(other),
    }
}

impl From<TopicError> for ApiError {
    fn from(e: TopicError) -> Self {
        match e {
            TopicError::OverLimit { .. } => ApiError::bad_request(e.to_string()),
            TopicError::Unknown(_) => ApiError::new(404, e.to_string()),
            TopicError::TemporaryAccount => ApiError::new(403, e.to_string()),
            TopicError::Store(e) => store_error(e),
        }
    }
}

/// Charges a state-changing topic call to the caller and its app.
fn charge(state: &AppState, caller: &Caller, names: usize) -> Result<(), ApiError> {
    let cost = u32::try_from(names).unwrap_or(u32::MAX);
    state
        .quotas
        .charge(caller.app.app_id, Some(caller.uuid), cost, now_ms())?;
    Ok(())
}

/// Topic `topic_id` of app `app_id`, dismissed or not: `404` if it is unknown or
/// another app's.
pub(super) async fn app_topic(
    state: &AppState,
    app_id: u64,
    topic_id: u64,
) -> Result<Arc<TopicView>, ApiError> {
    state
        .directory
        .topic(topic_id)
        .await
        .map_err(ApiError::internal)?
        .filter(|v| v.topic.app_id == app_id)
        .ok_or_else(|| ApiError::new(404, format!("unknown topic {topic_id}")))
}

/// The live (not dismissed) topic `topic_id` of app `app_id`.
pub(super) async fn live_topic(
    state: &AppState,
    app_id: u64,
    topic_id: u64,
) -> Result<Arc<TopicView>, ApiError> {
    let view = app_topic(state, app_id, topic_id).await?;
    if view.topic.dismissed {
        return Err(ApiError::new(
            404,
            format!("topic {topic_id} was dismissed"),
        ));
    }
    Ok(view)
}

fn require_member(view: &TopicView, caller: &Caller) -> Result<(), ApiError> {
    if view.is_member(caller.uuid) {
        Ok(())
    } else {
        Err(ApiError::new(
            403,
            format!(
                "{} is not a member of topic {}",
                caller.account, view.topic.topic_id
            ),
        ))
    }
}

fn require_owner(view: &TopicView, caller: &Caller) -> Result<(), ApiError> {
    if view.topic.owner_uuid == caller.uuid {
        Ok(())
    } else {
        Err(ApiError::new(
            403,
            format!(
                "only the owner of topic {} may do this",
                view.topic.topic_id
            ),
        ))
    }
}

/// The common start of every call on one topic: ids from the path, the caller, and
/// the live topic of the caller's app.
async fn topic_call(
    state: &AppState,
    (app_id, topic_id): (String, String),
    headers: &HeaderMap,
) -> Result<(Caller, Arc<TopicView>), ApiError> {
    let app_id = parse_id(&app_id, "appId")?;
    let topic_id = parse_id(&topic_id, "topicId")?;
    let caller = authenticate(state, app_id, headers).await?;
    let view = live_topic(state, caller.app.app_id, topic_id).await?;
    Ok((caller, view))
}

#[derive(utoipa::ToSchema, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateBody {
    topic_name: String,
    #[serde(default)]
    accounts: Option<Accounts>,
}

/// `POST /api/topic/{appId}`
pub async fn create(
    State(state): State<Arc<AppState>>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let app_id = parse_id(&app_id, "appId")?;
    let caller = authenticate(&state, app_id, &headers).await?;
    let body = read_body(&state, body, state.config.body_limit_topic_bytes).await?;
    let req: CreateBody = parse_json(&body)?;
    names::text(
        "topicName",
        &req.topic_name,
        state.config.max_topic_name_bytes,
        false,
    )?;
    let names = match req.accounts {
        Some(a) => a.names(state.config.max_names_per_call)?,
        None => Vec::new(),
    };
    charge(&state, &caller, 1 + names.len())?;
    let owner = (caller.uuid, caller.account.as_str());
    let view = state
        .topics
        .create(app_id, owner, &req.topic_name, names)
        .await?;
    Ok(with_members(&view.topic))
}

/// `GET /api/topic/{appId}/{topicId}`
pub async fn get_one(
    State(state): State<Arc<AppState>>,
    Path(ids): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (caller, view) = topic_call(&state, ids, &headers).await?;
    require_member(&view, &caller)?;
    Ok(with_members(&view.topic))
}

/// `GET /api/topic/{appId}/account`
pub async fn mine(
    State(state): State<Arc<AppState>>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let app_id = parse_id(&app_id, "appId")?;
    let caller = authenticate(&state, app_id, &headers).await?;
    let topics = state
        .store
        .topics_of(caller.uuid)
        .await
        .map_err(ApiError::internal)?;
    Ok(success(topics.into_iter().map(summary).collect::<Vec<_>>()))
}

#[derive(utoipa::ToSchema, Deserialize)]
pub(crate) struct AccountsBody {
    accounts: Accounts,
}

/// `POST /api/topic/{appId}/{topicId}/accounts` — a member invites accounts.
pub async fn invite(
    State(state): State<Arc<AppState>>,
    Path(ids): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (caller, view) = topic_call(&state, ids, &headers).await?;
    let body = read_body(&state, body, state.config.body_limit_topic_bytes).await?;
    let req: AccountsBody = parse_json(&body)?;
    let names = req.accounts.names(state.config.max_names_per_call)?;
    if names.is_empty() {
        return Err(ApiError::bad_request("accounts is empty"));
    }
    require_member(&view, &caller)?;
    charge(&state, &caller, names.len())?;
    let view = state.topics.invite(&view, names).await?;
    Ok(with_members(&view.topic))
}

/// `DELETE /api/topic/{appId}/{topicId}/account` — a non-owner member leaves.
pub async fn quit(
    State(state): State<Arc<AppState>>,
    Path(ids): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (caller, view) = topic_call(&state, ids, &headers).await?;
    let topic_id = view.topic.topic_id;
    require_member(&view, &caller)?;
    charge(&state, &caller, 1)?;
    if view.topic.owner_uuid == caller.uuid {
        // The manual's answer for an owner trying to quit.
        return Ok((
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"code": 500, "message": "quit topic fail", "data": null})),
        )
            .into_response());
    }
    state.topics.remove(topic_id, vec![caller.uuid]).await?;
    Ok(success(serde_json::Value::Null))
}

#[derive(Debug, Deserialize)]
pub struct KickQuery {
    accounts: Option<String>,
}

/// `DELETE /api/topic/{appId}/{topicId}/accounts?accounts=a,b` — the owner kicks.
pub async fn kick(
    State(state): State<Arc<AppState>>,
    Path(ids): Path<(String, String)>,
    Query(query): Query<KickQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (caller, view) = topic_call(&state, ids, &headers).await?;
    let topic_id = view.topic.topic_id;
    let names =
        Accounts::Csv(query.accounts.unwrap_or_default()).names(state.config.max_names_per_call)?;
    if names.is_empty() {
        return Err(ApiError::bad_request(
            "accounts query parameter is missing or empty",
        ));
    }
    require_owner(&view, &caller)?;
    charge(&state, &caller, names.len())?;
    let mut kicked = Vec::new();
    let mut strangers = Vec::new();
    for name in &names {
        match view.topic.members.iter().find(|m| &m.account == name) {
            Some(m) if m.uuid == caller.uuid => {
                return Err(ApiError::bad_request("the owner cannot kick itself"))
            }
            Some(m) => kicked.push(m.uuid),
            None => strangers.push(name.as_str()),
        }
    }
    if let Some(first) = strangers.first() {
        return Err(ApiError::bad_request(format!(
            "{} of the accounts are not members of topic {topic_id}, e.g. {}",
            strangers.len(),
            names::quote(first)
        )));
    }
    let view = state.topics.remove(topic_id, kicked).await?;
    Ok(with_members(&view.topic))
}

#[derive(utoipa::ToSchema, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdateBody {
    owner_account: Option<String>,
    topic_name: Option<String>,
    bulletin: Option<String>,
}

/// `PUT /api/topic/{appId}/{topicId}` — the owner changes owner, name or bulletin.
pub async fn update(
    State(state): State<Arc<AppState>>,
    Path(ids): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (caller, view) = topic_call(&state, ids, &headers).await?;
    let topic_id = view.topic.topic_id;
    let body = read_body(&state, body, state.config.body_limit_topic_bytes).await?;
    let req: UpdateBody = parse_json(&body)?;
    if req.owner_account.is_none() && req.topic_name.is_none() && req.bulletin.is_none() {
        return Err(ApiError::bad_request(
            "nothing to update: give ownerAccount, topicName and/or bulletin",
        ));
    }
    let config = &state.config;
    if let Some(name) = &req.topic_name {
        names::text("topicName", name, config.max_topic_name_bytes, false)?;
    }
    if let Some(bulletin) = &req.bulletin {
        names::text("bulletin", bulletin, config.max_bulletin_bytes, true)?;
    }
    require_owner(&view, &caller)?;
    charge(&state, &caller, 1)?;
    let owner_uuid = match &req.owner_account {
        Some(raw) => {
            let name = names::name("ownerAccount", raw)?;
            Some(
                view.topic
                    .members
                    .iter()
                    .find(|m| m.account == name)
                    .map(|m| m.uuid)
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "new owner {} is not a member of topic {topic_id}",
                            names::quote(name)
                        ))
                    })?,
            )
        }
        None => None,
    };
    let change = TopicUpdate {
        owner_uuid,
        name: req.topic_name,
        bulletin: req.bulletin,
    };
    let view = state.topics.update(topic_id, change).await?;
    Ok(with_members(&view.topic))
}

/// `DELETE /api/topic/{appId}/{topicId}` — the owner dismisses the topic.
pub async fn dismiss(
    State(state): State<Arc<AppState>>,
    Path(ids): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (caller, view) = topic_call(&state, ids, &headers).await?;
    let topic_id = view.topic.topic_id;
    require_owner(&view, &caller)?;
    charge(&state, &caller, 1)?;
    state.topics.dismiss(topic_id).await?;
    // The manual's exact answer, full-width exclamation mark included.
    Ok(Json(json!({"code": 200, "message": "success！", "data": null})).into_response())
}
