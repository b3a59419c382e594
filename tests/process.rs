//! Whole processes: a consumer killed with SIGKILL at random points loses nothing; one
//! stopped with SIGTERM mid-burst loses nothing and, after a restart, redelivers nothing it
//! had committed.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use eventkit_tests::{on_both_brokers, Target, Tick};

fn worker(target: &Target, out: &Path, delay_us: u32) -> Child {
    Command::new(env!("CARGO_BIN_EXE_eventkit-test-worker"))
        .env("KAFKA_BOOTSTRAP_SERVERS", target.bootstrap())
        .env("KAFKA_TOPIC_PREFIX", &target.prefix)
        .env("EVENTKIT_GROUP_PREFIX", &target.prefix)
        .env("KAFKA_SERVICE_NAME", "worker")
        .env("WORKER_OUT", out)
        .env("WORKER_DELAY_US", delay_us.to_string())
        // Static membership: a restarted worker takes over the killed one's place at once.
        .env("EVENTKIT_KAFKA_GROUP_INSTANCE_ID", format!("{}worker", target.prefix))
        .spawn()
        .expect("worker")
}

fn handled(out: &Path) -> Vec<u32> {
    std::fs::read_to_string(out).unwrap_or_default().lines().filter_map(|l| l.parse().ok()).collect()
}

fn sigterm(child: &Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
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

async fn wait_for(out: &Path, what: &str, within: Duration, mut done: impl FnMut(&[u32]) -> bool) {
    let deadline = Instant::now() + within;
    while !done(&handled(out)) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {} handled", handled(out).len());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn publish_ticks(target: &Target, n: u32) {
    let app = target.app().groups([]).build().unwrap().start().await.unwrap();
    let publisher = app.publisher();
    let ticks: Vec<Tick> = (0..n).map(|seq| Tick { key: format!("k{}", seq % 64), seq }).collect();
    for chunk in ticks.chunks(2_000) {
        publisher.publish_many(chunk).await.unwrap();
    }
    app.shutdown().await.unwrap();
}

fn out_file(target: &Target, name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{}{name}.out", target.prefix))
}

async fn sigkill_at_random_points_loses_nothing(target: Target) {
    const EVENTS: u32 = 20_000;
    publish_ticks(&target, EVENTS).await;
    let out = out_file(&target, "crash");
    let mut kills = 0;
    for round in 0..4 {
        let before = handled(&out).len();
        let mut child = worker(&target, &out, 100);
        // Let it make progress, then kill it at a random point.
        wait_for(&out, "progress", Duration::from_secs(90), |h| h.len() >= before + 500 || h.iter().collect::<HashSet<_>>().len() == EVENTS as usize).await;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..400))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        eprintln!("[{}] round {round}: killed after {} handled in total", target.kind, handled(&out).len());
    }
    let mut child = worker(&target, &out, 0);
    wait_for(&out, "every event", Duration::from_secs(120), |h| h.iter().collect::<HashSet<_>>().len() == EVENTS as usize).await;
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).success());
    let all = handled(&out);
    let unique: HashSet<u32> = all.iter().copied().collect();
    let _ = std::fs::remove_file(&out);
    assert_eq!(unique.len(), EVENTS as usize, "0 lost");
    eprintln!(
        "[{}] crash test: {EVENTS} events, {kills} SIGKILLs, 0 lost, {} duplicates ({:.2}%)",
        target.kind,
        all.len() - unique.len(),
        100.0 * (all.len() - unique.len()) as f64 / EVENTS as f64
    );
}
on_both_brokers!(sigkill_at_random_points_loses_nothing);

async fn sigterm_mid_burst_loses_and_repeats_nothing(target: Target) {
    const EVENTS: u32 = 3_000;
    publish_ticks(&target, EVENTS).await;
    let out1 = out_file(&target, "graceful-1");
    let mut first = worker(&target, &out1, 1_000);
    wait_for(&out1, "a burst in progress", Duration::from_secs(90), |h| h.len() >= 300).await;
    sigterm(&first);
    assert!(wait_exit(&mut first, Duration::from_secs(60)).success(), "clean exit on SIGTERM");
    let run1 = handled(&out1);
    assert!(run1.len() < EVENTS as usize, "stopped mid-burst");

    let out2 = out_file(&target, "graceful-2");
    let mut second = worker(&target, &out2, 0);
    wait_for(&out2, "the rest", Duration::from_secs(90), |h| run1.len() + h.len() >= EVENTS as usize).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigterm(&second);
    assert!(wait_exit(&mut second, Duration::from_secs(60)).success());
    let run2 = handled(&out2);
    let (_, _) = (std::fs::remove_file(&out1), std::fs::remove_file(&out2));

    let first_set: HashSet<u32> = run1.iter().copied().collect();
    let second_set: HashSet<u32> = run2.iter().copied().collect();
    assert_eq!(first_set.len(), run1.len(), "no duplicates within the first run");
    let repeated: Vec<_> = first_set.intersection(&second_set).collect();
    assert!(repeated.is_empty(), "[{}] committed events were redelivered: {repeated:?}", target.kind);
    assert_eq!(first_set.union(&second_set).count(), EVENTS as usize, "0 lost");
    eprintln!("[{}] graceful shutdown: {} handled before SIGTERM, {} after restart, 0 repeated", target.kind, run1.len(), run2.len());
}
on_both_brokers!(sigterm_mid_burst_loses_and_repeats_nothing);
