//! An app that sets up no logging: starts on the embedded broker with `App::start` and stops
//! (with `BARE_WAIT=1`, once its standard input closes).

#[tokio::main]
async fn main() -> eventkit::Result<()> {
    let running = eventkit::App::builder().groups([]).build()?.start().await?;
    if std::env::var("BARE_WAIT").is_ok_and(|v| v == "1") {
        let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await;
    }
    running.shutdown().await
}
