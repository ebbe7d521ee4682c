//! REST API (axum): the operation manual's paths and JSON, plus `/ws` and `/healthz`.
//!
//! Every answer uses the manual's envelope `{"code":…,"message":…,"data":…}`. Errors
//! carry a non-200 `code` (also used as the HTTP status) and a message saying what is
//! wrong. Bodies are parsed by hand so malformed JSON gets the envelope too, whatever
//! the request's content type. Paths answer with and without a trailing slash, since
//! the manual writes both.
//!
//! Bounds (docs/security.md): handlers take the raw body and read it with
//! [`read_body`] — after checking credentials sent in headers — under a per-route
//! size limit and `http_body_timeout_secs`. Any error answer produced below the
//! handlers (a path or query axum cannot parse, an unknown route) is rewritten into
//! the envelope by [`envelope_errors`].

pub mod admin;
pub mod blacklist;
pub mod caller;
pub mod contact;
pub mod demo;
pub mod history;
pub mod openapi;
pub mod push;
pub mod token;
pub mod topic;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::log_limited;
use crate::names::NameError;
use crate::quota::QuotaExceeded;
use crate::state::AppState;

/// An error answer in the manual's envelope.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub message: String,
}

impl ApiError {
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(401, message)
    }

    pub fn internal(err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "api: internal error");
        ApiError::new(500, "internal error; see server log")
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<QuotaExceeded> for ApiError {
    fn from(e: QuotaExceeded) -> Self {
        log_limited!(warn, reason = %e, "rest call refused: quota");
        ApiError::new(429, e.to_string())
    }
}

/// Reads a request body of at most `limit` bytes within `http_body_timeout_secs`:
/// `413` past the limit (at once when `Content-Length` says so), `408` when the body
/// does not arrive in time.
pub async fn read_body(state: &AppState, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    use http_body_util::BodyExt;
    let too_large = || {
        log_limited!(info, limit, "request refused: body over the limit");
        ApiError::new(
            413,
            format!("request body is over the limit of {limit} bytes"),
        )
    };
    if http_body::Body::size_hint(&body).lower() > limit as u64 {
        return Err(too_large());
    }
    let timeout = std::time::Duration::from_secs(state.config.http_body_timeout_secs);
    let collected =
        tokio::time::timeout(timeout, http_body_util::Limited::new(body, limit).collect())
            .await
            .map_err(|_| {
                log_limited!(
                    info,
                    "request refused: body not received within the body timeout"
                );
                ApiError::new(
                    408,
                    format!(
                        "request body not received within {} s",
                        state.config.http_body_timeout_secs
                    ),
                )
            })?;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(format!(
            "cannot read request body: {e}"
        ))),
    }
}

/// Rewrites error answers that are not already JSON (axum's plain-text rejections:
/// a path or query it cannot decode, an unsupported upgrade) into the envelope, with
/// their status as `code` and their text, cut short, as `message`.
pub async fn envelope_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    use http_body_util::BodyExt;
    let body = http_body_util::Limited::new(response.into_body(), 4096)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        short(text)
    };
    let body = json!({"code": status.as_u16(), "message": message, "data": null});
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({"code": self.code, "message": self.message, "data": null});
        (status, Json(body)).into_response()
    }
}

/// A success answer: `{"code":200,"message":"success","data":data}`.
pub fn success<T: Serialize>(data: T) -> Response {
    Json(json!({"code": 200, "message": "success", "data": data})).into_response()
}

/// Parses a JSON body into `T`, answering malformed input with a 400 envelope.
///
/// The manual's push examples separate two fields with a full-width comma (`，`);
/// a body copied from there is accepted: when parsing fails, full-width commas
/// outside strings are read as commas and the body is parsed once more.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "request body is empty; expected JSON",
        ));
    }
    serde_json::from_slice(body).or_else(|e| {
        // serde's message can quote the input (`invalid type: string "…"`): cut it.
        let invalid =
            || ApiError::bad_request(format!("invalid JSON body: {}", short(&e.to_string())));
        let text = std::str::from_utf8(body).map_err(|_| invalid())?;
        if !text.contains('，') {
            return Err(invalid());
        }
        serde_json::from_str(&fullwidth_commas_outside_strings(text)).map_err(|_| invalid())
    })
}

