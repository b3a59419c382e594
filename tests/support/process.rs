//! Worker processes (`eventkit-test-worker`) for the process and outage tests: start, signal
//! and wait for them, read what they handled, publish their events.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::{Target, Tick};

/// A worker process of the binary at `bin` (`env!("CARGO_BIN_EXE_eventkit-test-worker")`)
/// for `target`, appending what it handles to `out`, sleeping `delay_us` per event.
pub fn worker(bin: &str, target: &Target, out: &Path, delay_us: u32) -> Command {
    let mut command = Command::new(bin);
    command
        .env("KAFKA_BOOTSTRAP_SERVERS", target.bootstrap())
        .env("KAFKA_TOPIC_PREFIX", &target.prefix)
        .env("EVENTKIT_GROUP_PREFIX", &target.prefix)
        .env("KAFKA_SERVICE_NAME", "worker")
        .env("WORKER_OUT", out)
        .env("WORKER_DELAY_US", delay_us.to_string())
        // Static membership: a restarted worker takes over the killed one's place at once.
        .env("EVENTKIT_KAFKA_GROUP_INSTANCE_ID", format!("{}worker", target.prefix));
    command
}

/// A child process, killed when the test lets go of it (also when the test fails).
pub struct Worker(pub Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Worker {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Worker {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

pub fn start(mut command: Command) -> Worker {
    Worker(command.spawn().expect("worker"))
}

/// Handled events in the order they were written: (seq, unix micros).
pub fn handled(out: &Path) -> Vec<(u32, u128)> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (seq, at) = l.split_once('\t')?;
            Some((seq.parse().ok()?, at.parse().ok()?))
        })
        .collect()
}

pub fn seqs(out: &Path) -> Vec<u32> {
    handled(out).into_iter().map(|(s, _)| s).collect()
}

pub fn unix_micros() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros()
}

pub fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

pub fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("worker did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until what `out` lists satisfies `done`.
pub async fn wait_for(out: &Path, what: &str, within: Duration, mut done: impl FnMut(&[u32]) -> bool) {
    let deadline = Instant::now() + within;
    while !done(&seqs(out)) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {} handled", seqs(out).len());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Publishes ticks `first..first + n` (keys spread over 64 values).
pub async fn publish_ticks(target: &Target, first: u32, n: u32) {
    let app = target.app().groups([]).build().unwrap().start().await.unwrap();
    let publisher = app.publisher();
    let ticks: Vec<Tick> = (first..first + n).map(|seq| Tick { key: format!("k{}", seq % 64), seq }).collect();
    for chunk in ticks.chunks(5_000) {
        publisher.publish_many(chunk).await.unwrap();
    }
    app.shutdown().await.unwrap();
}

/// A file for a worker's output or log, unique to the test.
pub fn out_file(target: &Target, name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}{name}.out", target.prefix))
}
