//! Apps and accounts of the PostgreSQL store: settings (columns of `apps`),
//! renaming, secret rotation, deletion, and accounts with their lifetimes
//! (temporary accounts). A port of `sqlite/apps.rs` and `sqlite/accounts.rs`.

use tokio_postgres::{GenericClient, Row};

use super::sweep::retire;
use super::{num, opt_num, sql};
use crate::store::{Account, App, AppSettings, StoreError, StoreResult};

const APP_COLUMNS: &str =
    "app_id, name, app_key, app_secret, created_ms, previous_secret, previous_secret_until_ms";

fn row_to_app(r: &Row) -> App {
    App {
        app_id: num(r, 0),
        name: r.get(1),
        app_key: r.get(2),
        app_secret: r.get(3),
        created_ms: num(r, 4),
        previous_secret: r.get(5),
        previous_secret_until_ms: num(r, 6),
    }
}

pub(super) async fn insert(c: &impl GenericClient, app: &App) -> StoreResult<()> {
    c.execute(
        "INSERT INTO apps (app_id, name, app_key, app_secret, created_ms) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &sql(app.app_id),
            &app.name,
            &app.app_key,
            &app.app_secret,
            &sql(app.created_ms),
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn app(c: &impl GenericClient, app_id: u64) -> StoreResult<Option<App>> {
    let row = c
        .query_opt(
            &format!("SELECT {APP_COLUMNS} FROM apps WHERE app_id = $1"),
            &[&sql(app_id)],
        )
        .await?;
    Ok(row.as_ref().map(row_to_app))
}

pub(super) async fn list(c: &impl GenericClient) -> StoreResult<Vec<App>> {
    let rows = c
        .query(
            &format!("SELECT {APP_COLUMNS} FROM apps ORDER BY created_ms, app_id"),
            &[],
        )
        .await?;
    Ok(rows.iter().map(row_to_app).collect())
}

async fn existing(c: &impl GenericClient, app_id: u64) -> StoreResult<App> {
    app(c, app_id)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("app {app_id}")))
}

fn clamp_u32(v: Option<u64>) -> Option<u32> {
    v.map(|n| n.min(u64::from(u32::MAX)) as u32)
}

pub(super) async fn set_settings(
    c: &impl GenericClient,
    app_id: u64,
    s: &AppSettings,
) -> StoreResult<()> {
    let n = c
        .execute(
            "UPDATE apps SET callback_url = $2, user_ttl_secs = $3, max_payload_bytes = $4, \
             topic_member_limit = $5, offline_ttl_secs = $6, backlog_limit = $7, \
             history_retention_secs = $8, contacts_window_secs = $9, send_rate_per_user = $10 \
             WHERE app_id = $1",
            &[
                &sql(app_id),
                &s.callback_url,
                &sql(s.user_ttl_secs),
                &s.max_payload_bytes.map(i64::from),
                &s.topic_member_limit.map(i64::from),
                &s.offline_ttl_secs.map(sql),
                &s.backlog_limit.map(i64::from),
                &s.history_retention_secs.map(sql),
                &s.contacts_window_secs.map(sql),
                &s.send_rate_per_user.map(i64::from),
            ],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("app {app_id}")));
    }
    Ok(())
}

pub(super) async fn settings(c: &impl GenericClient, app_id: u64) -> StoreResult<AppSettings> {
    let row = c
        .query_opt(
            "SELECT callback_url, user_ttl_secs, max_payload_bytes, topic_member_limit, \
             offline_ttl_secs, backlog_limit, history_retention_secs, contacts_window_secs, \
             send_rate_per_user FROM apps WHERE app_id = $1",
            &[&sql(app_id)],
        )
        .await?;
    Ok(row
        .map(|r| AppSettings {
            callback_url: r.get(0),
            user_ttl_secs: num(&r, 1),
            max_payload_bytes: clamp_u32(opt_num(&r, 2)),
            topic_member_limit: clamp_u32(opt_num(&r, 3)),
            offline_ttl_secs: opt_num(&r, 4),
            backlog_limit: clamp_u32(opt_num(&r, 5)),
            history_retention_secs: opt_num(&r, 6),
            contacts_window_secs: opt_num(&r, 7),
            send_rate_per_user: clamp_u32(opt_num(&r, 8)),
        })
        .unwrap_or_default())
}

