//! The fetch loop: the one task that polls the group's consumer.
//!
//! It never waits for one handler. Each turn it takes fetched records into the engine, starts
//! ready work (up to the group's concurrency; handler calls run concurrently as futures the
//! loop drives, like `for_each_concurrent`), applies completions, fires retry and batch
//! timers, and commits watermarks every commit interval. Handler code that computes for long
//! without awaiting belongs in `tokio::task::spawn_blocking`. When buffered records reach
//! the memory bound it stops taking records; if the buffer stays full (a stuck or very slow
//! handler) it pauses the assigned partitions (librdkafka then drops its prefetched records and
//! fetches them again from the same position on resume) and goes on polling, so the member
//! never breaches `max.poll.interval.ms`.
//!
//! At shutdown it works to the deadline the app gives it (the shutdown budget): it pauses
//! everything and finishes the records it holds until the budget's reserve is all that is left
//! (retries waiting for their backoff are dropped), then commits, leaves the group and closes
//! the consumer within the reserve. Each step is logged as it starts, and each wait is bounded:
//! a librdkafka call that hangs is left behind on a thread of its own, and the app exits in time.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use super::dispatch::{self, WorkerEnv};
use super::engine::Shared;
use super::rebalance::{describe, GroupContext};

/// Records taken from librdkafka in one turn before the loop starts work and looks at completions.
const BURST: usize = 128;

/// How long leaving the group may wait for the revoke of the last partitions.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Units of work started in one turn, at most.
const TURN_STARTS: usize = 4 * BURST;

/// The group's consumer, owned by its fetch loop. However the loop ends (its task aborted, or
/// unwinding), the consumer is never closed on the thread that drops it: closing can block for
/// long, or for good while a revoke is pending (librdkafka#4527), and on a tokio worker that
/// would hold the runtime's shutdown and the process's exit. It is closed on a thread of its own.
pub(crate) struct Owned(Option<Arc<StreamConsumer<GroupContext>>>);

impl Owned {
    pub(crate) fn new(consumer: Arc<StreamConsumer<GroupContext>>) -> Self {
        Owned(Some(consumer))
    }

    pub(crate) fn get(&self) -> &Arc<StreamConsumer<GroupContext>> {
        self.0.as_ref().expect("the consumer is there until the loop ends")
    }

    /// Takes the consumer out, to close it at a time of the loop's choosing.
    fn take(mut self) -> Arc<StreamConsumer<GroupContext>> {
        self.0.take().expect("the consumer is there until the loop ends")
    }
}

impl std::ops::Deref for Owned {
    type Target = StreamConsumer<GroupContext>;
    fn deref(&self) -> &Self::Target {
        self.get()
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take() {
            let _ = std::thread::Builder::new().name("eventkit-consumer-close".into()).spawn(move || drop(consumer));
        }
    }
}

pub(crate) struct FetchLoop {
    pub consumer: Owned,
    pub shared: Arc<Shared>,
    pub env: Arc<WorkerEnv>,
    /// What operators hold in this group (see [`crate::flows::control`]).
    pub holds: watch::Receiver<crate::flows::control::Holds>,
    /// Operators' resets of this group's offsets (taken by the loop when it starts).
    pub resets: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<crate::flows::control::ResetOrder>>>,
}

