//! `courier app …`: one admin operation ([`AdminCall`]) run against a running
//! gateway's admin API, or directly on a store (a stopped gateway's data dir, or a
//! PostgreSQL database) through the same [`super::Admin`] code. Either way the answer is the admin API's JSON
//! `data`, which [`render`] prints.

use std::path::PathBuf;

use anyhow::{bail, Context};
use serde_json::Value;

use super::{Admin, AppPatch};
use crate::config::Config;
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use crate::store::Store;

/// Where admin calls go.
#[derive(Debug, Clone)]
pub enum AdminTarget {
    /// A running gateway: its base URL and admin token.
    Server { url: String, token: String },
    /// A stopped gateway's data dir (settings are checked against the default
    /// configuration).
    DataDir(PathBuf),
    /// A PostgreSQL store, by URL: gateways may be running on it (they reload an
    /// app's settings within 5 s).
    Postgres(String),
}

/// One admin operation.
#[derive(Debug, Clone)]
pub enum AdminCall {
    List,
    Get(u64),
    Create(AppPatch),
    Update(u64, AppPatch),
    Delete(u64),
    RotateSecret(u64),
    CallbackCounts(u64),
    Failed {
        app_id: u64,
        after: u64,
        limit: usize,
    },
    Replay {
        app_id: u64,
        sequences: Option<Vec<u64>>,
    },
}

impl AdminTarget {
    /// Runs `call`; returns the answer's `data`.
    pub async fn call(&self, call: AdminCall) -> anyhow::Result<Value> {
        match self {
            AdminTarget::Server { url, token } => over_http(url, token, call).await,
            AdminTarget::DataDir(dir) => {
                let store = SqliteStore::open(dir, SqliteOptions::default())
                    .with_context(|| format!("cannot open the data dir {}", dir.display()))?;
                on_store(&store, call).await
            }
            AdminTarget::Postgres(url) => {
                let options = crate::store::postgres::PgOptions {
                    pool_size: 2,
                    ..Default::default()
                };
                let store = crate::store::postgres::PgStore::open(url, options)
                    .await
                    .context("cannot open the PostgreSQL store")?;
                on_store(&store, call).await
            }
        }
    }
}

async fn over_http(base: &str, token: &str, call: AdminCall) -> anyhow::Result<Value> {
    use reqwest::Method;
    let base = base.trim_end_matches('/');
    let apps = format!("{base}/admin/apps");
    let (method, url, body) = match call {
        AdminCall::List => (Method::GET, apps, None),
        AdminCall::Get(id) => (Method::GET, format!("{apps}/{id}"), None),
        AdminCall::Create(patch) => (Method::POST, apps, Some(serde_json::to_value(patch)?)),
        AdminCall::Update(id, patch) => (
            Method::PATCH,
            format!("{apps}/{id}"),
            Some(serde_json::to_value(patch)?),
        ),
        AdminCall::Delete(id) => (Method::DELETE, format!("{apps}/{id}"), None),
        AdminCall::RotateSecret(id) => (Method::POST, format!("{apps}/{id}/secret"), None),
        AdminCall::CallbackCounts(id) => (Method::GET, format!("{apps}/{id}/callbacks"), None),
        AdminCall::Failed {
            app_id,
            after,
            limit,
        } => (
            Method::GET,
            format!("{apps}/{app_id}/callbacks/failed?after={after}&limit={limit}"),
            None,
        ),
        AdminCall::Replay { app_id, sequences } => (
            Method::POST,
            format!("{apps}/{app_id}/callbacks/replay"),
            Some(serde_json::json!({ "sequences": sequences })),
        ),
    };
    let mut request = reqwest::Client::new()
        .request(method, &url)
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let envelope: Value = response
        .json()
        .await
        .with_context(|| format!("{url} answered {status} without JSON"))?;
    if !status.is_success() {
        let message = envelope["message"].as_str().unwrap_or("error");
        bail!("{url}: {status}: {message}");
    }
    Ok(envelope["data"].clone())
}

async fn on_store(store: &dyn Store, call: AdminCall) -> anyhow::Result<Value> {
    let config = Config::default();
    let admin = Admin {
        store,
        config: &config,
    };
    let now = crate::time::now_ms();
    let result: anyhow::Result<Value> = async {
        Ok(match call {
            AdminCall::List => serde_json::to_value(admin.list().await?)?,
            AdminCall::Get(id) => serde_json::to_value(admin.get(id).await?)?,
            AdminCall::Create(patch) => serde_json::to_value(admin.create(patch).await?)?,
            AdminCall::Update(id, patch) => serde_json::to_value(admin.update(id, patch).await?)?,
            AdminCall::Delete(id) => {
                admin.delete(id, now).await?;
                serde_json::json!({ "appId": id, "deleted": true })
            }
            AdminCall::RotateSecret(id) => {
                serde_json::to_value(admin.rotate_secret(id, now).await?)?
            }
            AdminCall::CallbackCounts(id) => {
                serde_json::to_value(admin.callback_counts(id).await?)?
            }
            AdminCall::Failed {
                app_id,
                after,
                limit,
            } => serde_json::to_value(admin.failed_callbacks(app_id, after, limit).await?)?,
            AdminCall::Replay { app_id, sequences } => {
                serde_json::json!({ "replayed": admin.replay(app_id, sequences, now).await? })
            }
        })
    }
    .await;
    store.close();
    result
}

/// An admin answer as `courier app` prints it: JSON (`json`, or an answer that is
/// not apps), or one line per app with its credentials and the settings it sets.
pub fn render(data: &Value, json: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let apps: Vec<&Value> = match data {
        Value::Array(items) if items.iter().all(|i| i.get("appKey").is_some()) => {
            items.iter().collect()
        }
        v if v.get("appKey").is_some() => vec![v],
        _ => Vec::new(),
    };
    if json || apps.is_empty() {
        match data {
            Value::Array(items) if json => {
                for item in items {
                    let _ = writeln!(out, "{item}");
                }
            }
            other => {
                let _ = writeln!(out, "{other}");
            }
        }
        return out;
    }
    for app in apps {
        let text = |k: &str| match &app[k] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let settings: Vec<String> = app["settings"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, v)| {
                        let forever = *k == "userTtlSecs" && v.as_u64() == Some(0);
                        !(v.is_null() || forever)
                    })
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect()
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{}  appId={}  appKey={}  appSecret={}{}{}",
            text("name"),
            text("appId"),
            text("appKey"),
            text("appSecret"),
            if settings.is_empty() { "" } else { "  " },
            settings.join(" ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_print_one_line_each_with_the_settings_they_set() {
        let app = serde_json::json!({
            "appId": 7, "name": "shop", "appKey": "k", "appSecret": "s", "createdMs": 1,
            "settings": {"callbackUrl": null, "userTtlSecs": 0, "sendRatePerUser": 5},
        });
        assert_eq!(
            render(&Value::Array(vec![app.clone()]), false),
            "shop  appId=7  appKey=k  appSecret=s  sendRatePerUser=5\n"
        );
        assert_eq!(render(&app, true), format!("{app}\n"));
        let counts = serde_json::json!({"pending": 1, "failed": 0});
        assert_eq!(render(&counts, false), format!("{counts}\n"));
    }
}
