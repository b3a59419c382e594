//! Secrets never show: a worker process configured with SASL and SSL passwords and an admin
//! token, logging at `debug`, is asked everything it can print (its log, the listing, every
//! admin endpoint, a refused request, a startup error) and none of it holds a planted secret.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;

use eventkit_tests::process::{self, out_file, sigterm, start, wait_exit};
use eventkit_tests::Target;

const SASL: &str = "sasl-PLANTED-9f3c1e";
const SSL: &str = "ssl-PLANTED-77ab02";
const TOKEN: &str = "token-PLANTED-c0ffee";

fn secrets() -> [(&'static str, &'static str); 3] {
    [("EVENTKIT_KAFKA_SASL_PASSWORD", SASL), ("EVENTKIT_KAFKA_SSL_KEY_PASSWORD", SSL), ("EVENTKIT_ADMIN_TOKEN", TOKEN)]
}

fn assert_clean(what: &str, text: &str) {
    for secret in [SASL, SSL, TOKEN] {
        assert!(!text.contains(secret), "{what} shows a secret ({secret}):\n{text}");
    }
}

#[test]
fn the_configuration_debug_output_redacts_secrets() {
    let mut vars: Vec<(String, String)> = secrets().iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    vars.push(("EVENTKIT_KAFKA_SASL_USERNAME".into(), "alice".into()));
    vars.push(("EVENTKIT_KAFKA_LINGER_MS".into(), "17".into()));
    vars.push(("EVENTKIT_KAFKA_PRODUCER_SASL_OAUTHBEARER_CONFIG".into(), format!("principal=x secret={SASL}")));
    let config = eventkit::Config::from_vars(vars).unwrap();
    let shown = format!("{config:?} {config:#?}");
    assert_clean("Config's Debug", &shown);
    assert!(!shown.contains("alice"), "librdkafka marks the SASL user name sensitive too: {shown}");
    assert!(shown.contains("\"linger.ms\": \"17\""), "other properties still show: {shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert_eq!(config.kafka["sasl.password"], SASL, "the value itself is kept for librdkafka");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_listing_or_admin_responses() {
    let target = Target::embedded("secrets");
    target.embedded_broker().unwrap().create_topic(&target.topic("process.ticks"), 1).unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (out, log) = (out_file(&target, "secrets"), out_file(&target, "secrets-log"));
    let command = |log: &std::path::Path| {
        let mut c = process::worker(env!("CARGO_BIN_EXE_eventkit-test-worker"), &target, &out, 0);
        c.env("RUST_LOG", "debug").env("NO_COLOR", "1").env("EVENTKIT_ADMIN_ADDR", port.to_string()).env("EVENTKIT_KAFKA_SASL_USERNAME", "alice").env("EVENTKIT_KAFKA_SASL_MECHANISM", "PLAIN");
        for (k, v) in secrets() {
            c.env(k, v);
        }
        c.stderr(Stdio::from(std::fs::File::create(log).unwrap())).stdout(Stdio::piped());
        c
    };

    let mut seen = String::new();
    for args in [&["--list-topics"][..], &["--list-topics=json"], &["--asyncapi"]] {
        let listing = command(&log).args(args).output().unwrap();
        assert!(listing.status.success(), "{args:?}");
        seen += &String::from_utf8_lossy(&listing.stdout);
    }

    let mut worker = start(command(&log));
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("{base}/health/ready")).send().await {
            if r.status().is_success() {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the worker's admin API answers ready: {}", std::fs::read_to_string(&log).unwrap_or_default());
    for path in ["/health/live", "/health/ready", "/metrics", "/topology", "/asyncapi.json", "/groups", "/dlq?topic=ticks", "/nope"] {
        for token in [Some(TOKEN), Some("wrong"), None] {
            let mut request = http.get(format!("{base}{path}"));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            let headers = format!("{:?}", response.headers());
            seen += &format!("{path} {headers}\n{}\n", response.text().await.unwrap());
        }
    }
    let refused = http.post(format!("{base}/publish")).bearer_auth("wrong").body("{}").send().await.unwrap();
    assert_eq!(refused.status(), reqwest::StatusCode::UNAUTHORIZED);
    seen += &refused.text().await.unwrap();
    sigterm(&worker);
    assert!(wait_exit(&mut worker, Duration::from_secs(60)).success());
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("admin API listening"), "the log is the worker's, at debug: {logged}");
    seen += &logged;

    // A startup error about a misspelt secret property names the property, not its value.
    let failed = command(&log).env("EVENTKIT_KAFKA_SASL_PASWORD", SASL).output().unwrap();
    assert!(!failed.status.success());
    let error = std::fs::read_to_string(&log).unwrap();
    assert!(error.contains("sasl.pasword"), "{error}");
    seen += &error;

    let _ = (std::fs::remove_file(&out), std::fs::remove_file(&log));
    assert_clean("what the app printed and answered", &seen);
}

/// A secret librdkafka refuses at start, under the spelling a user would write: the error
/// names the property and what to do, never the value. (The linked librdkafka lacks OAuth
/// assertions; `EVENTKIT_KAFKA_SSL_KEY` names librdkafka's internal `ssl_key`.)
async fn startup_errors_never_quote_a_secret(target: Target) {
    const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvPLANTEDkey0123\n-----END PRIVATE KEY-----";
    const PASSPHRASE: &str = "passphrase-PLANTED-4d2e";
    let cases = [
        ("EVENTKIT_KAFKA_SASL_OAUTHBEARER_ASSERTION_PRIVATE_KEY_PASSPHRASE", PASSPHRASE, "sasl.oauthbearer.assertion.private.key.passphrase"),
        ("EVENTKIT_KAFKA_SSL_KEY", KEY, "ssl.key.pem"),
        ("EVENTKIT_KAFKA_CONSUMER_SSL_KEY", KEY, "ssl_key"),
    ];
    for (variable, value, named) in cases {
        let (out, log) = (out_file(&target, "startup-secret"), out_file(&target, "startup-secret-log"));
        let mut command = process::worker(env!("CARGO_BIN_EXE_eventkit-test-worker"), &target, &out, 0);
        command.env("RUST_LOG", "debug").env("NO_COLOR", "1").env(variable, value).stderr(Stdio::from(std::fs::File::create(&log).unwrap())).stdout(Stdio::piped());
        let output = command.output().unwrap();
        let text = std::fs::read_to_string(&log).unwrap_or_default() + &String::from_utf8_lossy(&output.stdout);
        let _ = (std::fs::remove_file(&out), std::fs::remove_file(&log));
        assert!(!output.status.success(), "{variable}: the app does not start:\n{text}");
        assert!(text.contains(named), "{variable}: the error names {named}:\n{text}");
        for secret in [PASSPHRASE, "MIIEvPLANTEDkey0123"] {
            assert!(!text.contains(secret), "{variable}: the output shows the value:\n{text}");
        }
    }
}
eventkit_tests::on_both_brokers!(startup_errors_never_quote_a_secret);
