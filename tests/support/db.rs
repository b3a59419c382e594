//! Databases for the outbox and inbox tests: a SQLite file of the test's own, and a schema of
//! the test's own in the PostgreSQL at 127.0.0.1:5432 (database `test`). Without PostgreSQL the
//! tests say they skip it, except under `CI=true`, where they fail.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};

use crate::Target;

/// A SQLite database file in a fresh directory.
pub async fn sqlite(target: &Target, name: &str) -> (SqlitePool, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("{}{name}", target.prefix));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("app.db");
    let _ = std::fs::remove_file(&path);
    (sqlite_at(&path).await, path)
}

/// A pool on an existing (or new) SQLite file; WAL, so that readers and the relay go on while
/// a transaction writes.
pub async fn sqlite_at(path: &std::path::Path) -> SqlitePool {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .busy_timeout(std::time::Duration::from_secs(10));
    SqlitePoolOptions::new().max_connections(4).connect_with(options).await.unwrap()
}

/// The URL of the test PostgreSQL (`EVENTKIT_TEST_POSTGRES` overrides it).
pub fn postgres_url() -> String {
    std::env::var("EVENTKIT_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A pool whose connections use a schema of this test's own, or `None` (the test skips
/// PostgreSQL) when no server answers and `CI` is not `true`.
pub async fn postgres(target: &Target, name: &str) -> Option<PgPool> {
    // Short (PostgreSQL cuts names at 63 bytes) and unique: the prefix's random part.
    let schema = format!("ek{}_{name}", &target.prefix[1..9]).replace(['-', '.'], "_").to_lowercase();
    let base = PgConnectOptions::from_str(&postgres_url()).unwrap();
    let admin = match PgPoolOptions::new().max_connections(1).connect_with(base.clone()).await {
        Ok(pool) => pool,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("PostgreSQL at {} is required under CI=true: {e}", postgres_url()),
        Err(e) => {
            eprintln!("SKIPPED (PostgreSQL): no server at {}: {e}", postgres_url());
            return None;
        }
    };
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&admin).await.unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&admin).await.unwrap();
    admin.close().await;
    let options = base.options([("search_path", schema.as_str())]);
    Some(PgPoolOptions::new().max_connections(8).connect_with(options).await.unwrap())
}

/// Drops the schema of a pool made by [`postgres`] (its `search_path`), once the test is done
/// with it: the test database does not fill up with test schemas. A test that fails before
/// this leaves its schema behind (its name is unique to the run, so nothing else meets it).
pub async fn drop_schema(pool: PgPool) {
    let schema: String = sqlx::query_scalar("SELECT current_schema()").fetch_one(&pool).await.unwrap();
    assert!(schema.starts_with("ek"), "only a test's own schema is dropped, not {schema}");
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).execute(&pool).await.unwrap();
    pool.close().await;
}
