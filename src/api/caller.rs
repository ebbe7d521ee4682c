//! Who is calling a REST API: the manual's two ways to authenticate a user.
//!
//! 1. a `token` header (from `POST /api/account/token`; used by app clients), or
//! 2. `appKey` + `appSecret` + `appAccount` headers (used by app servers).
//!
//! When both are present the token wins, as the manual says. The app is the one in
//! the path (a token of another app is refused), or, for calls without one in the
//! path, the token's app or the `appId` header's.

use axum::http::HeaderMap;
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::auth;
use crate::log_limited;
use crate::state::AppState;
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
    match header(headers, "token") {
        Some(token) => by_token(state, app, parse_token(token)?),
        None => by_app_headers(state, app, headers).await,
    }
}

/// Authenticates a caller whose app is not in the path (the blacklist calls): the
/// token's app, or the app of an `appId` header (the manual passes it there).
pub async fn authenticate_any(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    if let Some(token) = header(headers, "token") {
        let unverified = parse_token(token)?;
        let app = known_app(state, unverified.app_id()).await?;
        return by_token(state, app, unverified);
    }
    let Some(app_id) = header(headers, "appId") else {
        return Err(ApiError::unauthorized(
            "missing credentials: send a token header, or appId, appKey, appSecret and appAccount headers",
        ));
    };
    let app_id = app_id.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "appId header must be a number, got {}",
            crate::names::quote(app_id)
        ))
    })?;
    let app = known_app(state, app_id).await?;
    by_app_headers(state, app, headers).await
}

fn parse_token(token: &str) -> Result<auth::Unverified, ApiError> {
    auth::parse(token).map_err(|e| ApiError::unauthorized(format!("token: {e}")))
}

/// The caller a token of `app` names (token mode; it wins over the headers).
fn by_token(state: &AppState, app: App, unverified: auth::Unverified) -> Result<Caller, ApiError> {
    if unverified.app_id() != app.app_id {
        return Err(ApiError::unauthorized("token belongs to another app"));
    }
    let claims = unverified
        .verify_for(&app, state.clock.now_ms())
        .map_err(|e| ApiError::unauthorized(format!("token: {e}")))?;
    Ok(Caller {
        app,
        uuid: claims.uuid,
        account: claims.account,
    })
}

/// The caller the `appKey` + `appSecret` + `appAccount` headers name (header mode).
async fn by_app_headers(
    state: &AppState,
    app: App,
    headers: &HeaderMap,
) -> Result<Caller, ApiError> {
    let (Some(key), Some(secret), Some(account)) = (
        header(headers, "appKey"),
        header(headers, "appSecret"),
        header(headers, "appAccount"),
    ) else {
        return Err(ApiError::unauthorized(
            "missing credentials: send a token header, or appKey, appSecret and appAccount headers",
        ));
    };
    check_secret(&app, key, secret)?;
    let account = crate::names::name("appAccount", account)?;
    // Header mode may name a new account on every call: it draws on the app's quota.
    state.quotas.charge(app.app_id, None, 1, now_ms())?;
    let uuid = state
        .directory
        .uuid(app.app_id, account)
        .await
        .map_err(ApiError::internal)?;
    Ok(Caller {
        app,
        uuid,
        account: account.to_owned(),
    })
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

/// The uuid of an existing account of the app (none is created): `404` if there
/// is none.
pub async fn existing_account(
    state: &AppState,
    app_id: u64,
    account: &str,
) -> Result<u64, ApiError> {
    state
        .directory
        .existing_uuid(app_id, account)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::new(
                404,
                format!("unknown account {}", crate::names::quote(account)),
            )
        })
}

async fn known_app(state: &AppState, app_id: u64) -> Result<App, ApiError> {
    state
        .directory
        .app(app_id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::new(404, format!("unknown appId {app_id}")))
}

/// Compares both credentials in constant time (no early exit on the first
/// differing byte, whose timing would leak how much of a guess was right).
fn check_secret(app: &App, app_key: &str, app_secret: &str) -> Result<(), ApiError> {
    let key_ok = app.app_key.as_bytes().ct_eq(app_key.as_bytes());
    let secret_ok = app.app_secret.as_bytes().ct_eq(app_secret.as_bytes());
    if !bool::from(key_ok & secret_ok) {
        log_limited!(
            info,
            app_id = app.app_id,
            "rest call refused: wrong appKey or appSecret"
        );
        return Err(ApiError::unauthorized(
            "appKey or appSecret is wrong for this appId",
        ));
    }
    Ok(())
}
