//! `eventkit dlq list|count|replay`: inspect and replay dead letter queues of any eventkit
//! service; `eventkit groups pause|resume|holds`: pause and resume its consumer groups. Configuration comes from the environment (`KAFKA_BOOTSTRAP_SERVERS`, ...).
//! Exit statuses: 0 done, 1 failed (or entries skipped), 2 unusable arguments.

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match eventkit::Config::from_env() {
        Ok(config) => eventkit::cli::run_and_exit(args, &config, None).await,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(eventkit::cli::exit_code(&e));
        }
    }
}
