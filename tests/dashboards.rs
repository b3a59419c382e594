//! The Grafana dashboard (`deploy/grafana/eventkit.json`) and the Prometheus alert rules
//! (`deploy/prometheus/eventkit-alerts.yml`): they name only metrics eventkit exports, the rules
//! pass `promtool check rules` and their unit tests (`promtool test rules`), and the gauges the
//! alerts watch are there and move on a running app (a stuck record, an operator's pause).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use eventkit::{handler, integration_event, Context};
use eventkit_tests::{eventually, on_both_brokers, Log, Target};
use serde_json::{json, Value};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Every metric eventkit describes (`describe_*!("eventkit_...")` in its metrics module).
fn exported() -> BTreeSet<String> {
    let source = std::fs::read_to_string(root().join("eventkit/src/surfaces/metrics.rs")).unwrap();
    source
        .split("describe_")
        .skip(1)
        .filter_map(|rest| rest.split_once("!(\"").map(|(_, name)| name.split('"').next().unwrap().to_owned()))
        .collect()
}

/// The `eventkit_*` names in `text`, histogram series suffixes taken off.
fn named(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("eventkit_") {
        if i > 0 && text.as_bytes()[i - 1].is_ascii_alphanumeric() {
            continue;
        }
        let name: String = text[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let name = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s).map(str::to_owned)).unwrap_or(name);
        out.insert(name);
    }
    out
}

#[test]
fn the_dashboard_and_the_rules_name_only_metrics_eventkit_exports() {
    let exported = exported();
    assert!(exported.len() >= 20, "{exported:?}");
    let dashboard = std::fs::read_to_string(root().join("deploy/grafana/eventkit.json")).unwrap();
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/eventkit-alerts.yml")).unwrap();
    let board: Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let exprs: Vec<&str> = board["panels"].as_array().unwrap().iter().flat_map(|p| p["targets"].as_array().into_iter().flatten()).filter_map(|t| t["expr"].as_str()).collect();
    assert!(exprs.len() >= 15, "{exprs:?}");
    for panel in board["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
        assert_eq!(panel["datasource"]["uid"], json!("${datasource}"), "every panel uses the chosen data source: {}", panel["title"]);
        assert!(panel["targets"].as_array().is_some_and(|t| !t.is_empty()), "{}", panel["title"]);
    }
    for (what, text) in [("dashboard", dashboard.as_str()), ("alert rules", rules.as_str())] {
        let names = named(text);
        let unknown: Vec<&String> = names.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(unknown.is_empty(), "the {what} name metrics eventkit does not export: {unknown:?}");
    }
    // What the issue asks the dashboard and the alerts to cover.
    let on_board = named(&dashboard);
    for metric in ["eventkit_records_handled_total", "eventkit_records_failed_total", "eventkit_records_dead_lettered_total", "eventkit_consumer_lag", "eventkit_handler_duration_seconds", "eventkit_partitions_paused", "eventkit_partitions_held", "eventkit_oldest_unsettled_seconds"] {
        assert!(on_board.contains(metric), "the dashboard shows {metric}");
    }
    assert!(dashboard.contains("histogram_quantile(0.99"), "handler p99");
    for alert in ["EventkitConsumerLagGrowing", "EventkitDeadLetters", "EventkitPartitionStuck", "EventkitGroupStopped"] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
    }
}

