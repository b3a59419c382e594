//! The console's operating controls in a real browser (`tests/ui-browser/operate.mjs`, as
//! tests/console.rs runs console.mjs): the Dead letters page (filters, an entry's detail,
//! replaying one, a selection and everything matching, each after a confirmation; a dismissed
//! confirmation replays nothing) and, on the Groups page, a reset to a time and a replay by
//! time, refused over a record in flight until forced. The handler fails the events 3 and 6
//! (permanently) and 5 (retries exhausted) until the browser script opens its gate; what it handled is checked here, event by event.

use std::path::PathBuf;
use std::time::Duration;

use eventkit::{handler, integration_event, Context, Error};
use eventkit_tests::{eventually, on_both_brokers, Log, Target};

#[integration_event(topic = "operate.jobs", key = id, partitions = 1)]
#[derive(Debug, Clone, PartialEq)]
pub struct OperateJob {
    pub id: String,
    pub n: u32,
}

/// Every delivery the handler saw, and the gate: a file the browser script creates once the
/// "fix" is out (until then 3, 5 and 6 fail).
#[derive(Clone)]
struct Jobs {
    seen: Log<u32>,
    gate: PathBuf,
}

#[handler(group = "operate-workers", retries = 0)]
async fn work(job: OperateJob, jobs: &Jobs, _ctx: &Context) -> eventkit::Result<()> {
    jobs.seen.push(job.n);
    // Job 99 stays in flight until the script releases it (a reset past it is refused unless forced).
    while job.n == 99 && !jobs.gate.with_extension("release").exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if jobs.gate.exists() {
        return Ok(());
    }
    match job.n {
        3 | 6 => Err(Error::permanent(format!("job {} is a multiple of three", job.n))),
        5 => Err(Error::msg("job 5: the ledger is down")),
        _ => Ok(()),
    }
}

const TOKEN: &str = "operate-admin-token";


fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Waits into the next whole second (a datetime-local input's precision) and returns it.
async fn next_second() -> i64 {
    let at = (now_ms() / 1000 + 1) * 1000;
    tokio::time::sleep(Duration::from_millis((at - now_ms()).max(0) as u64 + 50)).await;
    at
}

/// How many times each event was handled.
fn counts(log: &Log<u32>) -> std::collections::BTreeMap<u32, usize> {
    let mut out = std::collections::BTreeMap::new();
    for n in log.snapshot() {
        *out.entry(n).or_insert(0) += 1;
    }
    out
}

async fn dead_letters_and_group_controls_in_a_browser(target: Target) {
    let Some(script) = eventkit_tests::browser_script("operate.mjs") else { return };
    let kind = target.kind;
    let gate = std::env::temp_dir().join(format!("eventkit-operate-gate-{}", uuid::Uuid::new_v4().simple()));
    let jobs = Jobs { seen: Log::default(), gate: gate.clone() };
    let running = eventkit_tests::start_ready(
        target
            .app()
            .groups(["operate-workers"])
            .state(jobs.clone())
            .admin_addr("127.0.0.1:0")
            .admin_token(TOKEN)
    )
    .await;
    let publisher = running.publisher();
    let publish = |n: u32| {
        let publisher = publisher.clone();
        async move { publisher.publish(&OperateJob { id: format!("job-{n}"), n }).await.expect("publish") }
    };

    // 1 to 3 after `before`, 4 to 6 in the window [middle, end): whole seconds, as the page's time inputs take them.
    let before = next_second().await;
    for n in 1..=3 {
        publish(n).await;
    }
    let middle = next_second().await;
    for n in 4..=6 {
        publish(n).await;
    }
    let end = next_second().await;
    assert!(eventually(Duration::from_secs(60), || jobs.seen.len() == 6).await, "[{kind}] handled once each: {:?}", jobs.seen.snapshot());

    let stdout = script
        .env("BASE", format!("http://{}", running.admin_addr().unwrap()))
        .env("TOKEN", TOKEN)
        .env("GROUP", target.group("operate-workers"))
        .env("TOPIC", target.topic("operate.jobs"))
        .env("HANDLER", "operate::work")
        .env("GATE", &gate)
        .env("RELEASE", gate.with_extension("release"))
        .env("BEFORE", before.to_string())
        .env("FROM", middle.to_string())
        .env("TO", end.to_string())
        .run(&format!("[{kind}] the operating controls in Chromium"))
        .await;
    let _ = std::fs::remove_file(&gate);
    let _ = std::fs::remove_file(gate.with_extension("release"));

    // From the inside, what each click delivered (and a dismissed confirmation nothing):
    // 1 to 6 once; 3, then 6 (all permanent ones), then 5 (the selection) from the dead letters;
    // the reset to `before`: the six and the three copies again; the replay by time: 4 to 6;
    // job 99 once (the forced reset skips past it while it runs).
    let want = std::collections::BTreeMap::from([(1, 2), (2, 2), (3, 4), (4, 3), (5, 5), (6, 5), (99, 1)]);
    assert!(eventually(Duration::from_secs(30), || counts(&jobs.seen) == want).await, "[{kind}] {:?}\n{stdout}", counts(&jobs.seen));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(counts(&jobs.seen), want, "[{kind}] nothing more\n{stdout}");
    running.shutdown().await.unwrap();
}

on_both_brokers!(dead_letters_and_group_controls_in_a_browser);
