//! Operator control under faults and hostile input (found by a second reader of the change):
//! a held partition never stalls the others, hostile control records, each command's own
//! outcome, a pause during a retry's backoff, shutdown while held, a control topic that cannot
//! be read at start (the groups start held), and a broker restart that empties the control topic.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventkit::control::{Action, Command, Scope};
use eventkit::{handler, integration_event, Context};
use eventkit_tests::{eventually, Log, Target};
use serde_json::{json, Value};

#[integration_event(topic = "rv.ticks", key = lane, partitions = 2)]
#[derive(Debug, Clone, PartialEq)]
pub struct RvTick {
    pub lane: String,
    pub n: u32,
}

#[derive(Clone)]
struct Gate(Arc<tokio::sync::Semaphore>);
impl Default for Gate {
    fn default() -> Self {
        Gate(Arc::new(tokio::sync::Semaphore::new(0)))
    }
}

#[derive(Clone, Default)]
struct Seen(Log<(u32, i32, i64)>);

#[derive(Clone, Default)]
struct Fails(Arc<Mutex<BTreeMap<u32, u32>>>);

#[handler(group = "rv-stall")]
async fn stall(t: RvTick, seen: &Seen, gate: &Gate, ctx: &Context) -> eventkit::Result<()> {
    if (100..200).contains(&t.n) {
        gate.0.acquire().await.unwrap().forget();
    }
    seen.0.push((t.n, ctx.record().partition, ctx.record().offset));
    Ok(())
}

#[handler(group = "rv-retry")]
async fn retry(t: RvTick, seen: &Seen, fails: &Fails, ctx: &Context) -> Result<(), String> {
    seen.0.push((t.n, ctx.record().partition, ctx.record().offset));
    let mut f = fails.0.lock().unwrap();
    if let Some(left) = f.get_mut(&t.n) {
        if *left > 0 {
            *left -= 1;
            return Err(format!("fail {}", t.n));
        }
    }
    Ok(())
}