/// promtool: the one `scripts/test.sh` installs (`EVENTKIT_TEST_PROMTOOL`), or one on PATH.
fn promtool() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("EVENTKIT_TEST_PROMTOOL").filter(|p| !p.is_empty()) {
        return Some(path.into());
    }
    if std::process::Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Some("promtool".into());
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("no promtool in CI: scripts/test.sh installs it (scripts/promtool.sh)");
    }
    eprintln!("note: no promtool (run scripts/promtool.sh, or scripts/test.sh); the rules were not checked");
    None
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let Some(promtool) = promtool() else { return };
    let dir = root().join("deploy/prometheus");
    for args in [["check", "rules", "eventkit-alerts.yml"], ["test", "rules", "eventkit-alerts.test.yml"]] {
        let out = std::process::Command::new(&promtool).args(args).current_dir(&dir).output().expect("promtool runs");
        assert!(out.status.success(), "promtool {args:?}:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
}

#[integration_event(topic = "dash.jobs", key = id)]
#[derive(Debug, Clone, PartialEq)]
pub struct DashJob {
    pub id: String,
    pub stuck: bool,
}

#[derive(Clone, Default)]
struct Gate {
    seen: Log<String>,
    released: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[handler(group = "dash-workers")]
async fn run_job(job: DashJob, gate: &Gate, _ctx: &Context) -> eventkit::Result<()> {
    gate.seen.push(job.id.clone());
    while job.stuck && !gate.released.load(std::sync::atomic::Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The value of `name`'s sample whose labels contain `label`.
fn sample(metrics: &str, name: &str, label: &str) -> Option<f64> {
    metrics.lines().filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label)).find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn the_gauges_the_alerts_watch_move(target: Target) {
    const TOKEN: &str = "dash-token";
    let gate = Gate::default();
    let running = target.app().groups(["dash-workers"]).state(gate.clone()).admin_addr("127.0.0.1:0").admin_token(TOKEN).build().unwrap().start().await.unwrap();
    let base = format!("http://{}", running.admin_addr().unwrap());
    let http = reqwest::Client::new();
    let group = format!("group=\"{}\"", target.group("dash-workers"));
    let metrics = || async { http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap() };
    running.publisher().publish(&DashJob { id: "stuck".into(), stuck: true }).await.unwrap();
    assert!(eventually(Duration::from_secs(60), || gate.seen.len() == 1).await);
    // The stuck record's wait grows on the gauge the stuck-partition alert watches.
    let mut last = String::new();
    let mut grew = false;
    for _ in 0..300 {
        last = metrics().await;
        if sample(&last, "eventkit_oldest_unsettled_seconds", &group).is_some_and(|v| v >= 2.0) {
            grew = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(grew, "the wait shows:\n{last}");
    for gauge in ["eventkit_group_running", "eventkit_consumer_loop_silent_seconds", "eventkit_partitions_assigned"] {
        assert!(sample(&last, gauge, &group).is_some(), "{gauge}:\n{last}");
    }
    assert!(last.lines().any(|l| l.starts_with("eventkit_kafka_reachable ") || l.starts_with("eventkit_kafka_reachable{")), "{last}");
    // Paused by an operator: held shows; the record still running stays watched (a handler
    // that hangs is stuck, paused or not); once it is done, the paused partition waits, unwatched.
    let status = http.post(format!("{base}/groups/pause")).bearer_auth(TOKEN).json(&json!({ "group": "dash-workers" })).send().await.unwrap().status();
    assert_eq!(status.as_u16(), 200);
    let mut held = false;
    for _ in 0..300 {
        last = metrics().await;
        if sample(&last, "eventkit_partitions_held", &group).is_some_and(|v| v >= 1.0) && sample(&last, "eventkit_oldest_unsettled_seconds", &group).is_some_and(|v| v >= 2.0) {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(held, "held, and the running record still watched:\n{last}");
    running.publisher().publish(&DashJob { id: "waits".into(), stuck: false }).await.unwrap();
    gate.released.store(true, std::sync::atomic::Ordering::Release);
    let mut quiet = false;
    for _ in 0..300 {
        last = metrics().await;
        if sample(&last, "eventkit_partitions_held", &group).is_some_and(|v| v >= 1.0) && sample(&last, "eventkit_oldest_unsettled_seconds", &group) == Some(0.0) {
            quiet = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(quiet, "still held, nothing running: not stuck:\n{last}");
    assert_eq!(gate.seen.snapshot(), vec!["stuck".to_owned()], "the paused group handled nothing new");
    running.shutdown().await.unwrap();
}

on_both_brokers!(the_gauges_the_alerts_watch_move);
