//! The transactional outbox and the inbox, on SQLite (features `sqlite`) and PostgreSQL
//! (`postgres`), with `sqlx`.
//!
//! **Outbox.** Events are staged inside the caller's own database transaction
//! ([`Outbox::stage`]): they commit or roll back with the business rows. A relay
//! ([`Outbox::spawn_relay`], or [`Outbox::relay_once`]) publishes committed rows in staging
//! order with the idempotent producer, marks them sent, and retries through a broker outage.
//! An event keeps the id it got when staged, so a row published again (the relay died after
//! the broker's ack and before marking the row sent) carries the same `ce_id`, which the
//! [`Inbox`] of the consumer drops. One relay publishes at a time: a lease row elects it, so
//! two relay processes on one database never both publish a row, and order per key holds. A
//! row that can never be published (its record is too large, its topic is invalid or not
//! authorized) is parked with its error, reported, and skipped: it blocks no other row. Sent
//! rows are deleted after the retention period.
//!
//! **Inbox.** [`Inbox::begin`] starts a transaction that records the handled event id (per
//! consumer group and handler); the handler does its own writes in it and commits. A redelivered record
//! (after a crash or a rebalance) finds its id and is skipped: an exactly-once effect for
//! handlers whose effects are in the database.
//!
//! Both create their tables with `migrate()` (the schema ships with the crate).

use std::marker::PhantomData;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::flows::cascade::{Cascade, IntoEvents};
use crate::core::error::{Error, Result};
use crate::flows::publish::{Outgoing, PublishOptions, Publisher};

/// How the relay runs.
#[derive(Debug, Clone)]
pub struct OutboxSettings {
    /// Rows published per round (default 200).
    pub batch: usize,
    /// How often the relay looks for rows when there were none (default 100 ms).
    pub poll_interval: Duration,
    /// How long sent rows are kept (default 7 days).
    pub retention: Duration,
    /// How long a relay's lease lasts without renewal before another relay may take over
    /// (default 2 min). Keep it well above the publish timeout: a round can take that long,
    /// and relays compare it with their own clocks.
    pub lease: Duration,
    /// This relay's name in the lease. A relay restarted under the same name takes its lease
    /// back at once instead of waiting it out. Default: `SERVICE/INSTANCE` when the app has a
    /// static instance id (`EVENTKIT_KAFKA_GROUP_INSTANCE_ID`, e.g. the pod's name), otherwise
    /// `SERVICE/` and a name unique to this process. Two processes must never share a name.
    pub owner: Option<String>,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        OutboxSettings {
            batch: 200,
            poll_interval: Duration::from_millis(100),
            retention: Duration::from_secs(7 * 86_400),
            lease: Duration::from_secs(120),
            owner: None,
        }
    }
}

/// What one relay round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayReport {
    /// Rows published and marked sent.
    pub published: usize,
    /// Rows parked (they can never be published).
    pub parked: usize,
    /// Whether the round stopped at a retriable failure (the broker is unreachable, say);
    /// the rows stay and go out in a later round.
    pub retry_later: bool,
    /// Whether another relay holds the lease (this one published nothing).
    pub not_leader: bool,
}

/// A row the relay gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedRow {
    /// The row's position in staging order.
    pub id: i64,
    /// The event id (`ce_id`).
    pub event_id: String,
    /// The topic on the wire.
    pub topic: String,
    /// Why it cannot be published.
    pub error: String,
}

/// The transactional outbox over a `sqlx` pool (`Outbox<Sqlite>` or `Outbox<Postgres>`).
///
/// Events are staged in the same database transaction as the writes they announce, and a
/// relay publishes the committed rows:
///
/// ```no_run
/// use eventkit::outbox::Outbox;
///
/// #[eventkit::integration_event(topic = "users.created.v1", key = user_id)]
/// pub struct UserCreated { pub user_id: i64, pub email: String }
///
/// # async fn example() -> eventkit::Result<()> {
/// let pool = sqlx::SqlitePool::connect("sqlite://app.db?mode=rwc").await?;
/// let outbox = Outbox::new(pool.clone());
/// outbox.migrate().await?;
/// let running = eventkit::App::builder().state(outbox.clone()).build()?.start().await?;
/// let relay = outbox.spawn_relay();
///
/// let mut tx = pool.begin().await?;
/// let id: i64 = sqlx::query_scalar("INSERT INTO users (email) VALUES (?) RETURNING id")
///     .bind("ann@example.com")
///     .fetch_one(&mut *tx)
///     .await?;
/// outbox.stage(&mut tx, &UserCreated { user_id: id, email: "ann@example.com".into() }).await?;
/// tx.commit().await?;                               // the user and its event, or neither
///
/// relay.stop().await;
/// running.shutdown().await
/// # }
/// ```
#[derive(Debug)]
pub struct Outbox<DB: sqlx::Database> {
    pool: sqlx::Pool<DB>,
    /// Shared by clones; `None`: the running app's.
    publisher: std::sync::Arc<std::sync::RwLock<Option<Publisher>>>,
    settings: OutboxSettings,
    /// This relay's name in the lease, once known (shared by clones).
    owner: std::sync::Arc<std::sync::OnceLock<String>>,
    /// A name unique to this outbox, for an app without a static instance id.
    unique: String,
    /// Topics found to exist, and when (looked up again after a minute).
    known_topics: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>,
}

