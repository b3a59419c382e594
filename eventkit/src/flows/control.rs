//! Operators steering running consumers: pause and resume a group, one topic of it, or one
//! partition, on every instance of the service at once.
//!
//! Commands travel on the control topic (`eventkit.control` under the topic prefix,
//! `EVENTKIT_CONTROL_TOPIC`): one partition, compacted, each record keyed by what it acts on.
//! The admin API (`POST /groups/pause`, `/groups/resume`) and the command line (`PROGRAM
//! groups pause|resume|holds`) write them; nothing acts on a command until it is in the log.
//! Every instance reads the topic from its beginning when it starts, before its groups start
//! (a restarted or new instance keeps the pause), then follows it while it runs, folding the
//! commands in log order into each group's holds. So every instance applies the same commands
//! in the same order, a pause outlives rebalances and restarts, and commands are idempotent
//! (pausing what is paused changes nothing). The same design as Karafka's commands topic,
//! with the state kept by compaction instead of a database.
//!
//! A held partition stays assigned (the member stays in its group and heartbeats): fetching
//! stops, records already fetched wait, and nothing of it starts until it is resumed; it goes on
//! from where it stopped. Health shows it held, never stuck. Resuming a group resumes
//! everything held in it; resuming a topic, its partitions.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::core::config::Config;
use crate::core::error::{Error, Result};
use crate::flows::publish::Publisher;
use crate::kafka::KitContext;

/// The control topic's partition every command goes to: one log, one order.
const PARTITION: i32 = 0;

/// How long reading the control topic may go without progress before starting goes on without it.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a command's sender waits for this instance to apply it.
const APPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// What a command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Stop handling (and fetching) what the scope covers.
    Pause,
    /// Go on with what the scope covers.
    Resume,
    /// A replay by time was done (a journal entry: see [`crate::flows::replay`]).
    Replay,
    /// Move the group's partitions to other offsets (the owners do it).
    Reset,
    /// What one instance did with a reset.
    ResetDone,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Replay => "replay",
            Action::Reset => "reset",
            Action::ResetDone => "reset-done",
        })
    }
}

/// What a command acts on within a group: all of it, one topic (on the wire), or one partition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Scope {
    /// The topic, on the wire; none: the whole group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// The partition of the topic; none: the whole topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
}

impl Scope {
    /// Whether this scope takes in `other` (all of it).
    pub fn contains(&self, other: &Scope) -> bool {
        match (&self.topic, &other.topic) {
            (None, _) => true,
            (Some(a), Some(b)) if a == b => self.partition.is_none() || self.partition == other.partition,
            _ => false,
        }
    }

    /// A partition means nothing without its topic: such a scope is the whole group.
    pub fn normalized(self) -> Scope {
        match self.topic {
            None => Scope { topic: None, partition: None },
            Some(_) => self,
        }
    }

    /// Whether it covers partition `partition` of `topic`.
    pub fn covers(&self, topic: &str, partition: i32) -> bool {
        self.contains(&Scope { topic: Some(topic.to_owned()), partition: Some(partition) })
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.topic, self.partition) {
            (None, _) => f.write_str("the whole group"),
            (Some(t), None) => write!(f, "topic {t}"),
            (Some(t), Some(p)) => write!(f, "{t}[{p}]"),
        }
    }
}

/// One operator command, as it is on the control topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Its id (to follow it in logs).
    pub id: String,
    /// Pause or resume.
    pub action: Action,
    /// The consumer group id (on the wire).
    pub group: String,
    /// What within the group.
    #[serde(flatten)]
    pub scope: Scope,
    /// Who sent it (the admin API's caller, the command line's user).
    pub by: String,
    /// When it was sent (RFC 3339).
    pub at: String,
    /// A replay's journal entry: what it replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<Replayed>,
    /// A reset: where each partition goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset: Option<ResetSpec>,
    /// What an instance did with a reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_done: Option<ResetDone>,
}

/// Where a reset moves partitions, as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResetTo {
    /// The first record still in the log.
    Earliest,
    /// After the last record (skipping what is there).
    Latest,
    /// This offset (in each partition in scope).
    Offset(i64),
    /// The first record at or after this time (milliseconds since the epoch).
    Time(i64),
}

/// One partition's new offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOffset {
    /// The topic, on the wire.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Its new offset.
    pub offset: i64,
}

/// A reset: what was asked, and each partition's offset (resolved once, by its sender, so
/// that every instance applies the same).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetSpec {
    /// What was asked.
    pub to: ResetTo,
    /// Whether it may skip records fetched and not settled yet.
    pub force: bool,
    /// Each partition's new offset.
    pub offsets: Vec<PartitionOffset>,
}

/// What an instance (or the sender, for a group without members) did with a reset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetDone {
    /// The reset's command id.
    pub of: String,
    /// Who did it (host and process).
    pub member: String,
    /// Each partition it owned.
    pub partitions: Vec<PartitionResult>,
}

/// One partition's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionResult {
    /// The topic, on the wire.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Its new offset.
    pub offset: i64,
    /// `reset`, `refused` or `not-applied` (no instance had it while the sender waited).
    pub status: String,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who did it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
}

/// What a replay by time did, as journalled on the control topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replayed {
    /// Only this handler, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    /// The window, in milliseconds since the epoch: from (inclusive) to (exclusive).
    pub from_ms: i64,
    /// See `from_ms`.
    pub to_ms: i64,
    /// Records delivered again.
    pub records: u64,
    /// False on the entry written before copying (the replay is under way, or was interrupted).
    #[serde(default = "yes")]
    pub done: bool,
}

