//! Operators steering running consumers (`eventkit::control`): pause and resume a partition, a
//! topic or a whole group from the admin API and the command line, on both brokers. A paused
//! partition handles nothing until resumed while the rest of its group goes on; the pause holds
//! across a restart (a new instance reads it before its groups start); health shows the pause,
//! not a stuck partition; every action needs the admin token, and a bad request changes nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use eventkit::{handler, integration_event, Context};
use eventkit_tests::{eventually, on_both_brokers, Log, Target};
use reqwest::StatusCode;
use serde_json::{json, Value};

#[integration_event(topic = "control.ticks", key = lane, partitions = 2)]
#[derive(Debug, Clone, PartialEq)]
pub struct ControlTick {
    pub lane: String,
    pub n: u32,
}

/// What the paused group handled (`n`s).
#[derive(Clone, Default)]
struct Worked(Log<u32>);

/// What the group that is never paused handled.
#[derive(Clone, Default)]
struct Observed(Log<u32>);

#[handler(group = "control-workers")]
async fn work(tick: ControlTick, worked: &Worked, _ctx: &Context) -> eventkit::Result<()> {
    worked.0.push(tick.n);
    Ok(())
}

#[handler(group = "control-observer")]
async fn observe(tick: ControlTick, observed: &Observed, _ctx: &Context) -> eventkit::Result<()> {
    observed.0.push(tick.n);
    Ok(())
}

const TOKEN: &str = "control-admin-token";
const READ_TOKEN: &str = "control-read-token";

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("POST");
        let status = response.status();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}")))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self.http.get(format!("{}{path}", self.base)).bearer_auth(TOKEN).send().await.expect("GET");
        let status = response.status();
        (status, response.json().await.expect("JSON"))
    }

    /// Waits until this member has both partitions of the group.
    async fn wait_assigned(&self, group: &str) {
        let assigned = |g: &Value| g["partitions"].as_array().is_some_and(|p| p.len() == 2);
        let mut g = Value::Null;
        for _ in 0..300 {
            g = self.group(group).await;
            if assigned(&g) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("both partitions assigned: {g}");
    }

    /// The group's entry in `GET /groups`.
    async fn group(&self, group: &str) -> Value {
        let (_, body) = self.get("/groups").await;
        body["groups"].as_array().and_then(|gs| gs.iter().find(|g| g["group"] == json!(group)).cloned()).unwrap_or(Value::Null)
    }
}

/// Publishes ticks `ns`, each under its own key, and returns the partition each went to.
async fn publish(running: &eventkit::Running, ns: impl IntoIterator<Item = u32>) -> Vec<(u32, i32)> {
    let publisher = running.publisher();
    let mut out = Vec::new();
    for n in ns {
        let published = publisher.publish(&ControlTick { lane: format!("lane-{n}"), n }).await.expect("publish");
        out.push((n, published.partition));
    }
    out
}

