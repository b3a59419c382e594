//! An app without a `tracing` subscriber of its own still logs (a formatted subscriber filtered
//! by `RUST_LOG`, default `info`), unless `EVENTKIT_DEFAULT_LOGGING=false`.

use std::process::Command;

fn run(envs: &[(&str, &str)]) -> String {
    let mut command = bare();
    command.env_remove("EVENTKIT_DEFAULT_LOGGING");
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

fn bare() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eventkit-test-bare"));
    command.env_remove("KAFKA_BOOTSTRAP_SERVERS").env_remove("RUST_LOG").env_remove("EVENTKIT_LIST_TOPICS");
    command
}

#[test]
fn an_app_started_with_start_prints_its_listing_when_asked_instead_of_running() {
    let table = bare().arg("--list-topics").output().unwrap();
    let stdout = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success(), "{}", String::from_utf8_lossy(&table.stderr));
    assert!(stdout.starts_with("service: eventkit-test-bare\n") && stdout.contains("CONSUMER GROUPS"), "{stdout}");
    assert!(!String::from_utf8_lossy(&table.stderr).contains("eventkit started"), "the service does not start");

    let json = bare().arg("--list-topics=json").output().unwrap();
    assert!(json.status.success());
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["service"], "eventkit-test-bare");

    let asyncapi = bare().arg("--asyncapi").output().unwrap();
    assert!(asyncapi.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&asyncapi.stdout).unwrap();
    assert_eq!(doc["asyncapi"], "3.0.0");

    // The variable is `run()`'s only: a program (or a test run) calling `start()` with it left in
    // its environment runs as usual.
    let env = bare().env("EVENTKIT_LIST_TOPICS", "json").output().unwrap();
    assert!(env.status.success());
    assert!(env.stdout.is_empty() && String::from_utf8_lossy(&env.stderr).contains("eventkit started"), "{}", String::from_utf8_lossy(&env.stderr));
}

#[test]
fn the_dlq_command_finds_the_embedded_broker_of_the_running_app_or_says_how() {
    use std::io::Write as _;
    let service = format!("bare-{}", std::process::id());
    let dlq = |args: &[&str]| bare().env("KAFKA_SERVICE_NAME", &service).arg("dlq").args(args).output().unwrap();

    // `dlq` alone is the command's usage, never the service.
    let usage = dlq(&[]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&usage.stderr).contains("eventkit started"), "{}", String::from_utf8_lossy(&usage.stderr));

    // Nothing runs: the error says what to do.
    let alone = dlq(&["list", "--topic", "orders"]);
    assert_eq!(alone.status.code(), Some(2));
    let said = String::from_utf8_lossy(&alone.stderr);
    assert!(said.contains("KAFKA_BOOTSTRAP_SERVERS") && said.contains(&format!("start `{service}` first")), "{said}");

    let log = std::env::temp_dir().join(format!("{service}.log"));
    let mut app = bare()
        .env("KAFKA_SERVICE_NAME", &service)
        .env("BARE_WAIT", "1")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("eventkit started") {
        assert!(app.try_wait().unwrap().is_none(), "the app runs: {}", std::fs::read_to_string(&log).unwrap_or_default());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    // The command reaches the running app's broker; the listing's header waits for an entry,
    // so an error prints none of it.
    let listed = dlq(&["list", "--topic", "orders"]);
    let said = String::from_utf8_lossy(&listed.stderr);
    assert!(said.contains(&format!("using the embedded broker of the running `{service}` (pid {})", app.id())), "{said}");
    assert!(!said.contains("KAFKA_BOOTSTRAP_SERVERS"), "{said}");
    assert!(!String::from_utf8_lossy(&listed.stdout).contains("ENTRY"), "{}", String::from_utf8_lossy(&listed.stdout));

    // The app stops: the note goes with it.
    app.stdin.take().unwrap().write_all(b"\n").unwrap();
    assert!(app.wait().unwrap().success());
    let _ = std::fs::remove_file(&log);
    let after = dlq(&["count", "--topic", "orders"]);
    assert_eq!(after.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&after.stderr).contains("no broker to read"), "{}", String::from_utf8_lossy(&after.stderr));
}
