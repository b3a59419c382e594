//! The same app without `eventkit::link!`: the handlers-only crate is in its dependencies but
//! never named. Prints its handlers, then starts (on the embedded broker) and stops.

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter("warn").init();
    for h in eventkit::Registry::global().unwrap().handlers() {
        println!("{}", h.name);
    }
    let running = eventkit::App::builder().config(eventkit::Config::default()).build().unwrap().start().await.unwrap();
    running.shutdown().await.unwrap();
}
