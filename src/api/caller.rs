//! Who is calling a REST API: the manual's two ways to authenticate a user.
//!
//! 1. a `token` header (from `POST /api/account/token`; used by app clients), or
//! 2. `appKey` + `appSecret` + `appAccount` headers (used by app servers).
//!
//! When both are present the token wins, as the manual says. The app is the one in
//! the path; a token of another app is refused.

use axum::http::HeaderMap;

use super::ApiError;
use crate::auth;
use crate::server::AppState;
use crate::store::App;
use crate::time::now_ms;

/// An authenticated user of an app.
#[derive(Debug, Clone)]
pub struct Caller {
    pub app: App,
    pub uuid: u64,
    pub account: String,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Authenticates the caller of app `app_id` from the request headers.
pub async fn authenticate(
    state: &AppState,
    app_id: u64,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    let app = known_app(state, app_id).await?;
    if let Some(token) = header(headers, "token") {
        let unverified =
            auth::parse(token).map_err(|e| ApiError::unauthorized(format!("token: {e}")))?;
        if unverified.app_id() != app_id {
            return Err(ApiError::unauthorized("token belongs to another app"));
        }
        let claims = unverified
            .verify(&app.app_secret, now_ms())
            .map_err(|e| ApiError::unauthorized(format!("token: {e}")))?;
        return Ok(Caller {
            app,
            uuid: claims.uuid,
            account: claims.account,
        });
    }
    let (Some(key), Some(secret), Some(account)) = (
        header(headers, "appKey"),
        header(headers, "appSecret"),
        header(headers, "appAccount"),
    ) else {
        return Err(ApiError::unauthorized(
            "missing credentials: send a token header, or appKey, appSecret and appAccount headers",
        ));
    };
    if key != app.app_key || secret != app.app_secret {
        return Err(ApiError::unauthorized(
            "appKey or appSecret is wrong for this appId",
        ));
    }
    check_account(account)?;
    let uuid = state
        .directory
        .uuid(app_id, account)
        .await
        .map_err(ApiError::internal)?;
    Ok(Caller {
        app,
        uuid,
        account: account.to_owned(),
    })
}

/// Checks an account name from a request.
pub fn check_account(account: &str) -> Result<(), ApiError> {
    if account.is_empty() {
        return Err(ApiError::bad_request("account must not be empty"));
    }
    if account.len() > 128 {
        return Err(ApiError::bad_request(format!(
            "account {account:?} is longer than 128 bytes"
        )));
    }
    Ok(())
}

/// Checks an app's credentials given in a request body (push API).
pub async fn app_from_credentials(
    state: &AppState,
    app_id: u64,
    app_key: &str,
    app_secret: &str,
) -> Result<App, ApiError> {
    let app = known_app(state, app_id).await?;
    check_secret(&app, app_key, app_secret)?;
    Ok(app)
}

async fn known_app(state: &AppState, app_id: u64) -> Result<App, ApiError> {
    state
        .directory
        .app(app_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::new(404, format!("unknown appId {app_id}")))
}

fn check_secret(app: &App, app_key: &str, app_secret: &str) -> Result<(), ApiError> {
    if app.app_key != app_key || app.app_secret != app_secret {
        return Err(ApiError::unauthorized(
            "appKey or appSecret is wrong for this appId",
        ));
    }
    Ok(())
}
