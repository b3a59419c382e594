//! The console (`/ui`) in a real browser: Debian's Chromium driven by Playwright
//! (`tests/ui-browser/console.mjs`) against a running service on each broker. It opens each
//! page, is refused without a token and refused an action with the read token, pauses a
//! partition and sees it paused (and events stop being handled there), resumes it and sees
//! them handled. `scripts/test.sh` installs Chromium and Playwright; elsewhere the test says it
//! skips, except in CI. With `EVENTKIT_UI_SCREENSHOTS=DIR` it saves each page (the README's).


use eventkit::{handler, integration_event, Context};
use eventkit_tests::{on_both_brokers, Log, Target};

#[integration_event(topic = "console.jobs", key = id, partitions = 2)]
#[derive(Debug, Clone, PartialEq)]
pub struct ConsoleJob {
    pub id: String,
    pub n: u32,
}

#[derive(Clone, Default)]
struct Done(Log<u32>);

#[handler(group = "console-workers")]
async fn work(job: ConsoleJob, done: &Done, _ctx: &Context) -> eventkit::Result<()> {
    done.0.push(job.n);
    Ok(())
}


async fn the_console_in_a_browser(target: Target) {
    let Some(script) = eventkit_tests::browser_script("console.mjs") else { return };
    const TOKEN: &str = "console-admin-token";
    const READ_TOKEN: &str = "console-read-token";
    let done = Done::default();
    let running = eventkit_tests::start_ready(
        target
            .app()
            .groups(["console-workers"])
            .state(done.clone())
            .admin_addr("127.0.0.1:0")
            .admin_token(TOKEN)
            .admin_read_token(READ_TOKEN)
    )
    .await;
    let stdout = script
        .env("BASE", format!("http://{}", running.admin_addr().unwrap()))
        .env("TOKEN", TOKEN)
        .env("READ_TOKEN", READ_TOKEN)
        .env("GROUP", target.group("console-workers"))
        .env("TOPIC", target.topic("console.jobs"))
        .env("EVENT_TYPE", "ConsoleJob")
        .run(&format!("[{}] the console in Chromium", target.kind))
        .await;
    // What the browser saw, checked from the inside: each event handled exactly once.
    let mut handled = done.0.snapshot();
    handled.sort_unstable();
    let want: Vec<u32> = (1..=handled.len() as u32).collect();
    assert_eq!(handled, want, "{stdout}");
    running.shutdown().await.unwrap();
}

on_both_brokers!(the_console_in_a_browser);