fn yes() -> bool {
    true
}

impl Command {
    /// A new command, sent now by `by`.
    pub fn new(action: Action, group: impl Into<String>, scope: Scope, by: impl Into<String>) -> Self {
        Command {
            id: uuid::Uuid::now_v7().to_string(),
            action,
            group: group.into(),
            scope,
            by: by.into(),
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            replay: None,
            reset: None,
            reset_done: None,
        }
    }

    /// Its key on the control topic: what it acts on (compaction keeps the latest per key).
    pub(crate) fn key(&self) -> String {
        match (&self.replay, &self.reset_done) {
            (Some(r), _) => serde_json::to_string(&("replay", &self.group, &self.scope.topic, &r.handler, r.from_ms, r.to_ms)),
            (_, Some(d)) => serde_json::to_string(&("reset-done", &d.of, &d.member)),
            _ if self.reset.is_some() => serde_json::to_string(&("reset", &self.group, &self.id)),
            _ => serde_json::to_string(&(&self.group, &self.scope.topic, self.scope.partition)),
        }
        .expect("strings and numbers")
    }
}

/// A pause in force: who set it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hold {
    /// What is paused.
    #[serde(flatten)]
    pub scope: Scope,
    /// Who paused it (the command's `by`).
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
}

/// What operators hold (paused) in one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holds(BTreeMap<Scope, Hold>);

impl Holds {
    /// Whether partition `partition` of `topic` is held.
    pub fn covers(&self, topic: &str, partition: i32) -> bool {
        self.0.keys().any(|s| s.covers(topic, partition))
    }

    /// The holds in force, the widest first.
    pub fn list(&self) -> Vec<Hold> {
        let mut all: Vec<Hold> = self.0.values().cloned().collect();
        all.sort_by_key(|h| (h.scope.topic.is_some(), h.scope.partition.is_some(), h.scope.clone()));
        all
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A wider hold that keeps `scope` held even once `scope` itself is resumed.
    pub fn held_by_wider(&self, scope: &Scope) -> Option<&Hold> {
        self.0.iter().find(|(s, _)| *s != scope && s.contains(scope)).map(|(_, h)| h)
    }

    /// Applies a command of this group; true when it changed what is held. (A scope with a
    /// partition and no topic is taken as the whole group: see [`Scope::normalized`].)
    pub(crate) fn apply(&mut self, c: &Command) -> bool {
        let normalized;
        let c = if c.scope.topic.is_none() && c.scope.partition.is_some() {
            normalized = Command { scope: c.scope.clone().normalized(), ..c.clone() };
            &normalized
        } else {
            c
        };
        match c.action {
            Action::Pause => {
                if self.0.contains_key(&c.scope) {
                    return false;
                }
                self.0.insert(c.scope.clone(), Hold { scope: c.scope.clone(), by: c.by.clone(), at: c.at.clone() });
                true
            }
            Action::Resume => {
                let before = self.0.len();
                self.0.retain(|s, _| !c.scope.contains(s));
                self.0.len() != before
            }
            Action::Replay | Action::Reset | Action::ResetDone => false,
        }
    }
}

/// The holds of every group, as the control topic says up to some offset.
#[derive(Debug, Default)]
pub(crate) struct State {
    groups: BTreeMap<String, Holds>,
    /// Replays done, by their key.
    replays: BTreeMap<String, Command>,
    /// What instances did with each reset, by its id.
    reset_results: BTreeMap<String, Vec<PartitionResult>>,
    /// The latest commands read: offset -> (command id, whether it changed its group's holds).
    /// A sender finds its own command's outcome here (and that it is its own).
    outcomes: BTreeMap<i64, (String, bool)>,
    /// The offset after the last record applied.
    next: i64,
}

impl State {
    /// Applies one record of the control topic; the command when it was one.
    fn apply_record(&mut self, offset: i64, payload: Option<&[u8]>) -> Option<(Command, bool)> {
        let applied = self.apply_payload(offset, payload);
        if let Some((c, changed)) = &applied {
            self.outcomes.insert(offset, (c.id.clone(), *changed));
            while self.outcomes.len() > 1024 {
                self.outcomes.pop_first();
            }
        }
        applied
    }

