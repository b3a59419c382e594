//! The command line of eventkit apps and of the `eventkit` tool: `dlq list|count|replay`.

use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::dlq::{DeadLetter, DeadLetterQueue, DlqFilter, Selection};
use crate::error::{Error, Result};

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
    /// List dead-lettered records.
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Count dead-lettered records.
    Count {
        #[command(flatten)]
        target: Target,
    },
    /// Send dead-lettered records back to their topic, for the group and handler that failed.
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
    },
}

#[derive(Args, Debug)]
struct Target {
    /// The topic whose dead letter queue to read (as events declare it, without prefix).
    #[arg(long)]
    topic: String,
    /// Only entries of this consumer group.
    #[arg(long)]
    group: Option<String>,
    /// Only entries of this kind (handler-error, permanent, panic, deserialization, unknown-type, envelope).
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
    fn filter(&self, config: &Config) -> DlqFilter {
        DlqFilter {
            group: self.group.as_deref().map(|g| if g.starts_with(&config.group_prefix) { g.to_owned() } else { config.group_for(Some(g)) }),
            kind: self.kind.clone(),
            handler: self.handler.clone(),
            event_type: self.event_type.clone(),
            include_replayed: self.include_replayed,
        }
    }
}

fn parse_entry(s: &str) -> std::result::Result<(i32, i64), String> {
    let (p, o) = s.split_once(':').ok_or("expected PARTITION:OFFSET")?;
    Ok((p.parse().map_err(|_| "bad partition")?, o.parse().map_err(|_| "bad offset")?))
}

fn parse_range(s: &str) -> std::result::Result<(i32, i64, i64), String> {
    let (p, r) = s.split_once(':').ok_or("expected PARTITION:FROM-TO")?;
    let (from, to) = r.split_once('-').ok_or("expected PARTITION:FROM-TO")?;
    Ok((p.parse().map_err(|_| "bad partition")?, from.parse().map_err(|_| "bad offset")?, to.parse().map_err(|_| "bad offset")?))
}

/// Whether `args` (program name first) asks for a command this module runs.
pub fn is_command(args: &[String]) -> bool {
    args.get(1).is_some_and(|a| a == "dlq")
}

/// Runs `args` (program name first) against `config`'s cluster, printing to stdout.
pub async fn run(args: Vec<String>, config: &Config) -> Result<()> {
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            print!("{e}");
            return Ok(());
        }
        Err(e) => return Err(Error::Config(e.to_string())),
    };
    if config.bootstrap_servers.is_none() {
        return Err(Error::Config("set KAFKA_BOOTSTRAP_SERVERS to inspect a dead letter queue".into()));
    }
    let dlq = DeadLetterQueue::new(config)?;
    let Command::Dlq(command) = cli.command;
    match command {
        Dlq::List { target, json } => {
            let entries = dlq.list(&target.topic, &target.filter(config)).await?;
            if json {
                for e in &entries {
                    println!("{}", serde_json::to_string(&ListedEntry::from(e))?);
                }
            } else {
                print_table(&dlq.dlq_topic(&target.topic), &entries);
            }
        }
        Dlq::Count { target } => println!("{}", dlq.count(&target.topic, &target.filter(config)).await?),
        Dlq::Replay { target, offset, range, all } => {
            let selection = match (offset, range, all) {
                (Some((partition, offset)), _, _) => Selection::One { partition, offset },
                (_, Some((partition, from, to)), _) => Selection::Range { partition, from, to },
                (_, _, true) => Selection::All,
                _ => return Err(Error::Config("choose what to replay: --offset P:O, --range P:FROM-TO or --all".into())),
            };
            let report = dlq.replay(&target.topic, selection, &target.filter(config)).await?;
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

/// A listed entry with its text fields decoded, for `--json`.
#[derive(serde::Serialize)]
struct ListedEntry<'a> {
    partition: i32,
    offset: i64,
    kind: &'a str,
    error: &'a str,
    attempts: u32,
    group: &'a str,
    handler: &'a str,
    event_type: Option<&'a str>,
    event_id: Option<&'a str>,
    topic: &'a str,
    original_partition: i32,
    original_offset: i64,
    first_failure: &'a str,
    last_failure: &'a str,
    replayed: bool,
    key: Option<String>,
    value: String,
}

impl<'a> From<&'a DeadLetter> for ListedEntry<'a> {
    fn from(d: &'a DeadLetter) -> Self {
        ListedEntry {
            partition: d.partition,
            offset: d.offset,
            kind: &d.kind,
            error: &d.error,
            attempts: d.attempts,
            group: &d.group,
            handler: &d.handler,
            event_type: d.event_type.as_deref(),
            event_id: d.event_id.as_deref(),
            topic: &d.topic,
            original_partition: d.original_partition,
            original_offset: d.original_offset,
            first_failure: &d.first_failure,
            last_failure: &d.last_failure,
            replayed: d.replayed,
            key: d.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned()),
            value: String::from_utf8_lossy(&d.value).into_owned(),
        }
    }
}

fn print_table(dlq_topic: &str, entries: &[DeadLetter]) {
    println!("{dlq_topic}: {} entries", entries.len());
    println!("{:<10} {:<15} {:>8}  {:<24} {:<28} {:<20} ERROR", "ENTRY", "KIND", "ATTEMPTS", "GROUP", "HANDLER", "EVENT TYPE");
    for d in entries {
        let entry = format!("{}:{}{}", d.partition, d.offset, if d.replayed { "*" } else { "" });
        let handler = if d.handler.is_empty() { "-" } else { &d.handler };
        println!(
            "{entry:<10} {:<15} {:>8}  {:<24} {:<28} {:<20} {}",
            d.kind,
            d.attempts,
            d.group,
            handler,
            d.event_type.as_deref().unwrap_or("-"),
            d.error
        );
    }
    if entries.iter().any(|d| d.replayed) {
        println!("(* replayed)");
    }
}