/// The inbox over a `sqlx` pool (`Inbox<Sqlite>` or `Inbox<Postgres>`).
#[derive(Debug)]
pub struct Inbox<DB: sqlx::Database> {
    pool: sqlx::Pool<DB>,
    _db: PhantomData<DB>,
}

impl<DB: sqlx::Database> Outbox<DB> {
    /// An outbox on `pool` for the running app: staged events are encoded with its settings
    /// (service name, topic prefix, wire formats), and the relay publishes with its publisher.
    /// It can be app state before the app starts; staging and relaying need the app running.
    pub fn new(pool: sqlx::Pool<DB>) -> Self {
        Outbox {
            pool,
            publisher: Default::default(),
            settings: OutboxSettings::default(),
            owner: Default::default(),
            unique: uuid::Uuid::now_v7().to_string(),
            known_topics: Default::default(),
        }
    }

    /// An outbox on `pool` that encodes and publishes with `publisher`.
    pub fn with_publisher(pool: sqlx::Pool<DB>, publisher: Publisher) -> Self {
        let outbox = Outbox::new(pool);
        outbox.attach(publisher);
        outbox
    }

    /// Makes this outbox (and its clones) encode and publish with `publisher` from now on,
    /// for processes that run several apps: `outbox.attach(running.publisher())`.
    pub fn attach(&self, publisher: Publisher) {
        *self.publisher.write().unwrap_or_else(|e| e.into_inner()) = Some(publisher);
    }

    fn publisher(&self) -> Result<Publisher> {
        match &*self.publisher.read().unwrap_or_else(|e| e.into_inner()) {
            Some(p) => Ok(p.clone()),
            None => crate::app::publisher(),
        }
    }

    /// The same outbox with other relay settings.
    pub fn with_settings(mut self, settings: OutboxSettings) -> Self {
        self.settings = settings;
        self.owner = Default::default();
        self
    }

    /// Whether `topic` exists (a metadata lookup, cached for a minute). Unknown when the
    /// cluster does not answer: then it counts as existing, and the row waits its turn.
    async fn topic_known(&self, publisher: &Publisher, topic: &str) -> bool {
        const FRESH: Duration = Duration::from_secs(60);
        if self.known_topics.lock().unwrap_or_else(|e| e.into_inner()).get(topic).is_some_and(|at| at.elapsed() < FRESH) {
            return true;
        }
        match publisher.topic_exists(topic).await {
            Some(false) => false,
            Some(true) => {
                self.known_topics.lock().unwrap_or_else(|e| e.into_inner()).insert(topic.to_owned(), std::time::Instant::now());
                true
            }
            None => true,
        }
    }

    /// This relay's name in the lease (see [`OutboxSettings::owner`]).
    pub fn owner(&self) -> Result<String> {
        if let Some(owner) = self.owner.get() {
            return Ok(owner.clone());
        }
        let owner = match &self.settings.owner {
            Some(owner) => owner.clone(),
            None => {
                let publisher = self.publisher()?;
                match publisher.instance_id() {
                    Some(instance) => format!("{}/{instance}", publisher.source()),
                    None => format!("{}/{}", publisher.source(), self.unique),
                }
            }
        };
        Ok(self.owner.get_or_init(|| owner).clone())
    }
}

impl<DB: sqlx::Database> Inbox<DB> {
    /// An inbox on `pool`.
    pub fn new(pool: sqlx::Pool<DB>) -> Self {
        Inbox { pool, _db: PhantomData }
    }
}

impl<DB: sqlx::Database> Clone for Outbox<DB> {
    fn clone(&self) -> Self {
        Outbox {
            pool: self.pool.clone(),
            publisher: self.publisher.clone(),
            settings: self.settings.clone(),
            owner: self.owner.clone(),
            unique: self.unique.clone(),
            known_topics: self.known_topics.clone(),
        }
    }
}

