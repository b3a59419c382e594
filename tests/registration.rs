//! Link-time registration: handlers in nested modules and in another crate of the
//! workspace are found; the registry rejects duplicates; missing state stops startup.

use std::time::Duration;

use eventkit::{integration_event, HandlerDescriptor, Registry, Requirements};
use eventkit_test_extra::{ExtraSeen, Ping};
use eventkit_tests::{eventually, on_both_brokers, Log, Target};

pub mod nested {
    pub mod deeper {
        use eventkit_test_extra::Ping;

        #[eventkit::handler(group = "nested")]
        pub async fn on_ping(ping: Ping, seen: &eventkit_tests::Log<u32>) {
            seen.push(ping.n);
        }
    }
}

#[test]
fn nested_and_other_crate_handlers_are_registered() {
    let registry = Registry::global().unwrap();
    let nested = registry.handler("registration::nested::deeper::on_ping").expect("nested handler");
    assert_eq!(nested.group, Some("nested"));
    assert_eq!(nested.event.unwrap().event_type, "Ping");
    let extra = registry.handler("eventkit_test_extra::on_ping_extra").expect("handler of the other crate");
    assert_eq!(extra.group, Some("extra-crate"));
    assert_eq!(extra.event.unwrap().topic, "registration.pings");
    assert!(registry.event("Ping").is_some());
}

async fn handlers_of_both_crates_receive_events(target: Target) {
    let (nested, extra) = (Log::<u32>::default(), ExtraSeen::default());
    let running = target.app().state(nested.clone()).state(extra.clone()).build().unwrap().start().await.unwrap();
    for n in 0..5 {
        running.publisher().publish(&Ping { n }).await.unwrap();
    }
    let done = eventually(Duration::from_secs(60), || nested.len() >= 5 && extra.0.lock().unwrap().len() >= 5).await;
    running.shutdown().await.unwrap();
    assert!(done, "[{}] nested {:?}, extra {:?}", target.kind, nested.snapshot(), extra.0.lock().unwrap());
    let mut a = nested.snapshot();
    let mut b = extra.0.lock().unwrap().clone();
    a.sort();
    b.sort();
    assert_eq!(a, [0, 1, 2, 3, 4]);
    assert_eq!(b, [0, 1, 2, 3, 4]);
}
on_both_brokers!(handlers_of_both_crates_receive_events);

#[integration_event(topic = "registration.dupes")]
pub struct Dupe {
    pub n: u32,
}

fn no_requirements(_: &mut Requirements) {}
fn no_layers() -> Vec<std::sync::Arc<dyn eventkit::layer::HandleLayer>> {
    Vec::new()
}
fn never_called(_: std::sync::Arc<eventkit::Context>) -> futures::future::BoxFuture<'static, Result<eventkit::Cascade, eventkit::HandlerError>> {
    Box::pin(async { Ok(eventkit::Cascade::new()) })
}

static FIRST: HandlerDescriptor = HandlerDescriptor {
    name: "same-name",
    group: None,
    event: Some(&<Dupe as eventkit::IntegrationEvent>::INFO),
    kind: eventkit::HandlerKind::Typed(never_called),
    retry: eventkit::RetryOverrides { retries: None, backoff_ms: None },
    ordering: None,
    concurrency: None,
    requires: no_requirements,
    layers: no_layers,
};
static SECOND: HandlerDescriptor = HandlerDescriptor { group: Some("other"), ..FIRST };

#[test]
fn duplicate_handler_names_are_rejected() {
    let err = Registry::of([&FIRST, &SECOND]).unwrap_err().to_string();
    assert!(err.contains("handler name `same-name` is used twice"), "{err}");
    assert!(Registry::of([&FIRST]).is_ok());
}

#[test]
fn missing_state_is_a_startup_error_naming_handlers_and_types() {
    let err = eventkit::App::builder()
        .config(eventkit::Config::default())
        .state(ExtraSeen::default())
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("handler `registration::nested::deeper::on_ping` needs eventkit_tests::Log<u32>"), "{err}");
    assert!(!err.contains("on_ping_extra"), "{err}");
}

/// A binary that lists a handlers-only crate in its Cargo.toml but never names it does not link
/// it: its handlers are not there, and the app says so at startup. `eventkit::link!` fixes it.
#[test]
fn a_handlers_only_crate_needs_to_be_linked() {
    let run = |bin: &str| {
        let out = std::process::Command::new(bin).env_remove("KAFKA_BOOTSTRAP_SERVERS").output().unwrap();
        assert!(out.status.success(), "{bin}: {}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (linked, _) = run(env!("CARGO_BIN_EXE_eventkit-test-linked-app"));
    assert_eq!(linked.trim(), "eventkit_test_handlers_only::on_invoiced");
    let (unlinked, log) = run(env!("CARGO_BIN_EXE_eventkit-test-unlinked-app"));
    assert_eq!(unlinked.trim(), "", "never named: not linked, no handlers");
    assert!(log.contains("registers no events and no handlers") && log.contains("eventkit::link!"), "{log}");
}
