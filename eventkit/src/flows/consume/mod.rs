//! The consumer engine: one per consumer group. Data flows one way:
//!
//! ```text
//! fetch loop ──records──> scheduler ──ready work──> running work (handler calls, up to `concurrency`)
//!     ^  pause/resume           │ per key / partition lane; a lane with work started,
//!     │  by buffered records    │ or waiting for its retry, holds its later records
//!     │  and bytes              v
//! offset tracker <──settled offsets── settle (done / retry from memory after backoff / DLQ)
//!     │ per partition: lowest unsettled record = watermark
//!     └──> commit every commit interval (async), on revoke and at shutdown (sync)
//! ```
//!
//! - [`fetch`]: the loop that polls the consumer, with backpressure, timers and commits.
//! - [`scheduler`]: lanes by ordering mode, batching, retries waiting for their backoff.
//! - [`tracker`]: per-partition watermarks.
//! - [`dispatch`]: handling a unit of work: decode, call the handlers.
//! - [`settle`]: done, retry or dead-letter, for single records and batches alike.
//! - [`rebalance`]: what assignments and revocations do to all of the above.
//! - [`engine`]: the bookkeeping the loop and the callbacks share.
//!
//! Delivery is at least once: an offset is committed only when every record before it in its
//! partition settled (handled, dead-lettered with the write acknowledged, or skipped).

mod dispatch;
mod engine;
mod fetch;
mod rebalance;
mod record;
mod scheduler;
mod settle;
mod tracker;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::sync::watch;
use tracing::info;

use crate::core::config::Config;
use crate::core::error::Result;
use crate::flows::handler::HandlerKind;
use crate::flows::publish::Publisher;
use crate::flows::registry::{GroupPlan, Registry};
use crate::core::state::StateMap;

use dispatch::WorkerEnv;
use engine::{Engine, Limits, Shared};
use fetch::FetchLoop;
use rebalance::GroupContext;
use scheduler::Policy;

/// The layers a group runs its records through, built by the app: around the group (records
/// no handler takes), around each handler, and what its gauges are fed to.
pub(crate) struct GroupLayers {
    pub group: crate::flows::layer::Stack,
    pub handlers: std::collections::HashMap<&'static str, crate::flows::layer::Stack, foldhash::fast::RandomState>,
    pub watches: Vec<Arc<dyn crate::flows::layer::Watch>>,
}

/// What steers a group from outside: the app's shutdown (its deadline, once it began), and
/// what operators hold (see [`crate::flows::control`]).
pub(crate) struct Signals {
    pub shutdown: watch::Receiver<Option<tokio::time::Instant>>,
    pub holds: watch::Receiver<crate::flows::control::Holds>,
    pub resets: tokio::sync::mpsc::UnboundedReceiver<crate::flows::control::ResetOrder>,
}

/// A consumer group, ready to run.
pub(crate) struct GroupRunner {
    fetch: FetchLoop,
}

