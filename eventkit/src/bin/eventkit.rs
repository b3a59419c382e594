//! `eventkit dlq list|count|replay`: inspect and replay dead letter queues of any eventkit
//! service. Configuration comes from the environment (`KAFKA_BOOTSTRAP_SERVERS`, ...).

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match eventkit::Config::from_env() {
        Ok(config) => eventkit::cli::run(args, &config).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
