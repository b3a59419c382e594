//! The topic listing: which events go where, and who consumes them.

use std::fmt;

use serde::Serialize;

use crate::core::config::Config;
use crate::flows::handler::HandlerKind;
use crate::flows::registry::Registry;

/// The registered events, topics, keys, versions, handlers and groups under a configuration.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Topology {
    /// The service name (CloudEvents `source`).
    pub service: String,
    /// Every registered event type.
    pub events: Vec<EventEntry>,
    /// Every consumer group this process runs.
    pub groups: Vec<GroupEntry>,
    /// Domain events and the integration events `#[maps_to]` maps them to.
    pub mappings: Vec<MappingEntry>,
    /// In-process commands and their handlers.
    pub commands: Vec<CommandEntry>,
}

/// One command and its handler.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CommandEntry {
    /// The command's Rust type, with its module.
    pub command: String,
    /// Its handler.
    pub handler: String,
    /// App state types the handler needs.
    pub state: Vec<String>,
}

/// One `#[maps_to]` mapping.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MappingEntry {
    /// The domain event's Rust type, with its module.
    pub domain: String,
    /// The CloudEvents types of the integration events it maps to, in order.
    pub events: Vec<String>,
    /// Their topics on the wire.
    pub topics: Vec<String>,
}

/// One event type.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EventEntry {
    /// The CloudEvents type.
    pub event_type: String,
    /// The Rust type, with its module.
    pub rust_type: String,
    /// The topic on the wire.
    pub topic: String,
    /// The partition-key field (`null`: the event id).
    pub key: Option<String>,
    /// The schema version.
    pub version: u32,
    /// The wire format events are published in.
    pub format: crate::wire::WireFormat,
}

/// One consumer group.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct GroupEntry {
    /// The group id on the wire.
    pub group: String,
    /// The topics it subscribes to.
    pub topics: Vec<String>,
    /// Its handlers.
    pub handlers: Vec<HandlerEntry>,
    /// Whether it handles records in Kafka transactions (exactly once consume → produce).
    pub transactional: bool,
}

/// One handler.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct HandlerEntry {
    /// The handler's name.
    pub name: String,
    /// The event type it takes.
    pub event_type: String,
    /// The topic it reads.
    pub topic: String,
    /// App state types it needs.
    pub state: Vec<String>,
    /// `typed`, `catch-all`, or `batch(max_size=N, max_wait=Dms)`.
    pub shape: String,
    /// The group's ordering (`key`, `partition` or `none`; batches: per partition).
    pub ordering: crate::Ordering,
    /// How many records (batches, for a batch handler) of the group run at the same time.
    pub concurrency: usize,
    /// Retries after a failed first attempt.
    pub retries: u32,
    /// The backoff between retries: first delay and longest, in milliseconds.
    pub backoff_ms: (u64, u64),
    /// Where a record goes once its retries are spent: `dlq`, or `skip` when the dead letter
    /// queue is off.
    pub exhausted: String,
}

impl Topology {
    /// The topology of `registry` under `config`.
    pub fn new(registry: &Registry, config: &Config) -> Self {
        let events = registry
            .events()
            .iter()
            .map(|e| EventEntry {
                event_type: e.event_type.into(),
                rust_type: format!("{}::{}", e.module, e.rust_name),
                topic: config.topic_name(e.topic),
                key: e.key_field.map(Into::into),
                version: e.version,
                format: config.format_of(e),
            })
            .collect();
        let groups = registry
            .groups(config)
            .into_iter()
            .map(|g| GroupEntry {
                group: g.group_id.clone(),
                transactional: g.transactional,
                topics: g.topics.iter().cloned().collect(),
                handlers: g
                    .all_handlers()
                    .map(|h| {
                        let mut requirements = crate::core::state::Requirements::default();
                        (h.requires)(&mut requirements);
                        let (event_type, topic) = match h.event {
                            Some(e) => (e.event_type.to_owned(), config.topic_name(e.topic)),
                            None => {
                                let topics = g.catch_all.iter().find(|(c, _)| c.name == h.name).map(|(_, t)| t);
                                ("*".to_owned(), topics.into_iter().flatten().cloned().collect::<Vec<_>>().join(","))
                            }
                        };
                        let shape = match h.kind {
                            HandlerKind::Typed(_) => "typed".to_owned(),
                            HandlerKind::CatchAll { .. } => "catch-all".to_owned(),
                            HandlerKind::Command { .. } => "command".to_owned(),
                            HandlerKind::Batch { max_size, max_wait_ms, .. } => format!("batch(max_size={max_size}, max_wait={max_wait_ms}ms)"),
                        };
                        let policy = h.retry.apply(config.retry_policy());
                        HandlerEntry {
                            retries: policy.retries,
                            backoff_ms: (millis(policy.first), millis(policy.max)),
                            exhausted: if config.dlq { "dlq" } else { "skip" }.into(),
                            name: h.name.into(),
                            event_type,
                            topic,
                            state: requirements.state_names().into_iter().map(Into::into).collect(),
                            shape,
                            ordering: g.ordering,
                            concurrency: g.concurrency,
                        }
                    })
                    .collect(),
            })
            .collect();
        let mappings = registry
            .mappings()
            .iter()
            .map(|m| MappingEntry {
                domain: format!("{}::{}", m.module, m.domain),
                events: m.targets.iter().map(|t| t.event_type.to_owned()).collect(),
                topics: m.targets.iter().map(|t| config.topic_name(t.topic)).collect(),
            })
            .collect();
        let commands = registry
            .handlers()
            .iter()
            .filter_map(|h| match h.kind {
                HandlerKind::Command { command, .. } => {
                    let mut requirements = crate::core::state::Requirements::default();
                    (h.requires)(&mut requirements);
                    Some(CommandEntry {
                        command: format!("{}::{}", command.module, command.rust_name),
                        handler: h.name.into(),
                        state: requirements.state_names().into_iter().map(Into::into).collect(),
                    })
                }
                _ => None,
            })
            .collect();
        Topology { service: config.service_name.clone(), events, groups, mappings, commands }
    }

