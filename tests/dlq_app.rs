//! App binaries take the `dlq` command line instead of running their service, and check
//! replays against their own handlers.

use std::process::Command;

use eventkit_tests::{on_both_brokers, Target};

/// The worker binary (an app that calls `run()`, which starts through `App::start`) with `args`:
/// (exit code, stdout, stderr).
fn app(target: &Target, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_eventkit-test-worker"))
        .args(args)
        .env("KAFKA_BOOTSTRAP_SERVERS", target.bootstrap())
        .env("KAFKA_TOPIC_PREFIX", &target.prefix)
        .env("EVENTKIT_GROUP_PREFIX", &target.prefix)
        .env("WORKER_OUT", std::env::temp_dir().join(format!("{}never.out", target.prefix)))
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

async fn app_binaries_run_dlq_commands_instead_of_their_service(target: Target) {
    target.create_topic("process.ticks", 1).await;
    target.create_topic("process.ticks.dlq", 1).await;
    let dlq = target.topic("process.ticks.dlq");
    let group = target.group("workers");
    for handler in ["eventkit_test_worker::record", "billing::retired_handler"] {
        let headers = [("eventkit-dlq-topic", target.topic("process.ticks")), ("eventkit-dlq-group", group.clone()), ("eventkit-dlq-handler", handler.to_owned()), ("eventkit-dlq-kind", "permanent".to_owned())];
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        target.produce_raw(&dlq, "k", &headers, br#"{"key":"k","seq":1}"#).await;
    }

    let (code, out, err) = app(&target, &["dlq", "count", "--topic", "process.ticks"]);
    assert_eq!((code, out.trim()), (0, "2"), "[{}] {err}", target.kind);
    assert!(!err.contains("consumer group subscribed") && !err.contains("eventkit started"), "[{}] the service did not run: {err}", target.kind);

    // A command it cannot parse: a usage error, and still no service.
    let (code, _, err) = app(&target, &["dlq", "frobnicate"]);
    assert_eq!(code, 2, "[{}] {err}", target.kind);
    assert!(!err.contains("eventkit started"), "{err}");

    // The app knows its handlers: a replay to one it no longer has is reported, not sent.
    let (code, out, err) = app(&target, &["dlq", "replay", "--topic", "process.ticks", "--all"]);
    assert_eq!((code, out.trim()), (1, "replayed 1, already replayed 0, skipped 1"), "[{}] {err}", target.kind);
    assert!(err.contains("billing::retired_handler") && err.contains("no longer has"), "{err}");
}
on_both_brokers!(app_binaries_run_dlq_commands_instead_of_their_service);
