//! Seed 000's flow: a `RegisterUser` command writes a user row and raises
//! `UserRegisteredDomainEvent`; `#[maps_to]` maps it to the `UserRegistered` integration event,
//! which is staged in the SQLite outbox in the same transaction as the row. The relay publishes
//! it; an email service in another consumer group sends the welcome mail. A registration that
//! fails (a duplicate email) writes nothing and publishes nothing.
//!
//! Runs on the embedded broker with a SQLite file, nothing to install:
//! `cargo run --example user_registration`. It exits non-zero when what it prints did not happen.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventkit::outbox::Outbox;
use eventkit::{command, handler, integration_event, maps_to, App, Context, Error};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Sqlite, SqlitePool};
use uuid::Uuid;

/// What other services learn: no password hash in it.
#[integration_event(topic = "users.registered.v1", key = user_id)]
#[derive(Debug, Clone)]
pub struct UserRegistered {
    pub user_id: Uuid,
    pub email: String,
    pub full_name: String,
}

/// What happened inside the user service.
#[maps_to(UserRegistered)]
pub struct UserRegisteredDomainEvent {
    #[map(to = user_id)]
    pub aggregate_id: Uuid,
    pub email: String,
    pub full_name: String,
    #[map(skip)]
    pub password_hash: String,
}

#[command(returns = Uuid)]
pub struct RegisterUser {
    pub email: String,
    pub full_name: String,
    pub password: String,
}

#[derive(Clone)]
struct Users {
    pool: SqlitePool,
    outbox: Outbox<Sqlite>,
}

fn db(e: sqlx::Error) -> Error {
    Error::Database(Box::new(e))
}

#[handler]
async fn register_user(cmd: RegisterUser, ctx: &Context, users: &Users) -> eventkit::Result<Uuid> {
    let id = Uuid::now_v7();
    let password_hash = format!("{:x}", cmd.password.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3)));
    let mut tx = users.pool.begin().await.map_err(db)?;
    sqlx::query("INSERT INTO users (id, email, full_name, password_hash) VALUES (?1, ?2, ?3, ?4)")
        .bind(id.to_string())
        .bind(&cmd.email)
        .bind(&cmd.full_name)
        .bind(&password_hash)
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => Error::msg(format!("{} is already registered", cmd.email)),
            _ => db(e),
        })?;
    // The domain event is mapped and staged with the row: both commit, or neither.
    let event = UserRegisteredDomainEvent { aggregate_id: id, email: cmd.email, full_name: cmd.full_name, password_hash };
    users.outbox.cascade(&mut tx, ctx, event).await?;
    tx.commit().await.map_err(db)?;
    Ok(id)
}

/// A mail sent: recipient, text, correlation id.
type Mail = (String, String, Option<String>);

/// The email service's stand-in mail gateway.
#[derive(Clone, Default)]
struct Mailer(Arc<Mutex<Vec<Mail>>>);

#[handler(group = "email-service")]
async fn send_welcome(event: UserRegistered, ctx: &Context, mailer: &Mailer) {
    let mail = format!("to {}: Welcome, {}!", event.email, event.full_name);
    mailer.0.lock().unwrap().push((event.email, mail, ctx.correlation_id().map(Into::into)));
}

#[tokio::main]
async fn main() -> eventkit::Result<()> {
    tracing_subscriber::fmt().with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info,librdkafka=warn".into())).init();
    let path = std::env::temp_dir().join(format!("eventkit-user-registration-{}.db", std::process::id()));
    let options = SqliteConnectOptions::new().filename(&path).create_if_missing(true).journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await.map_err(db)?;
    sqlx::query("CREATE TABLE IF NOT EXISTS users (id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, full_name TEXT NOT NULL, password_hash TEXT NOT NULL)")
        .execute(&pool)
        .await
        .map_err(db)?;
    let outbox = Outbox::new(pool.clone());
    outbox.migrate().await?;

    let mailer = Mailer::default();
    let app = App::builder().service_name("user-service").state(Users { pool: pool.clone(), outbox: outbox.clone() }).state(mailer.clone()).build()?;
    if app.list_topics_if_asked() {
        return Ok(());
    }
    let running = app.start().await?;
    let relay = outbox.spawn_relay();

    let people = [("ada@example.com", "Ada Lovelace"), ("alan@example.com", "Alan Turing"), ("grace@example.com", "Grace Hopper")];
    let mut registered = Vec::new();
    for (email, name) in people {
        let id = eventkit::send(RegisterUser { email: email.into(), full_name: name.into(), password: "s3cret".into() }).await?;
        println!("registered {email} as {id}");
        registered.push(id);
    }
    // A second registration of the same email fails: no row, no event.
    let duplicate = eventkit::send(RegisterUser { email: "ada@example.com".into(), full_name: "Ada Again".into(), password: "x".into() }).await;
    match &duplicate {
        Err(e) => println!("duplicate refused: {e}"),
        Ok(id) => return Err(Error::msg(format!("a duplicate email was registered as {id}"))),
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while mailer.0.lock().unwrap().len() < people.len() {
        if tokio::time::Instant::now() > deadline {
            return Err(Error::msg("timed out waiting for the welcome mails"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    relay.stop().await;
    let pending = outbox.pending().await?;
    running.shutdown().await?;

    let sent = mailer.0.lock().unwrap().clone();
    println!("\nemail-service sent:");
    for (_, mail, correlation) in &sent {
        println!("  {mail}   (correlation {})", correlation.as_deref().unwrap_or("-"));
    }
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&pool).await.map_err(db)?;
    let _ = std::fs::remove_file(&path);
    if sent.len() != people.len() || rows != people.len() as i64 || pending != 0 || sent.iter().any(|s| s.1.contains("Ada Again")) {
        return Err(Error::msg(format!("expected {} users, mails and no pending rows; got {rows} users, {} mails, {pending} pending", people.len(), sent.len())));
    }
    println!("{} users, {} welcome mails, outbox empty", rows, sent.len());
    Ok(())
}
