//! A test harness: start an app (on the embedded broker unless a bootstrap is configured), send
//! a command or publish an event, and wait until everything it caused, across cascades, has been
//! handled or dead-lettered by every group of the app that takes it. Then look at what was
//! published and handled. The anchors are FastStream's `TestBroker` and Wolverine's tracked
//! sessions.
//!
//! ```no_run
//! # use eventkit::{command, handler, integration_event, App};
//! # #[integration_event(topic = "users")] pub struct UserRegistered { pub id: u64 }
//! # #[command(returns = u64)] pub struct RegisterUser;
//! # #[handler] async fn register(_c: RegisterUser, ctx: &eventkit::Context) -> eventkit::Result<u64> { ctx.cascade(UserRegistered { id: 7 }); Ok(7) }
//! # #[handler(group = "mail")] async fn welcome(_e: UserRegistered) {}
//! # async fn test() -> eventkit::Result<()> {
//! let app = eventkit::testing::TestApp::start(App::builder()).await?;
//! let (id, session) = app.send(RegisterUser).await?;
//! assert_eq!(session.published_of::<UserRegistered>()[0].id, id);
//! assert!(session.handled().iter().any(|h| h.handler.ends_with("welcome")));
//! app.shutdown().await
//! # }
//! ```
//!
//! A session follows one correlation id: the root's, which every follow-up carries. An event a
//! handler stages in the outbox is followed through the relay: the session waits until a relay
//! published it and the groups that take it handled it (a row whose transaction rolled back is
//! forgotten). What a transactional group's aborted attempt published is never part of a
//! session: the session sees what its transactions committed.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use crate::app::{AppBuilder, Running};
use crate::flows::command::Command;
use crate::core::config::Config;
use crate::core::error::{Error, Result};
use crate::core::event::IntegrationEvent;
use crate::flows::publish::PublishOptions;
use crate::flows::registry::{GroupPlan, Registry};

/// How many sessions are open: the hooks cost one atomic load when none is.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
static SESSIONS: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

/// Whether any session is open (hooks do nothing otherwise).
#[inline]
pub(crate) fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed) > 0
}

fn each_session(mut f: impl FnMut(&Shared)) {
    let sessions = SESSIONS.lock().unwrap_or_else(|e| e.into_inner());
    for s in sessions.iter().filter_map(Weak::upgrade) {
        f(&s);
    }
}

/// An event published while a session was open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedEvent {
    /// `ce_id`.
    pub event_id: String,
    /// `ce_type`.
    pub event_type: String,
    /// The topic on the wire.
    pub topic: String,
    /// The event as JSON.
    pub data: Vec<u8>,
}

/// What a group's handler did with an event of the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandledEvent {
    /// The consumer group (on the wire).
    pub group: String,
    /// The handler.
    pub handler: String,
    /// The event id.
    pub event_id: String,
    /// `None`: handled; otherwise why it was dead-lettered.
    pub dead_lettered: Option<String>,
}

/// Whether an outbox row (by event id) is committed and waits for a relay.
pub(crate) type OutboxProbe = Arc<dyn Fn(String) -> futures::future::BoxFuture<'static, bool> + Send + Sync>;

/// An event staged in an outbox during a session, not yet published by a relay.
struct Staged {
    event_id: String,
    event_type: String,
    probe: OutboxProbe,
}

#[derive(Default)]
struct State {
    published: Vec<PublishedEvent>,
    handled: Vec<HandledEvent>,
    /// (group, event id) pairs whose record is done for the group.
    settled: HashSet<(String, String)>,
    /// Staged in an outbox, not yet published.
    staged: Vec<Staged>,
}

struct Shared {
    correlation: String,
    /// Event ids of the session (to match handling, which does not see the correlation).
    ids: Mutex<HashSet<String>>,
    state: Mutex<State>,
    changed: Notify,
}