impl<DB: sqlx::Database> Clone for Inbox<DB> {
    fn clone(&self) -> Self {
        Inbox { pool: self.pool.clone(), _db: PhantomData }
    }
}

/// A handler argument that makes the handler idempotent: the transaction [`Inbox::begin`]
/// started, which records the event as handled by the handler's group. The handler does its
/// writes (and its outbox cascade) in it and commits it with [`InboxTx::commit`]; when the
/// group handled the event before, the handler does not run at all. Needs the [`Inbox`] in app
/// state (`App::builder().state(Inbox::new(pool))`).
///
/// **Commit it before returning `Ok`.** A handler that returns `Ok` without committing (or
/// taking the transaction with [`InboxTx::into_inner`]) would lose its writes and the inbox
/// record silently: eventkit makes that a permanent failure instead, and the record goes to the
/// dead letter queue with the message "the handler returned Ok without committing its
/// `InboxTx`" (fix the handler, then replay it).
///
/// ```text
/// #[handler(group = "purchasing", idempotent)]
/// async fn create_order(e: LowStockDetected, ctx: &Context, mut tx: InboxTx<Sqlite>, outbox: &Outbox<Sqlite>) -> eventkit::Result<()> {
///     sqlx::query("INSERT INTO purchase_orders ...").execute(&mut **tx).await?;
///     outbox.cascade(&mut tx, ctx, PurchaseOrderPlaced { .. }).await?;
///     tx.commit().await
/// }
/// ```
pub struct InboxTx<DB: sqlx::Database>(sqlx::Transaction<'static, DB>, std::sync::Arc<std::sync::atomic::AtomicBool>);

/// The inbox, as the layer an `InboxTx` argument brings around its handler: it begins the
/// handler's transaction with the inbox record (a redelivery is skipped: "handled before"),
/// hands it to the argument, and makes a success without a commit a permanent failure.
pub struct InboxLayer<DB: sqlx::Database>(PhantomData<DB>);

/// Why an idempotent handler's success is a failure when it did not commit.
const UNCOMMITTED: &str = "the handler returned Ok without committing its `InboxTx`: its writes and the inbox record were rolled back; call `tx.commit().await?` before returning Ok";

impl<DB: sqlx::Database> std::fmt::Debug for InboxTx<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InboxTx")
    }
}

impl<DB: sqlx::Database> std::ops::Deref for InboxTx<DB> {
    type Target = sqlx::Transaction<'static, DB>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for InboxTx<DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl<DB: sqlx::Database> InboxTx<DB> {
    /// Commits the handler's writes with the inbox record.
    pub async fn commit(self) -> Result<()> {
        let InboxTx(tx, done) = self;
        tx.commit().await.map_err(db_error)?;
        done.store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// The transaction itself: committing it is then the caller's business.
    pub fn into_inner(self) -> sqlx::Transaction<'static, DB> {
        self.1.store(true, std::sync::atomic::Ordering::Release);
        self.0
    }
}