    fn apply_payload(&mut self, offset: i64, payload: Option<&[u8]>) -> Option<(Command, bool)> {
        self.next = self.next.max(offset + 1);
        let payload = payload?;
        match serde_json::from_slice::<Command>(payload).map(|mut c| {
            c.scope = c.scope.normalized();
            c
        }) {
            Ok(c) if c.action == Action::Replay => {
                let changed = c.replay.is_some() && self.replays.insert(c.key(), c.clone()).is_none();
                Some((c, changed))
            }
            Ok(c) if c.action == Action::ResetDone => {
                if let Some(done) = &c.reset_done {
                    let results = self.reset_results.entry(done.of.clone()).or_default();
                    results.extend(done.partitions.iter().map(|p| PartitionResult { member: Some(done.member.clone()), ..p.clone() }));
                }
                Some((c, false))
            }
            Ok(c) if c.action == Action::Reset => Some((c, false)),
            Ok(c) => {
                let changed = self.groups.entry(c.group.clone()).or_default().apply(&c);
                Some((c, changed))
            }
            Err(e) => {
                warn!(offset, error = %e, "a record on the control topic is not a command; skipped");
                None
            }
        }
    }
}

/// A consumer of the control topic, outside any group (it reads everything, commits nothing).
fn reader(config: &Config) -> Result<BaseConsumer<KitContext>> {
    crate::kafka::offsets::reader(config, "control-reader")
}

/// Whether the control topic exists (its partition count when it does).
fn partitions(consumer: &BaseConsumer<KitContext>, topic: &str) -> Result<Option<usize>> {
    Ok(crate::kafka::offsets::partitions(consumer, topic)?.map(|p| p.len()))
}

/// Reads the control topic from its beginning to its end as of now (blocking).
///
/// The end is the end-of-partition event, not the watermarks: librdkafka's watermark query,
/// answered with a retriable error on one of its two requests, can return the high watermark
/// as the low one too (seen with `NOT_LEADER_FOR_PARTITION` answers), and a read that starts
/// there skips every command (an operator's pause dropped at a restart). The beginning is
/// the consumer's own (`Offset::Beginning`, which librdkafka retries until it has it).
fn read_to_end(config: &Config, consumer: &BaseConsumer<KitContext>) -> Result<State> {
    let topic = config.control_topic();
    let mut state = State::default();
    if partitions(consumer, &topic)?.is_none() {
        return Ok(state);
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, PARTITION, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let mut progress = Instant::now();
    let ended = loop {
        match consumer.poll(Duration::from_millis(100)) {
            None if progress.elapsed() > READ_TIMEOUT => {
                break Err(Error::msg(format!("no progress reading the control topic `{topic}` for {READ_TIMEOUT:?} (at offset {})", state.next)));
            }
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => break Ok(()),
            // Transient (a broker restarting, a leader moving): librdkafka retries; only a
            // read that makes no progress for long fails.
            Some(Err(e)) => debug!(%topic, error = %e, "reading the control topic"),
            Some(Ok(m)) => {
                progress = Instant::now();
                state.apply_record(m.offset(), m.payload());
            }
        }
    };
    consumer.unassign()?;
    ended.map(|()| state)
}

/// The holds of every group as the control topic says now, read by a client of its own (what
/// `PROGRAM groups holds` prints; a running app's view is [`Control::holds`]).
pub async fn read_holds(config: &Config) -> Result<BTreeMap<String, Holds>> {
    read_state(config).await.map(|s| s.groups)
}

/// The control topic's state now, read by a client of its own.
async fn read_state(config: &Config) -> Result<State> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || {
        let consumer = reader(&config)?;
        read_to_end(&config, &consumer)
    })
    .await
    .map_err(|e| Error::msg(format!("reading the control topic: {e}")))?
}

/// What a replay by time did: the first replay of that window, when it was done before (and
/// not asked `again`), or this one.
#[derive(Debug, Clone)]
pub enum ReplayOutcome {
    /// Replayed now; journalled.
    Done(crate::flows::replay::TimeReplayReport),
    /// The same replay (group, topic, handler, window) was done before: its journal entry.
    Before(Box<Command>),
}

/// Replays by time unless the same replay was done before (or `again`), then journals it.
/// `state`: the control topic's replays as known now.
async fn replay_once(config: &Config, publisher: &Publisher, known: Option<Command>, r: &crate::flows::replay::TimeReplay, by: String, again: bool) -> Result<(ReplayOutcome, Option<i64>)> {
    if r.to_ms > chrono::Utc::now().timestamp_millis() {
        return Err(Error::Usage("to: the window must have closed (`to` not later than now): a window still open cannot be replayed once".into()));
    }
    match known {
        Some(before) if !again && before.replay.as_ref().is_some_and(|r| r.done) => return Ok((ReplayOutcome::Before(Box::new(before)), None)),
        Some(before) if !again => {
            return Err(Error::Conflict(format!(
                "the same replay was started at {} by {} and has not finished (it runs, or was interrupted): ask again with `again` to copy the window once more",
                before.at, before.by
            )))
        }
        _ => {}
    }
    // The intent first (the same key as the entry that ends it): a second request meanwhile,
    // on any instance, is refused instead of copying the window twice.
    let mut journal = Command::new(Action::Replay, r.group.clone(), Scope { topic: Some(r.topic.clone()), partition: None }, by);
    journal.replay = Some(Replayed { handler: r.handler.clone(), from_ms: r.from_ms, to_ms: r.to_ms, records: 0, done: false });
    write(config, publisher, &journal).await?;
    let report = crate::flows::replay::replay(config, publisher, r).await?;
    journal.replay = Some(Replayed { handler: r.handler.clone(), from_ms: r.from_ms, to_ms: r.to_ms, records: report.replayed, done: true });
    let offset = write(config, publisher, &journal).await?;
    info!(id = %journal.id, group = %r.group, topic = %r.topic, handler = ?r.handler, from_ms = r.from_ms, to_ms = r.to_ms, records = report.replayed, by = %journal.by, "replayed by time");
    Ok((ReplayOutcome::Done(report), Some(offset)))
}

/// The journal key of a replay.
fn replay_key(r: &crate::flows::replay::TimeReplay) -> String {
    let mut c = Command::new(Action::Replay, r.group.clone(), Scope { topic: Some(r.topic.clone()), partition: None }, "");
    c.replay = Some(Replayed { handler: r.handler.clone(), from_ms: r.from_ms, to_ms: r.to_ms, records: 0, done: true });
    c.key()
}