/// Publishing hook: an event went out (its broker ack came back).
pub(crate) fn on_published(event_id: &str, correlation: Option<&str>, event_type: &str, topic: &str, data: &[u8]) {
    let Some(correlation) = correlation else { return };
    each_session(|s| {
        if s.correlation == correlation {
            s.ids.lock().unwrap_or_else(|e| e.into_inner()).insert(event_id.to_owned());
            s.state.lock().unwrap_or_else(|e| e.into_inner()).published.push(PublishedEvent {
                event_id: event_id.to_owned(),
                event_type: event_type.to_owned(),
                topic: topic.to_owned(),
                data: data.to_vec(),
            });
            s.changed.notify_waiters();
        }
    });
}

/// Outbox hook: an event was staged (in a transaction that may still roll back).
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn on_staged(event_id: &str, correlation: Option<&str>, event_type: &str, probe: OutboxProbe) {
    let Some(correlation) = correlation else { return };
    each_session(|s| {
        if s.correlation == correlation {
            s.ids.lock().unwrap_or_else(|e| e.into_inner()).insert(event_id.to_owned());
            let staged = Staged { event_id: event_id.to_owned(), event_type: event_type.to_owned(), probe: probe.clone() };
            s.state.lock().unwrap_or_else(|e| e.into_inner()).staged.push(staged);
            s.changed.notify_waiters();
        }
    });
}

/// Relay hook: a relay published the outbox row of `event_id`.
#[cfg_attr(not(any(feature = "sqlite", feature = "postgres")), allow(dead_code))]
pub(crate) fn on_relayed(event_id: &str, topic: &str, data: &[u8]) {
    each_session(|s| {
        let mut state = s.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = state.staged.iter().position(|st| st.event_id == event_id) {
            let staged = state.staged.remove(i);
            state.published.push(PublishedEvent { event_id: staged.event_id, event_type: staged.event_type, topic: topic.to_owned(), data: data.to_vec() });
            drop(state);
            s.changed.notify_waiters();
        }
    });
}

/// Handling hook: `handler` of `group` handled (or dead-lettered) the event.
pub(crate) fn on_handled(group: &str, handler: &str, event_id: &str, dead_lettered: Option<String>) {
    each_session(|s| {
        if s.ids.lock().unwrap_or_else(|e| e.into_inner()).contains(event_id) {
            let handled = HandledEvent { group: group.to_owned(), handler: handler.to_owned(), event_id: event_id.to_owned(), dead_lettered: dead_lettered.clone() };
            s.state.lock().unwrap_or_else(|e| e.into_inner()).handled.push(handled);
            s.changed.notify_waiters();
        }
    });
}

/// Settling hook: the record of `event_id` is done for `group`.
pub(crate) fn on_settled(group: &str, event_id: &str) {
    each_session(|s| {
        if s.ids.lock().unwrap_or_else(|e| e.into_inner()).contains(event_id) {
            s.state.lock().unwrap_or_else(|e| e.into_inner()).settled.insert((group.to_owned(), event_id.to_owned()));
            s.changed.notify_waiters();
        }
    });
}

/// What a transaction published, told once it commits.
struct HeldEvent {
    id: String,
    correlation: Option<String>,
    event_type: String,
    topic: String,
    data: Vec<u8>,
}

/// The harness's observer: a layer around handling and publishing in a test app, telling the
/// open sessions what is published, handled and settled.
struct Observer {
    /// What each open transaction published, told once it commits.
    held: Mutex<std::collections::HashMap<usize, Vec<HeldEvent>>>,
}

impl crate::flows::layer::HandleLayer for Observer {
    fn settled(&self, at: &crate::flows::layer::Settling<'_>, disposition: &crate::flows::layer::Disposition<'_>) {
        use crate::flows::layer::Disposition;
        let (Some(event_id), Some(handler)) = (at.event_id, at.handler) else { return };
        match disposition {
            Disposition::Handled => on_handled(at.group, handler, event_id, None),
            Disposition::DeadLettered { error, .. } => on_handled(at.group, handler, event_id, Some((*error).to_owned())),
            _ => {}
        }
    }

    fn record_done(&self, group: &str, event_id: &str) {
        on_settled(group, event_id);
    }
}

