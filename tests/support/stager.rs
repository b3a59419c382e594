//! Stages `STAGER_COUNT` ticks in one transaction of the SQLite outbox at `STAGER_DB`, commits,
//! prints `committed` and the event ids, and then waits forever without publishing: the test
//! kills it (SIGKILL) between the commit and the publish.

use std::io::Write;

use eventkit::outbox::Outbox;
use eventkit_tests::Tick;

#[tokio::main]
async fn main() -> eventkit::Result<()> {
    let path = std::env::var("STAGER_DB").expect("STAGER_DB");
    let count: u32 = std::env::var("STAGER_COUNT").expect("STAGER_COUNT").parse().unwrap();
    let pool = eventkit_tests::db::sqlite_at(std::path::Path::new(&path)).await;
    let config = eventkit::Config::from_env()?;
    let outbox = Outbox::with_publisher(pool.clone(), eventkit::Publisher::new(&config)?);
    outbox.migrate().await?;
    let mut tx = pool.begin().await.map_err(|e| eventkit::Error::Database(Box::new(e)))?;
    let mut ids = Vec::new();
    for seq in 0..count {
        ids.push(outbox.stage(&mut tx, &Tick { key: format!("k{}", seq % 7), seq }).await?);
    }
    tx.commit().await.map_err(|e| eventkit::Error::Database(Box::new(e)))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "committed {}", ids.join(","))?;
    out.flush()?;
    drop(out);
    std::future::pending::<()>().await;
    Ok(())
}
