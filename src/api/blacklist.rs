//! The manual's p2p blacklist (单聊黑名单): `POST /api/blacklist/` puts an account on
//! the caller's list, `DELETE /api/blacklist/?blackAccount=` takes it off,
//! `GET /api/blacklist/?blackAccount=` answers `{"isBlack": …}`. One-way: the caller
//! stops receiving p2p messages from that account; that account is not told.
//! Either auth mode (`token`, or `appId` + `appKey` + `appSecret` + `appAccount`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::caller::{authenticate_any, Caller};
use super::{parse_json, read_body, success, ApiError};
use crate::names;
use crate::state::AppState;
use crate::time::now_ms;

#[derive(utoipa::ToSchema, Deserialize)]
pub(crate) struct AddBody {
    #[serde(rename = "blackAccount")]
    black_account: String,
}

/// The `?blackAccount=` of DELETE and GET.
#[derive(Debug, Deserialize)]
pub struct BlackQuery {
    #[serde(rename = "blackAccount")]
    black_account: Option<String>,
}

impl BlackQuery {
    fn account(&self) -> Result<&str, ApiError> {
        let raw = self.black_account.as_deref().unwrap_or("");
        if raw.trim().is_empty() {
            return Err(ApiError::bad_request(
                "blackAccount query parameter is missing or empty",
            ));
        }
        Ok(names::name("blackAccount", raw)?)
    }
}

/// The uuid of `account` if it exists (the DELETE and GET calls create none).
async fn existing(
    state: &AppState,
    caller: &Caller,
    account: &str,
) -> Result<Option<u64>, ApiError> {
    state
        .directory
        .existing_uuid(caller.app.app_id, account)
        .await
        .map_err(ApiError::internal)
}

/// `POST /api/blacklist/` `{"blackAccount": …}`
pub async fn add(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let caller = authenticate_any(&state, &headers).await?;
    let body = read_body(&state, body, state.config.body_limit_token_bytes).await?;
    let request: AddBody = parse_json(&body)?;
    let black = names::name("blackAccount", &request.black_account)?;
    if black == caller.account {
        return Err(ApiError::bad_request("an account cannot blacklist itself"));
    }
    // A state change that may create the named account: one unit of quota.
    state
        .quotas
        .charge(caller.app.app_id, Some(caller.uuid), 1, now_ms())?;
    let black_uuid = state
        .directory
        .uuid(caller.app.app_id, black)
        .await
        .map_err(ApiError::internal)?;
    let list = state
        .blacklists
        .list(caller.uuid)
        .await
        .map_err(ApiError::internal)?;
    let max = state.config.max_blacklist_per_user;
    if !list.contains(&black_uuid) && list.len() >= max {
        crate::log_limited!(
            info,
            "blacklist add refused: max_blacklist_per_user reached"
        );
        return Err(ApiError::bad_request(format!(
            "the blacklist of {} is full ({max} accounts, max_blacklist_per_user)",
            names::quote(&caller.account)
        )));
    }
    state
        .blacklists
        .add(caller.uuid, black_uuid)
        .await
        .map_err(ApiError::internal)?;
    state
        .cluster_invalidate(crate::cluster_pb::invalidate::What::BlacklistOwner(
            caller.uuid,
        ))
        .await;
    Ok(success(serde_json::Value::Null))
}

/// `DELETE /api/blacklist/?blackAccount=`
pub async fn remove(
    State(state): State<Arc<AppState>>,
    Query(query): Query<BlackQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate_any(&state, &headers).await?;
    let black = query.account()?;
    state
        .quotas
        .charge(caller.app.app_id, Some(caller.uuid), 1, now_ms())?;
    if let Some(black_uuid) = existing(&state, &caller, black).await? {
        state
            .blacklists
            .remove(caller.uuid, black_uuid)
            .await
            .map_err(ApiError::internal)?;
        state
            .cluster_invalidate(crate::cluster_pb::invalidate::What::BlacklistOwner(
                caller.uuid,
            ))
            .await;
    }
    Ok(success(serde_json::Value::Null))
}

/// `GET /api/blacklist/?blackAccount=` → `{"isBlack": …}`
pub async fn check(
    State(state): State<Arc<AppState>>,
    Query(query): Query<BlackQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate_any(&state, &headers).await?;
    let black = query.account()?;
    let is_black = match existing(&state, &caller, black).await? {
        Some(black_uuid) => state
            .blacklists
            .blocks(caller.uuid, black_uuid)
            .await
            .map_err(ApiError::internal)?,
        None => false,
    };
    Ok(success(json!({ "isBlack": is_black })))
}
