//! `POST /api/account/token` (manual §安全认证): an app back end exchanges
//! appId/appKey/appSecret + appAccount for the account's signed, expiring token.
//! The account is created on first request; a temporary account's token expires
//! with the account.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;

use super::caller::app_from_credentials;
use super::{de_id, parse_json, read_body, success, ApiError};
use crate::auth::{self, Claims};
use crate::state::AppState;
use crate::time::now_ms;

/// MIMC's channel id, a constant of the protocol.
pub const MI_CHID: u32 = 9;

#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenRequest {
    #[serde(deserialize_with = "de_id")]
    app_id: u64,
    app_key: String,
    app_secret: String,
    app_account: String,
}

pub use crate::wire::rest::TokenData;

pub async fn issue(State(state): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    let body = read_body(&state, body, state.config.body_limit_token_bytes).await?;
    let req: TokenRequest = parse_json(&body)?;
    crate::names::name("appAccount", &req.app_account)?;
    let app = app_from_credentials(&state, req.app_id, &req.app_key, &req.app_secret).await?;
    issue_for(&state, &app, &req.app_account).await
}

/// The token API's answer for `account` (created on first use) of `app`, whose
/// credentials the caller checked.
pub async fn issue_for(
    state: &AppState,
    app: &crate::store::App,
    account: &str,
) -> Result<Response, ApiError> {
    let account = crate::names::name("appAccount", account)?.to_owned();
    state.quotas.charge(app.app_id, None, 1, now_ms())?;
    let record = state
        .directory
        .account(app.app_id, &account)
        .await
        .map_err(ApiError::internal)?;
    let uuid = record.uuid;
    // A temporary account's token ends with the account.
    let mut expires_ms = state
        .clock
        .now_ms()
        .saturating_add(state.config.token_ttl_secs.saturating_mul(1000));
    if record.expires_ms != 0 {
        expires_ms = expires_ms.min(record.expires_ms);
    }
    let claims = Claims {
        app_id: app.app_id,
        uuid,
        account: account.clone(),
        expires_ms,
    };
    Ok(success(TokenData {
        app_id: app.app_id,
        app_package: app.name.clone(),
        app_account: account,
        mi_chid: MI_CHID,
        mi_user_id: uuid,
        mi_user_security_key: auth::user_security_key(&app.app_secret, uuid),
        token: auth::issue(&app.app_secret, &claims),
    }))
}
