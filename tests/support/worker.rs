//! A consumer process for the crash, shutdown and memory tests: handles `Tick`s by appending
//! `seq<TAB>unix-micros` lines to the file `WORKER_OUT` (one write per event, so a SIGKILL
//! loses nothing that was handled), optionally sleeping `WORKER_DELAY_US` per event.
//! With `WORKER_STUCK=1` every handler call writes its line when it starts, then never returns;
//! with `WORKER_BLOCK=1` it then blocks its thread (not awaiting) for five minutes.
//! `WORKER_GROUP=batch-workers` runs a batch handler instead (group `batch-workers`, up to 100
//! events per call); `WORKER_GROUP=txn-workers` one that answers each tick with a `TickEcho`
//! (run it with `EVENTKIT_TRANSACTIONAL_GROUPS=txn-workers`). eventkit settings come from the
//! environment (`EVENTKIT_*`).

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use eventkit_tests::{Tick, TickEcho};

struct Out {
    file: Mutex<std::fs::File>,
    delay: Duration,
    stuck: bool,
    block: bool,
}

impl Out {
    fn write(&self, seq: u32) -> std::io::Result<()> {
        let micros = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros();
        // One write per line (the file is opened for appending): a SIGKILL never leaves half a
        // line for the next process's to run into.
        self.file.lock().unwrap().write_all(format!("{seq}\t{micros}\n").as_bytes())
    }
}

#[eventkit::handler(group = "workers")]
async fn record(tick: Tick, out: &Out) -> Result<(), std::io::Error> {
    if out.stuck {
        out.write(tick.seq)?;
        std::future::pending::<()>().await;
    }
    if out.block {
        out.write(tick.seq)?;
        std::thread::sleep(Duration::from_secs(300));
    }
    if !out.delay.is_zero() {
        tokio::time::sleep(out.delay).await;
    }
    out.write(tick.seq)
}

#[eventkit::handler(group = "batch-workers", batch, max_size = 100, max_wait = "20ms")]
async fn record_batch(ticks: Vec<Tick>, out: &Out) -> Result<(), std::io::Error> {
    if !out.delay.is_zero() {
        tokio::time::sleep(out.delay * ticks.len() as u32).await;
    }
    for tick in ticks {
        out.write(tick.seq)?;
    }
    Ok(())
}

#[eventkit::handler(group = "txn-workers")]
async fn echo(tick: Tick, out: &Out) -> Result<TickEcho, std::io::Error> {
    if !out.delay.is_zero() {
        tokio::time::sleep(out.delay).await;
    }
    out.write(tick.seq)?;
    Ok(TickEcho { key: tick.key, seq: tick.seq })
}

#[tokio::main]
async fn main() -> eventkit::Result<()> {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,eventkit=info".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let path = std::env::var("WORKER_OUT").expect("WORKER_OUT");
    let delay = std::env::var("WORKER_DELAY_US").ok().and_then(|d| d.parse().ok()).unwrap_or(0);
    let stuck = std::env::var("WORKER_STUCK").is_ok_and(|v| v == "1");
    let block = std::env::var("WORKER_BLOCK").is_ok_and(|v| v == "1");
    let group: &'static str = match std::env::var("WORKER_GROUP").as_deref() {
        Ok("batch-workers") => "batch-workers",
        Ok("txn-workers") => "txn-workers",
        _ => "workers",
    };
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    eventkit::App::builder()
        .state(Out { file: Mutex::new(file), delay: Duration::from_micros(delay), stuck, block })
        .groups([group])
        // A killed member holds its partitions until its session times out.
        .kafka_property("session.timeout.ms", "6000")
        .kafka_property("heartbeat.interval.ms", "1000")
        // ... and a rebalance waits for members that do not rejoin up to this long.
        .kafka_property("max.poll.interval.ms", "10000")
        // The test created the topics.
        .create_topics(false)
        .build()?
        .run()
        .await
}
