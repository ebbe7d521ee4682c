//! The web demo at `/demo` (sdk/js/demo: its page and style embedded as they are, its
//! script bundled with the SDK by `npm run build:demo` into `src/api/demo/demo.js`): a page to chat as any account of the
//! default app. `POST /demo/token {"account": …}` hands the page a token for that
//! account — anyone who can reach it can act as any account of the default app, so it
//! answers only when the HTTP listener is on a loopback address, unless `demo_tokens =
//! "on"` (`"off"`: never). `demo = false` turns the whole demo off (404).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{parse_json, read_body, ApiError};
use crate::state::AppState;

// The page and its style as written; the script as bundled from the SDK.
const INDEX_HTML: &str = include_str!("../../sdk/js/demo/index.html");
const DEMO_JS: &str = include_str!("demo/demo.js");
const DEMO_CSS: &str = include_str!("../../sdk/js/demo/demo.css");

/// The name of the app the demo hands out tokens of (created on a fresh data dir).
pub const DEMO_APP: &str = "default";

#[derive(utoipa::ToSchema, Debug, Deserialize)]
pub(crate) struct DemoTokenRequest {
    account: String,
}

fn disabled() -> ApiError {
    ApiError::new(404, "the web demo is off (demo = false)")
}

/// `GET /demo`: the page. Relative links (`demo.js`, `token`) need the trailing slash.
pub async fn index(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    if !state.config.demo {
        return Err(disabled());
    }
    Ok((
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, "/demo/")],
    )
        .into_response())
}

/// `GET /demo/` and `GET /demo/{file}`.
pub async fn file(
    State(state): State<Arc<AppState>>,
    path: Option<Path<String>>,
) -> Result<Response, ApiError> {
    if !state.config.demo {
        return Err(disabled());
    }
    let name = path.map(|Path(p)| p).unwrap_or_default();
    let (body, kind) = match name.as_str() {
        "" | "index.html" => (INDEX_HTML, "text/html; charset=utf-8"),
        "demo.js" => (DEMO_JS, "text/javascript; charset=utf-8"),
        "demo.css" => (DEMO_CSS, "text/css; charset=utf-8"),
        _ => {
            return Err(ApiError::new(
                404,
                format!("no demo file {}", crate::names::quote(&name)),
            ))
        }
    };
    Ok((
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response())
}

/// Whether `/demo/token` answers here: `demo_tokens` = "on", or "loopback" with a
/// listener on a loopback address.
pub fn tokens_allowed(config: &crate::config::Config) -> bool {
    config.demo
        && match config.demo_tokens.as_str() {
            "on" => true,
            "loopback" => config.listen.ip().is_loopback(),
            _ => false,
        }
}

/// `POST /demo/token {"account": …}`: the token API's answer for that account of
/// the default app.
pub async fn token(State(state): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    if !tokens_allowed(&state.config) {
        crate::log_limited!(
            info,
            "demo token refused: demo_tokens does not allow it here"
        );
        return Err(ApiError::new(403, "demo tokens are off: the gateway is not on loopback (demo_tokens = \"on\" allows them, for anyone who can reach it)",
        ));
    }
    let body = read_body(&state, body, state.config.body_limit_token_bytes).await?;
    let req: DemoTokenRequest = parse_json(&body)?;
    let app = state
        .store
        .list_apps()
        .await
        .map_err(ApiError::internal)?
        .into_iter()
        .find(|a| a.name == DEMO_APP)
        .ok_or_else(|| ApiError::new(404, format!("no app named {DEMO_APP:?} for the demo")))?;
    super::token::issue_for(&state, &app, &req.account).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_tokens_follow_the_listener_and_the_switches() {
        let mut c = crate::config::Config::default();
        assert!(tokens_allowed(&c), "loopback by default");
        c.listen = "10.0.0.5:8080".parse().unwrap();
        assert!(!tokens_allowed(&c), "not on a network address");
        c.demo_tokens = "on".into();
        assert!(tokens_allowed(&c));
        c.demo = false;
        assert!(!tokens_allowed(&c), "no demo, no tokens");
        c.demo = true;
        c.listen = "127.0.0.1:8080".parse().unwrap();
        c.demo_tokens = "off".into();
        assert!(!tokens_allowed(&c));
    }
}
