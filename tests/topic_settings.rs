//! Topic settings: declared by events (`partitions`, `replication`, `retention`,
//! `cleanup_policy`, `compression`), overridden by configuration, applied when topics are
//! created (dead letter topics with their own retention); an existing topic that differs is
//! named in a startup warning; two events that disagree about their topic are an error.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventkit::{handler, integration_event, Registry, TopicConfig};
use eventkit_tests::{on_both_brokers, Target};
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

#[integration_event(topic = "settings.orders", partitions = 5, retention = "2d", cleanup_policy = "delete", compression = "zstd")]
pub struct SettledOrder {
    pub id: u32,
}

#[integration_event(topic = "settings.accounts", partitions = 2, cleanup_policy = "compact")]
pub struct AccountState {
    pub id: u32,
}

#[integration_event(topic = "settings.accounts", partitions = 6)]
pub struct AccountClosed {
    pub id: u32,
}

#[handler(group = "settings-billing")]
async fn take_order(_o: SettledOrder) -> eventkit::Result<()> {
    Ok(())
}

fn partitions(target: &Target, topic: &str) -> usize {
    let consumer: rdkafka::consumer::BaseConsumer = ClientConfig::new().set("bootstrap.servers", target.bootstrap()).create().unwrap();
    let m = rdkafka::consumer::Consumer::fetch_metadata(&consumer, Some(topic), Duration::from_secs(10)).unwrap();
    m.topics()[0].partitions().len()
}

async fn configs(target: &Target, topic: &str) -> Option<Vec<(String, Option<String>)>> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", target.bootstrap()).create().unwrap();
    let described = admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new().request_timeout(Some(Duration::from_secs(10)))).await.ok()?;
    let resource = described.into_iter().next()?.ok()?;
    Some(resource.entries.iter().map(|e| (e.name.clone(), e.value.clone())).collect())
}

fn registry() -> Registry {
    let handler = Registry::global().unwrap().handler("topic_settings::take_order").unwrap();
    Registry::new([&<AccountState as eventkit::IntegrationEvent>::INFO], [handler]).unwrap()
}

async fn topic_settings_are_applied(target: Target) {
    let app = target
        .app()
        .registry(registry())
        .topic_settings("settings.accounts", TopicConfig { partitions: Some(4), ..Default::default() })
        .dlq_retention(Duration::from_secs(3 * 86_400))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let (orders, accounts) = (target.topic("settings.orders"), target.topic("settings.accounts"));
    assert_eq!(partitions(&target, &orders), 5, "declared by the event");
    assert_eq!(partitions(&target, &accounts), 4, "configuration over the event");
    assert_eq!(partitions(&target, &format!("{orders}.dlq")), 3, "a dead letter topic takes the default partitions");
    if target.embedded_broker().is_none() {
        let value = |entries: &[(String, Option<String>)], name: &str| entries.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.clone());
        match configs(&target, &orders).await {
            Some(entries) => {
                assert_eq!(value(&entries, "retention.ms").as_deref(), Some("172800000"), "{entries:?}");
                assert_eq!(value(&entries, "cleanup.policy").as_deref(), Some("delete"));
                assert_eq!(value(&entries, "compression.type").as_deref(), Some("zstd"));
                let accounts = configs(&target, &accounts).await.unwrap();
                assert_eq!(value(&accounts, "cleanup.policy").as_deref(), Some("compact"));
                let dlq = configs(&target, &format!("{orders}.dlq")).await.unwrap();
                assert_eq!(value(&dlq, "retention.ms").as_deref(), Some("259200000"), "dead letters keep their own retention");
            }
            None if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") => panic!("the CI broker must describe topic configurations"),
            None => eprintln!("note: this broker does not describe topic configurations; only partitions were checked"),
        }
    }
    app.shutdown().await.unwrap();
}

on_both_brokers!(topic_settings_are_applied);

/// A writer into a shared buffer, for the log of one app start.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn an_existing_topic_with_fewer_partitions_is_named_at_startup(target: Target) {
    target.create_topic("settings.orders", 1).await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).with_max_level(tracing::Level::WARN).finish();
    // Start runs on this thread (a current-thread runtime): its log goes to the capture.
    let _guard = tracing::subscriber::set_default(subscriber);
    let app = target.app().registry(registry()).build().unwrap().start().await.unwrap();
    let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    let orders = target.topic("settings.orders");
    assert!(
        log.lines().any(|l| l.contains("fewer partitions than declared") && l.contains(&orders) && l.contains("partitions=1") && l.contains("declared=5")),
        "a warning names the topic:\n{log}"
    );
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_existing_topic_with_fewer_partitions_is_named_at_startup_real() {
    if let Some(target) = Target::real("settings-existing") {
        an_existing_topic_with_fewer_partitions_is_named_at_startup(target).await
    }
}

#[test]
fn events_that_disagree_about_their_topic_are_an_error_naming_both() {
    let events = [&<AccountState as eventkit::IntegrationEvent>::INFO, &<AccountClosed as eventkit::IntegrationEvent>::INFO];
    let registry = Registry::new(events, []).unwrap();
    let error = eventkit::App::builder().config(eventkit::Config::default()).registry(registry).build().unwrap_err();
    let text = error.to_string();
    assert!(text.contains("AccountState") && text.contains("AccountClosed") && text.contains("`partitions`") && text.contains("settings.accounts"), "{text}");
}