impl FetchLoop {
    /// Runs until `shutdown` gives the shutdown's deadline; then drains, commits and leaves the
    /// group by then.
    pub(crate) async fn run(self, mut shutdown: watch::Receiver<Option<Instant>>) {
        let config = &self.env.config;
        let mut holds = self.holds.clone();
        // Before the first poll: partitions are assigned inside it, and start held.
        self.shared.engine().set_holds(holds.borrow_and_update().clone());
        let mut holds_open = true;
        let mut resets = self.resets.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_else(|| tokio::sync::mpsc::unbounded_channel().1);
        let mut resets_open = true;
        {
            let mut stream = self.consumer.stream();
            let mut commit_tick = tokio::time::interval(config.commit_interval);
            commit_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let far = || Instant::now() + Duration::from_secs(365 * 86_400);
            let timer = tokio::time::sleep_until(far());
            tokio::pin!(timer);
            let mut timer_at: Option<Instant> = None;
            let mut burst: Vec<rdkafka::message::BorrowedMessage<'_>> = Vec::with_capacity(BURST);
            // The status is refreshed on its own tick, whatever the commit interval.
            let mut status_tick = tokio::time::interval(crate::flows::status::REFRESH);
            status_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                let (next, take, more) = self.turn().await;
                // The loop is alive: readiness tells a frozen loop by the age of this mark.
                self.env.status.turned(std::time::Instant::now());
                if next != timer_at {
                    timer.as_mut().reset(next.unwrap_or_else(far));
                    timer_at = next;
                }
                tokio::select! {
                    biased;
                    // The deadline came, or the app is gone (its sender dropped): stop.
                    _ = shutdown.wait_for(Option::is_some) => break,
                    completion = self.shared.next_completion() => {
                        self.shared.apply_ready(&mut self.shared.engine(), completion);
                    }
                    _ = commit_tick.tick() => self.commit(CommitMode::Async),
                    _ = status_tick.tick() => self.refresh(std::time::Instant::now()),
                    changed = holds.changed(), if holds_open => match changed {
                        Ok(()) => {
                            let now = holds.borrow_and_update().clone();
                            self.shared.engine().set_holds(now);
                            // Health shows the change at once, not at the next tick.
                            self.refresh(std::time::Instant::now());
                        }
                        Err(_) => holds_open = false,
                    },
                    order = resets.recv(), if resets_open => match order {
                        Some(order) => self.reset(order),
                        None => resets_open = false,
                    },
                    () = &mut timer, if timer_at.is_some() => {
                        self.shared.engine().on_timer(Instant::now());
                        timer_at = None;
                    }
                    // While the buffer is full, records stay in librdkafka's queue.
                    message = stream.next(), if take => {
                        self.take(message, &mut burst);
                        for _ in 1..BURST {
                            match stream.next().now_or_never() {
                                Some(message) => self.take(message, &mut burst),
                                None => break,
                            }
                        }
                        // One lock and one clock reading for the burst (not taken while
                        // polling: rebalance callbacks run inside the poll and lock the engine).
                        if !burst.is_empty() {
                            let now = Instant::now();
                            let mut engine = self.shared.engine();
                            for m in burst.drain(..) {
                                engine.accept(&m, now);
                            }
                        }
                    }
                    // `turn` left ready work (it starts a bounded amount): back to it, after
                    // everything above had its chance.
                    () = std::future::ready(()), if more => {}
                }
            }
            let deadline = shutdown.borrow().unwrap_or_else(|| Instant::now() + config.shutdown_timeout);
            let reserve = config.shutdown_reserve();
            self.drain(&mut stream, deadline.checked_sub(reserve).unwrap_or(deadline)).await;
            self.commit_at_shutdown(deadline.checked_sub(reserve * 3 / 4).unwrap_or(deadline)).await;
            self.shared.engine().set_closing();
            let leave_by = (Instant::now() + LEAVE_TIMEOUT).min(deadline.checked_sub(reserve / 2).unwrap_or(deadline));
            info!(group = %self.env.group, within = ?leave_by.saturating_duration_since(Instant::now()), "shutdown: leaving the group");
            self.leave(&mut stream, leave_by).await;
        }
        self.env.status.update(Vec::new(), 0, (0, 0));
        for watch in &self.env.watches {
            watch.group_status(&self.env.group, &Default::default());
        }
        let abandoned = self.shared.abandon_running();
        if abandoned > 0 {
            debug!(group = %self.env.group, abandoned, "handler calls cancelled at shutdown");
        }
        let group = self.env.group.clone();
        let deadline = shutdown.borrow().unwrap_or_else(Instant::now);
        let close_by = deadline.checked_sub(self.env.config.shutdown_reserve() / 4).unwrap_or(deadline);
        let FetchLoop { consumer, .. } = self;
        let consumer = consumer.take();
        info!(%group, within = ?close_by.saturating_duration_since(Instant::now()), "shutdown: closing the consumer");
        // Closing blocks, and can hang (librdkafka#4527): on a thread of its own, waited for
        // until the deadline.
        let closed = crate::kafka::bounded("closing a consumer", close_by, move || match Arc::try_unwrap(consumer) {
            Ok(consumer) => drop(consumer),
            Err(_) => warn!("consumer still referenced at close"),
        })
        .await;
        if closed.is_none() {
            warn!(%group, "the consumer did not close within the shutdown budget; the app goes on without waiting for it");
        }
        info!(%group, "consumer group stopped");
    }

    /// Starts ready work, pauses or resumes partitions. Returns the next timer deadline,
    /// whether to take fetched records now, and whether ready work was left for the next turn.
    ///
    /// Each unit of work started is polled once right away, without the engine lock, with the
    /// loop's waker: one that completes then (a handler that did not have to wait) is applied
    /// at once and never joins the running set. One that waits joins it, and the set polls it
    /// again with a waker of its own (futures keep the waker of their latest poll, as the
    /// `Future` contract asks). At most [`TURN_STARTS`] units start per turn, so that fast
    /// handlers never keep the loop from shutdown, commits and fetching.
    async fn turn(&self) -> (Option<Instant>, bool, bool) {
        std::future::poll_fn(|cx| std::task::Poll::Ready(self.turn_with(cx))).await
    }

    fn turn_with(&self, cx: &mut std::task::Context<'_>) -> (Option<Instant>, bool, bool) {
        // A revoke that drove the running set leaves it to wake the loop (see `rebalance`).
        self.shared.loop_waker.register(cx.waker());
        let mut starts = Vec::new();
        let mut done = Vec::new();
        let mut started = 0;
        let mut engine = self.shared.engine();
        while started < TURN_STARTS {
            while let Some(work) = engine.next_work() {
                starts.push(work);
                if starts.len() == BURST {
                    break;
                }
            }
            if starts.is_empty() {
                break;
            }
            started += starts.len();
            drop(engine);
            for work in starts.drain(..) {
                let mut running: super::engine::Running = Box::pin(dispatch::run(self.env.clone(), work));
                match running.as_mut().poll(cx) {
                    std::task::Poll::Ready(completion) => done.push(completion),
                    std::task::Poll::Pending => self.shared.start(running),
                }
            }
            engine = self.shared.engine();
            let now = Instant::now();
            for completion in done.drain(..) {
                engine.apply(completion, now);
            }
        }
        let more = engine.has_startable();
        if let Some((pause, resume)) = engine.pause_changes(Instant::now()) {
            if pause.count() > 0 {
                let (records, bytes) = engine.buffered();
                match self.consumer.pause(&pause) {
                    Ok(()) => debug!(group = %self.env.group, partitions = %describe(&pause), records, bytes, full = engine.is_full(), "fetching paused"),
                    Err(e) => {
                        warn!(group = %self.env.group, error = %e, "cannot pause partitions; trying again");
                        engine.pause_failed(&pause);
                    }
                }
            }
            if resume.count() > 0 {
                match self.consumer.resume(&resume) {
                    Ok(()) => debug!(group = %self.env.group, partitions = %describe(&resume), "fetching resumed"),
                    Err(e) => {
                        warn!(group = %self.env.group, error = %e, "cannot resume partitions; trying again");
                        engine.pause_failed(&resume);
                    }
                }
            }
        }
        (engine.next_deadline(), !engine.throttled(), more)
    }

    /// Applies an operator's reset to the partitions this member owns: each starts afresh from
    /// its new offset (fetching goes there, the offset is committed), unless that would skip
    /// records not settled yet and the reset is not forced. Reports what it did.
    fn reset(&self, order: crate::flows::control::ResetOrder) {
        use super::engine::ResetOutcome;
        use crate::flows::control::PartitionResult;
        let mut results = Vec::new();
        let mut moved = rdkafka::TopicPartitionList::new();
        {
            let mut engine = self.shared.engine();
            for o in &order.offsets {
                let result = |status: &str, reason: Option<String>| PartitionResult { topic: o.topic.clone(), partition: o.partition, offset: o.offset, status: status.into(), reason, member: None };
                if self.env.transactions.is_some() {
                    if engine.owns(&o.topic, o.partition) {
                        let why = "a transactional group moves its offsets only in its transactions: stop the group, then reset it (its offsets are committed directly)";
                        results.push(result("refused", Some(why.into())));
                    }
                    continue;
                }
                match engine.reset(&o.topic, o.partition, o.offset, order.force) {
                    ResetOutcome::NotOwned => {}
                    ResetOutcome::Refused(why) => {
                        warn!(group = %self.env.group, partition = %format!("{}[{}]", o.topic, o.partition), to = o.offset, reason = %why, "operator reset refused");
                        results.push(result("refused", Some(why)));
                    }
                    ResetOutcome::Reset { from } => {
                        info!(group = %self.env.group, partition = %format!("{}[{}]", o.topic, o.partition), from = ?from, to = o.offset, "operator reset: the partition goes on from its new offset");
                        let _ = moved.add_partition_offset(&o.topic, o.partition, rdkafka::Offset::Offset(o.offset));
                        results.push(result("reset", None));
                    }
                }
            }
        }
        if moved.count() > 0 {
            // Without waiting (librdkafka drops what it fetched before the seek). The new
            // offsets are committed with the next commit (the trackers start there).
            if let Err(e) = self.consumer.seek_partitions(moved.clone(), Duration::ZERO) {
                warn!(group = %self.env.group, error = %e, "seeking for a reset failed");
                for r in results.iter_mut().filter(|r| r.status == "reset") {
                    r.status = "refused".into();
                    r.reason = Some(format!("seeking failed: {e}"));
                }
            }
        }
        order.done(results);
    }

    /// Refreshes the group's status and gauges.
    fn refresh(&self, now: std::time::Instant) {
        let (partitions, in_flight, buffered) = {
            let mut engine = self.shared.engine();
            (engine.status(now), engine.in_flight(), engine.buffered())
        };
        let counts = crate::flows::layer::GroupCounts {
            in_flight,
            buffered: buffered.0,
            assigned: partitions.len(),
            paused: partitions.iter().filter(|p| p.paused).count(),
            held: partitions.iter().filter(|p| p.held).count(),
            waiting_s: partitions.iter().filter_map(|p| p.waiting_for_s).fold(0.0, f64::max),
        };
        for watch in &self.env.watches {
            watch.group_status(&self.env.group, &counts);
        }
        self.env.status.update(partitions, in_flight, buffered);
    }

    /// Keeps a fetched record for the burst; reports fetch errors.
    fn take<'a>(&self, message: Option<Result<rdkafka::message::BorrowedMessage<'a>, KafkaError>>, burst: &mut Vec<rdkafka::message::BorrowedMessage<'a>>) {
        match message {
            Some(Ok(m)) => burst.push(m),
            Some(Err(e)) if crate::kafka::outage::is_connection_error(&e) => crate::kafka::outage::client_error(&e, ""),
            Some(Err(e)) if crate::kafka::outage::due(&format!("fetch {} {e}", self.env.group)) => {
                warn!(group = %self.env.group, error = %e, "fetch error (told once a minute while it lasts)");
            }
            Some(Err(_)) => {}
            None => {}
        }
    }

    /// Commits watermarks: asynchronously those that moved; synchronously (shutdown) all. A
    /// transactional group commits in its transactions only: a commit from here could reach the
    /// broker after a later transaction's and set the group's offset back.
    fn commit(&self, mode: CommitMode) {
        if self.env.transactions.is_some() {
            return;
        }
        let tpl = self.shared.engine().commits(None, matches!(mode, CommitMode::Sync));
        if tpl.count() == 0 {
            return;
        }
        let submitted = match mode {
            CommitMode::Async => commit_async(&self.consumer, &tpl),
            CommitMode::Sync => self.consumer.commit(&tpl, mode),
        };
        match submitted {
            Ok(()) => {}
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                if crate::kafka::outage::due(&format!("commit {} {e}", self.env.group)) {
                    warn!(group = %self.env.group, error = %e, offsets = %describe(&tpl), "offset commit failed; it is sent again with the next commit (told once a minute while it lasts)");
                }
                self.shared.engine().commit_failed(&tpl);
            }
        }
    }

    /// Stops fetching and finishes the records held, until `until`.
    async fn drain(&self, stream: &mut rdkafka::consumer::MessageStream<'_, GroupContext>, until: Instant) {
        self.shared.engine().stop();
        info!(group = %self.env.group, in_flight = self.shared.engine().in_flight(), within = ?until.saturating_duration_since(Instant::now()), "shutdown: finishing the records in flight");
        loop {
            let (_, _, more) = self.turn().await;
            let (idle, running) = {
                let engine = self.shared.engine();
                (engine.idle(), engine.in_flight())
            };
            if idle {
                break;
            }
            tokio::select! {
                biased;
                completion = self.shared.next_completion() => {
                    self.shared.apply_ready(&mut self.shared.engine(), completion);
                }
                () = tokio::time::sleep_until(until) => {
                    warn!(group = %self.env.group, running, "handlers still running when the shutdown budget's reserve began; their records will be handled again after a restart (EVENTKIT_SHUTDOWN_TIMEOUT_MS)");
                    break;
                }
                // Serve rebalance events; records that still come are not taken, and are
                // fetched again by the next owner.
                _ = stream.next() => {}
                () = std::future::ready(()), if more => {}
            }
        }
    }

    /// Commits every watermark synchronously, waiting until `until` at most (not for a
    /// transactional group: its transactions committed its offsets).
    async fn commit_at_shutdown(&self, until: Instant) {
        if self.env.transactions.is_some() {
            return;
        }
        let tpl = self.shared.engine().commits(None, true);
        if tpl.count() == 0 {
            return;
        }
        info!(group = %self.env.group, offsets = %describe(&tpl), "shutdown: committing");
        let consumer = self.consumer.get().clone();
        let committed = crate::kafka::bounded("a commit at shutdown", until, move || consumer.commit(&tpl, CommitMode::Sync).map(|()| tpl)).await;
        match committed {
            Some(Ok(_)) | Some(Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))) => crate::kafka::outage::answered(),
            Some(Err(e)) => warn!(group = %self.env.group, error = %e, "the commit at shutdown failed; records since the last commit will be handled again after a restart"),
            None => warn!(group = %self.env.group, "the commit at shutdown did not finish in time; records since the last commit may be handled again after a restart"),
        }
    }

    /// Leaves the group before the consumer closes: unsubscribes, then serves the revoke that
    /// follows until the assignment is empty (until `until` at most). A consumer closed
    /// while librdkafka still has a cooperative revoke to hand over can hang in its close for
    /// good, and the process with it (seen here: `rd_kafka_incremental_unassign` from the revoke
    /// callback inside the close waits forever; librdkafka#4527, whose maintainers and Karafka
    /// leave the group this way first).
    async fn leave(&self, stream: &mut rdkafka::consumer::MessageStream<'_, GroupContext>, until: Instant) {
        self.consumer.unsubscribe();
        while self.consumer.assignment().is_ok_and(|a| a.count() > 0) {
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(until) => {
                    warn!(group = %self.env.group, "partitions still assigned after unsubscribing; closing anyway");
                    return;
                }
                // Serves the revoke; records that still come are not taken.
                _ = stream.next() => {}
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    }
}

/// Submits an asynchronous commit whose result comes back through the consumer queue, so that
/// [`GroupContext`]'s commit callback sees failures (and the offsets go out again).
///
/// `Consumer::commit(.., CommitMode::Async)` calls `rd_kafka_commit` without a reply queue,
/// so librdkafka never reports the result (fede1024/rust-rdkafka#856). This does what the
/// proposed fix does (#857): `rd_kafka_commit_queue` with the consumer queue.
fn commit_async(consumer: &StreamConsumer<GroupContext>, tpl: &rdkafka::TopicPartitionList) -> rdkafka::error::KafkaResult<()> {
    use rdkafka::bindings as rd;
    let rk = consumer.client().native_ptr();
    // SAFETY: `rk` is the live client of `consumer`; the queue reference is released after
    // the call, and librdkafka copies the partition list.
    let error = unsafe {
        let queue = rd::rd_kafka_queue_get_consumer(rk);
        let error = rd::rd_kafka_commit_queue(rk, tpl.ptr(), queue, None, std::ptr::null_mut());
        if !queue.is_null() {
            rd::rd_kafka_queue_destroy(queue);
        }
        error
    };
    if error == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        Ok(())
    } else {
        Err(KafkaError::ConsumerCommit(error.into()))
    }
}
