//! The command line of eventkit apps and of the `eventkit` tool: `dlq list|count|replay`.
//!
//! Exit statuses: 0 when the command did what it was asked; 1 when it failed (a topic or entry
//! that does not exist, a broker error, selected entries that could not be replayed); 2 for
//! arguments it cannot use.

use clap::{Args, Parser, Subcommand};

use crate::core::config::Config;
use crate::flows::dlq::listing::{parse_entry, parse_range, Listed};
use crate::flows::dlq::{DeadLetter, DeadLetterQueue, DlqFilter, ReplayOptions, Selection};
use crate::core::error::{Error, Result};
use crate::flows::registry::Registry;

#[derive(Parser, Debug)]
#[command(about = "Inspect and replay eventkit dead letter queues", disable_help_subcommand = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Dead letter queues.
    #[command(subcommand)]
    Dlq(Dlq),
}

#[derive(Subcommand, Debug)]
enum Dlq {
    /// List dead-lettered records (replayed ones are marked `*`; records eventkit did not
    /// write have kind `foreign`).
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON lines instead of a table (keys, values and headers included).
        #[arg(long)]
        json: bool,
    },
    /// Count dead-lettered records.
    Count {
        #[command(flatten)]
        target: Target,
    },
    /// Send dead-lettered records back to their topic, for the group and handler that failed.
    /// Entries that cannot be replayed are skipped and reported; the exit status is then 1.
    Replay {
        #[command(flatten)]
        target: Target,
        /// One entry: PARTITION:OFFSET in the dead letter topic.
        #[arg(long, value_parser = parse_entry, conflicts_with_all = ["range", "all"])]
        offset: Option<(i32, i64)>,
        /// Entries of one partition: PARTITION:FROM-TO (inclusive).
        #[arg(long, value_parser = parse_range, conflicts_with = "all")]
        range: Option<(i32, i64, i64)>,
        /// Every entry the filters accept.
        #[arg(long)]
        all: bool,
        /// Send to this topic (its name on the wire) instead of each entry's original topic.
        #[arg(long)]
        to: Option<String>,
        /// Send even when the destination topic does not exist (the broker may create it).
        #[arg(long)]
        create_topic: bool,
    },
}

#[derive(Args, Debug)]
struct Target {
    /// The topic whose dead letter queue to read (as events declare it, without prefix).
    #[arg(long)]
    topic: String,
    /// Only entries of this consumer group (its name in the code, without the group prefix).
    #[arg(long)]
    group: Option<String>,
    /// Only entries of this kind: handler-error, permanent, panic, extract, deserialization,
    /// unknown-type, envelope or foreign.
    #[arg(long)]
    kind: Option<String>,
    /// Only entries of this handler.
    #[arg(long)]
    handler: Option<String>,
    /// Only entries of this event type.
    #[arg(long)]
    event_type: Option<String>,
    /// Include entries that were replayed already.
    #[arg(long)]
    include_replayed: bool,
}

impl Target {
    fn filter(&self, config: &Config) -> Result<DlqFilter> {
        DlqFilter::named(config, self.group.as_deref(), self.kind.clone(), self.handler.clone(), self.event_type.clone(), self.include_replayed)
    }
}


/// Whether `args` (program name first) is a command this module runs: `dlq`, with or without
/// more (alone, it prints its usage and exits with status 2: `myservice dlq` never starts the
/// service).
pub fn is_command(args: &[String]) -> bool {
    args.get(1).is_some_and(|a| a == "dlq")
}

/// Runs the command in `args` and exits the process with its status (see the module docs).
/// `registry`: the app's handlers, to report replays addressed to handlers it no longer has.
pub async fn run_and_exit(args: Vec<String>, config: &Config, registry: Option<Registry>) -> ! {
    let code = match run_with(args, config, registry).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            exit_code(&e)
        }
    };
    std::process::exit(code)
}

/// The exit status of an error: 2 for usage errors, 1 otherwise.
pub fn exit_code(e: &Error) -> i32 {
    match e {
        Error::Usage(_) => 2,
        _ => 1,
    }
}

/// Runs `args` (program name first) against `config`'s cluster, printing to stdout.
pub async fn run(args: Vec<String>, config: &Config) -> Result<()> {
    run_with(args, config, None).await
}