/// A running relay; [`Relay::stop`] ends it after its current round and releases its lease,
/// so that another relay takes over at once. The app it publishes with stops it the same way
/// when it shuts down; dropping the handle leaves it running until then.
#[derive(Debug)]
pub struct Relay {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Stops the relay after its current round, and releases its lease.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// A staged record's headers, as stored (values base64, nulls kept).
#[derive(Serialize, Deserialize)]
struct StoredHeader(String, Option<String>);

fn store_headers(headers: &OwnedHeaders) -> String {
    use base64::Engine;
    let list: Vec<StoredHeader> = headers
        .iter()
        .map(|h| StoredHeader(h.key.to_owned(), h.value.map(|v| base64::engine::general_purpose::STANDARD.encode(v))))
        .collect();
    serde_json::to_string(&list).expect("headers serialize")
}

fn load_headers(text: &str) -> Result<OwnedHeaders> {
    use base64::Engine;
    let list: Vec<StoredHeader> = serde_json::from_str(text)?;
    let mut headers = OwnedHeaders::new_with_capacity(list.len());
    for StoredHeader(key, value) in list {
        let value = match value {
            Some(v) => Some(base64::engine::general_purpose::STANDARD.decode(v).map_err(|e| Error::Envelope(format!("outbox header `{key}`: {e}")))?),
            None => None,
        };
        headers = headers.insert(Header { key: &key, value: value.as_deref() });
    }
    Ok(headers)
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Whether publishing a record failed for good (retrying cannot help): too large, a topic
/// that is invalid, not authorized or does not exist (create it, then
/// [`Outbox::requeue_parked`]).
fn permanent(error: &Error) -> bool {
    use RDKafkaErrorCode::*;
    match error {
        Error::Publish { source: KafkaError::MessageProduction(code), .. } => matches!(
            code,
            MessageSizeTooLarge | MessageBatchTooLarge | InvalidMessageSize | InvalidTopic | TopicAuthorizationFailed | UnknownTopic | InvalidRecord
        ),
        _ => false,
    }
}

/// One staged row, as read back.
type Row = (i64, String, String, Vec<u8>, String, Vec<u8>);

/// SQL shared by both databases, with `$n` parameters (SQLite gets `?n`).
mod sql {
    pub const INSERT: &str = "INSERT INTO eventkit_outbox (event_id, topic, record_key, headers, value, created_ms) VALUES ($1, $2, $3, $4, $5, $6)";
    pub const LEASE_INIT: &str = "INSERT INTO eventkit_outbox_lease (id, owner, until_ms) VALUES (1, '', 0) ON CONFLICT (id) DO NOTHING";
    pub const LEASE_TAKE: &str = "UPDATE eventkit_outbox_lease SET owner = $1, until_ms = $2 WHERE id = 1 AND (owner = $1 OR until_ms < $3)";
    pub const LEASE_DROP: &str = "UPDATE eventkit_outbox_lease SET until_ms = 0 WHERE id = 1 AND owner = $1";
    pub const PENDING_ROWS: &str =
        "SELECT id, event_id, topic, record_key, headers, value FROM eventkit_outbox WHERE sent_ms IS NULL AND parked = 0 ORDER BY id LIMIT $1";
    /// Only while this relay holds the lease.
    pub const MARK_SENT: &str =
        "UPDATE eventkit_outbox SET sent_ms = $1 WHERE id = $2 AND EXISTS (SELECT 1 FROM eventkit_outbox_lease WHERE id = 1 AND owner = $3)";
    pub const PARK: &str = "UPDATE eventkit_outbox SET parked = 1, error = $1 WHERE id = $2";
    pub const REQUEUE: &str = "UPDATE eventkit_outbox SET parked = 0, error = NULL WHERE parked = 1 AND sent_ms IS NULL";
    pub const CLEAN: &str = "DELETE FROM eventkit_outbox WHERE sent_ms IS NOT NULL AND sent_ms < $1";
    pub const PENDING_COUNT: &str = "SELECT COUNT(*) FROM eventkit_outbox WHERE sent_ms IS NULL AND parked = 0";
    /// Whether a row is committed and not parked (a test session's question).
    pub const ROW_LIVE: &str = "SELECT COUNT(*) FROM eventkit_outbox WHERE event_id = $1 AND parked = 0";
    pub const PARKED: &str = "SELECT id, event_id, topic, error FROM eventkit_outbox WHERE parked = 1 ORDER BY id";
    pub const INBOX_INSERT: &str =
        "INSERT INTO eventkit_inbox (group_id, handler, event_id, handled_ms) VALUES ($1, $2, $3, $4) ON CONFLICT (group_id, handler, event_id) DO NOTHING";
    pub const INBOX_HAS: &str = "SELECT COUNT(*) FROM eventkit_inbox WHERE group_id = $1 AND event_id = $2";
    pub const INBOX_CLEAN: &str = "DELETE FROM eventkit_inbox WHERE handled_ms < $1";
}

macro_rules! backend {
    ($feature:literal, $db:ty, $blob:literal, $serial:literal, $param:literal) => {
        #[cfg(feature = $feature)]
        const _: () = {
            use std::borrow::Cow;

            use sqlx::{Row as _, Transaction};

            /// The query text for this database.
            fn q(text: &'static str) -> Cow<'static, str> {
                if $param == "$" {
                    Cow::Borrowed(text)
                } else {
                    Cow::Owned(text.replace('$', $param))
                }
            }

            /// Runs `text` as one query (DDL, or DML without parameters).
            async fn exec(pool: &sqlx::Pool<$db>, text: &str) -> Result<()> {
                sqlx::query(text).execute(pool).await.map(drop).map_err(db_error)
            }

            impl Outbox<$db> {
                /// Creates the outbox tables if they are missing.
                pub async fn migrate(&self) -> Result<()> {
                    exec(&self.pool, &format!(
                        "CREATE TABLE IF NOT EXISTS eventkit_outbox (
                            id {serial} PRIMARY KEY,
                            event_id TEXT NOT NULL UNIQUE,
                            topic TEXT NOT NULL,
                            record_key {blob} NOT NULL,
                            headers TEXT NOT NULL,
                            value {blob} NOT NULL,
                            created_ms BIGINT NOT NULL,
                            sent_ms BIGINT,
                            parked INTEGER NOT NULL DEFAULT 0,
                            error TEXT
                        )",
                        serial = $serial, blob = $blob
                    )).await?;
                    exec(&self.pool, "CREATE INDEX IF NOT EXISTS eventkit_outbox_pending ON eventkit_outbox (sent_ms, parked, id)").await?;
                    exec(&self.pool, "CREATE TABLE IF NOT EXISTS eventkit_outbox_lease (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, until_ms BIGINT NOT NULL)").await?;
                    exec(&self.pool, sql::LEASE_INIT).await
                }

                /// Stages an integration event in `tx`: it is published after `tx` commits,
                /// and never if it rolls back. Returns the event id.
                pub async fn stage<E: crate::IntegrationEvent>(&self, tx: &mut Transaction<'_, $db>, event: &E) -> Result<String> {
                    self.stage_with(tx, event, PublishOptions::default()).await
                }

                /// [`Outbox::stage`] with ids, tenant, key or headers.
                pub async fn stage_with<E: crate::IntegrationEvent>(&self, tx: &mut Transaction<'_, $db>, event: &E, options: PublishOptions) -> Result<String> {
                    let (topic, out) = self.publisher()?.encode_record(event, options)?;
                    self.insert(tx, &topic, out).await
                }

                /// Stages events in `tx` as follow-ups of the event (or command) `ctx` handles,
                /// encoded with the settings of `ctx`'s app: a handler's cascade that commits
                /// with the handler's own writes. Returns their event ids.
                pub async fn cascade(&self, tx: &mut Transaction<'_, $db>, ctx: &crate::Context, events: impl IntoEvents) -> Result<Vec<String>> {
                    let records = Cascade::new().with(events).encode(ctx.publisher(), &ctx.follow_up())?;
                    self.insert_all(tx, records).await
                }

                /// Stages events (integration events, `#[maps_to]` domain events, a [`Cascade`],
                /// or collections of them) in `tx`, in order. Returns their event ids.
                pub async fn stage_events(&self, tx: &mut Transaction<'_, $db>, events: impl IntoEvents, options: PublishOptions) -> Result<Vec<String>> {
                    let records = Cascade::new().with(events).encode(&self.publisher()?, &options)?;
                    self.insert_all(tx, records).await
                }

                /// Inserts encoded records in order; returns their event ids.
                async fn insert_all(&self, tx: &mut Transaction<'_, $db>, records: Vec<(String, Outgoing)>) -> Result<Vec<String>> {
                    let mut ids = Vec::with_capacity(records.len());
                    for (topic, out) in records {
                        ids.push(self.insert(tx, &topic, out).await?);
                    }
                    Ok(ids)
                }

                async fn insert(&self, tx: &mut Transaction<'_, $db>, topic: &str, out: Outgoing) -> Result<String> {
                    if crate::surfaces::testing::active() {
                        // A test session follows the row through the relay.
                        let pool = self.pool.clone();
                        let probe: crate::surfaces::testing::OutboxProbe = std::sync::Arc::new(move |id: String| {
                            let pool = pool.clone();
                            Box::pin(async move {
                                sqlx::query(&q(sql::ROW_LIVE)).bind(id).fetch_one(&pool).await.ok().and_then(|r| r.try_get::<i64, _>(0).ok()).is_some_and(|n| n > 0)
                            })
                        });
                        crate::surfaces::testing::on_staged(&out.id, out.correlation.as_deref(), out.event_type, probe);
                    }
                    sqlx::query(&q(sql::INSERT))
                        .bind(&out.id)
                        .bind(topic)
                        .bind(out.key.into_bytes())
                        .bind(store_headers(&out.headers))
                        .bind(out.value)
                        .bind(now_ms())
                        .execute(&mut **tx)
                        .await
                        .map_err(db_error)?;
                    Ok(out.id)
                }

                /// Rows staged and not yet sent (parked rows excluded).
                pub async fn pending(&self) -> Result<i64> {
                    let row = sqlx::query(sql::PENDING_COUNT).fetch_one(&self.pool).await.map_err(db_error)?;
                    row.try_get::<i64, _>(0).map_err(db_error)
                }

                /// Rows the relay gave up on, with their errors.
                pub async fn parked(&self) -> Result<Vec<ParkedRow>> {
                    let rows = sqlx::query(sql::PARKED).fetch_all(&self.pool).await.map_err(db_error)?;
                    rows.iter()
                        .map(|r| {
                            Ok(ParkedRow {
                                id: r.try_get(0).map_err(db_error)?,
                                event_id: r.try_get(1).map_err(db_error)?,
                                topic: r.try_get(2).map_err(db_error)?,
                                error: r.try_get::<Option<String>, _>(3).map_err(db_error)?.unwrap_or_default(),
                            })
                        })
                        .collect()
                }

                /// Puts the parked rows back in the queue (after the cause was fixed: the topic was
                /// created, the broker's size limit raised); returns how many.
                pub async fn requeue_parked(&self) -> Result<u64> {
                    let done = sqlx::query(sql::REQUEUE).execute(&self.pool).await.map_err(db_error)?;
                    self.known_topics.lock().unwrap_or_else(|e| e.into_inner()).clear();
                    Ok(done.rows_affected())
                }

                /// Deletes sent rows older than the retention period; returns how many.
                pub async fn clean(&self) -> Result<u64> {
                    let before = now_ms() - self.settings.retention.as_millis() as i64;
                    let done = sqlx::query(&q(sql::CLEAN)).bind(before).execute(&self.pool).await.map_err(db_error)?;
                    Ok(done.rows_affected())
                }

                /// Takes or renews the relay lease; `false` when another relay holds it.
                async fn lease(&self) -> Result<bool> {
                    let now = now_ms();
                    let done = sqlx::query(&q(sql::LEASE_TAKE))
                        .bind(self.owner()?)
                        .bind(now + self.settings.lease.as_millis() as i64)
                        .bind(now)
                        .execute(&self.pool)
                        .await
                        .map_err(db_error)?;
                    Ok(done.rows_affected() == 1)
                }

                /// Gives the lease up (a graceful stop): another relay may take it at once.
                async fn release(&self) {
                    if let Ok(owner) = self.owner() {
                        let _ = sqlx::query(&q(sql::LEASE_DROP)).bind(owner).execute(&self.pool).await;
                    }
                }

                /// One relay round: publishes up to a batch of committed rows in staging
                /// order, waits for the acks, marks them sent, and parks those that can never
                /// be published. Stops at the first retriable failure.
                pub async fn relay_once(&self) -> Result<RelayReport> {
                    let mut report = RelayReport::default();
                    let publisher = self.publisher()?;
                    if !self.lease().await? {
                        report.not_leader = true;
                        return Ok(report);
                    }
                    let rows: Vec<Row> = sqlx::query(&q(sql::PENDING_ROWS))
                        .bind(self.settings.batch as i64)
                        .fetch_all(&self.pool)
                        .await
                        .map_err(db_error)?
                        .iter()
                        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?)))
                        .collect::<std::result::Result<_, sqlx::Error>>()
                        .map_err(db_error)?;
                    // A row whose topic does not exist would wait in the producer for the whole
                    // publish timeout, and the rows behind it with it: each topic is looked up
                    // first, and such rows are parked at once.
                    let mut missing = std::collections::BTreeSet::new();
                    for topic in rows.iter().map(|r| r.2.as_str()).collect::<std::collections::BTreeSet<_>>() {
                        if !self.topic_known(&publisher, topic).await {
                            missing.insert(topic.to_owned());
                        }
                    }
                    // Handed to the producer one after the other, in staging order (it keeps
                    // that order per partition); then the acks are awaited.
                    let mut deliveries = Vec::with_capacity(rows.len());
                    for (_, event_id, topic, key, headers, value) in &rows {
                        let enqueued = match load_headers(headers) {
                            _ if missing.contains(topic) => Err(Error::Publish { topic: topic.clone(), source: KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopic) }),
                            Ok(headers) => publisher.enqueue_row(topic, key.as_slice(), value.as_slice(), headers, event_id).await,
                            Err(e) => Err(e),
                        };
                        deliveries.push(enqueued);
                    }
                    let mut results = Vec::with_capacity(rows.len());
                    for ((_, _, topic, ..), enqueued) in rows.iter().zip(deliveries) {
                        results.push(match enqueued {
                            Ok(delivery) => publisher.acked(topic, delivery).await,
                            Err(e) => Err(e),
                        });
                    }
                    for ((id, event_id, topic, _, _, value), result) in rows.iter().zip(results) {
                        match result {
                            Ok(_) => {
                                let marked = sqlx::query(&q(sql::MARK_SENT)).bind(now_ms()).bind(id).bind(self.owner()?).execute(&self.pool).await.map_err(db_error)?;
                                if marked.rows_affected() == 0 {
                                    warn!(row = id, "outbox relay lost its lease during a round; its successor publishes the remaining rows again (same event ids)");
                                    report.retry_later = true;
                                    break;
                                }
                                report.published += 1;
                                if crate::surfaces::testing::active() {
                                    crate::surfaces::testing::on_relayed(event_id, topic, value);
                                }
                            }
                            Err(e) if permanent(&e) => {
                                let why = if missing.contains(topic) {
                                    format!("topic `{topic}` does not exist: create it (or let the app create it: EVENTKIT_CREATE_TOPICS), then requeue the row (Outbox::requeue_parked)")
                                } else {
                                    e.to_string()
                                };
                                warn!(row = id, event_id = %event_id, topic = %topic, error = %why, "outbox row parked: it cannot be published; the rows behind it go on");
                                sqlx::query(&q(sql::PARK)).bind(&why).bind(id).execute(&self.pool).await.map_err(db_error)?;
                                report.parked += 1;
                            }
                            Err(e) => {
                                if crate::kafka::outage::due(&format!("outbox {e}")) {
                                    warn!(row = id, topic = %topic, error = %e, "outbox relay cannot publish; the row goes out later (told once a minute while it lasts)");
                                }
                                report.retry_later = true;
                            }
                        }
                    }
                    Ok(report)
                }

                /// Runs the relay in the background until [`Relay::stop`]: rounds back to back
                /// while there is work, a poll interval apart when there is none, backing off
                /// (up to 30 s) while the broker or the database fails. Sent rows are cleaned
                /// once a minute.
                pub fn spawn_relay(&self) -> Relay {
                    let outbox = self.clone();
                    let (stop, mut stopped) = watch::channel(false);
                    let (finished, done) = watch::channel(false);
                    // The app stops the relay (and it releases its lease) before its producer's
                    // last flush.
                    if let Ok(publisher) = self.publisher() {
                        let (stop, mut done) = (stop.clone(), done.clone());
                        publisher.before_shutdown(Box::new(move || {
                            Box::pin(async move {
                                let _ = stop.send(true);
                                let _ = done.wait_for(|d| *d).await;
                            })
                        }));
                    }
                    // The task holds a sender too: dropping the `Relay` handle does not stop it.
                    let keep = stop.clone();
                    let task = tokio::spawn(async move {
                        let _keep = keep;
                        let mut backoff = outbox.settings.poll_interval;
                        let mut last_clean = tokio::time::Instant::now();
                        loop {
                            let wait = match outbox.relay_once().await {
                                Ok(r) if r.retry_later => {
                                    backoff = (backoff * 2).min(Duration::from_secs(30));
                                    backoff
                                }
                                Ok(r) if r.published + r.parked > 0 => {
                                    backoff = outbox.settings.poll_interval;
                                    Duration::ZERO
                                }
                                Ok(_) => outbox.settings.poll_interval,
                                Err(e) => {
                                    if crate::kafka::outage::due(&format!("outbox db {e}")) {
                                        warn!(error = %e, "outbox relay round failed; trying again (told once a minute while it lasts)");
                                    }
                                    backoff = (backoff * 2).min(Duration::from_secs(30));
                                    backoff
                                }
                            };
                            if last_clean.elapsed() > Duration::from_secs(60) {
                                last_clean = tokio::time::Instant::now();
                                match outbox.clean().await {
                                    Ok(n) if n > 0 => info!(rows = n, "outbox: sent rows past retention deleted"),
                                    Ok(_) => {}
                                    Err(e) => warn!(error = %e, "outbox clean-up failed"),
                                }
                            }
                            if *stopped.borrow() {
                                break;
                            }
                            tokio::select! {
                                _ = stopped.changed() => break,
                                () = tokio::time::sleep(wait) => {}
                            }
                        }
                        outbox.release().await;
                        let _ = finished.send(true);
                    });
                    Relay { stop, task }
                }
            }

