//! A consumer process for the crash and shutdown tests: handles `Tick`s by appending their
//! sequence numbers to the file `WORKER_OUT` (one write per event, so a SIGKILL loses
//! nothing that was handled), optionally sleeping `WORKER_DELAY_US` per event.

use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use eventkit_tests::Tick;

struct Out {
    file: Mutex<std::fs::File>,
    delay: Duration,
}

#[eventkit::handler(group = "workers")]
async fn record(tick: Tick, out: &Out) -> Result<(), std::io::Error> {
    if !out.delay.is_zero() {
        tokio::time::sleep(out.delay).await;
    }
    writeln!(out.file.lock().unwrap(), "{}", tick.seq)
}

#[tokio::main]
async fn main() -> eventkit::Result<()> {
    tracing_subscriber::fmt().with_env_filter("warn,eventkit=info").init();
    let path = std::env::var("WORKER_OUT").expect("WORKER_OUT");
    let delay = std::env::var("WORKER_DELAY_US").ok().and_then(|d| d.parse().ok()).unwrap_or(0);
    let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    eventkit::App::builder()
        .state(Out { file: Mutex::new(file), delay: Duration::from_micros(delay) })
        .groups(["workers"])
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