async fn run_with(args: Vec<String>, config: &Config, registry: Option<Registry>) -> Result<()> {
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            print!("{e}");
            return Ok(());
        }
        Err(e) => return Err(Error::Usage(e.render().to_string().trim_start_matches("error: ").trim_end().to_owned())),
    };
    let mut config = config.clone();
    if config.bootstrap_servers.is_none() {
        // The embedded broker lives inside the running app: its address is where it said.
        let Some(running) = crate::app::announce::find(&config.service_name) else {
            return Err(Error::Usage(if registry.is_some() {
                format!(
                    "no broker to read: set KAFKA_BOOTSTRAP_SERVERS to the cluster's address, or start `{0}` first (while it runs on its embedded broker, `{0} dlq ...` finds that broker itself; set KAFKA_SERVICE_NAME if it runs under another service name)",
                    config.service_name
                )
            } else {
                // The `eventkit` tool serves any service: it finds one by the name it is given.
                "no broker to read: set KAFKA_BOOTSTRAP_SERVERS to the cluster's address, or KAFKA_SERVICE_NAME to the name of a service running here on its embedded broker".to_owned()
            }));
        };
        eprintln!("using the embedded broker of the running `{}` (pid {}) at {}", config.service_name, running.pid, running.bootstrap);
        config.bootstrap_servers = Some(running.bootstrap);
    }
    let config = &config;
    let mut dlq = DeadLetterQueue::new(config)?;
    if let Some(registry) = registry {
        dlq = dlq.with_registry(registry);
    }
    let Command::Dlq(command) = cli.command;
    match command {
        Dlq::List { target, json } => {
            let filter = target.filter(config)?;
            let dlq_topic = dlq.dlq_topic(&target.topic);
            // The header comes with the first entry: an error (a topic that does not exist)
            // prints nothing before it.
            let mut header = !json;
            let n = dlq
                .for_each(&target.topic, &filter, move |d| {
                    if json {
                        println!("{}", serde_json::to_string(&Listed::from(&d))?);
                    } else {
                        if std::mem::take(&mut header) {
                            println!("{:<10} {:<15} {:>8}  {:<24} {:<28} {:<20} ERROR", "ENTRY", "KIND", "ATTEMPTS", "GROUP", "HANDLER", "EVENT TYPE");
                        }
                        print_row(&d);
                    }
                    Ok(())
                })
                .await?;
            if !json {
                println!("{dlq_topic}: {n} entries (* replayed)");
            }
        }
        Dlq::Count { target } => println!("{}", dlq.count(&target.topic, &target.filter(config)?).await?),
        Dlq::Replay { target, offset, range, all, to, create_topic } => {
            let selection = match (offset, range, all) {
                (Some((partition, offset)), _, _) => Selection::One { partition, offset },
                (_, Some((partition, from, to)), _) => Selection::Range { partition, from, to },
                (_, _, true) => Selection::All,
                _ => return Err(Error::Usage("choose what to replay: --offset P:O, --range P:FROM-TO or --all".into())),
            };
            let options = ReplayOptions { to, create_topic };
            let report = dlq.replay_with(&target.topic, selection, &target.filter(config)?, &options).await?;
            for (entry, why) in &report.skipped {
                eprintln!("skipped {entry}: {why}");
            }
            println!("replayed {}, already replayed {}, skipped {}", report.replayed, report.already_replayed, report.skipped.len());
            if !report.skipped.is_empty() {
                return Err(Error::msg(format!("{} selected entries could not be replayed", report.skipped.len())));
            }
        }
    }
    Ok(())
}


fn print_row(d: &DeadLetter) {
    let entry = format!("{}:{}{}", d.partition, d.offset, if d.replayed { "*" } else { "" });
    let dash = |s: &str| if s.is_empty() { "-".to_owned() } else { s.to_owned() };
    println!(
        "{entry:<10} {:<15} {:>8}  {:<24} {:<28} {:<20} {}",
        d.kind,
        d.attempts,
        dash(&d.group),
        dash(&d.handler),
        d.event_type.as_deref().unwrap_or("-"),
        dash(&d.error)
    );
}

/// The command line as a surface: `PROGRAM dlq ...` runs the dead letter tool instead of the
/// service.
struct Surface;

impl crate::app::surface::Surface for Surface {
    fn name(&self) -> &'static str {
        "cli"
    }

    fn command(&self, args: &[String], config: &Config, registry: &Registry) -> Option<futures::future::BoxFuture<'static, std::convert::Infallible>> {
        if !is_command(args) {
            return None;
        }
        let (args, config, registry) = (args.to_vec(), config.clone(), registry.clone());
        Some(Box::pin(async move { run_and_exit(args, &config, Some(registry)).await }))
    }
}

inventory::submit!(crate::app::surface::Entry(&Surface));