/// Replays by time from outside a running app (the command line): see [`crate::flows::replay`].
pub async fn replay_by_time(config: &Config, r: &crate::flows::replay::TimeReplay, by: String, again: bool) -> Result<ReplayOutcome> {
    let known = read_state(config).await?.replays.remove(&replay_key(r));
    let publisher = Publisher::with_broker(config, None, Default::default())?;
    let (outcome, _) = replay_once(config, &publisher, known, r, by, again).await?;
    publisher.flush(Duration::from_secs(10))?;
    Ok(outcome)
}

/// Writes `command` to the control topic (creating the topic where it is missing and the
/// cluster can). Returns its offset.
pub(crate) async fn write(config: &Config, publisher: &Publisher, command: &Command) -> Result<i64> {
    let topic = config.control_topic();
    let value = serde_json::to_vec(command)?;
    let key = command.key();
    if crate::kafka::offsets::partition_count(config, &topic).await?.is_none() {
        crate::kafka::topics::create_compacted_topic(config, &topic, "control").await?;
    }
    let (_, offset) = publisher.send_headers(&topic, Some(key.as_bytes()), Some(PARTITION), Some(&value), rdkafka::message::OwnedHeaders::new()).await?;
    Ok(offset)
}

/// An operator's reset of a group's offsets, as asked.
#[derive(Debug, Clone)]
pub struct ResetRequest {
    /// The consumer group id (on the wire).
    pub group: String,
    /// The topics in scope (on the wire): one, or every topic the group reads.
    pub topics: Vec<String>,
    /// One partition (of the one topic), or all.
    pub partition: Option<i32>,
    /// Where to.
    pub to: ResetTo,
    /// Whether it may skip records fetched and not settled yet.
    pub force: bool,
}

/// What a reset did.
#[derive(Debug, Clone, Serialize)]
pub struct ResetReport {
    /// The reset's command id (none when committed directly).
    pub id: Option<String>,
    /// The group had no members: the offsets were committed directly.
    pub direct: bool,
    /// Each partition's outcome.
    pub partitions: Vec<PartitionResult>,
}

/// How long a reset's sender waits for the owners' outcomes.
const RESET_WAIT: Duration = Duration::from_secs(20);

/// Where the cluster cannot list a group's members: how long without any member's answer
/// before the group is taken to have none.
const NO_MEMBER_WAIT: Duration = Duration::from_secs(5);

/// Each partition's new offset (blocking). A partition or offset that does not exist is a
/// usage error naming it.
fn resolve(config: &Config, r: &ResetRequest) -> Result<Vec<PartitionOffset>> {
    use crate::kafka::offsets;
    let consumer = offsets::reader(config, "reset")?;
    let mut out = Vec::new();
    for topic in &r.topics {
        let mut partitions = offsets::partitions(&consumer, topic)?.ok_or_else(|| Error::NotFound(format!("topic `{topic}` does not exist")))?;
        if let Some(p) = r.partition {
            if !partitions.contains(&p) {
                return Err(Error::Usage(format!("partition: topic `{topic}` has no partition {p} (it has {})", partitions.len())));
            }
            partitions = vec![p];
        }
        let resolved: Vec<(i32, i64)> = match r.to {
            ResetTo::Time(at) => offsets::offsets_for_time(&consumer, topic, &partitions, at)?,
            to => {
                let mut each = Vec::new();
                for &p in &partitions {
                    let (low, high) = offsets::watermarks(&consumer, topic, p)?;
                    each.push((p, match to {
                        ResetTo::Earliest => low,
                        ResetTo::Latest => high,
                        ResetTo::Offset(n) if (low..=high).contains(&n) => n,
                        ResetTo::Offset(n) => return Err(Error::Usage(format!("offset: {n} is not in {topic}[{p}], which holds {low}..{high}"))),
                        ResetTo::Time(_) => unreachable!("resolved above"),
                    }));
                }
                each
            }
        };
        out.extend(resolved.into_iter().map(|(partition, offset)| PartitionOffset { topic: topic.clone(), partition, offset }));
    }
    Ok(out)
}

/// Commits `offsets` for `group`, which has no members (blocking).
fn commit_directly(config: &Config, group: &str, offsets: &[PartitionOffset]) -> Result<()> {
    use rdkafka::consumer::CommitMode;
    let mut client = crate::kafka::client_config(config)?;
    client.set("group.id", group).set("enable.auto.commit", "false");
    crate::kafka::apply_overrides(&mut client, config, crate::kafka::Client::Consumer);
    let consumer: BaseConsumer<KitContext> = client.create_with_context(KitContext)?;
    let mut tpl = TopicPartitionList::new();
    for o in offsets {
        tpl.add_partition_offset(&o.topic, o.partition, Offset::Offset(o.offset))?;
    }
    Ok(consumer.commit(&tpl, CommitMode::Sync)?)
}