const TOKEN: &str = "tok";

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new().post(format!("{base}{path}")).bearer_auth(TOKEN).json(&body).send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}
async fn get(base: &str, path: &str) -> Value {
    reqwest::Client::new().get(format!("{base}{path}")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap()
}

fn no_kafka_check() -> eventkit::ReadinessChecks {
    eventkit_tests::groups_only_readiness()
}

/// Finds a lane key that lands on `partition` (publishing probes n = 0..).
async fn key_on(running: &eventkit::Running, partition: i32, start: u32) -> String {
    for i in 0..100 {
        let lane = format!("k{}-{i}", partition);
        let p = running.publisher().publish(&RvTick { lane: lane.clone(), n: start + i }).await.unwrap();
        if p.partition == partition {
            return lane;
        }
    }
    panic!("no key");
}

async fn wait_assigned(base: &str, group: &str) {
    for _ in 0..300 {
        let b = get(base, "/groups").await;
        let g = b["groups"].as_array().unwrap().iter().find(|g| g["group"] == json!(group)).cloned().unwrap_or(Value::Null);
        if g["partitions"].as_array().is_some_and(|p| p.len() == 2) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not assigned");
}

/// A held partition whose parked records fill half the buffer stalls every other partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holding_one_partition_must_not_stall_the_others() {
    let target = Target::embedded("stall");
    let (seen, gate) = (Seen::default(), Gate::default());
    let running = target.app().groups(["rv-stall"]).state(seen.clone()).state(gate.clone())
        .admin_addr("127.0.0.1:0").admin_token(TOKEN).readiness(no_kafka_check())
        .max_buffered(10, 32 << 20)
        .build().unwrap().start().await.unwrap();
    let base = format!("http://{}", running.admin_addr().unwrap());
    let group = target.group("rv-stall");
    wait_assigned(&base, &group).await;
    let k0 = key_on(&running, 0, 0).await;
    let k1 = key_on(&running, 1, 0).await;
    for n in 100..130 {
        running.publisher().publish(&RvTick { lane: k0.clone(), n }).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (s, b) = post(&base, "/groups/pause", json!({"group": "rv-stall", "topic": "rv.ticks", "partition": 0})).await;
    assert_eq!(s, 200, "{b}");
    gate.0.add_permits(1000);
    for n in 300..305 {
        running.publisher().publish(&RvTick { lane: k1.clone(), n }).await.unwrap();
    }
    let ok = eventually(Duration::from_secs(15), || (300..305).all(|n| seen.0.snapshot().iter().any(|s| s.0 == n))).await;
    assert!(ok, "partition 1 goes on while partition 0 is held: seen {:?}", seen.0.snapshot());
    running.shutdown().await.unwrap();
}

/// Hostile records on the control topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_control_records() {
    let target = Target::embedded("hostile");
    let control = target.topic("eventkit.control");
    let group = target.group("rv-stall");
    target.create_topic("eventkit.control", 1).await;
    target.produce_raw(&control, "x", &[], b"{not json").await;
    target.produce_raw(&control, "x", &[], &vec![b'a'; 900_000]).await;
    target.produce_raw(&control, "x", &[], br#"{"id":"1","action":"pause","group":5,"by":"x","at":"y"}"#).await;
    target.produce_raw(&control, "x", &[], br#"{"id":"1","action":"explode","group":"g","by":"x","at":"y"}"#).await;
    // A partition without its topic: the fold takes it as the whole group.
    let bad = json!({"id":"1","action":"pause","group": group, "partition": 0, "by":"mallory","at":"now"});
    target.produce_raw(&control, "y", &[], bad.to_string().as_bytes()).await;
    let (seen, gate) = (Seen::default(), Gate::default());
    let running = target.app().groups(["rv-stall"]).state(seen.clone()).state(gate.clone())
        .admin_addr("127.0.0.1:0").admin_token(TOKEN).readiness(no_kafka_check())
        .build().unwrap().start().await.unwrap();
    let base = format!("http://{}", running.admin_addr().unwrap());
    let holds = running.control().holds(&group).list();
    assert_eq!(holds.len(), 1, "only the partition-without-topic record holds (as the whole group): {holds:?}");
    assert!(holds[0].scope.topic.is_none() && holds[0].scope.partition.is_none(), "{holds:?}");
    let (s, b) = post(&base, "/groups/resume", json!({"group": "rv-stall"})).await;
    assert_eq!(s, 200, "an operator can resume the group: {b}");
    assert!(running.control().holds(&group).is_empty(), "{:?}", running.control().holds(&group));
    let (s, _) = post(&base, "/groups/resume", json!({"group": "rv-stall", "partition": 0})).await;
    assert_eq!(s, 422, "a partition needs its topic");
    let sent = running.control().send(Command::new(Action::Pause, group.clone(), Scope { topic: None, partition: Some(3) }, "api")).await;
    assert!(sent.is_err(), "the Rust API refuses a partition without its topic too");
    running.shutdown().await.unwrap();
}

/// An app running the stalling group, as it is.
async fn plain(target: &Target) -> (eventkit::Running, Seen, Gate) {
    let (seen, gate) = (Seen::default(), Gate::default());
    let running = target.app().groups(["rv-stall"]).state(seen.clone()).state(gate.clone()).build().unwrap().start().await.unwrap();
    (running, seen, gate)
}

/// `changed` of a command is that command's effect, not the difference with a stale snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_reports_the_command_itself() {
    let target = Target::embedded("changed");
    let group = target.group("rv-stall");
    let (running, _seen, _gate) = plain(&target).await;
    let control = running.control();
    let mut wrong = 0;
    for i in 0..5 {
        // Another operator (CLI) pauses the group; this one, a moment later, pauses it too.
        let mut config = eventkit::Config::default();
        config.bootstrap_servers = Some(target.bootstrap().to_owned());
        config.topic_prefix = target.prefix.clone();
        config.group_prefix = target.prefix.clone();
        let args = ["svc", "groups", "pause", "--group", "rv-stall"].iter().map(|s| s.to_string()).collect();
        eventkit::cli::run(args, &config).await.unwrap();
        let out = control.send(Command::new(Action::Pause, group.clone(), Scope { topic: None, partition: None }, "me")).await.unwrap();
        assert!(out.applied, "round {i}");
        if out.changed {
            wrong += 1;
        }
        let out = control.send(Command::new(Action::Resume, group.clone(), Scope { topic: None, partition: None }, "me")).await.unwrap();
        assert!(out.changed);
    }
    assert_eq!(wrong, 0, "a pause of a paused group reported changed");
    running.shutdown().await.unwrap();
}

/// A pause while a record waits for its retry: it settles once resumed, handled 3 times (2 failures), committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_during_retry_backoff() {
    let target = Target::embedded("retry");
    let group = target.group("rv-retry");
    let topic = target.topic("rv.ticks");
    let (seen, fails) = (Seen::default(), Fails::default());
    fails.0.lock().unwrap().insert(500, 2);
    let running = target.app().groups(["rv-retry"]).state(seen.clone()).state(fails.clone())
        .retry_backoff((Duration::from_secs(2), Duration::from_secs(2))).commit_interval(Duration::from_millis(100))
        .build().unwrap().start().await.unwrap();
    assert!(eventually(Duration::from_secs(60), || running.readiness().is_ready()).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let p = running.publisher().publish(&RvTick { lane: "r".into(), n: 500 }).await.unwrap();
    assert!(eventually(Duration::from_secs(20), || seen.0.len() == 1).await);
    let out = running.control().send(Command::new(Action::Pause, group.clone(), Scope { topic: None, partition: None }, "me")).await.unwrap();
    assert!(out.applied);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(seen.0.len(), 1, "nothing more while paused: {:?}", seen.0.snapshot());
    running.control().send(Command::new(Action::Resume, group.clone(), Scope { topic: None, partition: None }, "me")).await.unwrap();
    assert!(eventually(Duration::from_secs(20), || seen.0.len() == 3).await, "{:?}", seen.0.snapshot());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(seen.0.len(), 3, "{:?}", seen.0.snapshot());
    running.shutdown().await.unwrap();
    assert_eq!(target.committed(&group, &topic, p.partition), Some(p.offset + 1));
}

/// Shutdown while a partition is held with parked records: fast, the offset stays at the parked record, restart keeps the pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_held_then_restart() {
    let target = Target::embedded("shutdown");
    let group = target.group("rv-stall");
    let topic = target.topic("rv.ticks");
    let (seen, gate) = (Seen::default(), Gate::default());
    let start = || async {
        target.app().groups(["rv-stall"]).state(seen.clone()).state(gate.clone())
            .admin_addr("127.0.0.1:0").admin_token(TOKEN).readiness(no_kafka_check()).commit_interval(Duration::from_millis(100))
            .build().unwrap().start().await.unwrap()
    };
    let running = start().await;
    let base = format!("http://{}", running.admin_addr().unwrap());
    wait_assigned(&base, &group).await;
    let k0 = key_on(&running, 0, 0).await;
    let mut offsets = vec![];
    for n in 100..105 {
        offsets.push(running.publisher().publish(&RvTick { lane: k0.clone(), n }).await.unwrap().offset);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    running.control().send(Command::new(Action::Pause, group.clone(), Scope { topic: Some(topic.clone()), partition: Some(0) }, "me")).await.unwrap();
    gate.0.add_permits(1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let handled: Vec<u32> = seen.0.snapshot().iter().filter(|s| s.0 >= 100).map(|s| s.0).collect();
    running.shutdown().await.unwrap();
    let committed = target.committed(&group, &topic, 0);
    assert!(committed.is_some_and(|c| c <= offsets[handled.len().min(offsets.len() - 1)]), "the offset stays at the first record not handled: {committed:?}, {offsets:?}, handled {handled:?}");
    gate.0.add_permits(1000);
    let running = start().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let h2: Vec<u32> = seen.0.snapshot().iter().filter(|s| s.0 >= 100).map(|s| s.0).collect();
    assert_eq!(h2, handled, "still held after restart");
    running.control().send(Command::new(Action::Resume, group.clone(), Scope { topic: None, partition: None }, "me")).await.unwrap();
    assert!(eventually(Duration::from_secs(20), || seen.0.snapshot().iter().filter(|s| s.0 >= 100).count() >= 5).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut h3: Vec<u32> = seen.0.snapshot().iter().filter(|s| s.0 >= 100).map(|s| s.0).collect();
    h3.sort();
    assert_eq!(h3, (100..105).collect::<Vec<_>>());
    running.shutdown().await.unwrap();
}

/// Two operators at once: a pause and a resume of the same group, each through `Control::send`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sends_report_their_own_effect() {
    let target = Target::embedded("concurrent");
    let group = target.group("rv-stall");
    let (running, _seen, _gate) = plain(&target).await;
    let control = running.control();
    let mut wrong = 0;
    for i in 0..10 {
        let (a, b) = (control.clone(), control.clone());
        let (g1, g2) = (group.clone(), group.clone());
        let pa = tokio::spawn(async move { a.send(Command::new(Action::Pause, g1, Scope { topic: None, partition: None }, "a")).await.unwrap() });
        let pb = tokio::spawn(async move { b.send(Command::new(Action::Resume, g2, Scope { topic: None, partition: None }, "b")).await.unwrap() });
        let (oa, ob) = (pa.await.unwrap(), pb.await.unwrap());
        let end = control.holds(&group);
        // Whatever the log order, the pause changed something (nothing was paused before it) unless the resume came first: then the resume changed nothing, and the pause did.
        // In log order: the pause first (it changed something; the resume then did too), or the
        // resume first (it changed nothing; the pause did).
        assert!(oa.applied && ob.applied, "round {i}");
        if !oa.changed || ob.changed != end.is_empty() {
            wrong += 1;
        }
        control.send(Command::new(Action::Resume, group.clone(), Scope { topic: None, partition: None }, "reset")).await.unwrap();
    }
    running.shutdown().await.unwrap();
    assert_eq!(wrong, 0, "each command reports its own effect");
}

/// A transient error while reading the control topic at start: the group must not start unpaused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_error_at_start_does_not_drop_the_pause() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let target = Target::embedded("failopen");
    let group = target.group("rv-stall");
    let (seen, gate) = (Seen::default(), Gate::default());
    let start = || async {
        target.app().groups(["rv-stall"]).state(seen.clone()).state(gate.clone()).commit_interval(Duration::from_millis(100))
            .build().unwrap().start().await.unwrap()
    };
    let running = start().await;
    assert!(eventually(Duration::from_secs(60), || running.readiness().is_ready()).await);
    for n in 1..=2 {
        running.publisher().publish(&RvTick { lane: format!("l{n}"), n }).await.unwrap();
    }
    assert!(eventually(Duration::from_secs(30), || seen.0.len() == 2).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = running.control().send(Command::new(Action::Pause, group.clone(), Scope { topic: None, partition: None }, "op")).await.unwrap();
    assert!(out.applied && out.changed);
    for n in 3..=6 {
        running.publisher().publish(&RvTick { lane: format!("l{n}"), n }).await.unwrap();
    }
    running.shutdown().await.unwrap();
    assert_eq!(seen.0.len(), 2);
    let broker = target.embedded_broker().unwrap();
    broker.fail_requests(RDKafkaApiKey::ListOffsets, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 60]).unwrap();
    let running = start().await;
    // Held as a whole until the control topic could be read, then as it says; nothing handled.
    assert!(!running.control().holds(&group).is_empty(), "held from the start");
    assert!(
        eventually(Duration::from_secs(60), || running.control().holds(&group).list().iter().any(|h| h.by == "op")).await,
        "the operator's pause, once the control topic is read: {:?}",
        running.control().holds(&group).list()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(seen.0.snapshot().iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 2], "nothing of the paused group handled after the restart");
    running.control().send(Command::new(Action::Resume, group.clone(), Scope { topic: None, partition: None }, "op")).await.unwrap();
    assert!(eventually(Duration::from_secs(60), || seen.0.len() == 6).await, "{:?}", seen.0.snapshot());
    running.shutdown().await.unwrap();
}

async fn broker_restart_while_paused(target: Target, set_down: impl Fn(bool)) {
    let group = target.group("rv-stall");
    let (seen, gate) = (Seen::default(), Gate::default());
    let running = target.app().groups(["rv-stall"]).state(seen.clone()).state(gate.clone()).readiness(no_kafka_check())
        .build().unwrap().start().await.unwrap();
    assert!(eventually(Duration::from_secs(60), || running.readiness().is_ready()).await);
    let out = running.control().send(Command::new(Action::Pause, group.clone(), Scope { topic: None, partition: None }, "op")).await.unwrap();
    assert!(out.applied && out.changed);
    set_down(true);
    tokio::time::sleep(Duration::from_secs(5)).await;
    set_down(false);
    tokio::time::sleep(Duration::from_secs(5)).await;
    for n in 1..=4 {
        running.publisher().publish(&RvTick { lane: format!("l{n}"), n }).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(seen.0.len(), 0, "held across the broker restart");
    running.control().send(Command::new(Action::Resume, group.clone(), Scope { topic: None, partition: None }, "op")).await.unwrap();
    assert!(eventually(Duration::from_secs(60), || seen.0.len() == 4).await, "{:?}", seen.0.snapshot());
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_embedded() {
    let target = Target::embedded("brestart");
    let b = target.embedded_broker().unwrap().clone();
    broker_restart_while_paused(target, move |d| b.set_down(d).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_real() {
    let Some(bin) = eventkit_tests::noida::Noida::binary("brestart") else { return };
    let noida = eventkit_tests::noida::Noida::start(bin);
    let target = Target::at(noida.bootstrap(), "brestart");
    let noida = Mutex::new(noida);
    broker_restart_while_paused(target, move |d| if d { noida.lock().unwrap().down() } else { noida.lock().unwrap().up() }).await;
}

/// The control topic deleted and created again (an operator "clearing every pause", or a broker
/// that lost its data): the followers notice the log went back and read it anew, so a command
/// written to the new log applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_topic_created_again_is_read_anew() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let Some(target) = Target::real("recreated") else { return };
    let group = target.group("rv-stall");
    let control_topic = target.topic("eventkit.control");
    let (seen, gate) = (Seen::default(), Gate::default());
    let running = target.app().groups(["rv-stall"]).state(seen.clone()).state(gate.clone()).readiness(no_kafka_check()).build().unwrap().start().await.unwrap();
    assert!(eventually(Duration::from_secs(60), || running.readiness().is_ready()).await);
    // Two commands, so that the new log's first offsets are below where the follower is.
    running.control().send(Command::new(Action::Pause, group.clone(), Scope { topic: None, partition: None }, "op")).await.unwrap();
    running.control().send(Command::new(Action::Pause, group.clone(), Scope { topic: Some(target.topic("rv.ticks")), partition: Some(1) }, "op")).await.unwrap();
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new().set("bootstrap.servers", target.bootstrap()).create().unwrap();
    let deleted = admin.delete_topics(&[&control_topic], &AdminOptions::new()).await;
    if !deleted.as_ref().is_ok_and(|r| r.iter().all(Result::is_ok)) {
        eprintln!("note: this broker cannot delete topics ({deleted:?}); skipped");
        running.shutdown().await.unwrap();
        return;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    target.create_topic("eventkit.control", 1).await;
    let out = running.control().send(Command::new(Action::Resume, group.clone(), Scope { topic: None, partition: None }, "op")).await.unwrap();
    assert!(out.applied, "the resume on the new log applies");
    assert!(eventually(Duration::from_secs(30), || running.control().holds(&group).is_empty()).await, "{:?}", running.control().holds(&group));
    for n in 1..=2 {
        running.publisher().publish(&RvTick { lane: format!("l{n}"), n }).await.unwrap();
    }
    assert!(eventually(Duration::from_secs(60), || seen.0.len() == 2).await, "{:?}", seen.0.snapshot());
    running.shutdown().await.unwrap();
}