impl crate::flows::layer::PublishLayer for Observer {
    fn before(&self, event: &mut crate::flows::layer::Outgoing<'_>) -> Result<()> {
        // Staged outbox rows are followed through the relay instead.
        if event.staged || !active() {
            return Ok(());
        }
        match event.transaction {
            // Told once the transaction commits: an aborted attempt's events never are.
            Some(txn) => {
                let note = HeldEvent {
                    id: event.event_id.to_owned(),
                    correlation: event.correlation_id.map(str::to_owned),
                    event_type: event.event_type.to_owned(),
                    topic: event.topic.to_owned(),
                    data: event.value.to_vec(),
                };
                self.held.lock().unwrap_or_else(|e| e.into_inner()).entry(txn).or_default().push(note);
            }
            // Told before the record goes out: a fast consumer may settle it before the ack.
            None => on_published(event.event_id, event.correlation_id, event.event_type, event.topic, event.value),
        }
        Ok(())
    }

    fn transaction(&self, transaction: usize, end: crate::flows::layer::TransactionEnd) {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner()).remove(&transaction).unwrap_or_default();
        if end == crate::flows::layer::TransactionEnd::Committed {
            for e in held {
                on_published(&e.id, e.correlation.as_deref(), &e.event_type, &e.topic, &e.data);
            }
        }
    }
}

/// An app started for a test.
pub struct TestApp {
    running: Running,
    groups: Vec<GroupPlan>,
    timeout: Duration,
}

impl TestApp {
    /// Builds and starts the app. Without `KAFKA_BOOTSTRAP_SERVERS` (or a builder setting) it
    /// runs on an embedded broker of its own.
    pub async fn start(builder: AppBuilder) -> Result<TestApp> {
        let observer = std::sync::Arc::new(Observer { held: Mutex::default() });
        let app = builder.layer_arc(observer.clone()).publish_layer_arc(observer).build()?;
        let (registry, config): (Registry, Config) = (app.registry().clone(), app.config().clone());
        // libtest's arguments are not the app's (`cargo test dlq` must not run the dead letter
        // tool), and log lines go through libtest's capture.
        let running = app.start_with(crate::app::StartOptions { command_line: false, test_writer: true }).await?;
        let groups = registry.groups(&config);
        Ok(TestApp { running, groups, timeout: Duration::from_secs(30) })
    }

    /// How long a session waits for what it caused (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The running app (its publisher, dead letters, commands).
    pub fn running(&self) -> &Running {
        &self.running
    }

    /// Publishes `event` and waits until everything it caused was handled or dead-lettered.
    pub async fn publish<E: IntegrationEvent>(&self, event: &E) -> Result<Session> {
        let id = uuid::Uuid::now_v7().to_string();
        let session = Session::open(id.clone());
        self.running.publisher().publish_with(event, PublishOptions::default().id(id.clone()).correlation_id(id)).await?;
        session.wait(&self.groups, self.timeout).await?;
        Ok(session)
    }

    /// Sends a command, then waits until everything it caused was handled or dead-lettered.
    /// Returns the handler's value and the session.
    pub async fn send<C: Command>(&self, command: C) -> Result<(C::Output, Session)> {
        let id = uuid::Uuid::now_v7().to_string();
        let session = Session::open(id.clone());
        let value = self.running.mediator().send_as(command, None, Some(id)).await?;
        session.wait(&self.groups, self.timeout).await?;
        Ok((value, session))
    }

    /// Shuts the app down.
    pub async fn shutdown(self) -> Result<()> {
        self.running.shutdown().await
    }
}

/// What one published event or sent command caused.
pub struct Session {
    shared: Arc<Shared>,
}

impl Drop for Session {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::Relaxed);
        let mut sessions = SESSIONS.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), Arc::as_ptr(&self.shared)));
    }
}

