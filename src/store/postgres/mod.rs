//! The PostgreSQL store (`[store] kind = "postgres"`): the same aggregates and
//! semantics as the embedded store, for several gateway nodes sharing one
//! database. Connections come from a `deadpool-postgres` pool; every write runs in
//! one transaction on one pooled connection (the router hands over whole batches
//! of sends, so an append is a group commit), and dedup of (sender, packetId) is a
//! unique index, which holds whichever node commits. The module layout mirrors
//! `sqlite/`: one file per aggregate, functions over a client or transaction.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{NoTls, Row};

use super::{
    Account, App, AppSettings, AppStore, AppendOutcome, BlacklistStore, Contact, HistoryRange,
    HistoryStore, MessageStore, NewCallback, NewMessage, Peer, Store, StoreError, StoreResult,
    StoredMessage, SweepPlan, SweepReport, SweepStore, TimelineRange, Topic, TopicStore,
    TopicSummary, TopicUpdate,
};
use crate::time::now_ms;

mod apps;
mod history;
mod messages;
mod outbox;
mod schema;
mod sweep;
mod topics;

/// Settings of the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections in the pool.
    pub pool_size: usize,
    /// How long `open` keeps retrying (with backoff) a database that is not up.
    pub connect_for: Duration,
    /// Bound on waiting for a pooled connection, connecting, and each statement:
    /// a database that stops answering fails calls instead of hanging them.
    pub timeout: Duration,
    /// This node's id: held as a session advisory lock while the store is open,
    /// so a second node with the same id is refused (their sequences would
    /// collide).
    pub node_id: Option<u8>,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            pool_size: 16,
            connect_for: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            node_id: None,
        }
    }
}

/// PostgreSQL-backed store.
pub struct PgStore {
    pool: Pool,
    /// Appends commit one at a time, in the order the router hands them over:
    /// a device must never read sequence n+1 from the store before n committed
    /// (its backlog would move past n). The router's batches grow meanwhile.
    append_turn: tokio::sync::Semaphore,
    /// The connection that holds this node's id lock (dropped with the store).
    _node_lock: Option<tokio_postgres::Client>,
}

