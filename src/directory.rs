//! In-memory directory of apps and accounts in front of the store.
//!
//! Token checks and sends look up an app's secret and an account's uuid on every
//! request; this caches both. Apps are few and cached whole; accounts are cached as
//! they are used (one entry per active account). Entries never change once created,
//! so the cache needs no invalidation.

use std::sync::Arc;

use dashmap::DashMap;

use crate::store::{App, Store, StoreResult};

/// Apps and account uuids, cached.
pub struct Directory {
    store: Arc<dyn Store>,
    apps: DashMap<u64, App>,
    accounts: DashMap<(u64, String), u64>,
}

impl Directory {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Directory {
            store,
            apps: DashMap::new(),
            accounts: DashMap::new(),
        }
    }

    /// The app with this id, from cache or store.
    pub async fn app(&self, app_id: u64) -> StoreResult<Option<App>> {
        if let Some(app) = self.apps.get(&app_id) {
            return Ok(Some(app.clone()));
        }
        let app = self.store.app(app_id).await?;
        if let Some(app) = &app {
            self.apps.insert(app_id, app.clone());
        }
        Ok(app)
    }

    /// The uuid of (app, account), created on first use.
    pub async fn uuid(&self, app_id: u64, account: &str) -> StoreResult<u64> {
        if let Some(uuid) = self.accounts.get(&(app_id, account.to_owned())) {
            return Ok(*uuid);
        }
        let uuid = self
            .store
            .account(app_id, account, true)
            .await?
            .ok_or_else(|| crate::store::StoreError::NotFound(account.to_owned()))?;
        self.accounts.insert((app_id, account.to_owned()), uuid);
        Ok(uuid)
    }
}