impl Session {
    fn open(correlation: String) -> Session {
        let shared = Arc::new(Shared { correlation, ids: Mutex::default(), state: Mutex::default(), changed: Notify::new() });
        SESSIONS.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::downgrade(&shared));
        ACTIVE.fetch_add(1, Ordering::Relaxed);
        Session { shared }
    }

    /// Every (group, event) the app still owes: groups with a handler for the event's type or
    /// a catch-all handler on its topic, that have not finished with it.
    fn pending(&self, groups: &[GroupPlan]) -> Vec<String> {
        let state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut pending = Vec::new();
        for e in &state.published {
            for g in groups {
                let takes = !g.typed_handlers(&e.event_type).is_empty() || g.catch_all.iter().any(|(_, topics)| topics.contains(&e.topic));
                if takes && !state.settled.contains(&(g.group_id.clone(), e.event_id.clone())) {
                    pending.push(format!("{} {} in group {}", e.event_type, e.event_id, g.group_id));
                }
            }
        }
        pending
    }

    /// Outbox rows of the session still to be published by a relay. Asked only once every
    /// record of the session settled, so that the handlers that staged them are done and their
    /// transactions committed or rolled back: a row not in the outbox (rolled back) or parked is
    /// forgotten.
    async fn pending_staged(&self) -> Vec<String> {
        let staged: Vec<(String, String, OutboxProbe)> = {
            let state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.staged.iter().map(|s| (s.event_id.clone(), s.event_type.clone(), s.probe.clone())).collect()
        };
        let mut pending = Vec::new();
        let mut gone = Vec::new();
        for (id, event_type, probe) in staged {
            if probe(id.clone()).await {
                pending.push(format!("{event_type} {id} (staged in the outbox, not published by a relay yet)"));
            } else {
                gone.push(id);
            }
        }
        if !gone.is_empty() {
            self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).staged.retain(|s| !gone.contains(&s.event_id));
        }
        pending
    }

    /// What the session still waits for: records, then outbox rows.
    async fn still_pending(&self, groups: &[GroupPlan]) -> (Vec<String>, bool) {
        let pending = self.pending(groups);
        let outbox = !self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).staged.is_empty();
        if !pending.is_empty() || !outbox {
            return (pending, outbox);
        }
        (self.pending_staged().await, true)
    }

    async fn wait(&self, groups: &[GroupPlan], timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.changed.notified();
            let (pending, outbox) = self.still_pending(groups).await;
            if pending.is_empty() {
                return Ok(());
            }
            // Outbox rows are looked at again every 50 ms (a rollback tells no one).
            let until = if outbox { deadline.min(tokio::time::Instant::now() + Duration::from_millis(50)) } else { deadline };
            let _ = tokio::time::timeout_at(until, changed).await;
            if tokio::time::Instant::now() >= deadline {
                let (pending, _) = self.still_pending(groups).await;
                if pending.is_empty() {
                    return Ok(());
                }
                return Err(Error::Other(format!("the session did not finish within {timeout:?}; still pending: {}", pending.join("; ")).into()));
            }
        }
    }

    /// The root's correlation id, which every event of the session carries.
    pub fn correlation_id(&self) -> &str {
        &self.shared.correlation
    }

    /// Every event the session published, in the order it handed them to the producer.
    pub fn published(&self) -> Vec<PublishedEvent> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).published.clone()
    }

    /// The published events of type `E`, decoded.
    pub fn published_of<E: IntegrationEvent>(&self) -> Vec<E> {
        self.published().iter().filter(|p| p.event_type == E::INFO.event_type).filter_map(|p| serde_json::from_slice(&p.data).ok()).collect()
    }

    /// What each handler did with the session's events (handled or dead-lettered).
    pub fn handled(&self) -> Vec<HandledEvent> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).handled.clone()
    }

    /// The dead-lettered ones.
    pub fn dead_lettered(&self) -> Vec<HandledEvent> {
        self.handled().into_iter().filter(|h| h.dead_lettered.is_some()).collect()
    }

    /// The groups that handled an event of type `E`.
    pub fn groups_that_handled<E: IntegrationEvent>(&self) -> BTreeSet<String> {
        let ids: HashSet<String> = self.published().into_iter().filter(|p| p.event_type == E::INFO.event_type).map(|p| p.event_id).collect();
        self.handled().into_iter().filter(|h| h.dead_lettered.is_none() && ids.contains(&h.event_id)).map(|h| h.group).collect()
    }
}
