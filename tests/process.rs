//! Whole processes:
//! - a consumer killed with SIGKILL several times during a steady flow loses nothing (how much
//!   work each kill redoes is measured by the benchmark, `scripts/bench.sh`);
//! - a static member killed and restarted six times while events flow stops on SIGINT, with a
//!   typed and with a batch handler;
//! - one stopped with SIGTERM mid-burst loses nothing and, after a restart, handles nothing
//!   twice;
//! - one whose handler never returns, facing a backlog of hundreds of thousands of events,
//!   stays within its memory bound, stays in its group, and still stops on SIGTERM within
//!   the shutdown timeout.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eventkit_tests::process::{self, handled, out_file, publish_ticks, seqs, sigterm, start, unix_micros, wait_exit, wait_for};
use eventkit_tests::{eventually, on_both_brokers, Target, Tick};

fn worker(target: &Target, out: &Path, delay_us: u32) -> Command {
    process::worker(env!("CARGO_BIN_EXE_eventkit-test-worker"), target, out, delay_us)
}

async fn sigkill_during_a_steady_flow_loses_nothing_and_redoes_one_interval(target: Target) {
    // The embedded broker keeps about 5 MiB per partition, and restarts take longer there.
    let (rate, cap) = if target.kind == "embedded" { (1_000u32, 30_000u32) } else { (2_000, 60_000) };
    let out = out_file(&target, "crash");
    let _ = std::fs::remove_file(&out);
    publish_ticks(&target, 0, 0).await;
    // A steady flow of 100 events every 50 ms until the test stops it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flow = {
        let app = target.app().groups([]).build().unwrap().start().await.unwrap();
        let stop = stop.clone();
        tokio::spawn(async move {
            let publisher = app.publisher();
            let start = Instant::now();
            let mut chunk = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && chunk * 100 < cap {
                let ticks: Vec<Tick> = (chunk * 100..(chunk + 1) * 100).map(|seq| Tick { key: format!("k{}", seq % 64), seq }).collect();
                publisher.publish_many(&ticks).await.unwrap();
                chunk += 1;
                let due = start + Duration::from_secs_f64(f64::from(chunk * 100) / f64::from(rate));
                tokio::time::sleep_until(due.into()).await;
            }
            app.shutdown().await.unwrap();
            chunk * 100
        })
    };
    let mut kills = Vec::new();
    for round in 0..4 {
        let before = seqs(&out).len();
        let mut child = start(worker(&target, &out, 1_000));
        // Progress, or the flow is over and the worker caught up with it.
        wait_for(&out, "progress", Duration::from_secs(90), |h| h.len() >= before + 1_000 || (flow.is_finished() && h.iter().collect::<HashSet<_>>().len() as u32 >= cap)).await;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..1_000))).await;
        child.kill().unwrap();
        let killed_at = unix_micros();
        child.wait().unwrap();
        kills.push((handled(&out).len(), killed_at));
        eprintln!("[{}] round {round}: killed after {} handled in total", target.kind, seqs(&out).len());
    }
    let mut child = start(worker(&target, &out, 0));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let events = flow.await.unwrap();
    wait_for(&out, "every event", Duration::from_secs(120), |h| h.iter().collect::<HashSet<_>>().len() == events as usize).await;
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(60)).success());

    let all = handled(&out);
    let _ = std::fs::remove_file(&out);
    let unique: HashSet<u32> = all.iter().map(|(s, _)| *s).collect();
    assert_eq!(unique.len(), events as usize, "[{}] 0 lost", target.kind);
    // Per kill: the events its run handled that a later run handled again, and how far back
    // before the kill the oldest of them was handled.
    let mut start = 0;
    let mut windows = Vec::new();
    for (i, &(end, killed_at)) in kills.iter().enumerate() {
        let later: HashSet<u32> = all[end..].iter().map(|(s, _)| *s).collect();
        let redone: Vec<&(u32, u128)> = all[start..end].iter().filter(|(s, _)| later.contains(s)).collect();
        let window_ms = redone.iter().map(|(_, at)| killed_at.saturating_sub(*at) / 1_000).max().unwrap_or(0);
        eprintln!("[{}] kill {i}: {} redone, the oldest handled {window_ms} ms before the kill", target.kind, redone.len());
        windows.push(window_ms);
        start = end;
    }
    let duplicates = all.len() - unique.len();
    eprintln!(
        "[{}] crash test: {events} events at {rate}/s, {} SIGKILLs, 0 lost, {duplicates} duplicates ({:.2}%), redo windows {windows:?} ms",
        target.kind,
        kills.len(),
        100.0 * duplicates as f64 / f64::from(events),
    );
    // How far back a kill reaches (about one commit interval) is a figure for the benchmark:
    // on a loaded machine any bound here would fail a correct program.
    let _ = windows;
}
on_both_brokers!(sigkill_during_a_steady_flow_loses_nothing_and_redoes_one_interval);