            impl crate::Extractor for InboxTx<$db> {
                const INBOX_TX: bool = true;

                async fn extract(ctx: &crate::Context) -> Result<crate::Extracted<Self>> {
                    // The inbox layer began the transaction (and skipped a redelivery).
                    if let Some(tx) = ctx.take_extension::<InboxTx<$db>>() {
                        return Ok(crate::Extracted::Value(tx));
                    }
                    let inbox = ctx.state::<Inbox<$db>>().ok_or_else(|| Error::MissingState(std::any::type_name::<Inbox<$db>>().to_owned()))?;
                    Ok(match inbox.begin(ctx).await? {
                        Some(tx) => crate::Extracted::Value(InboxTx(tx, Default::default())),
                        None => crate::Extracted::Skip,
                    })
                }
                fn requirements(requirements: &mut crate::Requirements) {
                    requirements.state::<Inbox<$db>>();
                }
                fn layer() -> Option<std::sync::Arc<dyn crate::flows::layer::HandleLayer>> {
                    Some(std::sync::Arc::new(InboxLayer::<$db>(PhantomData)))
                }
            }

            impl crate::flows::layer::HandleLayer for InboxLayer<$db> {
                fn wraps(&self, _ctx: &crate::Context) -> bool {
                    true
                }

                fn around(&self, ctx: std::sync::Arc<crate::Context>, next: crate::flows::layer::Next) -> crate::flows::layer::BoxFuture<crate::flows::layer::Handled> {
                    Box::pin(async move {
                        use crate::flows::handler::HandlerError;
                        use crate::flows::layer::Outcome;
                        let Some(inbox) = ctx.state::<Inbox<$db>>() else {
                            return Err(HandlerError::Extract(Error::MissingState(std::any::type_name::<Inbox<$db>>().to_owned())));
                        };
                        let tx = match inbox.begin(&ctx).await {
                            Ok(Some(tx)) => tx,
                            Ok(None) => return Ok(Outcome::skipped("handled before (inbox)")),
                            Err(e) => return Err(HandlerError::Extract(e)),
                        };
                        let committed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                        ctx.insert_extension(InboxTx(tx, committed.clone()));
                        let result = next.run(ctx.clone()).await;
                        // An InboxTx the handler never took (another layer skipped it) rolls back
                        // here; one it took and did not commit is a failure, not a silent loss.
                        let unused = ctx.take_extension::<InboxTx<$db>>().is_some();
                        match result {
                            Ok(Outcome::Done) if !unused && !committed.load(std::sync::atomic::Ordering::Acquire) => {
                                Err(HandlerError::Permanent(UNCOMMITTED.into()))
                            }
                            other => other,
                        }
                    })
                }
            }