/// Base of the advisory lock keys of node ids ("no" + id).
const NODE_LOCK_BASE: i32 = 0x6e6f_0000;

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` (retrying with backoff for `options.connect_for`) and runs
    /// the migrations.
    pub async fn open(url: &str, options: PgOptions) -> StoreResult<PgStore> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Invalid(format!("postgres URL: {e}")))?;
        config.connect_timeout(options.timeout);
        let mut statement_timeout = format!("-c statement_timeout={}", options.timeout.as_millis());
        if let Some(existing) = config.get_options() {
            statement_timeout = format!("{existing} {statement_timeout}");
        }
        config.options(&statement_timeout);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(options.timeout))
            .create_timeout(Some(options.timeout))
            .recycle_timeout(Some(options.timeout))
            .build()
            .map_err(|e| StoreError::Database(format!("postgres pool: {e}")))?;
        let started = std::time::Instant::now();
        let mut backoff = Duration::from_millis(100);
        let mut client = loop {
            match pool.get().await {
                Ok(client) => break client,
                Err(e) if started.elapsed() < options.connect_for => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "postgres: cannot connect; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    return Err(StoreError::Database(format!(
                        "cannot connect to postgres within {} s: {e}",
                        options.connect_for.as_secs()
                    )))
                }
            }
        };
        schema::migrate(&mut client).await?;
        let node_lock = match options.node_id {
            Some(id) => Some(claim_node_id(&config, id).await?),
            None => None,
        };
        Ok(PgStore {
            pool,
            append_turn: tokio::sync::Semaphore::new(1),
            _node_lock: node_lock,
        })
    }

    /// A pooled connection.
    async fn client(&self) -> StoreResult<deadpool_postgres::Client> {
        self.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Closed => StoreError::Closed,
            e => StoreError::Database(format!("postgres pool: {e}")),
        })
    }

    /// Releases the pool (idle connections close; busy ones when returned).
    pub fn close(&self) {
        self.pool.close();
    }
}

/// Takes node id `id`'s advisory lock on a connection of its own, held as long as
/// the returned client lives; refused if another live node holds it.
async fn claim_node_id(
    config: &tokio_postgres::Config,
    id: u8,
) -> StoreResult<tokio_postgres::Client> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "postgres: the node-id lock connection ended");
        }
    });
    // Per schema: deployments in different schemas of one database are apart.
    let key = NODE_LOCK_BASE + i32::from(id);
    let row = client
        .query_one(
            "SELECT pg_try_advisory_lock(hashtext(current_schema()), $1)",
            &[&key],
        )
        .await?;
    if !row.get::<_, bool>(0) {
        return Err(StoreError::Invalid(format!(
            "node_id {id} is held by another live node on this database; give each node its own node_id (0-15)"
        )));
    }
    Ok(client)
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => {
                StoreError::Database(format!("postgres: {}: {}", db.code().code(), db.message()))
            }
            None => StoreError::Database(format!("postgres: {e}")),
        }
    }
}

/// A u64 as PostgreSQL's BIGINT (bounds from clients may exceed it).
pub(super) fn sql(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// Column `idx` of `row`, a BIGINT, as u64 (negatives read as 0).
pub(super) fn num(row: &Row, idx: usize) -> u64 {
    row.get::<_, i64>(idx).max(0) as u64
}

/// Column `idx` of `row`, a nullable BIGINT, as u64.
pub(super) fn opt_num(row: &Row, idx: usize) -> Option<u64> {
    row.get::<_, Option<i64>>(idx).map(|v| v.max(0) as u64)
}

/// Runs `$body` (a `StoreResult`; it may use `?` and `.await`) in a transaction
/// named `$tx` on a pooled connection of `$store`: committed if it is `Ok`, rolled
/// back (dropped) if not.
macro_rules! in_tx {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let started = std::time::Instant::now();
        let mut client = $store.client().await?;
        let $tx = tokio_postgres::Client::transaction(&mut client).await?;
        let out: StoreResult<_> = $body;
        match out {
            Ok(value) => {
                $tx.commit().await?;
                // One write operation per commit (the router's batch is one).
                metrics::histogram!(crate::telemetry::STORE_COMMIT_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                metrics::histogram!(crate::telemetry::STORE_COMMIT_OPS).record(1.0);
                Ok(value)
            }
            Err(e) => Err(e),
        }
    }};
}

/// Runs `$body` with `$c`, a pooled connection (`&tokio_postgres::Client`).
macro_rules! on_client {
    ($store:expr, |$c:ident| $body:expr) => {{
        let client = $store.client().await?;
        let $c: &tokio_postgres::Client = &client;
        $body
    }};
}

impl Store for PgStore {
    fn close(&self) {
        PgStore::close(self);
    }

    /// The nodes holding a node-id lock on this schema (see [`claim_node_id`]).
    fn live_nodes(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = StoreResult<Vec<u8>>> + Send + '_>>
    {
        Box::pin(async move {
            let client = self.client().await?;
            let rows = client
                .query(
                    "SELECT (objid::bigint - $1::bigint)::int FROM pg_locks
                     WHERE locktype = 'advisory' AND objsubid = 2 AND granted
                       AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                       AND classid = hashtext(current_schema())::oid
                       AND objid::bigint BETWEEN $1::bigint AND $1::bigint + 15",
                    &[&i64::from(NODE_LOCK_BASE)],
                )
                .await?;
            Ok(rows
                .iter()
                .filter_map(|r| u8::try_from(r.get::<_, i32>(0)).ok())
                .collect())
        })
    }
}

#[async_trait]
impl AppStore for PgStore {
    async fn create_app(&self, name: &str) -> StoreResult<App> {
        let app = super::new_app(name);
        on_client!(self, |c| apps::insert(c, &app).await?);
        Ok(app)
    }

    async fn list_apps(&self) -> StoreResult<Vec<App>> {
        on_client!(self, |c| apps::list(c).await)
    }

    async fn app(&self, app_id: u64) -> StoreResult<Option<App>> {
        on_client!(self, |c| apps::app(c, app_id).await)
    }

    async fn account(
        &self,
        app_id: u64,
        account: &str,
        create: bool,
        now_ms: u64,
    ) -> StoreResult<Option<Account>> {
        let found = on_client!(self, |c| apps::find_account(c, app_id, account).await?);
        match found {
            Some(a) if !a.expired_at(now_ms) => return Ok(Some(a)),
            _ if !create => return Ok(None),
            _ => {}
        }
        in_tx!(self, |tx| apps::find_or_create_account(
            &tx, app_id, account, now_ms
        )
        .await)
        .map(Some)
    }

    async fn accounts(
        &self,
        app_id: u64,
        names: Vec<String>,
        now_ms: u64,
    ) -> StoreResult<Vec<Account>> {
        let mut found = Vec::with_capacity(names.len());
        on_client!(self, |c| {
            for name in &names {
                found.push(apps::find_account(c, app_id, name).await?);
            }
        });
        if found
            .iter()
            .all(|a| a.is_some_and(|a| !a.expired_at(now_ms)))
        {
            return Ok(found.into_iter().flatten().collect());
        }
        // Created in sorted order: two calls creating the same names in other
        // orders would otherwise deadlock on the unique index.
        let mut sorted: Vec<&String> = names.iter().collect();
        sorted.sort_unstable();
        sorted.dedup();
        let created = in_tx!(self, |tx| {
            let mut out = std::collections::HashMap::with_capacity(sorted.len());
            for name in &sorted {
                let account = apps::find_or_create_account(&tx, app_id, name, now_ms).await?;
                out.insert((*name).clone(), account);
            }
            Ok(out)
        })?;
        names
            .iter()
            .map(|n| {
                created
                    .get(n)
                    .copied()
                    .ok_or_else(|| StoreError::Database(format!("account {n} not created")))
            })
            .collect()
    }

    async fn set_app_settings(&self, app_id: u64, settings: AppSettings) -> StoreResult<()> {
        on_client!(self, |c| apps::set_settings(c, app_id, &settings).await)
    }

    async fn app_settings(&self, app_id: u64) -> StoreResult<AppSettings> {
        on_client!(self, |c| apps::settings(c, app_id).await)
    }

    async fn rename_app(&self, app_id: u64, name: &str) -> StoreResult<App> {
        on_client!(self, |c| apps::rename(c, app_id, name).await)
    }

    async fn rotate_app_secret(&self, app_id: u64, tokens_until_ms: u64) -> StoreResult<App> {
        let secret = super::new_app_secret();
        on_client!(self, |c| apps::rotate_secret(
            c,
            app_id,
            &secret,
            tokens_until_ms
        )
        .await)
    }

    async fn delete_app(&self, app_id: u64, now_ms: u64) -> StoreResult<()> {
        in_tx!(self, |tx| apps::delete(&tx, app_id, now_ms).await)
    }
}

#[async_trait]
impl MessageStore for PgStore {
    async fn append_with_callbacks(
        &self,
        messages: Vec<NewMessage>,
        callbacks: Vec<NewCallback>,
    ) -> StoreResult<Vec<AppendOutcome>> {
        let _turn = self
            .append_turn
            .acquire()
            .await
            .map_err(|_| StoreError::Closed)?;
        in_tx!(self, |tx| {
            let outcomes = messages::append_in(&tx, &messages).await?;
            if !callbacks.is_empty() {
                outbox::insert(&tx, &messages, &outcomes, &callbacks).await?;
            }
            Ok::<_, StoreError>(outcomes)
        })
    }

    async fn timeline(
        &self,
        range: TimelineRange,
        resource: &str,
    ) -> StoreResult<Vec<StoredMessage>> {
        on_client!(self, |c| messages::user_messages(
            c,
            range.uuid,
            resource,
            range.after,
            range.before,
            range.limit,
            range.order,
        )
        .await)
    }

    async fn count_after(
        &self,
        uuid: u64,
        resource: &str,
        after: u64,
        cap: usize,
    ) -> StoreResult<usize> {
        on_client!(self, |c| messages::count_user_messages(
            c, uuid, resource, after, cap
        )
        .await)
    }

    async fn cursor(&self, uuid: u64, resource: &str) -> StoreResult<Option<u64>> {
        let row = on_client!(self, |c| c
            .query_opt(
                "SELECT seq FROM cursors WHERE uuid = $1 AND resource = $2",
                &[&sql(uuid), &resource],
            )
            .await?);
        Ok(row.map(|r| num(&r, 0)))
    }

    async fn max_cursor(&self, uuid: u64) -> StoreResult<u64> {
        let row = on_client!(self, |c| c
            .query_one(
                "SELECT max(seq) FROM cursors WHERE uuid = $1",
                &[&sql(uuid)]
            )
            .await?);
        Ok(opt_num(&row, 0).unwrap_or(0))
    }

    async fn set_cursors(&self, mut cursors: Vec<(u64, String, u64)>) -> StoreResult<()> {
        if cursors.is_empty() {
            return Ok(());
        }
        // A fixed order, so concurrent upserts lock rows in the same order.
        cursors.sort_unstable_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        cursors.dedup_by(|a, b| {
            if a.0 == b.0 && a.1 == b.1 {
                b.2 = b.2.max(a.2);
                true
            } else {
                false
            }
        });
        let uuids: Vec<i64> = cursors.iter().map(|c| sql(c.0)).collect();
        let resources: Vec<&str> = cursors.iter().map(|c| c.1.as_str()).collect();
        let seqs: Vec<i64> = cursors.iter().map(|c| sql(c.2)).collect();
        on_client!(self, |c| {
            c
            .execute(
                "INSERT INTO cursors (uuid, resource, seq) \
                 SELECT * FROM unnest($1::BIGINT[], $2::TEXT[], $3::BIGINT[]) \
                 ON CONFLICT (uuid, resource) DO UPDATE SET seq = greatest(cursors.seq, excluded.seq)",
                &[&uuids, &resources, &seqs],
            )
            .await?
        });
        Ok(())
    }

    async fn max_sequence(&self) -> StoreResult<u64> {
        let row = on_client!(self, |c| c
            .query_one("SELECT max(seq) FROM messages", &[])
            .await?);
        Ok(opt_num(&row, 0).unwrap_or(0))
    }

    async fn flush(&self) -> StoreResult<()> {
        // Every write commits before it answers: nothing is queued.
        Ok(())
    }
}

#[async_trait]
impl BlacklistStore for PgStore {
    async fn blacklist_add(&self, owner: u64, black: u64) -> StoreResult<()> {
        on_client!(self, |c| c
            .execute(
                "INSERT INTO blacklist (owner_uuid, black_uuid, created_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                &[&sql(owner), &sql(black), &sql(now_ms())],
            )
            .await?);
        Ok(())
    }

    async fn blacklist_remove(&self, owner: u64, black: u64) -> StoreResult<()> {
        on_client!(self, |c| c
            .execute(
                "DELETE FROM blacklist WHERE owner_uuid = $1 AND black_uuid = $2",
                &[&sql(owner), &sql(black)],
            )
            .await?);
        Ok(())
    }

    async fn blacklist_of(&self, owner: u64) -> StoreResult<Vec<u64>> {
        let rows = on_client!(self, |c| c
            .query(
                "SELECT black_uuid FROM blacklist WHERE owner_uuid = $1",
                &[&sql(owner)],
            )
            .await?);
        Ok(rows.iter().map(|r| num(r, 0)).collect())
    }
}

#[async_trait]
impl HistoryStore for PgStore {
    async fn history(&self, range: HistoryRange) -> StoreResult<Vec<StoredMessage>> {
        on_client!(self, |c| history::history(c, &range).await)
    }

    async fn contacts(
        &self,
        owner: u64,
        since_seq: u64,
        limit: usize,
    ) -> StoreResult<Vec<Contact>> {
        on_client!(self, |c| history::contacts(c, owner, since_seq, limit)
            .await)
    }

    async fn clear_contact(&self, owner: u64, peer: Peer) -> StoreResult<()> {
        in_tx!(self, |tx| history::clear_contact(&tx, owner, peer).await)
    }
}

#[async_trait]
impl SweepStore for PgStore {
    async fn sweep(&self, plan: SweepPlan) -> StoreResult<SweepReport> {
        in_tx!(self, |tx| sweep::sweep(&tx, &plan).await)
    }
}

#[async_trait]
impl TopicStore for PgStore {
    async fn create_topic(
        &self,
        app_id: u64,
        owner: u64,
        name: &str,
        members: Vec<u64>,
        limit: usize,
        boundary: u64,
    ) -> StoreResult<Topic> {
        in_tx!(self, |tx| {
            let id = topics::create(&tx, app_id, owner, name, &members, limit, boundary).await?;
            topics::get(&tx, id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("topic {id}")))
        })
    }

    async fn topic(&self, topic_id: u64) -> StoreResult<Option<Topic>> {
        on_client!(self, |c| topics::get(c, topic_id).await)
    }

    async fn topics_of(&self, uuid: u64) -> StoreResult<Vec<TopicSummary>> {
        on_client!(self, |c| topics::topics_of(c, uuid).await)
    }

    async fn was_member(&self, uuid: u64, topic_id: u64) -> StoreResult<bool> {
        let row = on_client!(self, |c| c
            .query_opt(
                "SELECT 1 FROM topic_membership WHERE uuid = $1 AND topic_id = $2 LIMIT 1",
                &[&sql(uuid), &sql(topic_id)],
            )
            .await?);
        Ok(row.is_some())
    }

    async fn add_members(
        &self,
        topic_id: u64,
        uuids: Vec<u64>,
        limit: usize,
        boundary: u64,
    ) -> StoreResult<Vec<u64>> {
        in_tx!(self, |tx| topics::add_members(
            &tx, topic_id, &uuids, limit, boundary
        )
        .await)
    }

    async fn start_memberships(
        &self,
        topic_id: u64,
        uuids: Vec<u64>,
        boundary: u64,
    ) -> StoreResult<()> {
        in_tx!(self, |tx| topics::start_memberships(
            &tx, topic_id, &uuids, boundary
        )
        .await)
    }

    async fn remove_members(
        &self,
        topic_id: u64,
        uuids: Vec<u64>,
        boundary: u64,
    ) -> StoreResult<()> {
        in_tx!(self, |tx| topics::remove_members(
            &tx, topic_id, &uuids, boundary
        )
        .await)
    }

    async fn update_topic(&self, topic_id: u64, update: TopicUpdate) -> StoreResult<()> {
        in_tx!(self, |tx| topics::update(&tx, topic_id, &update).await)
    }

    async fn dismiss_topic(&self, topic_id: u64, boundary: u64) -> StoreResult<()> {
        in_tx!(self, |tx| topics::dismiss(&tx, topic_id, boundary).await)
    }
}

#[cfg(test)]
pub(crate) mod test_server;

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::test_server::TestPostgres;
    use super::*;
    use crate::store::conformance;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_suite() {
        let server = TestPostgres::start();
        let n = AtomicUsize::new(0);
        conformance::run_all(|| {
            let name = format!("conformance_{}", n.fetch_add(1, Ordering::Relaxed));
            let store = tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    let url = server.schema_url(&name).await;
                    PgStore::open(&url, PgOptions::default()).await
                })
            })
            .expect("open the postgres store");
            (Arc::new(store) as Arc<dyn Store>, ())
        })
        .await;
    }
}
