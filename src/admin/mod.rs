//! App administration — what the manual keeps in its admin console: create, list,
//! read, change and delete apps, rotate an appSecret, and the callback outbox's
//! failures and replays. One code path behind both the admin API (`api::admin`,
//! on a running gateway) and `courier app …` on a stopped gateway's data dir: the
//! requests ([`AppPatch`]) and answers ([`AppView`]) are the admin API's JSON.
//! Checks every setting against its range and the server's configuration.

pub mod remote;

use serde::{Deserialize, Deserializer, Serialize};

use crate::config::Config;
use crate::store::{App, AppSettings, FailedCallback, Store, StoreError};

/// Why an admin operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no app {0}")]
    UnknownApp(u64),
    #[error("{0}")]
    Invalid(String),
    #[error("store: {0}")]
    Store(StoreError),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => AdminError::Invalid(format!("not found: {what}")),
            other => AdminError::Store(other),
        }
    }
}

impl From<crate::names::NameError> for AdminError {
    fn from(e: crate::names::NameError) -> Self {
        AdminError::Invalid(e.to_string())
    }
}

pub type AdminResult<T> = Result<T, AdminError>;

/// An app as the admin API shows it: credentials and settings (`null` = the
/// server's default).
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppView {
    #[serde(flatten)]
    pub app: App,
    pub settings: AppSettings,
}

/// A change to an app (or a new app's name and settings): fields left out stay as
/// they are; in `settings`, a key set to null goes back to the server's default.
#[derive(utoipa::ToSchema, Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<SettingsPatch>,
}

/// A change to an app's settings: a key left out is unchanged, a key set to null
/// goes back to the server's default, a value is set.
#[derive(utoipa::ToSchema, Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SettingsPatch {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub callback_url: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub user_ttl_secs: Option<Option<u64>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_payload_bytes: Option<Option<u32>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub topic_member_limit: Option<Option<u32>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub offline_ttl_secs: Option<Option<u64>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub backlog_limit: Option<Option<u32>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub history_retention_secs: Option<Option<u64>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub contacts_window_secs: Option<Option<u64>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub send_rate_per_user: Option<Option<u32>>,
}

/// A key that is present (its value possibly `null`).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Pending and failed callbacks of an app.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackCounts {
    pub pending: u64,
    pub failed: u64,
}

/// A failed callback as the admin API lists it.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedView {
    /// The message's sequence: the callback's delivery id.
    pub sequence: u64,
    pub msg_type: &'static str,
    pub attempts: u32,
    pub last_error: String,
    pub failed_ms: u64,
}

impl From<FailedCallback> for FailedView {
    fn from(f: FailedCallback) -> Self {
        FailedView {
            sequence: f.seq,
            msg_type: f.kind.msg_type(),
            attempts: f.attempts,
            last_error: f.last_error,
            failed_ms: f.failed_ms,
        }
    }
}

/// Longest app name, bytes.
pub const MAX_APP_NAME_BYTES: usize = 128;
/// Most failed callbacks listed by one call.
pub const MAX_FAILED_PAGE: usize = 1000;

/// Admin operations over a store, under a server configuration.
pub struct Admin<'a> {
    pub store: &'a dyn Store,
    pub config: &'a Config,
}

impl std::fmt::Debug for Admin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

