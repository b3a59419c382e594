//! The fleet view: every instance of a service, seen from any one of them, from the status
//! reports each publishes on the status topic. Two apps of one service in this process and a
//! worker process: all three show `up` in `GET /fleet` of the first, with the partitions of the
//! group they share; the worker, killed with SIGKILL, shows `not reporting`; the second app,
//! shut down, shows `stopped`, and the first then holds every partition; an app of another
//! service never shows. On both brokers.

use std::collections::BTreeSet;
use std::time::Duration;

use eventkit::control::{Action, Command, Scope};
use eventkit::{handler, integration_event, Context};
use eventkit_tests::{on_both_brokers, process, Target};
use serde_json::{json, Value};

#[integration_event(topic = "fleet.ticks", key = id, partitions = 2)]
#[derive(Debug, Clone)]
pub struct FleetTick {
    pub id: String,
}

#[handler(group = "fleet-workers")]
async fn tick(_tick: FleetTick, _ctx: &Context) -> eventkit::Result<()> {
    Ok(())
}

const READ_TOKEN: &str = "fleet-read-token";
const INTERVAL: Duration = Duration::from_millis(300);

async fn fleet(base: &str) -> Value {
    let response = reqwest::Client::new().get(format!("{base}/fleet")).bearer_auth(READ_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Asks `GET /fleet` until `check` holds (Ok) or for `bound` (Err with the last answer).
async fn until(base: &str, bound: Duration, check: impl Fn(&Value) -> bool) -> Result<Value, Value> {
    let end = std::time::Instant::now() + bound;
    loop {
        let view = fleet(base).await;
        if check(&view) {
            return Ok(view);
        }
        if std::time::Instant::now() > end {
            return Err(view);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn instance<'a>(view: &'a Value, name: &str) -> Option<&'a Value> {
    view["instances"].as_array().unwrap().iter().find(|i| i["instance"] == name)
}

/// The partitions of `group` an instance reports, as `topic[p]`.
fn partitions(instance: &Value, group: &str) -> BTreeSet<String> {
    instance["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["group"] == group)
        .flat_map(|g| g["partitions"].as_array().unwrap().iter().map(|p| format!("{}[{}]", p["topic"].as_str().unwrap(), p["partition"])))
        .collect()
}

async fn the_fleet_from_any_instance(target: Target) {
    let group = target.group("fleet-workers");
    let topic = target.topic("fleet.ticks");
    let all: BTreeSet<String> = [format!("{topic}[0]"), format!("{topic}[1]")].into();
    let app = || target.app().service_name("worker").groups(["fleet-workers"]).status_interval(INTERVAL).readiness(eventkit_tests::groups_only_readiness());
    let a = app().admin_addr("127.0.0.1:0").admin_read_token(READ_TOKEN).build().unwrap().start().await.unwrap();
    let b = app().build().unwrap().start().await.unwrap();
    let other = target.app().service_name("another-service").groups(Vec::<&str>::new()).status_interval(INTERVAL).build().unwrap().start().await.unwrap();
    let out = std::env::temp_dir().join(format!("{}-fleet-worker.out", target.prefix));
    let mut child = process::worker(env!("CARGO_BIN_EXE_eventkit-test-worker"), &target, &out, 0);
    child.env("EVENTKIT_STATUS_INTERVAL_MS", INTERVAL.as_millis().to_string());
    let worker = process::Worker(child.spawn().unwrap());
    // Named as this process's apps are, but for its pid.
    let this_host = a.fleet().await.instances.iter().find(|i| i.this).unwrap().report.host.clone();
    let worker_name = format!("worker@{this_host}:{}", worker.id());
    let base = format!("http://{}", a.admin_addr().unwrap());
    let (a_name, b_name) = (a.fleet().await.instances.iter().find(|i| i.this).unwrap().report.instance.clone(), b.fleet().await.instances.iter().find(|i| i.this).unwrap().report.instance.clone());
    assert_ne!(a_name, b_name, "two apps of one process are two instances");

    // All three up; the two apps of the group share its partitions, one each, as each says.
    let last = until(&base, Duration::from_secs(90), |view| {
        let up = |name: &str| instance(view, name).is_some_and(|i| i["state"] == "up");
        let of = |name: &str| instance(view, name).map(|i| partitions(i, &group)).unwrap_or_default();
        let shared = of(&a_name).len() == 1 && of(&b_name).len() == 1 && of(&a_name).union(&of(&b_name)).cloned().collect::<BTreeSet<_>>() == all;
        up(&a_name) && up(&b_name) && up(&worker_name) && shared
    })
    .await
    .unwrap_or_else(|last| panic!("three instances up, the group's partitions shared: {last:#}"));
    assert!(instance(&last, &a_name).unwrap()["this"].as_bool().unwrap());
    assert!(last["instances"].as_array().unwrap().iter().all(|i| i["service"] == "worker"), "only this service's instances: {last:#}");
    // The worker reads the fleet too: it is one of its three.
    let from_b = b.fleet().await;
    assert!(from_b.instance(&a_name).is_some() && from_b.instance(&worker_name).is_some(), "{from_b:?}");

    // An operator's pause shows on the instance that holds the partition.
    let paused = a.control().send(Command::new(Action::Pause, group.clone(), Scope { topic: Some(topic.clone()), partition: Some(0) }, "op")).await.unwrap();
    assert!(paused.applied);
    until(&base, Duration::from_secs(60), |view| {
        view["instances"].as_array().unwrap().iter().any(|i| {
            i["groups"].as_array().unwrap().iter().any(|g| g["group"] == group && g["partitions"].as_array().unwrap().iter().any(|p| p["partition"] == 0 && p["held"] == true))
        })
    })
    .await
    .unwrap_or_else(|last| panic!("the paused partition shows held: {last:#}"));

    // Hostile reports: one under another key than its instance's never counts (it would mark
    // the live app stopped); one dated ten years ahead ages from when it was read.
    let status_topic = target.topic("eventkit.status");
    let future = chrono::Utc::now().timestamp_millis() + 10 * 365 * 24 * 3600 * 1000;
    let report = |instance: &str, stopped: bool| {
        json!({ "instance": instance, "service": "worker", "host": "ghost", "pid": 1, "version": "0", "started_at": "2026-01-01T00:00:00Z",
                "at_ms": future, "interval_ms": 300, "stopped": stopped, "ready": true, "groups": [] })
        .to_string()
    };
    // (Partition 0: the one the reporters write and the readers read.)
    target.produce_raw_to(&status_topic, 0, "not-its-key", report(&b_name, true).as_bytes()).await;
    target.produce_raw_to(&status_topic, 0, "worker@ghost:1", report("worker@ghost:1", false).as_bytes()).await;
    until(&base, Duration::from_secs(60), |view| instance(view, "worker@ghost:1").is_some_and(|i| i["state"] == "not reporting"))
        .await
        .unwrap_or_else(|last| panic!("a report from the future ages from its reading: {last:#}"));
    let view = fleet(&base).await;
    assert_eq!(instance(&view, &a_name).unwrap()["state"], "up", "{view:#}");
    assert_eq!(instance(&view, &b_name).unwrap()["state"], "up", "a report under a key not its own is ignored: {view:#}");

    // Killed without a word: not reporting, once three intervals pass.
    drop(worker);
    until(&base, Duration::from_secs(60), |view| instance(view, &worker_name).is_some_and(|i| i["state"] == "not reporting"))
        .await
        .unwrap_or_else(|last| panic!("the killed worker shows not reporting: {last:#}"));

    // Shut down: stopped, and the other app takes its partition.
    b.shutdown().await.unwrap();
    until(&base, Duration::from_secs(90), |view| {
        instance(view, &b_name).is_some_and(|i| i["state"] == "stopped") && instance(view, &a_name).is_some_and(|i| partitions(i, &group) == all)
    })
    .await
    .unwrap_or_else(|last| panic!("the second app stopped, the first holds every partition: {last:#}"));
    other.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
    let _ = std::fs::remove_file(&out);
}

on_both_brokers!(the_fleet_from_any_instance);