            impl Inbox<$db> {
                /// Creates the inbox table if it is missing.
                pub async fn migrate(&self) -> Result<()> {
                    exec(&self.pool, "CREATE TABLE IF NOT EXISTS eventkit_inbox (
                        group_id TEXT NOT NULL,
                        handler TEXT NOT NULL,
                        event_id TEXT NOT NULL,
                        handled_ms BIGINT NOT NULL,
                        PRIMARY KEY (group_id, handler, event_id)
                    )").await
                }

                /// Starts the handler's transaction and records the event as handled by the
                /// handler (of its group) in it. `None`: the group handled this event before (a
                /// redelivery); skip it. Commit the transaction with the handler's writes;
                /// if the handler fails, the transaction rolls back and the record is handled
                /// again.
                pub async fn begin(&self, ctx: &crate::Context) -> Result<Option<Transaction<'static, $db>>> {
                    let mut tx = self.pool.begin().await.map_err(db_error)?;
                    let done = sqlx::query(&q(sql::INBOX_INSERT))
                        .bind(ctx.group())
                        .bind(ctx.handler_name().unwrap_or_default())
                        .bind(ctx.event_id())
                        .bind(now_ms())
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                    if done.rows_affected() == 0 {
                        tx.rollback().await.map_err(db_error)?;
                        return Ok(None);
                    }
                    Ok(Some(tx))
                }

                /// Whether `group` handled `event_id`.
                pub async fn is_handled(&self, group: &str, event_id: &str) -> Result<bool> {
                    let row = sqlx::query(&q(sql::INBOX_HAS)).bind(group).bind(event_id).fetch_one(&self.pool).await.map_err(db_error)?;
                    Ok(row.try_get::<i64, _>(0).map_err(db_error)? > 0)
                }

                /// Forgets events handled more than `age` ago; returns how many.
                pub async fn clean(&self, age: Duration) -> Result<u64> {
                    let before = now_ms() - age.as_millis() as i64;
                    let done = sqlx::query(&q(sql::INBOX_CLEAN)).bind(before).execute(&self.pool).await.map_err(db_error)?;
                    Ok(done.rows_affected())
                }
            }
        };
    };
}

backend!("sqlite", sqlx::Sqlite, "BLOB", "INTEGER", "?");
backend!("postgres", sqlx::Postgres, "BYTEA", "BIGSERIAL", "$");

fn db_error(e: sqlx::Error) -> Error {
    Error::Database(Box::new(e))
}