impl Admin<'_> {
    pub async fn list(&self) -> AdminResult<Vec<AppView>> {
        let mut out = Vec::new();
        for app in self.store.list_apps().await? {
            let settings = self.store.app_settings(app.app_id).await?;
            out.push(AppView { app, settings });
        }
        Ok(out)
    }

    pub async fn get(&self, app_id: u64) -> AdminResult<AppView> {
        let app = self
            .store
            .app(app_id)
            .await?
            .ok_or(AdminError::UnknownApp(app_id))?;
        let settings = self.store.app_settings(app_id).await?;
        Ok(AppView { app, settings })
    }

    /// Creates an app named `patch.name` with `patch.settings` applied.
    pub async fn create(&self, patch: AppPatch) -> AdminResult<AppView> {
        let name = app_name(patch.name.as_deref().unwrap_or(""))?;
        let settings = match &patch.settings {
            Some(p) => self.apply(AppSettings::default(), p)?,
            None => AppSettings::default(),
        };
        let app = self.store.create_app(&name).await?;
        if settings != AppSettings::default() {
            self.store
                .set_app_settings(app.app_id, settings.clone())
                .await?;
        }
        Ok(AppView { app, settings })
    }

    /// Applies a change; every value is checked before anything is written.
    pub async fn update(&self, app_id: u64, patch: AppPatch) -> AdminResult<AppView> {
        let current = self.get(app_id).await?;
        let name = patch.name.as_deref().map(app_name).transpose()?;
        let settings = match &patch.settings {
            Some(p) => Some(self.apply(current.settings.clone(), p)?),
            None => None,
        };
        if let Some(name) = name {
            self.store.rename_app(app_id, &name).await?;
        }
        if let Some(settings) = settings {
            self.store.set_app_settings(app_id, settings).await?;
        }
        self.get(app_id).await
    }

    /// A new appSecret; tokens issued before stay valid until they expire (at most
    /// `token_ttl_secs` from now).
    pub async fn rotate_secret(&self, app_id: u64, now_ms: u64) -> AdminResult<AppView> {
        self.get(app_id).await?;
        let grace_ms = self.config.token_ttl_secs.saturating_mul(1000);
        self.store
            .rotate_app_secret(app_id, now_ms.saturating_add(grace_ms))
            .await?;
        self.get(app_id).await
    }

    pub async fn delete(&self, app_id: u64, now_ms: u64) -> AdminResult<()> {
        self.get(app_id).await?;
        Ok(self.store.delete_app(app_id, now_ms).await?)
    }

    pub async fn callback_counts(&self, app_id: u64) -> AdminResult<CallbackCounts> {
        self.get(app_id).await?;
        let (pending, failed) = self.store.callback_counts(Some(app_id)).await?;
        Ok(CallbackCounts { pending, failed })
    }

    pub async fn failed_callbacks(
        &self,
        app_id: u64,
        after_seq: u64,
        limit: usize,
    ) -> AdminResult<Vec<FailedView>> {
        self.get(app_id).await?;
        if limit == 0 || limit > MAX_FAILED_PAGE {
            return Err(AdminError::Invalid(format!(
                "limit must be 1..={MAX_FAILED_PAGE}"
            )));
        }
        let failed = self
            .store
            .failed_callbacks(app_id, after_seq, limit)
            .await?;
        Ok(failed.into_iter().map(FailedView::from).collect())
    }

    /// Makes failed callbacks pending again (all, or the listed sequences).
    pub async fn replay(
        &self,
        app_id: u64,
        seqs: Option<Vec<u64>>,
        now_ms: u64,
    ) -> AdminResult<usize> {
        self.get(app_id).await?;
        if seqs.as_ref().is_some_and(|s| s.len() > MAX_FAILED_PAGE) {
            return Err(AdminError::Invalid(format!(
                "at most {MAX_FAILED_PAGE} sequences per replay"
            )));
        }
        Ok(self.store.replay_callbacks(app_id, seqs, now_ms).await?)
    }

    /// `settings` with `patch` applied, every value checked.
    fn apply(&self, mut s: AppSettings, patch: &SettingsPatch) -> AdminResult<AppSettings> {
        let c = self.config;
        const DAY: u64 = 24 * 3600;
        const YEAR: u64 = 365 * DAY;
        if let Some(url) = &patch.callback_url {
            s.callback_url = match url.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(url) => {
                    crate::callbacks::target::check(
                        url,
                        c.callback_max_url_bytes,
                        c.callback_refuse_private,
                    )
                    .map_err(|e| AdminError::Invalid(e.to_string()))?;
                    Some(url.to_owned())
                }
            };
        }
        if let Some(v) = patch.user_ttl_secs {
            s.user_ttl_secs = within("userTtlSecs", v.unwrap_or(0), 0, 100 * YEAR)?;
        }
        if let Some(v) = patch.max_payload_bytes {
            let max = u32::try_from(c.max_payload_bytes).unwrap_or(u32::MAX);
            s.max_payload_bytes = v
                .map(|n| {
                    within(
                        "maxPayloadBytes (the server's max_payload_bytes)",
                        n,
                        1,
                        max,
                    )
                })
                .transpose()?;
        }
        if let Some(v) = patch.topic_member_limit {
            s.topic_member_limit = v
                .map(|n| within("topicMemberLimit", n, 1, 1_000_000))
                .transpose()?;
        }
        if let Some(v) = patch.offline_ttl_secs {
            s.offline_ttl_secs = v
                .map(|n| within("offlineTtlSecs", n, 0, 10 * YEAR))
                .transpose()?;
        }
        if let Some(v) = patch.backlog_limit {
            let min = u32::try_from(c.backlog_batch).unwrap_or(u32::MAX);
            s.backlog_limit = v
                .map(|n| {
                    within(
                        "backlogLimit (at least the server's backlog_batch)",
                        n,
                        min,
                        1_000_000,
                    )
                })
                .transpose()?;
        }
        if let Some(v) = patch.history_retention_secs {
            s.history_retention_secs = v
                .map(|n| within("historyRetentionSecs", n, 60, 100 * YEAR))
                .transpose()?;
        }
        if let Some(v) = patch.contacts_window_secs {
            s.contacts_window_secs = v
                .map(|n| within("contactsWindowSecs", n, 60, YEAR))
                .transpose()?;
        }
        if let Some(v) = patch.send_rate_per_user {
            s.send_rate_per_user = v
                .map(|n| within("sendRatePerUser", n, 1, 1_000_000))
                .transpose()?;
        }
        Ok(s)
    }
}

