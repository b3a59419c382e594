//! A user service publishes `UserCreated`; an email service and an analytics service
//! consume it in separate consumer groups, each getting every event.
//!
//! Runs on the embedded broker: `cargo run --example user_service`
//! (set KAFKA_BOOTSTRAP_SERVERS to use a real Kafka; `-- --list-topics` prints the listing).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventkit::{handler, integration_event, App, Context, State};
use uuid::Uuid;

#[integration_event(topic = "users.created.v1", key = user_id)]
#[derive(Debug, Clone)]
pub struct UserCreated {
    pub user_id: Uuid,
    pub email: String,
    pub full_name: String,
}

#[integration_event(topic = "users.deactivated.v1", key = user_id)]
#[derive(Debug, Clone)]
pub struct UserDeactivated {
    pub user_id: Uuid,
    pub reason: String,
}

/// A stand-in mail gateway that keeps what it "sent".
#[derive(Clone, Default)]
pub struct Mailer {
    outbox: Arc<Mutex<Vec<String>>>,
}

impl Mailer {
    fn send(&self, to: &str, subject: &str) {
        self.outbox.lock().unwrap().push(format!("to {to}: {subject}"));
    }
    fn sent(&self) -> Vec<String> {
        self.outbox.lock().unwrap().clone()
    }
}

/// Counts what the analytics service saw.
#[derive(Clone, Default)]
pub struct Analytics {
    seen: Arc<Mutex<Vec<String>>>,
}

#[handler(group = "email-service")]
async fn send_welcome(event: UserCreated, mailer: State<Mailer>) -> eventkit::Result<()> {
    mailer.send(&event.email, &format!("Welcome, {}!", event.full_name));
    Ok(())
}

#[handler(group = "analytics-service")]
async fn count_signup(event: UserCreated, ctx: &Context, analytics: &Analytics) -> eventkit::Result<()> {
    let record = ctx.record();
    analytics.seen.lock().unwrap().push(format!(
        "signup {} (event {}, {}[{}]@{})",
        event.user_id, ctx.event_id(), record.topic, record.partition, record.offset
    ));
    Ok(())
}

#[handler(group = "analytics-service")]
async fn count_churn(event: UserDeactivated, analytics: &Analytics) {
    analytics.seen.lock().unwrap().push(format!("churn {} ({})", event.user_id, event.reason));
}

#[tokio::main]
async fn main() -> eventkit::Result<()> {
    let mailer = Mailer::default();
    let analytics = Analytics::default();
    let app = App::builder()
        .service_name("user-service")
        .state(mailer.clone())
        .state(analytics.clone())
        .build()?;
    if app.list_topics_if_asked() {
        return Ok(());
    }
    let running = app.start().await?;
    let publisher = running.publisher();

    let users = [("ada@example.com", "Ada Lovelace"), ("alan@example.com", "Alan Turing"), ("grace@example.com", "Grace Hopper")];
    let mut ids = Vec::new();
    for (email, name) in users {
        let event = UserCreated { user_id: Uuid::new_v4(), email: email.into(), full_name: name.into() };
        let published = publisher.publish(&event).await?;
        println!("published UserCreated {} -> {}[{}]@{}", event.user_id, published.topic, published.partition, published.offset);
        ids.push(event.user_id);
    }
    publisher.publish(&UserDeactivated { user_id: ids[1], reason: "requested".into() }).await?;

    // Wait until both services handled everything, then stop.
    let expected = (users.len(), users.len() + 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while (mailer.sent().len(), analytics.seen.lock().unwrap().len()) != expected {
        if tokio::time::Instant::now() > deadline {
            return Err(eventkit::Error::msg("timed out waiting for the handlers"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("\nemail-service sent:");
    mailer.sent().iter().for_each(|m| println!("  {m}"));
    println!("analytics-service saw:");
    analytics.seen.lock().unwrap().iter().for_each(|m| println!("  {m}"));
    running.shutdown().await
}