/// Resets a group's offsets: directly when it has no members, otherwise through the control
/// topic, its owners moving their partitions; `results` gives the owners' outcomes so far.
async fn reset_offsets_with(
    config: &Config,
    publisher: &Publisher,
    r: &ResetRequest,
    by: String,
    results: &(dyn Fn(String) -> futures::future::BoxFuture<'static, Vec<PartitionResult>> + Sync),
) -> Result<ResetReport> {
    let (config2, r2) = (config.clone(), r.clone());
    let (offsets, members) = tokio::task::spawn_blocking(move || -> Result<_> {
        let offsets = resolve(&config2, &r2)?;
        // `None`: the cluster cannot say (the mock cluster has no group listing).
        let members = match crate::kafka::describe_groups(&config2, std::slice::from_ref(&r2.group), Duration::from_secs(10)) {
            Ok(groups) => Some(groups.get(&r2.group).map_or(0, |(_, m)| m.len())),
            Err(e) if e.to_string().contains("UnsupportedFeature") => None,
            Err(e) => return Err(e),
        };
        Ok((offsets, members))
    })
    .await
    .map_err(|e| Error::msg(format!("resolving a reset: {e}")))??;
    let outcome = |o: &PartitionOffset, status: &str| PartitionResult { topic: o.topic.clone(), partition: o.partition, offset: o.offset, status: status.into(), reason: None, member: None };
    let offsets_ref = &offsets;
    let direct = |by: String| async move {
        let offsets = offsets_ref;
        let (config2, group, offsets2) = (config.clone(), r.group.clone(), offsets.clone());
        tokio::task::spawn_blocking(move || commit_directly(&config2, &group, &offsets2)).await.map_err(|e| Error::msg(format!("committing a reset: {e}")))??;
        info!(group = %r.group, to = ?r.to, by = %by, partitions = offsets.len(), "operator reset committed directly (the group has no members)");
        Ok::<_, Error>(ResetReport { id: None, direct: true, partitions: offsets.iter().map(|o| outcome(o, "reset")).collect() })
    };
    if members == Some(0) {
        return direct(by).await;
    }
    let mut command = Command::new(Action::Reset, r.group.clone(), Scope { topic: (r.topics.len() == 1).then(|| r.topics[0].clone()), partition: r.partition }, by);
    command.reset = Some(ResetSpec { to: r.to, force: r.force, offsets: offsets.clone() });
    let id = command.id.clone();
    write(config, publisher, &command).await?;
    info!(%id, group = %r.group, to = ?r.to, force = r.force, by = %command.by, partitions = offsets.len(), "operator reset sent to the group's members");
    let started = tokio::time::Instant::now();
    let seen = loop {
        let seen = results(id.clone()).await;
        let covered = offsets.iter().all(|o| seen.iter().any(|s| s.topic == o.topic && s.partition == o.partition));
        if covered || started.elapsed() >= RESET_WAIT {
            break seen;
        }
        // A cluster that cannot list members, and no member answered: it has none (a member
        // reads the command within a fetch wait).
        if members.is_none() && seen.is_empty() && started.elapsed() >= NO_MEMBER_WAIT {
            return direct(command.by).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let partitions = offsets
        .iter()
        .map(|o| match seen.iter().find(|s| s.topic == o.topic && s.partition == o.partition) {
            Some(s) => s.clone(),
            None => PartitionResult { reason: Some("no member reported it while the sender waited (a rebalance?): ask again".into()), ..outcome(o, "not-applied") },
        })
        .collect();
    Ok(ResetReport { id: Some(id), direct: false, partitions })
}

/// Resets a group's offsets from outside a running app (the command line).
pub async fn reset_offsets(config: &Config, r: &ResetRequest, by: String) -> Result<ResetReport> {
    let publisher = Publisher::with_broker(config, None, Default::default())?;
    let config2 = config.clone();
    let results = move |id: String| -> futures::future::BoxFuture<'static, Vec<PartitionResult>> {
        let config = config2.clone();
        Box::pin(async move { read_state(&config).await.map(|mut s| s.reset_results.remove(&id).unwrap_or_default()).unwrap_or_default() })
    };
    let report = reset_offsets_with(config, &publisher, r, by, &results).await;
    publisher.flush(Duration::from_secs(10))?;
    report
}

/// What a command did, once this instance applied it.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Whether this instance applied it within the wait (every instance applies it when it reads it).
    pub applied: bool,
    /// Whether it changed what is held (false: it was so already).
    pub changed: bool,
    /// The group's holds after it.
    pub holds: Holds,
}

struct Shared {
    /// Set when the app stops: the follower ends.
    stop: std::sync::atomic::AtomicBool,
    state: Mutex<State>,
    /// The offset after the last record applied (for senders waiting on their command).
    applied: watch::Sender<i64>,
    /// The groups this process runs, each told its holds.
    groups: BTreeMap<String, watch::Sender<Holds>>,
    /// The groups this process runs, each sent the resets it must apply.
    resets: BTreeMap<String, tokio::sync::mpsc::UnboundedSender<ResetOrder>>,
    /// Their receiving ends, until each group's loop takes its own.
    reset_receivers: Mutex<BTreeMap<String, tokio::sync::mpsc::UnboundedReceiver<ResetOrder>>>,
    /// What replies to a reset need: the runtime, the app's config and publisher.
    reply: Replier,
    /// Replays under way in this instance, by their journal key.
    replays_running: Mutex<std::collections::HashSet<String>>,
}

/// A replay under way (its key is freed when it ends).
struct RunningReplay(Arc<Shared>, String);

impl Drop for RunningReplay {
    fn drop(&mut self) {
        self.0.replays_running.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.1);
    }
}

