//! The admin API (`/admin/…`, docs/admin.md): apps, their settings and their
//! callbacks, over [`crate::admin::Admin`]. Every call needs
//! `Authorization: Bearer <admin_token>`, checked (in constant time) before the
//! body is read; without an `admin_token` configured the whole API answers 403.
//! Changes apply at once: the directory's entry of the app is reloaded.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::topic::parse_id;
use super::{parse_json, read_body, success, ApiError};
use crate::admin::{Admin, AdminError, AppPatch};
use crate::state::AppState;

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::UnknownApp(id) => ApiError::new(404, format!("no app {id}")),
            AdminError::Invalid(message) => ApiError::bad_request(message),
            AdminError::Store(e) => ApiError::internal(e),
        }
    }
}

/// Refuses a call without the admin token (401), or every call when the admin
/// API is off (403).
pub async fn require_token(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let expected = state.config.admin_token.as_bytes();
    if expected.is_empty() {
        return ApiError::new(
            403,
            "the admin API is off: start the server with admin_token (COURIER_ADMIN_TOKEN) set",
        )
        .into_response();
    }
    let given = bearer(request.headers()).unwrap_or_default();
    // Hashes first: the comparison then takes the same time whatever the lengths.
    let ok = Sha256::digest(given.as_bytes()).ct_eq(&Sha256::digest(expected));
    if !bool::from(ok) {
        crate::log_limited!(warn, "admin call refused: missing or wrong admin token");
        return ApiError::unauthorized(
            "missing or wrong admin token: send Authorization: Bearer <admin_token>",
        )
        .into_response();
    }
    next.run(request).await
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn admin(state: &AppState) -> Admin<'_> {
    Admin {
        store: state.store.as_ref(),
        config: &state.config,
    }
}

async fn reload(state: &AppState, app_id: u64) -> Result<(), ApiError> {
    state
        .directory
        .reload_app(app_id)
        .await
        .map_err(ApiError::internal)?;
    state
        .cluster_invalidate(crate::cluster_pb::invalidate::What::AppId(app_id))
        .await;
    Ok(())
}

/// `GET /admin/apps`
pub async fn list(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    Ok(success(admin(&state).list().await?))
}

/// `POST /admin/apps` — `{"name": …, "settings": {…}}`
pub async fn create(State(state): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    let body = read_body(&state, body, state.config.body_limit_admin_bytes).await?;
    let patch: AppPatch = parse_json(&body)?;
    let view = admin(&state).create(patch).await?;
    reload(&state, view.app.app_id).await?;
    tracing::info!(app_id = view.app.app_id, "admin: app created");
    Ok(success(view))
}

/// `GET /admin/apps/{appId}`
pub async fn get_one(
    State(state): State<Arc<AppState>>,
    Path(app_id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(success(
        admin(&state).get(parse_id(&app_id, "appId")?).await?,
    ))
}

/// `PATCH /admin/apps/{appId}` — fields left out stay; `null` settings reset.
pub async fn update(
    State(state): State<Arc<AppState>>,
    Path(app_id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let app_id = parse_id(&app_id, "appId")?;
    let body = read_body(&state, body, state.config.body_limit_admin_bytes).await?;
    let patch: AppPatch = parse_json(&body)?;
    let view = admin(&state).update(app_id, patch).await?;
    reload(&state, app_id).await?;
    tracing::info!(app_id, "admin: app updated");
    Ok(success(view))
}

/// `DELETE /admin/apps/{appId}` — then a sweep starts at once, which kicks the
/// app's sessions and deletes its data.
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(app_id): Path<String>,
) -> Result<Response, ApiError> {
    let app_id = parse_id(&app_id, "appId")?;
    admin(&state).delete(app_id, state.clock.now_ms()).await?;
    reload(&state, app_id).await?;
    tracing::info!(app_id, "admin: app deleted");
    let sweeping = state.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::sweeper::round(&sweeping).await {
            tracing::warn!(error = %e, "sweep after deleting an app failed; the next one retries");
        }
    });
    Ok(success(
        serde_json::json!({ "appId": app_id, "deleted": true }),
    ))
}

/// `POST /admin/apps/{appId}/secret` — a new appSecret.
pub async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    Path(app_id): Path<String>,
) -> Result<Response, ApiError> {
    let app_id = parse_id(&app_id, "appId")?;
    let view = admin(&state)
        .rotate_secret(app_id, state.clock.now_ms())
        .await?;
    reload(&state, app_id).await?;
    tracing::info!(app_id, "admin: appSecret rotated");
    Ok(success(view))
}

/// `GET /admin/apps/{appId}/callbacks` — pending and failed counts.
pub async fn callback_counts(
    State(state): State<Arc<AppState>>,
    Path(app_id): Path<String>,
) -> Result<Response, ApiError> {
    let app_id = parse_id(&app_id, "appId")?;
    Ok(success(admin(&state).callback_counts(app_id).await?))
}

#[derive(Debug, Deserialize)]
pub struct FailedQuery {
    /// List failed callbacks with a sequence above this (paging).
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    100
}

/// `GET /admin/apps/{appId}/callbacks/failed?after=&limit=`
pub async fn failed(
    State(state): State<Arc<AppState>>,
    Path(app_id): Path<String>,
    Query(q): Query<FailedQuery>,
) -> Result<Response, ApiError> {
    let app_id = parse_id(&app_id, "appId")?;
    let list = admin(&state)
        .failed_callbacks(app_id, q.after, q.limit)
        .await?;
    Ok(success(list))
}

#[derive(utoipa::ToSchema, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ReplayBody {
    /// The failed callbacks to replay, by sequence; absent = all.
    #[serde(default)]
    sequences: Option<Vec<u64>>,
}

/// `POST /admin/apps/{appId}/callbacks/replay` — `{"sequences":[…]}` or `{}` (all).
pub async fn replay(
    State(state): State<Arc<AppState>>,
    Path(app_id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let app_id = parse_id(&app_id, "appId")?;
    let body = read_body(&state, body, state.config.body_limit_admin_bytes).await?;
    let req: ReplayBody = if body.iter().all(u8::is_ascii_whitespace) {
        ReplayBody::default()
    } else {
        parse_json(&body)?
    };
    let n = admin(&state)
        .replay(app_id, req.sequences, state.clock.now_ms())
        .await?;
    state.callbacks.wake();
    tracing::info!(app_id, replayed = n, "admin: failed callbacks replayed");
    Ok(success(serde_json::json!({ "replayed": n })))
}
