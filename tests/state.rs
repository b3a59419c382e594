//! Handlers receive app state and custom extractors; a handler asking for state that was
//! never registered stops startup before anything is consumed.

use std::time::Duration;

use eventkit::{handler, integration_event, Context, FromContext, Metadata, PublishOptions, Publisher, Requirements, State};
use eventkit_tests::{eventually, on_both_brokers, Log, Target};

#[integration_event(topic = "state.signups", key = user)]
#[derive(Debug, Clone)]
pub struct SignedUp {
    pub user: String,
}

#[derive(Clone)]
struct Db {
    name: &'static str,
}

#[derive(Clone)]
struct Clock {
    now: u64,
}

/// A user-defined extractor that itself needs state: the tenant's display name.
struct TenantName(String);

#[derive(Clone)]
struct Tenants(std::collections::HashMap<&'static str, &'static str>);

impl FromContext for TenantName {
    fn from_context(ctx: &Context) -> eventkit::Result<Self> {
        let tenants = ctx.state::<Tenants>().ok_or_else(|| eventkit::Error::msg("no tenants"))?;
        let id = ctx.metadata().tenant_id.as_deref().unwrap_or("-");
        Ok(TenantName(tenants.0.get(id).copied().unwrap_or("unknown").to_owned()))
    }
    fn requirements(requirements: &mut Requirements) {
        requirements.state::<Tenants>();
    }
}

type Seen = Log<(String, &'static str, u64, String, String, String)>;

#[handler(group = "welcome")]
#[allow(clippy::too_many_arguments)] // every extractor kind at once
async fn welcome(
    e: SignedUp,
    tenant: TenantName,
    db: State<Db>,
    ctx: &Context,
    clock: &Clock,
    seen: &Seen,
    meta: Metadata,
    publisher: Publisher,
) -> eventkit::Result<()> {
    seen.push((e.user, db.name, clock.now, tenant.0, meta.id.clone(), format!("{}|{}", publisher.source(), ctx.event_id())));
    Ok(())
}

fn tenants() -> Tenants {
    Tenants([("t1", "Acme Corp")].into_iter().collect())
}

async fn handler_receives_states_and_custom_extractor(target: Target) {
    let seen = Seen::default();
    let running = target
        .app()
        .state(Db { name: "users-db" })
        .state(Clock { now: 1_700_000_000 })
        .state(tenants())
        .state(seen.clone())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let p = running.publisher().publish_with(&SignedUp { user: "ada".into() }, PublishOptions::default().tenant_id("t1")).await.unwrap();
    assert!(eventually(Duration::from_secs(60), || !seen.is_empty()).await, "[{}] handled", target.kind);
    running.shutdown().await.unwrap();
    let (user, db, now, tenant, meta_id, publisher_and_ctx) = seen.snapshot().remove(0);
    assert_eq!((user.as_str(), db, now, tenant.as_str()), ("ada", "users-db", 1_700_000_000, "Acme Corp"));
    assert_eq!(meta_id, p.event_id);
    assert_eq!(publisher_and_ctx, format!("eventkit-tests|{}", p.event_id));
}
on_both_brokers!(handler_receives_states_and_custom_extractor);

async fn missing_state_fails_startup_and_consumes_nothing(target: Target) {
    // Events are waiting for the group.
    let seen = Seen::default();
    let publisher_app = target.app().groups([]).build().unwrap().start().await.unwrap();
    let p = publisher_app.publisher().publish(&SignedUp { user: "bob".into() }).await.unwrap();
    publisher_app.shutdown().await.unwrap();

    // Db, Clock and Tenants (needed by the custom extractor) are missing.
    let err = target.app().state(seen.clone()).build().unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, eventkit::Error::MissingState(_)), "{message}");
    for needle in ["handler `state::welcome` needs", "state::Db", "state::Clock", "state::Tenants", "App::builder().state(value)"] {
        assert!(message.contains(needle), "`{needle}` missing from: {message}");
    }
    assert!(!message.contains("Log<"), "registered state is not reported: {message}");
    assert!(seen.is_empty());
    assert_eq!(target.committed(&target.group("welcome"), &p.topic, p.partition), None, "nothing consumed");
}
on_both_brokers!(missing_state_fails_startup_and_consumes_nothing);

#[test]
fn listing_shows_required_state() {
    let app = eventkit::App::builder()
        .config(eventkit::Config::default())
        .state(Db { name: "x" })
        .state(Clock { now: 0 })
        .state(tenants())
        .state(Seen::default())
        .build()
        .unwrap();
    let topology = app.topology();
    let state = &topology.groups[0].handlers[0].state;
    assert_eq!(state.len(), 4, "{state:?}");
    for t in ["state::Tenants", "state::Db", "state::Clock"] {
        assert!(state.iter().any(|s| s == t), "{t} in {state:?}");
    }
}