/// Writes what this instance did with a reset to the control topic.
#[derive(Clone)]
struct Replier {
    runtime: tokio::runtime::Handle,
    config: Config,
    publisher: Publisher,
    /// This instance, as results name it.
    member: String,
}

/// A reset for one group's loop to apply to the partitions it owns.
pub(crate) struct ResetOrder {
    /// The reset command.
    pub id: String,
    /// Where each partition goes.
    pub offsets: Vec<PartitionOffset>,
    /// Whether it may skip records fetched and not settled yet.
    pub force: bool,
    reply: Replier,
    group: String,
}

impl ResetOrder {
    /// Reports what this instance did (the partitions it owned) on the control topic.
    pub(crate) fn done(self, partitions: Vec<PartitionResult>) {
        if partitions.is_empty() {
            return;
        }
        let Replier { runtime, config, publisher, member } = self.reply;
        let mut c = Command::new(Action::ResetDone, self.group, Scope { topic: None, partition: None }, member.clone());
        c.reset_done = Some(ResetDone { of: self.id, member, partitions });
        runtime.spawn(async move {
            if let Err(e) = write(&config, &publisher, &c).await {
                warn!(error = %e, reset = %c.reset_done.as_ref().map_or("", |d| d.of.as_str()), "cannot report a reset's outcome on the control topic (its sender reports the partitions as not applied)");
            }
        });
    }
}

/// The control topic, followed by this process: its groups' holds, and sending commands.
#[derive(Clone)]
pub struct Control {
    shared: Arc<Shared>,
    config: Config,
    publisher: Publisher,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").field("topic", &self.config.control_topic()).finish_non_exhaustive()
    }
}

impl Control {
    /// Reads the control topic to its end (so that groups start with their holds), then follows
    /// it. `groups`: the group ids this process runs.
    pub(crate) async fn start(config: &Config, publisher: Publisher, groups: &[String]) -> Result<Self> {
        let topic = config.control_topic();
        let config2 = config.clone();
        let (consumer, state) = tokio::task::spawn_blocking(move || -> Result<_> {
            let consumer = reader(&config2)?;
            let state = match read_to_end(&config2, &consumer) {
                Ok(state) => Some(state),
                Err(e) => {
                    warn!(topic = %config2.control_topic(), error = %e, "cannot read the control topic: the groups start paused as a whole until it can be read (an operator's pause must hold however the app starts)");
                    None
                }
            };
            Ok((consumer, state))
        })
        .await
        .map_err(|e| Error::msg(format!("reading the control topic: {e}")))??;
        // Unread: every group held until the follower has read it (fail closed).
        let unread = state.is_none();
        let state = state.unwrap_or_else(|| {
            let mut state = State::default();
            for g in groups {
                let mut holds = Holds::default();
                holds.apply(&Command::new(Action::Pause, g.clone(), Scope { topic: None, partition: None }, "eventkit (the control topic could not be read yet)"));
                state.groups.insert(g.clone(), holds);
            }
            state
        });
        let mut senders = BTreeMap::new();
        for g in groups {
            let holds = state.groups.get(g).cloned().unwrap_or_default();
            if !holds.is_empty() {
                let held: Vec<String> = holds.list().iter().map(|h| h.scope.to_string()).collect();
                info!(group = %g, held = ?held, "paused by operators (resume with `groups resume`)");
            }
            senders.insert(g.clone(), watch::channel(holds).0);
        }
        let (applied, _) = watch::channel(state.next);
        let (mut resets, mut reset_receivers) = (BTreeMap::new(), BTreeMap::new());
        for g in groups {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            resets.insert(g.clone(), tx);
            reset_receivers.insert(g.clone(), rx);
        }
        let member = format!("{}@{}:{}", config.service_name, crate::core::config::host_name(), std::process::id());
        let reply = Replier { runtime: tokio::runtime::Handle::current(), config: config.clone(), publisher: publisher.clone(), member };
        let shared = Arc::new(Shared { stop: Default::default(), state: Mutex::new(state), applied, groups: senders, resets, reset_receivers: Mutex::new(reset_receivers), reply, replays_running: Default::default() });
        debug!(%topic, "following the control topic");
        let follower = shared.clone();
        let follow_config = config.clone();
        // A thread of its own (not the runtime's blocking pool, which a runtime's drop waits for).
        std::thread::Builder::new().name("eventkit-control".into()).spawn(move || follow(&follow_config, consumer, &follower, unread))?;
        Ok(Control { shared, config: config.clone(), publisher })
    }

    /// The holds of `group`, as this process applies them (a group it runs).
    pub(crate) fn watch(&self, group: &str) -> watch::Receiver<Holds> {
        match self.shared.groups.get(group) {
            Some(sender) => sender.subscribe(),
            None => watch::channel(Holds::default()).1,
        }
    }

    /// The resets `group`'s loop applies (its own receiving end; taken once).
    pub(crate) fn resets(&self, group: &str) -> tokio::sync::mpsc::UnboundedReceiver<ResetOrder> {
        let taken = self.shared.reset_receivers.lock().unwrap_or_else(|e| e.into_inner()).remove(group);
        taken.unwrap_or_else(|| tokio::sync::mpsc::unbounded_channel().1)
    }