async fn pause_and_resume_a_partition_from_the_admin_api(target: Target) {
    let worked = Worked::default();
    let running = target
        .app()
        .groups(["control-workers"])
        .state(worked.clone())
        .admin_addr("127.0.0.1:0")
        .admin_token(TOKEN)
        .admin_read_token(READ_TOKEN)
        .stuck_after(Duration::from_secs(2))
        .readiness(eventkit_tests::groups_only_readiness())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let api = Api { base: format!("http://{}", running.admin_addr().unwrap()), http: reqwest::Client::new() };
    let group = target.group("control-workers");
    let topic = target.topic("control.ticks");
    assert!(eventually(Duration::from_secs(60), || running.readiness().is_ready()).await, "the group joins");
    api.wait_assigned(&group).await;

    // Every action needs the admin token; a read token cannot act. Nothing is paused by these.
    let pause = json!({ "group": "control-workers", "topic": "control.ticks", "partition": 0, "by": "alice" });
    let (status, body) = api.post("/groups/pause", None, pause.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = api.post("/groups/pause", Some(READ_TOKEN), pause.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = api.post("/groups/resume", Some("wrong"), pause.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    // A bad request gets a 4xx naming the field, and changes nothing.
    let bad = [
        (json!({ "group": "no-such-group" }), "group"),
        (json!({ "group": "control-workers", "topic": "no.such.topic" }), "topic"),
        (json!({ "group": "control-workers", "topic": "control.ticks", "partition": 2 }), "partition"),
        (json!({ "group": "control-workers", "topic": "control.ticks", "partition": -1 }), "partition"),
        (json!({ "group": "control-workers", "partition": 0 }), "partition"),
        (json!({ "group": "control-workers", "by": "" }), "by"),
        (json!({ "group": "control-workers", "colour": "red" }), "colour"),
        (json!({ "group": 7 }), "group"),
    ];
    for (body, field) in bad {
        let (status, answer) = api.post("/groups/pause", Some(TOKEN), body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} -> {answer}");
        assert_eq!(answer["field"], json!(field), "{body} -> {answer}");
    }
    assert_eq!(api.group(&group).await["holds"], json!([]), "the bad requests paused nothing");

    // Pause partition 0: applied here before the answer; pausing again changes nothing.
    let (status, body) = api.post("/groups/pause", Some(TOKEN), pause.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!((body["applied"].as_bool(), body["changed"].as_bool()), (Some(true), Some(true)), "{body}");
    assert_eq!(body["holds"][0]["topic"], json!(topic), "{body}");
    assert_eq!(body["holds"][0]["partition"], json!(0), "{body}");
    assert!(body["holds"][0]["by"].as_str().unwrap().starts_with("alice (admin API, 127.0.0.1:"), "who paused it: {body}");
    let (status, again) = api.post("/groups/pause", Some(TOKEN), pause.clone()).await;
    assert_eq!((status, again["changed"].as_bool()), (StatusCode::OK, Some(false)), "idempotent: {again}");
    assert_eq!(again["holds"].as_array().unwrap().len(), 1, "{again}");

    // Resuming one partition of a paused topic is refused, naming what holds it.
    let (status, body) = api.post("/groups/pause", Some(TOKEN), json!({ "group": "control-workers", "topic": "control.ticks" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api.post("/groups/resume", Some(TOKEN), json!({ "group": "control-workers", "topic": "control.ticks", "partition": 1 })).await;
    assert_eq!((status, &body["field"]), (StatusCode::CONFLICT, &json!("topic")), "{body}");
    let (status, body) = api.post("/groups/resume", Some(TOKEN), json!({ "group": "control-workers", "topic": "control.ticks", "partition": 0 })).await;
    assert_eq!(status, StatusCode::CONFLICT, "partition 0 is also held by the topic's pause: {body}");
    // Pause the topic's partition 0 alone again: resume the topic, then pause partition 0.
    let (status, body) = api.post("/groups/resume", Some(TOKEN), json!({ "group": "control-workers", "topic": "control.ticks" })).await;
    assert_eq!((status, body["holds"].clone()), (StatusCode::OK, json!([])), "resuming the topic resumed its partition too: {body}");
    let (status, body) = api.post("/groups/pause", Some(TOKEN), pause.clone()).await;
    assert_eq!((status, body["changed"].as_bool()), (StatusCode::OK, Some(true)), "{body}");

    // The status shows partition 0 held (and paused), partition 1 not.
    let held_only_0 = |g: &Value| {
        let ps = g["partitions"].as_array().cloned().unwrap_or_default();
        ps.len() == 2 && ps.iter().all(|p| p["held"] == json!(p["partition"] == json!(0)) && (p["partition"] != json!(0) || p["paused"] == json!(true)))
    };
    let mut g = Value::Null;
    for _ in 0..300 {
        g = api.group(&group).await;
        if held_only_0(&g) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(held_only_0(&g), "partition 0 held and paused, 1 running: {g}");

    // Events to both partitions: partition 1's are handled, partition 0's are not.
    let sent = publish(&running, 1..=12).await;
    let on = |p: i32| sent.iter().filter(|s| s.1 == p).map(|s| s.0).collect::<BTreeSet<u32>>();
    let (p0, p1) = (on(0), on(1));
    assert!(!p0.is_empty() && !p1.is_empty(), "keys spread over both partitions: {sent:?}");
    assert!(
        eventually(Duration::from_secs(60), || p1.iter().all(|n| worked.0.snapshot().contains(n))).await,
        "partition 1 goes on: {:?} of {p1:?}",
        worked.0.snapshot()
    );
    // Past the stuck threshold: a held partition is paused, not stuck, and the app stays ready.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let handled: BTreeSet<u32> = worked.0.snapshot().into_iter().collect();
    assert!(handled.is_disjoint(&p0), "nothing of paused partition 0 was handled: {handled:?}, partition 0 has {p0:?}");
    let (status, ready) = api.get("/health/ready").await;
    assert_eq!(status, StatusCode::OK, "a paused partition is not stuck: {ready}");

    // Resume: partition 0's events are handled, where it stopped.
    let (status, body) = api.post("/groups/resume", Some(TOKEN), json!({ "group": "control-workers", "topic": "control.ticks", "partition": 0, "by": "bob" })).await;
    assert_eq!((status, body["changed"].as_bool(), body["holds"].clone()), (StatusCode::OK, Some(true), json!([])), "{body}");
    assert!(
        eventually(Duration::from_secs(60), || p0.iter().all(|n| worked.0.snapshot().contains(n))).await,
        "partition 0 goes on once resumed: {:?} of {p0:?}",
        worked.0.snapshot()
    );
    let handled = worked.0.snapshot();
    assert_eq!(handled.len(), 12, "each event handled once: {handled:?}");
    let (status, body) = api.post("/groups/resume", Some(TOKEN), json!({ "group": "control-workers" })).await;
    assert_eq!((status, body["changed"].as_bool()), (StatusCode::OK, Some(false)), "resuming what runs changes nothing: {body}");
    running.shutdown().await.unwrap();
}

on_both_brokers!(pause_and_resume_a_partition_from_the_admin_api);

/// `PROGRAM groups ...`, as the command line runs it, against `target`.
async fn cli(target: &Target, args: &[&str]) -> eventkit::Result<()> {
    let mut config = eventkit::Config::default();
    config.bootstrap_servers = Some(target.bootstrap().to_owned());
    config.topic_prefix = target.prefix.clone();
    config.group_prefix = target.prefix.clone();
    let args = std::iter::once("svc").chain(args.iter().copied()).map(String::from).collect();
    eventkit::cli::run(args, &config).await
}

async fn a_paused_group_stays_paused_across_a_restart_until_resumed(target: Target) {
    let (worked, observed) = (Worked::default(), Observed::default());
    let start = || async {
        let running = target
            .app()
            .groups(["control-workers", "control-observer"])
            .state(worked.clone())
            .state(observed.clone())
            .build()
            .unwrap()
            .start()
            .await
            .unwrap();
        assert!(eventually(Duration::from_secs(60), || running.readiness().is_ready()).await, "the groups join");
        running
    };
    let running = start().await;
    publish(&running, [1, 2]).await;
    assert!(eventually(Duration::from_secs(60), || worked.0.len() == 2 && observed.0.len() == 2).await, "both groups handle");

    // Paused from the command line, while it runs.
    cli(&target, &["groups", "pause", "--group", "control-workers", "--by", "carol"]).await.expect("groups pause");
    let group = target.group("control-workers");
    let control = running.control();
    assert!(eventually(Duration::from_secs(30), || !control.holds(&group).is_empty()).await, "the running app applies the command");

    // Restarted: the new instance starts paused, before handling anything.
    running.shutdown().await.unwrap();
    let running = start().await;
    assert!(!running.control().holds(&group).is_empty(), "held as the app starts");
    publish(&running, [3, 4, 5]).await;
    assert!(eventually(Duration::from_secs(60), || observed.0.len() == 5).await, "the other group handles: {:?}", observed.0.snapshot());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(worked.0.snapshot(), vec![1, 2], "the paused group handled nothing after the restart");
    let holds = running.control().holds(&group).list();
    assert_eq!(holds.len(), 1, "{holds:?}");
    assert!(holds[0].scope.topic.is_none() && holds[0].by.starts_with("carol (command line)"), "{holds:?}");

    // Resumed from the command line: the events waiting are handled.
    cli(&target, &["groups", "resume", "--group", "control-workers"]).await.expect("groups resume");
    assert!(
        eventually(Duration::from_secs(60), || worked.0.len() == 5).await,
        "handled once resumed: {:?}",
        worked.0.snapshot()
    );
    let mut handled = worked.0.snapshot();
    handled.sort_unstable();
    assert_eq!(handled, vec![1, 2, 3, 4, 5]);
    cli(&target, &["groups", "holds"]).await.expect("groups holds");
    running.shutdown().await.unwrap();
}

on_both_brokers!(a_paused_group_stays_paused_across_a_restart_until_resumed);

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn a_replay_by_time_delivers_a_window_again_to_one_group(target: Target) {
    let (worked, observed) = (Worked::default(), Observed::default());
    let running = target
        .app()
        .groups(["control-workers", "control-observer"])
        .state(worked.clone())
        .state(observed.clone())
        .admin_addr("127.0.0.1:0")
        .admin_token(TOKEN)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let api = Api { base: format!("http://{}", running.admin_addr().unwrap()), http: reqwest::Client::new() };
    let (group, topic) = (target.group("control-workers"), target.topic("control.ticks"));
    publish(&running, [1, 2]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let from = now_ms();
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish(&running, [3, 4, 5]).await;
    assert!(eventually(Duration::from_secs(60), || worked.0.len() == 5 && observed.0.len() == 5).await, "both groups handle the five");
    let sorted = |log: &Log<u32>| {
        let mut all = log.snapshot();
        all.sort_unstable();
        all
    };
    let committed_before: Vec<Option<i64>> = (0..2).map(|p| target.committed(&group, &topic, p)).collect();

    // Bad requests name their field and replay nothing.
    let now = now_ms();
    let bad = [
        (json!({ "group": "control-workers", "topic": "control.ticks", "from": "yesterday", "to": now }), "from"),
        (json!({ "group": "control-workers", "topic": "control.ticks", "from": from, "to": from - 1 }), "to"),
        (json!({ "group": "control-workers", "topic": "control.ticks", "from": true, "to": now }), "from"),
        (json!({ "group": "control-workers", "topic": "control.ticks", "from": from, "to": now, "handler": "control::nope" }), "handler"),
        (json!({ "group": "control-workers", "topic": "other.topic", "from": from, "to": now }), "topic"),
        (json!({ "group": "control-workers", "from": from, "to": now }), "topic"),
        // The window must have closed, so that the same replay asked again is the same.
        (json!({ "group": "control-workers", "topic": "control.ticks", "from": from }), "to"),
        (json!({ "group": "control-workers", "topic": "control.ticks", "from": from, "to": now + 60_000 }), "to"),
    ];
    for (body, field) in bad {
        let (status, answer) = api.post("/groups/replay", Some(TOKEN), body.clone()).await;
        assert!(status == StatusCode::UNPROCESSABLE_ENTITY, "{body} -> {status} {answer}");
        assert_eq!(answer["field"], json!(field), "{body} -> {answer}");
    }
    let (status, _) = api.post("/groups/replay", Some(READ_TOKEN), json!({ "group": "control-workers", "topic": "control.ticks", "from": from })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "no read token is configured here: it is a wrong token");

    // The window from `from` on (the three later events) again, to the workers only.
    let replay = json!({ "group": "control-workers", "topic": "control.ticks", "from": from, "to": now_ms(), "by": "erin" });
    let (status, body) = api.post("/groups/replay", Some(TOKEN), replay.clone()).await;
    assert_eq!((status, body["replayed"].as_u64()), (StatusCode::OK, Some(3)), "{body}");
    assert!(
        eventually(Duration::from_secs(60), || sorted(&worked.0) == vec![1, 2, 3, 3, 4, 4, 5, 5]).await,
        "the window's events again, once each: {:?}",
        sorted(&worked.0)
    );
    // The same replay again: answered with the first, nothing replayed.
    let (status, again) = api.post("/groups/replay", Some(TOKEN), replay.clone()).await;
    assert_eq!((status, again["replayed"].as_u64()), (StatusCode::OK, Some(0)), "{again}");
    assert!(again["before"]["by"].as_str().unwrap().starts_with("erin (admin API"), "{again}");
    assert_eq!(again["before"]["replay"]["records"], json!(3), "{again}");
    // Asked `again`, for one handler, up to now: once more (the copies of the first replay, now
    // in the window, are not copied).
    let mut once_more = replay.clone();
    once_more["again"] = json!(true);
    once_more["to"] = json!(now_ms());
    once_more["handler"] = json!("control::work");
    let (status, body) = api.post("/groups/replay", Some(TOKEN), once_more).await;
    assert_eq!((status, body["replayed"].as_u64(), body["skipped_replays"].as_u64()), (StatusCode::OK, Some(3), Some(3)), "{body}");
    assert!(
        eventually(Duration::from_secs(60), || sorted(&worked.0) == vec![1, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5]).await,
        "{:?}",
        sorted(&worked.0)
    );
    // The other group handled nothing again; the workers' committed offsets never went back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sorted(&observed.0), vec![1, 2, 3, 4, 5], "the observer skips the copies");
    for (p, before) in committed_before.iter().enumerate() {
        let after = target.committed(&group, &topic, p as i32);
        assert!(after >= *before, "partition {p}: committed {before:?} -> {after:?}");
    }
    running.shutdown().await.unwrap();
}

on_both_brokers!(a_replay_by_time_delivers_a_window_again_to_one_group);

/// What the reset group handled, and the gate record 99 waits at.
#[derive(Clone, Default)]
struct Resets {
    seen: Log<u32>,
    released: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[handler(group = "control-resets")]
async fn reset_work(tick: ControlTick, resets: &Resets, _ctx: &Context) -> eventkit::Result<()> {
    resets.seen.push(tick.n);
    if tick.n == 99 {
        while !resets.released.load(std::sync::atomic::Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// How many times each event was handled.
fn counts(log: &Log<u32>) -> std::collections::BTreeMap<u32, usize> {
    let mut out = std::collections::BTreeMap::new();
    for n in log.snapshot() {
        *out.entry(n).or_insert(0) += 1;
    }
    out
}

async fn a_reset_moves_a_running_group_and_refuses_to_skip_unsettled_records(target: Target) {
    let resets = Resets::default();
    let start = || async {
        target
            .app()
            .groups(["control-resets"])
            .state(resets.clone())
            .admin_addr("127.0.0.1:0")
            .admin_token(TOKEN)
            .build()
            .unwrap()
            .start()
            .await
            .unwrap()
    };
    let running = start().await;
    let api = Api { base: format!("http://{}", running.admin_addr().unwrap()), http: reqwest::Client::new() };
    let group = target.group("control-resets");
    publish(&running, [1, 2]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let at = now_ms();
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish(&running, [3, 4]).await;
    assert!(eventually(Duration::from_secs(60), || resets.seen.len() == 4).await, "{:?}", resets.seen.snapshot());
    api.wait_assigned(&group).await;

    // Bad requests name their field and move nothing.
    let bad = [
        (json!({ "group": "control-resets", "to": "sideways" }), "to"),
        (json!({ "group": "control-resets", "to": "earliest", "offset": 1 }), "to"),
        (json!({ "group": "control-resets" }), "to"),
        (json!({ "group": "control-resets", "time": "noon" }), "time"),
        (json!({ "group": "control-resets", "topic": "control.ticks", "partition": 0, "offset": 10_000 }), "offset"),
        (json!({ "group": "control-resets", "topic": "control.ticks", "partition": 7, "to": "earliest" }), "partition"),
        (json!({ "group": "control-resets", "partition": 0, "to": "earliest" }), "partition"),
        (json!({ "group": "nope", "to": "earliest" }), "group"),
    ];
    for (body, field) in bad {
        let (status, answer) = api.post("/groups/reset", Some(TOKEN), body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} -> {answer}");
        assert_eq!(answer["field"], json!(field), "{body} -> {answer}");
    }
    let (status, _) = api.post("/groups/reset", None, json!({ "group": "control-resets", "to": "earliest" })).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Back to a time: exactly the records at or after it are handled again.
    let (status, body) = api.post("/groups/reset", Some(TOKEN), json!({ "group": "control-resets", "time": at, "by": "grace" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["direct"], json!(false), "{body}");
    assert!(body["partitions"].as_array().unwrap().iter().all(|p| p["status"] == "reset"), "{body}");
    let want = std::collections::BTreeMap::from([(1, 1), (2, 1), (3, 2), (4, 2)]);
    assert!(eventually(Duration::from_secs(60), || counts(&resets.seen) == want).await, "{:?}", counts(&resets.seen));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(counts(&resets.seen), want, "nothing before the time again, nothing twice");

    // A record in flight: moving past it is refused unless forced.
    let sent = publish(&running, [99]).await;
    let p99 = sent[0].1;
    assert!(eventually(Duration::from_secs(60), || resets.seen.snapshot().contains(&99)).await);
    let skip = json!({ "group": "control-resets", "topic": "control.ticks", "partition": p99, "to": "latest" });
    let (status, body) = api.post("/groups/reset", Some(TOKEN), skip.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["partitions"][0]["status"], json!("refused"), "{body}");
    assert!(body["partitions"][0]["reason"].as_str().unwrap().contains("not settled"), "{body}");
    let mut forced = skip.clone();
    forced["force"] = json!(true);
    let (status, body) = api.post("/groups/reset", Some(TOKEN), forced).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The new offset is committed (no record handled since), past the record still running.
    let topic = target.topic("control.ticks");
    let end = body["partitions"][0]["offset"].as_i64().unwrap();
    assert!(eventually(Duration::from_secs(30), || target.committed(&group, &topic, p99) == Some(end)).await, "committed {:?}, want {end}", target.committed(&group, &topic, p99));
    resets.released.store(true, std::sync::atomic::Ordering::Release);
    publish(&running, [5]).await;
    assert!(eventually(Duration::from_secs(60), || resets.seen.snapshot().contains(&5)).await);
    running.shutdown().await.unwrap();

    // The group without members: the command line commits the offsets itself. (Not on the
    // embedded broker: it lives in its app's process, so a stopped service has none; the mock
    // cluster also takes commits from members only once a group existed.)
    if target.kind != "real" {
        return;
    }
    cli(&target, &["groups", "reset", "--group", "control-resets", "--topic", "control.ticks", "--to-earliest"]).await.expect("groups reset");
    let topic = target.topic("control.ticks");
    for p in 0..2 {
        assert_eq!(target.committed(&group, &topic, p), Some(0), "partition {p} committed at its start");
    }
    let before = counts(&resets.seen);
    let running = start().await;
    let again: std::collections::BTreeMap<u32, usize> = before.iter().map(|(n, c)| (*n, c + 1)).collect();
    assert!(eventually(Duration::from_secs(60), || counts(&resets.seen) == again).await, "everything once more: {:?} -> {:?}", before, counts(&resets.seen));
    running.shutdown().await.unwrap();
}

on_both_brokers!(a_reset_moves_a_running_group_and_refuses_to_skip_unsettled_records);