/// A static member (the worker's `group.instance.id`) killed with SIGKILL six times while
/// 20,000 events flow, and restarted each time: the instance started last handles everything,
/// then stops on SIGINT, logging each step of its shutdown.
async fn a_static_member_killed_and_restarted_stops_on_sigint(target: Target, group: &str) {
    const EVENTS: u32 = 20_000;
    target.create_topic("process.ticks", 3).await;
    let out = out_file(&target, &format!("sigint-{group}"));
    let log = out_file(&target, &format!("sigint-{group}-log"));
    let _ = std::fs::remove_file(&out);
    let flow = {
        let target_app = target.app().groups([]).build().unwrap().start().await.unwrap();
        tokio::spawn(async move {
            let publisher = target_app.publisher();
            for chunk in 0..EVENTS / 500 {
                let ticks: Vec<Tick> = (chunk * 500..(chunk + 1) * 500).map(|seq| Tick { key: format!("k{}", seq % 64), seq }).collect();
                publisher.publish_many(&ticks).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            target_app.shutdown().await.unwrap();
        })
    };
    let command = |delay_us: u32| {
        let mut c = worker(&target, &out, delay_us);
        c.env("WORKER_GROUP", group).env("RUST_LOG", "warn,eventkit=info").env("NO_COLOR", "1").stderr(Stdio::from(std::fs::File::create(&log).unwrap())).stdout(Stdio::null());
        c
    };
    for round in 0..6 {
        let before = seqs(&out).len();
        let mut child = start(command(200));
        wait_for(&out, "progress", Duration::from_secs(90), |h| h.len() >= before + 200 || h.iter().collect::<HashSet<_>>().len() as u32 >= EVENTS).await;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..500))).await;
        child.kill().unwrap();
        child.wait().unwrap();
        eprintln!("[{}] {group} round {round}: killed after {} handled in total", target.kind, seqs(&out).len());
    }
    let mut child = start(command(0));
    flow.await.unwrap();
    wait_for(&out, "every event", Duration::from_secs(120), |h| {
        let seen: HashSet<&u32> = h.iter().collect();
        (0..EVENTS).all(|s| seen.contains(&s))
    })
    .await;
    // The killed workers may have handled every event already: the signal goes to a worker that
    // has started (a signal before that ends a start, which logs none of the phases below).
    assert!(
        eventually(Duration::from_secs(90), || std::fs::read_to_string(&log).is_ok_and(|t| t.contains("eventkit started"))).await,
        "[{}] {group}: the last worker starts",
        target.kind
    );
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let exit = wait_exit(&mut child, Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = (std::fs::remove_file(&out), std::fs::remove_file(&log));
    assert!(exit.success(), "[{}] {group}: a clean exit on SIGINT: {exit}\n{text}", target.kind);
    for phase in ["shutdown signal received", "shutdown: leaving the group", "consumer group stopped", "eventkit stopped"] {
        assert!(text.contains(phase), "[{}] {group}: {phase:?} is logged:\n{text}", target.kind);
    }
}

async fn a_static_member_with_a_typed_handler_stops_on_sigint(target: Target) {
    a_static_member_killed_and_restarted_stops_on_sigint(target, "workers").await
}
on_both_brokers!(a_static_member_with_a_typed_handler_stops_on_sigint);

async fn a_static_member_with_a_batch_handler_stops_on_sigint(target: Target) {
    a_static_member_killed_and_restarted_stops_on_sigint(target, "batch-workers").await
}
on_both_brokers!(a_static_member_with_a_batch_handler_stops_on_sigint);