fn within<T: PartialOrd + std::fmt::Display + Copy>(
    what: &str,
    v: T,
    min: T,
    max: T,
) -> AdminResult<T> {
    if v < min || v > max {
        return Err(AdminError::Invalid(format!(
            "{what} must be {min}..={max}, got {v}"
        )));
    }
    Ok(v)
}

fn app_name(raw: &str) -> AdminResult<String> {
    let name = crate::names::name("name", raw)?;
    if name.len() > MAX_APP_NAME_BYTES {
        return Err(AdminError::Invalid(format!(
            "name is longer than {MAX_APP_NAME_BYTES} bytes"
        )));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn patches_set_reset_and_check_every_setting() {
        let store = MemoryStore::new();
        let config = Config::default();
        let admin = Admin {
            store: &store,
            config: &config,
        };
        let patch: AppPatch = serde_json::from_str(
            r#"{"name":"shop","settings":{"callbackUrl":"http://127.0.0.1:9/cb","maxPayloadBytes":100,"sendRatePerUser":5}}"#,
        )
        .unwrap();
        let view = admin.create(patch).await.unwrap();
        assert_eq!(view.app.name, "shop");
        assert_eq!(view.settings.max_payload_bytes, Some(100));
        let id = view.app.app_id;
        // null resets one key; keys left out stay.
        let reset: AppPatch =
            serde_json::from_str(r#"{"settings":{"maxPayloadBytes":null}}"#).unwrap();
        let view = admin.update(id, reset).await.unwrap();
        assert_eq!(view.settings.max_payload_bytes, None);
        assert_eq!(view.settings.send_rate_per_user, Some(5));
        assert!(view.settings.callback_url.is_some());
        for bad in [
            r#"{"settings":{"callbackUrl":"ftp://x/"}}"#,
            r#"{"settings":{"maxPayloadBytes":999999999}}"#,
            r#"{"settings":{"sendRatePerUser":0}}"#,
            r#"{"settings":{"historyRetentionSecs":1}}"#,
            r#"{"name":""}"#,
        ] {
            let patch: AppPatch = serde_json::from_str(bad).unwrap();
            assert!(
                matches!(admin.update(id, patch).await, Err(AdminError::Invalid(_))),
                "{bad}"
            );
        }
        assert!(serde_json::from_str::<AppPatch>(r#"{"settings":{"nope":1}}"#).is_err());
        assert!(matches!(
            admin.get(42).await,
            Err(AdminError::UnknownApp(42))
        ));
    }
}
