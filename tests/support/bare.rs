//! An app that sets up no logging: starts on the embedded broker and stops.

#[tokio::main]
async fn main() -> eventkit::Result<()> {
    let running = eventkit::App::builder().groups([]).build()?.start().await?;
    running.shutdown().await
}
