//! An app without a `tracing` subscriber of its own still logs (a formatted subscriber filtered
//! by `RUST_LOG`, default `info`), unless `EVENTKIT_DEFAULT_LOGGING=false`.

use std::process::Command;

fn run(envs: &[(&str, &str)]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eventkit-test-bare"));
    command.env_remove("KAFKA_BOOTSTRAP_SERVERS").env_remove("RUST_LOG").env_remove("EVENTKIT_DEFAULT_LOGGING");
    for (k, v) in envs {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_app_without_a_subscriber_logs_by_default() {
    let logged = run(&[]);
    assert!(logged.contains("eventkit started") && logged.contains("INFO"), "{logged}");
    assert!(logged.contains("eventkit stopped"), "{logged}");
}

#[test]
fn rust_log_filters_and_the_default_can_be_turned_off() {
    let warn_only = run(&[("RUST_LOG", "warn")]);
    assert!(!warn_only.contains("eventkit started"), "{warn_only}");
    let off = run(&[("EVENTKIT_DEFAULT_LOGGING", "false")]);
    assert!(off.trim().is_empty(), "nothing is printed: {off}");
}