/// At most [`MESSAGE_CHARS`] characters of a message built from peer input.
fn short(message: &str) -> String {
    crate::names::truncate(message, MESSAGE_CHARS)
}

/// Longest error message text taken from a parser or the HTTP framework.
const MESSAGE_CHARS: usize = 160;

fn fullwidth_commas_outside_strings(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        match c {
            '，' if !in_string => out.push(','),
            '"' if !escaped => {
                in_string = !in_string;
                out.push(c);
            }
            _ => out.push(c),
        }
        escaped = in_string && c == '\\' && !escaped;
    }
    out
}

/// Accepts an id written as a JSON number or a string of digits.
pub fn de_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Id {
        Num(u64),
        Str(String),
    }
    match Id::deserialize(d)? {
        Id::Num(n) => Ok(n),
        Id::Str(s) => s.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "expected a numeric id, got {}",
                crate::names::quote(&s)
            ))
        }),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(404, "no such path")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(405, "method not allowed on this path")
}

async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// Ready to serve: not shutting down, and the store answers a read.
async fn readyz(axum::extract::State(state): axum::extract::State<Arc<AppState>>) -> Response {
    if state.shutdown.is_cancelled() {
        let body = json!({"status": "shutting down"});
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    match state.store.max_sequence().await {
        Ok(_) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => {
            crate::log_limited!(warn, error = %e, "readyz: store unavailable");
            let body = json!({"status": "store unavailable"});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

/// Prometheus text format (`telemetry`).
async fn metrics_text() -> Response {
    match crate::telemetry::render() {
        Some(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        None => {
            ApiError::new(503, "metrics are off: another recorder was installed").into_response()
        }
    }
}

/// Counts every request by route pattern and status, and times it.
async fn track_http(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(crate::telemetry::HTTP_REQUESTS, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(crate::telemetry::HTTP_SECONDS, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// One route as registered: an HTTP method and an axum path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub method: &'static str,
    pub path: String,
}

/// A router being built, with the list of its routes (which `openapi` must
/// describe, and a test checks against the real router).
struct Routes {
    router: axum::Router<Arc<AppState>>,
    list: Vec<RouteInfo>,
}

impl Routes {
    fn new() -> Self {
        Routes {
            router: axum::Router::new(),
            list: Vec::new(),
        }
    }

    /// `handler` at `path`, answering `methods`.
    fn at(
        mut self,
        path: &str,
        methods: &[&'static str],
        handler: MethodRouter<Arc<AppState>>,
    ) -> Self {
        self.record(path, methods);
        self.router = self.router.route(path, handler);
        self
    }

    /// Like [`Routes::at`], and also at `path` with a trailing slash (the manual
    /// writes both).
    fn both(
        mut self,
        path: &str,
        methods: &[&'static str],
        handler: MethodRouter<Arc<AppState>>,
    ) -> Self {
        let trimmed = path.trim_end_matches('/');
        self.record(trimmed, methods);
        self.router = self
            .router
            .route(trimmed, handler.clone())
            .route(&format!("{trimmed}/"), handler);
        self
    }

    fn record(&mut self, path: &str, methods: &[&'static str]) {
        for &method in methods {
            self.list.push(RouteInfo {
                method,
                path: path.to_owned(),
            });
        }
    }
}

const GET: &[&str] = &["GET"];
const POST: &[&str] = &["POST"];
const DELETE: &[&str] = &["DELETE"];

/// The operation manual's REST API, and the operator's endpoints.
fn api_routes() -> Routes {
    use axum::routing::{delete, post};
    use history::{p2p_route, p2t_route, FormKind};
    Routes::new()
        .at("/ws", GET, get(crate::transport::ws::upgrade))
        .at("/mimc", GET, get(crate::transport::mimc::upgrade))
        .at("/healthz", GET, get(healthz))
        .at("/readyz", GET, get(readyz))
        .at("/metrics", GET, get(metrics_text))
        .at("/openapi.json", GET, get(openapi::serve))
        .both("/api/account/token", POST, post(token::issue))
        .at("/demo", GET, get(demo::index))
        .at("/demo/", GET, get(demo::file))
        .at("/demo/{file}", GET, get(demo::file))
        .at("/demo/token", POST, post(demo::token))
        .both("/api/topic/{app_id}", POST, post(topic::create))
        .both("/api/topic/{app_id}/account", GET, get(topic::mine))
        .both(
            "/api/topic/{app_id}/{topic_id}",
            &["GET", "PUT", "DELETE"],
            get(topic::get_one)
                .put(topic::update)
                .delete(topic::dismiss),
        )
        .both(
            "/api/topic/{app_id}/{topic_id}/accounts",
            &["POST", "DELETE"],
            post(topic::invite).delete(topic::kick),
        )
        .both(
            "/api/topic/{app_id}/{topic_id}/account",
            DELETE,
            delete(topic::quit),
        )
        .both("/api/push/p2p", POST, post(push::p2p))
        .both("/api/push/p2p/more", POST, post(push::p2p_more))
        .both("/api/push/p2t", POST, post(push::p2t))
        .both("/api/push/p2t/more", POST, post(push::p2t_more))
        .both(
            "/api/blacklist",
            &["POST", "DELETE", "GET"],
            post(blacklist::add)
                .delete(blacklist::remove)
                .get(blacklist::check),
        )
        .both("/api/msg/p2p/query", POST, p2p_route(FormKind::Time))
        .both("/api/msg/p2p/queryOnTime", POST, p2p_route(FormKind::Time))
        .both(
            "/api/msg/p2p/queryOnCount",
            POST,
            p2p_route(FormKind::Count),
        )
        .both(
            "/api/msg/p2p/queryOnSequence",
            POST,
            p2p_route(FormKind::Sequence),
        )
        .both("/api/msg/p2t/query", POST, p2t_route(FormKind::Time))
        .both("/api/msg/p2t/queryOnTime", POST, p2t_route(FormKind::Time))
        .both(
            "/api/msg/p2t/queryOnCount",
            POST,
            p2t_route(FormKind::Count),
        )
        .both(
            "/api/msg/p2t/queryOnSequence",
            POST,
            p2t_route(FormKind::Sequence),
        )
        .both("/api/contact", GET, get(contact::get))
        .both(
            "/api/contact/p2p/session",
            DELETE,
            delete(contact::delete_p2p),
        )
        .both(
            "/api/contact/p2t/session",
            DELETE,
            delete(contact::delete_p2t),
        )
}

/// The admin API (behind `admin::require_token`).
fn admin_routes() -> Routes {
    use axum::routing::post;
    Routes::new()
        .at(
            "/admin/apps",
            &["GET", "POST"],
            get(admin::list).post(admin::create),
        )
        .at(
            "/admin/apps/{app_id}",
            &["GET", "PATCH", "DELETE"],
            get(admin::get_one)
                .patch(admin::update)
                .delete(admin::delete),
        )
        .at(
            "/admin/apps/{app_id}/secret",
            POST,
            post(admin::rotate_secret),
        )
        .at(
            "/admin/apps/{app_id}/callbacks",
            GET,
            get(admin::callback_counts),
        )
        .at(
            "/admin/apps/{app_id}/callbacks/failed",
            GET,
            get(admin::failed),
        )
        .at(
            "/admin/apps/{app_id}/callbacks/replay",
            POST,
            post(admin::replay),
        )
}

/// Every route the server answers (paths under `/api` also with a trailing slash).
pub fn route_list() -> Vec<RouteInfo> {
    let mut list = api_routes().list;
    list.extend(admin_routes().list);
    list
}

/// All routes.
pub fn router(state: Arc<AppState>) -> axum::Router {
    let admin = admin_routes()
        .router
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::require_token,
        ));
    api_routes()
        .router
        .merge(admin)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response(envelope_errors))
        .route_layer(axum::middleware::from_fn(track_http))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_manuals_fullwidth_comma_outside_strings_only() {
        let v: serde_json::Value = parse_json(r#"{"a":1， "b":"x，y"}"#.as_bytes()).unwrap();
        assert_eq!(v, json!({"a": 1, "b": "x，y"}));
        let v: serde_json::Value = parse_json(r#"{"b":"q\"，"， "c":2}"#.as_bytes()).unwrap();
        assert_eq!(v, json!({"b": "q\"，", "c": 2}));
        assert!(parse_json::<serde_json::Value>(br#"{"a":1 "b":2}"#).is_err());
    }
}