    /// The holds of `group` as this process knows them now.
    pub fn holds(&self, group: &str) -> Holds {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).groups.get(group).cloned().unwrap_or_default()
    }

    /// Sends `command` and waits until this process applied it (all instances apply it as they
    /// read it).
    pub async fn send(&self, mut command: Command) -> Result<Outcome> {
        if command.scope.topic.is_none() && command.scope.partition.is_some() {
            return Err(Error::Usage("partition: a partition needs its topic".into()));
        }
        command.scope = command.scope.normalized();
        let offset = write(&self.config, &self.publisher, &command).await?;
        info!(id = %command.id, action = %command.action, group = %command.group, scope = %command.scope, by = %command.by, offset, "operator command sent");
        // Its own outcome, at its own offset (another command may have followed it already;
        // a log that went back is read anew first).
        let own = || {
            let state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.outcomes.get(&offset).filter(|(id, _)| *id == command.id).map(|(_, changed)| *changed)
        };
        let mut applied = self.shared.applied.subscribe();
        let changed = tokio::time::timeout(APPLY_TIMEOUT, async {
            loop {
                if let Some(changed) = own() {
                    return Some(changed);
                }
                if applied.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await
        .ok()
        .flatten();
        let holds = self.holds(&command.group);
        Ok(Outcome { applied: changed.is_some(), changed: changed.unwrap_or(false), holds })
    }

    /// Resets a group's offsets (see [`ResetRequest`]): directly when it has no members,
    /// otherwise through the control topic, each member moving the partitions it owns.
    pub async fn reset(&self, r: &ResetRequest, by: String) -> Result<ResetReport> {
        let shared = self.shared.clone();
        let results = move |id: String| -> futures::future::BoxFuture<'static, Vec<PartitionResult>> {
            let found = shared.state.lock().unwrap_or_else(|e| e.into_inner()).reset_results.get(&id).cloned().unwrap_or_default();
            Box::pin(async move { found })
        };
        reset_offsets_with(&self.config, &self.publisher, r, by, &results).await
    }

    /// Replays by time (see [`crate::flows::replay`]) unless the same replay was done before
    /// (or `again`); journals it on the control topic.
    pub async fn replay(&self, r: &crate::flows::replay::TimeReplay, by: String, again: bool) -> Result<ReplayOutcome> {
        let key = replay_key(r);
        // One at a time per window in this instance (the journal's intent covers the others).
        let _running = {
            let mut running = self.shared.replays_running.lock().unwrap_or_else(|e| e.into_inner());
            if !running.insert(key.clone()) {
                return Err(Error::Conflict("the same replay is under way on this instance".into()));
            }
            RunningReplay(self.shared.clone(), key.clone())
        };
        let known = self.shared.state.lock().unwrap_or_else(|e| e.into_inner()).replays.get(&key).cloned();
        let (outcome, offset) = replay_once(&self.config, &self.publisher, known, r, by, again).await?;
        if let Some(offset) = offset {
            let mut applied = self.shared.applied.subscribe();
            let _ = tokio::time::timeout(APPLY_TIMEOUT, applied.wait_for(|next| *next > offset)).await;
        }
        Ok(outcome)
    }

    /// Stops following the control topic.
    pub(crate) fn stop(&self) {
        self.shared.stop.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Follows the control topic from where the start read it (on a blocking thread, until the
/// app's control is dropped). A topic that does not exist yet is looked for again.
fn follow(config: &Config, consumer: BaseConsumer<KitContext>, shared: &Arc<Shared>, mut unread: bool) {
    let topic = config.control_topic();
    let mut assigned = false;
    let mut looked = Instant::now() - Duration::from_secs(60);
    // The only other owners are the app's handles: when they are all gone, stop too.
    while !shared.stop.load(std::sync::atomic::Ordering::Acquire) && Arc::strong_count(shared) > 1 {
        if unread {
            // The state is not known yet (the start could not read it), or the log went back
            // (truncated, recreated): fold it again from its beginning, then swap it in whole.
            assigned = false;
            match read_to_end(config, &consumer) {
                Ok(state) => {
                    swap_state(shared, state);
                    unread = false;
                    info!(%topic, "the control topic was read: operators' pauses apply as it says");
                }
                Err(e) => {
                    if crate::kafka::outage::due(&format!("control read {e}")) {
                        warn!(%topic, error = %e, "cannot read the control topic; the groups stay held until it can be read (told once a minute while it lasts)");
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
            continue;
        }
        if !assigned {
            if looked.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            looked = Instant::now();
            match partitions(&consumer, &topic) {
                Ok(Some(_)) => {}
                Ok(None) => continue,
                Err(e) => {
                    debug!(%topic, error = %e, "control topic metadata");
                    continue;
                }
            }
            let next = shared.state.lock().unwrap_or_else(|e| e.into_inner()).next;
            let mut tpl = TopicPartitionList::new();
            let offset = if next > 0 { Offset::Offset(next) } else { Offset::Beginning };
            if tpl.add_partition_offset(&topic, PARTITION, offset).is_err() || consumer.assign(&tpl).is_err() {
                continue;
            }
            assigned = true;
        }
        match consumer.poll(Duration::from_millis(200)) {
            None | Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => {
                if crate::kafka::outage::due(&format!("control {e}")) {
                    warn!(%topic, error = %e, "reading the control topic (told once a minute while it lasts)");
                }
            }
            Some(Ok(m)) => {
                let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
                if m.offset() < state.next {
                    warn!(%topic, offset = m.offset(), expected = state.next, "the control topic went back (truncated or recreated): reading it again from its beginning");
                    unread = true;
                    continue;
                }
                if let Some((command, changed)) = state.apply_record(m.offset(), m.payload()) {
                    if let (Some(sender), Some(spec)) = (shared.resets.get(&command.group), &command.reset) {
                        if !recent(&command.at) {
                            // An old reset read again (the log was read anew): history, not an order.
                            continue;
                        }
                        info!(id = %command.id, group = %command.group, to = ?spec.to, force = spec.force, by = %command.by, "operator reset: moving the partitions this instance has");
                        let order = ResetOrder { id: command.id.clone(), offsets: spec.offsets.clone(), force: spec.force, reply: shared.reply.clone(), group: command.group.clone() };
                        let _ = sender.send(order);
                    } else if command.action == Action::ResetDone {
                        debug!(group = %command.group, by = %command.by, "a reset's outcome");
                    } else if let Some(sender) = shared.groups.get(&command.group) {
                        let holds = state.groups.get(&command.group).cloned().unwrap_or_default();
                        info!(id = %command.id, action = %command.action, group = %command.group, scope = %command.scope, by = %command.by, at = %command.at, changed, "operator command applied");
                        sender.send_replace(holds);
                    }
                }
                let next = state.next;
                drop(state);
                shared.applied.send_replace(next);
            }
        }
    }
    debug!(%topic, "control topic no longer followed");
}

/// Replaces the whole state with `state` (read anew) and tells each group its holds.
fn swap_state(shared: &Shared, state: State) {
    let next = state.next;
    let mut current = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    *current = state;
    for (group, sender) in &shared.groups {
        sender.send_replace(current.groups.get(group).cloned().unwrap_or_default());
    }
    drop(current);
    shared.applied.send_replace(next);
}

/// Whether a command sent at `at` (RFC 3339) is recent enough to act on (a reset is acted on
/// when it is read as it is sent, never when old commands are read again).
fn recent(at: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(at).is_ok_and(|t| (chrono::Utc::now().timestamp_millis() - t.timestamp_millis()) < RESET_WAIT.as_millis() as i64 * 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(topic: Option<&str>, partition: Option<i32>) -> Scope {
        Scope { topic: topic.map(Into::into), partition }
    }

    fn command(action: Action, s: Scope) -> Command {
        Command::new(action, "g", s, "test")
    }

    #[test]
    fn commands_fold_in_log_order_and_a_wider_resume_ends_the_narrower_pauses() {
        let mut holds = Holds::default();
        assert!(holds.apply(&command(Action::Pause, scope(Some("t"), Some(0)))));
        assert!(!holds.apply(&command(Action::Pause, scope(Some("t"), Some(0)))), "pausing what is paused changes nothing");
        assert!(holds.covers("t", 0) && !holds.covers("t", 1) && !holds.covers("u", 0));
        assert!(holds.apply(&command(Action::Pause, scope(Some("u"), None))));
        assert!(holds.covers("u", 7));
        assert!(!holds.apply(&command(Action::Resume, scope(Some("u"), Some(7)))), "a partition of a held topic is not held on its own");
        assert!(holds.held_by_wider(&scope(Some("u"), Some(7))).is_some());
        assert!(holds.apply(&command(Action::Pause, scope(None, None))));
        assert!(holds.covers("v", 3));
        assert_eq!(holds.list()[0].scope, scope(None, None), "the widest first");
        assert!(holds.apply(&command(Action::Resume, scope(Some("t"), None))), "resuming a topic ends its partitions' pauses");
        assert!(holds.covers("t", 0), "the group's pause still holds it");
        assert!(holds.apply(&command(Action::Resume, scope(None, None))));
        assert!(holds.is_empty(), "resuming the group ends every pause in it: {holds:?}");
        assert!(!holds.apply(&command(Action::Resume, scope(None, None))), "resuming what runs changes nothing");
        // A partition without its topic means the whole group, and the group's resume ends it.
        assert!(holds.apply(&command(Action::Pause, scope(None, Some(3)))));
        assert!(holds.covers("any", 0) && holds.held_by_wider(&scope(None, None)).is_none());
        assert!(holds.apply(&command(Action::Resume, scope(None, None))) && holds.is_empty());
    }

    #[test]
    fn a_record_that_is_not_a_command_is_skipped_and_counted_as_read() {
        let mut state = State::default();
        assert!(state.apply_record(0, Some(b"{not json")).is_none());
        assert!(state.apply_record(1, None).is_none(), "a tombstone");
        let c = command(Action::Pause, scope(Some("t"), None));
        let (read, changed) = state.apply_record(2, Some(&serde_json::to_vec(&c).unwrap())).unwrap();
        assert!(changed && read == c);
        assert_eq!(state.next, 3);
        assert!(state.groups["g"].covers("t", 5));
    }

    #[test]
    fn a_command_is_keyed_by_what_it_acts_on() {
        let a = command(Action::Pause, scope(Some("t"), Some(1)));
        let b = command(Action::Resume, scope(Some("t"), Some(1)));
        assert_eq!(a.key(), b.key());
        assert_eq!(a.key(), r#"["g","t",1]"#);
        assert_ne!(a.key(), command(Action::Pause, scope(Some("t"), None)).key());
        let json = serde_json::to_value(&a).unwrap();
        assert_eq!((json["action"].as_str(), json["topic"].as_str(), json["partition"].as_i64()), (Some("pause"), Some("t"), Some(1)));
    }
}