async fn sigterm_mid_burst_loses_and_repeats_nothing(target: Target) {
    const EVENTS: u32 = 3_000;
    publish_ticks(&target, 0, EVENTS).await;
    let out1 = out_file(&target, "graceful-1");
    let mut first = start(worker(&target, &out1, 1_000));
    wait_for(&out1, "a burst in progress", Duration::from_secs(90), |h| h.len() >= 300).await;
    sigterm(&first);
    assert!(wait_exit(&mut first, Duration::from_secs(60)).success(), "clean exit on SIGTERM");
    let run1 = seqs(&out1);
    assert!(run1.len() < EVENTS as usize, "stopped mid-burst");

    let out2 = out_file(&target, "graceful-2");
    let mut second = start(worker(&target, &out2, 0));
    wait_for(&out2, "the rest", Duration::from_secs(90), |h| run1.len() + h.len() >= EVENTS as usize).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    sigterm(&second);
    assert!(wait_exit(&mut second, Duration::from_secs(60)).success());
    let run2 = seqs(&out2);
    let (_, _) = (std::fs::remove_file(&out1), std::fs::remove_file(&out2));

    let first_set: HashSet<u32> = run1.iter().copied().collect();
    let second_set: HashSet<u32> = run2.iter().copied().collect();
    assert_eq!(first_set.len(), run1.len(), "no duplicates within the first run");
    let repeated: Vec<_> = first_set.intersection(&second_set).collect();
    assert!(repeated.is_empty(), "[{}] events handled before SIGTERM were handled again: {repeated:?}", target.kind);
    assert_eq!(first_set.union(&second_set).count(), EVENTS as usize, "0 lost");
    eprintln!("[{}] graceful shutdown: {} handled before SIGTERM, {} after restart, 0 repeated", target.kind, run1.len(), run2.len());
}
on_both_brokers!(sigterm_mid_burst_loses_and_repeats_nothing);

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}

async fn a_stuck_handler_with_a_huge_backlog_stays_bounded_and_stops_on_sigterm(target: Target) {
    // The embedded broker keeps about 5 MiB per partition: spread its backlog wider.
    let (events, partitions) = if target.kind == "embedded" { (150_000, 12) } else { (250_000, 6) };
    target.create_topic("process.ticks", partitions).await;
    publish_ticks(&target, 0, events).await;

    let out = out_file(&target, "stuck");
    let log = out_file(&target, "stuck-log");
    let mut command = worker(&target, &out, 0);
    command
        .env("WORKER_STUCK", "1")
        .env("EVENTKIT_SHUTDOWN_TIMEOUT_MS", "2000")
        .env("RUST_LOG", "warn,eventkit=debug,librdkafka=info")
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stdout(Stdio::null());
    let mut child = start(command);
    let pid = child.id();
    // Longer than the worker's max.poll.interval.ms (10 s): a member that stopped polling
    // would be out of its group by then.
    let mut samples = Vec::new();
    let watch_until = Instant::now() + Duration::from_secs(14);
    while Instant::now() < watch_until {
        if let Some(rss) = rss_mib(pid) {
            samples.push(rss);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = seqs(&out).len();
    let asked_at = Instant::now();
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let stopped_in = asked_at.elapsed();
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    if std::env::var("KEEP_LOGS").is_err() {
        let (_, _) = (std::fs::remove_file(&out), std::fs::remove_file(&log));
    }

    let max_rss = samples.iter().copied().fold(0.0, f64::max);
    eprintln!(
        "[{}] stuck handler, {events} events backlog: {started} handlers started, max RSS {max_rss:.1} MiB over {} samples, stopped {stopped_in:?} after SIGTERM",
        target.kind,
        samples.len()
    );
    assert!(status.success(), "[{}] clean exit: {status}\n{log_text}", target.kind);
    assert!((1..=64).contains(&started), "[{}] at most `concurrency` records in flight: {started}", target.kind);
    assert!(samples.len() > 50 && max_rss < 200.0, "[{}] RSS stays under 200 MB: {max_rss:.1} MiB", target.kind);
    assert!(log_text.contains("fetching paused"), "[{}] the buffer bound paused fetching", target.kind);
    // librdkafka says "Application maximum poll interval (..ms) exceeded" when a member stops polling.
    assert!(!log_text.contains("maximum poll interval"), "[{}] the member kept polling:\n{log_text}", target.kind);
    // How soon it stopped is the benchmark's figure (`scripts/bench.sh`); the steps of a
    // shutdown within its budget are tests/operations.rs's.
}
on_both_brokers!(a_stuck_handler_with_a_huge_backlog_stays_bounded_and_stops_on_sigterm);