pub(super) async fn rename(c: &impl GenericClient, app_id: u64, name: &str) -> StoreResult<App> {
    c.execute(
        "UPDATE apps SET name = $2 WHERE app_id = $1",
        &[&sql(app_id), &name],
    )
    .await?;
    existing(c, app_id).await
}

pub(super) async fn rotate_secret(
    c: &impl GenericClient,
    app_id: u64,
    secret: &str,
    tokens_until_ms: u64,
) -> StoreResult<App> {
    c.execute(
        "UPDATE apps SET previous_secret = app_secret, previous_secret_until_ms = $3, \
         app_secret = $2 WHERE app_id = $1",
        &[&sql(app_id), &secret, &sql(tokens_until_ms)],
    )
    .await?;
    existing(c, app_id).await
}

/// Deletes the app row; its accounts expire now, its topics are dismissed, its
/// pending callbacks dropped, and `deleted_apps` tells the sweep to delete its
/// messages.
pub(super) async fn delete(c: &impl GenericClient, app_id: u64, now_ms: u64) -> StoreResult<()> {
    let id = sql(app_id);
    if c.execute("DELETE FROM apps WHERE app_id = $1", &[&id])
        .await?
        == 0
    {
        return Err(StoreError::NotFound(format!("app {app_id}")));
    }
    c.execute(
        "INSERT INTO deleted_apps (app_id) VALUES ($1) ON CONFLICT DO NOTHING",
        &[&id],
    )
    .await?;
    // Tombstones of retired accounts (names starting with \x01) stay as they are.
    c.execute(
        "UPDATE accounts SET expires_ms = $2 WHERE app_id = $1 \
         AND substr(account, 1, 1) <> chr(1) AND (expires_ms = 0 OR expires_ms > $2)",
        &[&id, &sql(now_ms.max(1))],
    )
    .await?;
    c.execute(
        "UPDATE topics SET dismissed = TRUE, version = version + 1 \
         WHERE app_id = $1 AND NOT dismissed",
        &[&id],
    )
    .await?;
    c.execute("DELETE FROM callbacks WHERE app_id = $1", &[&id])
        .await?;
    c.execute("DELETE FROM callback_batches WHERE app_id = $1", &[&id])
        .await?;
    Ok(())
}

pub(super) async fn find_account(
    c: &impl GenericClient,
    app_id: u64,
    name: &str,
) -> StoreResult<Option<Account>> {
    let row = c
        .query_opt(
            "SELECT uuid, expires_ms FROM accounts WHERE app_id = $1 AND account = $2",
            &[&sql(app_id), &name],
        )
        .await?;
    Ok(row.map(|r| Account {
        uuid: num(&r, 0),
        expires_ms: num(&r, 1),
    }))
}

/// The live account named `name`, created if absent (an expired one is retired
/// first and a new account takes the name, with the app's current lifetime). Two
/// nodes creating the same name at once: the second waits on the unique index and
/// then finds the first's.
pub(super) async fn find_or_create_account(
    c: &impl GenericClient,
    app_id: u64,
    name: &str,
    now_ms: u64,
) -> StoreResult<Account> {
    match find_account(c, app_id, name).await? {
        Some(a) if !a.expired_at(now_ms) => return Ok(a),
        Some(a) => retire(c, sql(a.uuid)).await?,
        None => {}
    }
    let ttl_secs = c
        .query_opt(
            "SELECT user_ttl_secs FROM apps WHERE app_id = $1",
            &[&sql(app_id)],
        )
        .await?
        .map_or(0, |r| num(&r, 0));
    let expires_ms = if ttl_secs > 0 {
        now_ms.saturating_add(ttl_secs.saturating_mul(1000))
    } else {
        0
    };
    let row = c
        .query_opt(
            "INSERT INTO accounts (app_id, account, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (app_id, account) DO NOTHING RETURNING uuid",
            &[&sql(app_id), &name, &sql(now_ms), &sql(expires_ms)],
        )
        .await?;
    match row {
        Some(r) => Ok(Account {
            uuid: num(&r, 0),
            expires_ms,
        }),
        None => find_account(c, app_id, name)
            .await?
            .ok_or_else(|| StoreError::Database(format!("account {name} vanished"))),
    }
}