impl GroupRunner {
    /// Creates the group's consumer and subscribes it to the group's topics.
    pub(crate) fn new(
        plan: GroupPlan,
        config: &Config,
        registry: Registry,
        publisher: Publisher,
        state: Arc<StateMap>,
        signals: Signals,
        layers: GroupLayers,
    ) -> Result<Self> {
        let Signals { shutdown, holds, resets } = signals;
        let policy = match plan.batch.map(|h| h.kind) {
            Some(HandlerKind::Batch { max_size, max_wait_ms, .. }) => Policy::Batches { max_size, max_wait: Duration::from_millis(max_wait_ms) },
            _ => Policy::Records(plan.ordering),
        };
        let limits = Limits {
            concurrency: plan.concurrency,
            max_records: config.max_buffered_records,
            max_bytes: config.max_buffered_bytes,
            max_uncommitted: config.max_uncommitted,
        };
        let shared = Arc::new(Shared::new(Engine::new(policy, limits, plan.routes.clone())));

        let mut client = crate::kafka::client_config(config)?;
        // librdkafka's own prefetch gets half of the bounds (in bytes for the whole consumer; in
        // records per partition), so that both together stay within about 1.5 times them.
        let prefetch_kb = (config.max_buffered_bytes / 2048).clamp(1024, 2_097_151);
        client
            .set("group.id", &plan.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", &config.auto_offset_reset)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("queued.max.messages.kbytes", prefetch_kb.to_string())
            .set("queued.min.messages", (config.max_buffered_records / 2).clamp(1, 10_000_000).to_string())
            .set("topic.metadata.refresh.interval.ms", "10000");
        if config.embedded {
            // The mock broker holds a fetch for fetch.wait.max.ms even when data is there, and
            // lets a departed member stall a rejoin for the whole session timeout; in-process
            // there are no network hiccups to tolerate.
            client
                .set("fetch.wait.max.ms", "10")
                .set("session.timeout.ms", "3000")
                .set("heartbeat.interval.ms", "500");
        } else {
            client.set("fetch.wait.max.ms", "100");
        }
        crate::kafka::apply_overrides(&mut client, config, crate::kafka::Client::Consumer);
        let group: Arc<str> = plan.group_id.as_str().into();
        let status = crate::flows::status::GroupStatus::new(group.clone(), plan.topics.iter().cloned().collect());
        let GroupLayers { group: group_stack, handlers: handler_stacks, watches } = layers;
        let context = GroupContext {
            group: plan.group_id.clone(),
            shared: shared.clone(),
            revoke_timeout: config.revoke_timeout,
            status: status.clone(),
            watches: watches.clone(),
            transactional: plan.transactional,
            shutdown,
        };
        let consumer: StreamConsumer<GroupContext> = client.create_with_context(context)?;
        let topics: Vec<&str> = plan.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        info!(
            group = %plan.group_id,
            topics = ?topics,
            handlers = plan.all_handlers().count(),
            ordering = %plan.ordering,
            concurrency = plan.concurrency,
            "consumer group subscribed"
        );
        let consumer = fetch::Owned::new(Arc::new(consumer));
        let transactions = if plan.transactional {
            // One transactional id per member: stable with static membership (a restarted
            // instance fences the one it replaces), otherwise unique to this process.
            let instance = config.kafka_consumer.get("group.instance.id").or_else(|| config.kafka.get("group.instance.id"));
            let id = match instance {
                Some(instance) => format!("{}-{instance}", plan.group_id),
                None => format!("{}-{}", plan.group_id, uuid::Uuid::now_v7()),
            };
            let txn = Publisher::transactional(config, &id, publisher.layers())?;
            info!(group = %plan.group_id, transactional_id = %id, "records are handled in Kafka transactions (exactly once consume → produce)");
            Some(dispatch::Transactions {
                publisher: std::sync::RwLock::new(txn),
                layers: publisher.layers(),
                id,
                config: config.clone(),
                consumer: Arc::downgrade(consumer.get()),
                lock: tokio::sync::Mutex::default(),
            })
        } else {
            None
        };
        let mediator = Arc::new(crate::flows::command::Mediator { registry: registry.clone(), publisher: publisher.clone(), state: state.clone() });
        let env = WorkerEnv {
            transactions,
            status,
            stacks: dispatch::Stacks { group: group_stack, handlers: handler_stacks },
            watches,
            group,
            plan,
            registry,
            publisher,
            state,
            mediator,
            retry_policy: config.retry_policy(),
            config: config.clone(),
        };
        Ok(GroupRunner { fetch: FetchLoop { consumer, shared, env: Arc::new(env), holds, resets: std::sync::Mutex::new(Some(resets)) } })
    }

    /// The group's live status (for health and the admin API).
    pub(crate) fn status(&self) -> Arc<crate::flows::status::GroupStatus> {
        self.fetch.env.status.clone()
    }

    /// Runs until `shutdown` gives the shutdown's deadline; then commits what settled and
    /// leaves the group by then.
    pub(crate) async fn run(self, shutdown: watch::Receiver<Option<tokio::time::Instant>>) {
        self.fetch.run(shutdown).await
    }
}