    /// The listing as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("topology serializes")
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "service: {}", self.service)?;
        writeln!(f, "\nEVENTS")?;
        let rows = self.events.iter().map(|e| {
            let key = e.key.clone().unwrap_or_else(|| "(event id)".into());
            vec![e.event_type.clone(), e.version.to_string(), e.topic.clone(), key, e.format.to_string(), e.rust_type.clone()]
        });
        table(f, &["TYPE", "VERSION", "TOPIC", "KEY", "FORMAT", "RUST TYPE"], rows)?;
        writeln!(f, "\nCONSUMER GROUPS")?;
        let rows = self.groups.iter().flat_map(|g| {
            g.handlers.iter().map(|h| {
                let state = if h.state.is_empty() { "-".into() } else { h.state.join(", ") };
                vec![
                    g.group.clone(),
                    h.topic.clone(),
                    h.event_type.clone(),
                    h.name.clone(),
                    h.shape.clone(),
                    if g.transactional { format!("{} (transactional)", h.ordering) } else { h.ordering.to_string() },
                    h.concurrency.to_string(),
                    h.retries.to_string(),
                    format!("{}..{}", human_ms(h.backoff_ms.0), human_ms(h.backoff_ms.1)),
                    h.exhausted.clone(),
                    state,
                ]
            })
        });
        table(f, &["GROUP", "TOPIC", "EVENT TYPE", "HANDLER", "SHAPE", "ORDERING", "CONCURRENCY", "RETRIES", "BACKOFF", "THEN", "STATE"], rows)?;
        if !self.commands.is_empty() {
            writeln!(f, "\nCOMMANDS")?;
            let rows = self.commands.iter().map(|c| {
                let state = if c.state.is_empty() { "-".into() } else { c.state.join(", ") };
                vec![c.command.clone(), c.handler.clone(), state]
            });
            table(f, &["COMMAND", "HANDLER", "STATE"], rows)?;
        }
        if !self.mappings.is_empty() {
            writeln!(f, "\nDOMAIN EVENTS")?;
            let rows = self.mappings.iter().map(|m| vec![m.domain.clone(), "→".into(), m.events.join(", "), m.topics.join(", ")]);
            table(f, &["DOMAIN TYPE", "", "INTEGRATION EVENTS", "TOPICS"], rows)?;
        }
        Ok(())
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `250ms`, `2s`, `1.5s`, `10m`: as `#[handler(backoff = "..")]` is written.
fn human_ms(ms: u64) -> String {
    match ms {
        ms if ms >= 60_000 && ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms >= 1000 && ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms if ms >= 1000 => format!("{}s", ms as f64 / 1000.0),
        ms => format!("{ms}ms"),
    }
}

fn table(f: &mut fmt::Formatter<'_>, header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> fmt::Result {
    let rows: Vec<Vec<String>> = rows.collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |f: &mut fmt::Formatter<'_>, cells: Vec<&str>| {
        let text: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        writeln!(f, "{}", text.join("  ").trim_end())
    };
    line(f, header.to_vec())?;
    if rows.is_empty() {
        return writeln!(f, "(none)");
    }
    for row in &rows {
        line(f, row.iter().map(String::as_str).collect())?;
    }
    Ok(())
}
