//! Commands (the mediator): `send` runs the one handler of a command in this process with the
//! same extractors as event handlers and returns its value; events it cascades are published
//! after it succeeded (never when it failed), carrying the command's correlation.

use std::time::Duration;

use eventkit::{command, handler, integration_event, maps_to, Context, Error, State};
use eventkit_tests::{eventually, on_both_brokers, Log, Target};

#[integration_event(topic = "commands.users", key = user_id)]
#[derive(Debug, Clone)]
pub struct UserRegistered {
    pub user_id: u64,
    pub email: String,
}

/// The domain event the command handler raises.
#[maps_to(UserRegistered)]
pub struct UserRegisteredDomainEvent {
    pub user_id: u64,
    pub email: String,
}

#[command(returns = u64)]
#[derive(Debug)]
pub struct RegisterUser {
    pub email: String,
}

#[derive(Clone, Default)]
struct Users {
    rows: Log<(u64, String)>,
}

#[derive(Clone)]
struct IdBase(u64);

#[handler]
async fn register_user(cmd: RegisterUser, ctx: &Context, users: &Users, base: State<IdBase>) -> eventkit::Result<u64> {
    if cmd.email.is_empty() {
        return Err(Error::msg("an email is required"));
    }
    let id = base.0 .0 + users.rows.len() as u64;
    users.rows.push((id, cmd.email.clone()));
    ctx.cascade(UserRegisteredDomainEvent { user_id: id, email: cmd.email });
    Ok(id)
}

/// A command without a value, sent from an event handler.
#[command]
pub struct SendWelcome {
    pub user_id: u64,
}

#[derive(Clone, Default)]
struct Mail {
    /// The registered user's event: id, correlation.
    events: Log<(u64, String, Option<String>)>,
    /// Welcome commands: user, correlation, causation.
    welcomes: Log<(u64, Option<String>, Option<String>)>,
}

#[handler(group = "commands-mail")]
async fn on_registered(e: UserRegistered, ctx: &Context, mail: &Mail) -> eventkit::Result<()> {
    mail.events.push((e.user_id, ctx.event_id().to_owned(), ctx.correlation_id().map(Into::into)));
    ctx.send(SendWelcome { user_id: e.user_id }).await
}

#[handler]
async fn send_welcome(cmd: SendWelcome, ctx: &Context, mail: &Mail) {
    mail.welcomes.push((cmd.user_id, ctx.correlation_id().map(Into::into), ctx.metadata().causation_id.clone()));
}

/// `eventkit::send` reaches the app started last in the process: the two variants of the test
/// take turns, so that each sends to its own app.
static ONE_APP_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn send_runs_the_handler_and_cascades_after_success(target: Target) {
    let _turn = ONE_APP_AT_A_TIME.lock().await;
    let (users, mail) = (Users::default(), Mail::default());
    let app = target.app().groups(["commands-mail"]).state(users.clone()).state(mail.clone()).state(IdBase(100)).build().unwrap();
    // The listing names commands and their handlers.
    let listing = app.topology();
    assert!(listing.commands.iter().any(|c| c.command.ends_with("::RegisterUser") && c.handler.ends_with("::register_user")), "{listing}");
    let running = app.start().await.unwrap();

    let id = running.send(RegisterUser { email: "ann@example.com".into() }).await.unwrap();
    assert_eq!(id, 100);
    // The free function reaches the running app too.
    let id = eventkit::send(RegisterUser { email: "bob@example.com".into() }).await.unwrap();
    assert_eq!(id, 101);
    // A failing command returns its error and publishes nothing.
    let err = running.send(RegisterUser { email: String::new() }).await.unwrap_err();
    assert!(matches!(err, Error::Command { command: "RegisterUser", .. }), "{err:?}");
    assert!(err.to_string().contains("an email is required") && err.to_string().contains("register_user"), "{err}");

    let done = eventually(Duration::from_secs(60), || mail.welcomes.len() >= 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.shutdown().await.unwrap();
    assert!(done, "[{}] events {:?} welcomes {:?}", target.kind, mail.events.snapshot(), mail.welcomes.snapshot());

    assert_eq!(users.rows.snapshot(), [(100, "ann@example.com".to_owned()), (101, "bob@example.com".to_owned())]);
    let mut events = mail.events.snapshot();
    events.sort();
    assert_eq!(events.iter().map(|e| e.0).collect::<Vec<_>>(), [100, 101], "[{}] one event per successful command", target.kind);
    for (user, event_id, correlation) in &events {
        // The event is a follow-up of the command: its correlation is the command's id, not its own.
        let correlation = correlation.clone().expect("a correlation id");
        assert_ne!(&correlation, event_id);
        let welcome = mail.welcomes.snapshot().into_iter().find(|w| w.0 == *user).expect("a welcome");
        assert_eq!(welcome.1.as_deref(), Some(correlation.as_str()), "the welcome continues the correlation");
        assert_eq!(welcome.2.as_deref(), Some(event_id.as_str()), "the event caused the welcome");
    }
}
on_both_brokers!(send_runs_the_handler_and_cascades_after_success);
