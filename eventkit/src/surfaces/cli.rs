//! The command line of eventkit apps and of the `eventkit` tool: `dlq list|count|replay`, and
//! `groups pause|resume|holds` (operators' pauses of running consumers: [`crate::control`]).
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
#[command(about = "Inspect and replay eventkit dead letter queues; pause and resume running consumer groups", disable_help_subcommand = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Dead letter queues.
    #[command(subcommand)]
    Dlq(Dlq),
    /// Pause and resume consumer groups on every running instance (until resumed, across
    /// restarts and rebalances).
    #[command(subcommand)]
    Groups(Groups),
}

#[derive(Subcommand, Debug)]
enum Groups {
    /// Pause a group, one topic of it, or one partition: nothing of it is handled until resumed.
    Pause {
        #[command(flatten)]
        scope: HoldScope,
    },
    /// Resume what was paused (resuming a group resumes everything paused in it).
    Resume {
        #[command(flatten)]
        scope: HoldScope,
    },
    /// Deliver again to one group (or one handler of it) the records a topic received between
    /// two times. Its committed offsets do not move: copies of the records go to the end of
    /// their partitions, addressed to it. The same replay asked again is not done twice
    /// (unless --again).
    Replay {
        /// The consumer group (its name in the code, without the group prefix).
        #[arg(long)]
        group: String,
        /// The topic (as events declare it, without prefix).
        #[arg(long)]
        topic: String,
        /// From this time, inclusive: RFC 3339 (2026-12-07T09:00:00Z) or milliseconds since the epoch.
        #[arg(long, value_parser = crate::flows::replay::parse_time)]
        from: i64,
        /// To this time, exclusive: a time that has passed (so that the same replay asked again
        /// is the same window).
        #[arg(long, value_parser = crate::flows::replay::parse_time)]
        to: i64,
        /// Only this handler of the group (`module::function`).
        #[arg(long)]
        handler: Option<String>,
        /// Replay even if the same replay was done before.
        #[arg(long)]
        again: bool,
        /// Who asks, recorded in the journal (default: the user running this).
        #[arg(long)]
        by: Option<String>,
    },
    /// Move a group's offsets (every topic it reads, one, or one partition): running members
    /// move the partitions they own (refused where records fetched are not settled yet, unless
    /// --force); a group without members gets them committed directly.
    Reset {
        /// The consumer group (its name in the code, without the group prefix).
        #[arg(long)]
        group: String,
        /// One topic of the group (as events declare it, without prefix).
        #[arg(long)]
        topic: Option<String>,
        /// One partition of that topic.
        #[arg(long, requires = "topic")]
        partition: Option<i32>,
        /// To the first record still in the log.
        #[arg(long, group = "target")]
        to_earliest: bool,
        /// To after the last record.
        #[arg(long, group = "target")]
        to_latest: bool,
        /// To this offset.
        #[arg(long, group = "target")]
        to_offset: Option<i64>,
        /// To the first record at or after this time (RFC 3339 or milliseconds since the epoch).
        #[arg(long, group = "target", value_parser = crate::flows::replay::parse_time)]
        to_time: Option<i64>,
        /// Even if it skips records fetched and not settled yet.
        #[arg(long)]
        force: bool,
        /// Who asks, recorded with the command (default: the user running this).
        #[arg(long)]
        by: Option<String>,
    },
    /// List what is paused, per group.
    Holds {
        /// Only this group (its name in the code, without the group prefix).
        #[arg(long)]
        group: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
struct HoldScope {
    /// The consumer group (its name in the code, without the group prefix).
    #[arg(long)]
    group: String,
    /// One topic of the group (as events declare it, without prefix).
    #[arg(long)]
    topic: Option<String>,
    /// One partition of that topic.
    #[arg(long, requires = "topic")]
    partition: Option<i32>,
    /// Who asks, recorded with the command (default: the user running this).
    #[arg(long)]
    by: Option<String>,
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
    args.get(1).is_some_and(|a| a == "dlq" || a == "groups")
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
    let command = match cli.command {
        Command::Dlq(command) => command,
        Command::Groups(command) => return groups(command, config, registry.as_ref()).await,
    };
    let mut dlq = DeadLetterQueue::new(config)?;
    if let Some(registry) = registry {
        dlq = dlq.with_registry(registry);
    }
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

/// `groups pause|resume|holds`.
async fn groups(command: Groups, config: &Config, registry: Option<&Registry>) -> Result<()> {
    use crate::flows::control::{self, Action, Command as ControlCommand, Scope};
    let user = || std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "unknown user".into());
    let (action, scope) = match command {
        Groups::Pause { scope } => (Action::Pause, scope),
        Groups::Resume { scope } => (Action::Resume, scope),
        Groups::Reset { group, topic, partition, to_earliest, to_latest, to_offset, to_time, force, by } => {
            use control::ResetTo;
            let to = match (to_earliest, to_latest, to_offset, to_time) {
                (true, ..) => ResetTo::Earliest,
                (_, true, ..) => ResetTo::Latest,
                (_, _, Some(n), _) => ResetTo::Offset(n),
                (_, _, _, Some(t)) => ResetTo::Time(t),
                _ => return Err(Error::Usage("choose where to: --to-earliest, --to-latest, --to-offset N or --to-time TIME".into())),
            };
            let group = config.group_for(Some(&group));
            let topics = match (topic, registry) {
                (Some(t), _) => vec![config.topic_name(&t)],
                (None, Some(registry)) => {
                    let plans = registry.groups(&Config { groups: None, ..config.clone() });
                    let Some(plan) = plans.into_iter().find(|p| p.group_id == group) else {
                        return Err(Error::Usage(format!("--group: unknown group `{group}`")));
                    };
                    plan.topics.into_iter().collect()
                }
                (None, None) => return Err(Error::Usage("--topic: name the topic (this tool does not know the group's topics; `PROGRAM groups reset` run by the service does)".into())),
            };
            let by = format!("{} (command line)", by.unwrap_or_else(user));
            let request = control::ResetRequest { group: group.clone(), topics, partition, to, force };
            let report = control::reset_offsets(config, &request, by).await.map_err(|e| match e {
                Error::Usage(m) => Error::Usage(format!("--{m}")),
                other => other,
            })?;
            for p in &report.partitions {
                println!("{}[{}] -> {}  {}{}", p.topic, p.partition, p.offset, p.status, p.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default());
            }
            let how = if report.direct { "committed directly: the group has no members" } else { "moved by the group's members" };
            println!("reset of group {group}: {how}");
            if report.partitions.iter().any(|p| p.status != "reset") {
                return Err(Error::msg("some partitions were not reset"));
            }
            return Ok(());
        }
        Groups::Replay { group, topic, from, to, handler, again, by } => {
            let group = config.group_for(Some(&group));
            let topic = config.topic_name(&topic);
            if from >= to {
                return Err(Error::Usage(format!("--to ({to} ms) must be after --from ({from} ms)")));
            }
            if let Some(registry) = registry {
                let plans = registry.groups(&Config { groups: None, ..config.clone() });
                let Some(plan) = plans.iter().find(|p| p.group_id == group) else {
                    let known: Vec<&str> = plans.iter().map(|p| p.group_id.as_str()).collect();
                    return Err(Error::Usage(format!("--group: unknown group `{group}`; this app runs: {}", known.join(", "))));
                };
                if !plan.topics.contains(&topic) {
                    return Err(Error::Usage(format!("--topic: group `{group}` does not read `{topic}`")));
                }
                if let Some(h) = &handler {
                    if !plan.all_handlers().any(|x| x.name == h.as_str()) {
                        return Err(Error::Usage(format!("--handler: group `{group}` has no handler `{h}`")));
                    }
                }
            }
            let by = format!("{} (command line)", by.unwrap_or_else(user));
            let r = crate::flows::replay::TimeReplay { group: group.clone(), topic: topic.clone(), handler, from_ms: from, to_ms: to };
            match control::replay_by_time(config, &r, by, again).await? {
                control::ReplayOutcome::Done(report) => {
                    for w in &report.partitions {
                        println!("{topic}[{}] offsets {}..{}", w.partition, w.from_offset, w.to_offset);
                    }
                    println!("replayed {} records to group {group} (skipped {} copies of earlier replays)", report.replayed, report.skipped_replays);
                }
                control::ReplayOutcome::Before(first) => {
                    let n = first.replay.as_ref().map_or(0, |r| r.records);
                    println!("replayed 0: the same replay was done at {} by {} ({n} records); --again replays once more", first.at, first.by);
                }
            }
            return Ok(());
        }
        Groups::Holds { group, json } => {
            let group = group.map(|g| config.group_for(Some(&g)));
            let holds = control::read_holds(config).await?;
            let mut rows = Vec::new();
            for (g, holds) in holds.iter().filter(|(g, _)| group.as_ref().is_none_or(|want| want == *g)) {
                for h in holds.list() {
                    rows.push((g.clone(), h));
                }
            }
            if json {
                for (g, h) in &rows {
                    let mut line = serde_json::to_value(h)?;
                    line["group"] = serde_json::Value::String(g.clone());
                    println!("{line}");
                }
            } else {
                println!("{:<32} {:<40} {:<26} BY", "GROUP", "PAUSED", "SINCE");
                for (g, h) in &rows {
                    println!("{g:<32} {:<40} {:<26} {}", h.scope.to_string(), h.at, h.by);
                }
                println!("{} paused", rows.len());
            }
            return Ok(());
        }
    };
    let group = config.group_for(Some(&scope.group));
    let topic = scope.topic.as_deref().map(|t| config.topic_name(t));
    if let Some(registry) = registry {
        // Run by the service itself: what it names must be one of its groups and topics.
        let plans = registry.groups(&Config { groups: None, ..config.clone() });
        let Some(plan) = plans.iter().find(|p| p.group_id == group) else {
            let known: Vec<&str> = plans.iter().map(|p| p.group_id.as_str()).collect();
            return Err(Error::Usage(format!("--group: unknown group `{group}`; this app runs: {}", known.join(", "))));
        };
        if let Some(topic) = &topic {
            if !plan.topics.contains(topic) {
                let known: Vec<&str> = plan.topics.iter().map(String::as_str).collect();
                return Err(Error::Usage(format!("--topic: group `{group}` does not read `{topic}`; it reads: {}", known.join(", "))));
            }
        }
    }
    if let (Some(topic), Some(partition)) = (&topic, scope.partition) {
        let count = crate::kafka::offsets::partition_count(config, topic).await?;
        if partition < 0 || count.is_some_and(|n| partition as usize >= n) {
            return Err(Error::Usage(format!("--partition: topic `{topic}` has no partition {partition}")));
        }
    }
    let by = format!("{} (command line)", scope.by.unwrap_or_else(user));
    let scope = Scope { topic, partition: scope.partition };
    if action == Action::Resume {
        let holds = control::read_holds(config).await?;
        if let Some(wider) = holds.get(&group).and_then(|h| h.held_by_wider(&scope)) {
            return Err(Error::msg(format!("{scope} stays paused by the pause of {} (by {}, at {}): resume that instead", wider.scope, wider.by, wider.at)));
        }
    }
    let command = ControlCommand::new(action, group.clone(), scope.clone(), by);
    let publisher = crate::flows::publish::Publisher::with_broker(config, None, Default::default())?;
    let offset = control::write(config, &publisher, &command).await?;
    publisher.flush(std::time::Duration::from_secs(10))?;
    println!("{action} of {scope} in group {group} sent (command {}, control topic offset {offset}); running instances apply it as they read it", command.id);
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
