//! The registry: events and handlers collected at link time, validated once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use crate::flows::cascade::MappingDescriptor;
use crate::flows::command::{CommandDescriptor, CommandInfo};
use crate::core::config::Config;
use crate::core::error::{Error, Result};
use crate::core::event::EventInfo;
use crate::flows::handler::{HandlerDescriptor, HandlerKind};
use crate::core::ordering::Ordering;
use crate::wire::{TopicHints, WireFormat};

/// An event type registered by `#[integration_event]`.
#[derive(Debug)]
pub struct EventDescriptor {
    /// The event's static facts.
    pub info: &'static EventInfo,
}

inventory::collect!(EventDescriptor);

/// A validated snapshot of events and handlers.
#[derive(Debug, Clone)]
pub struct Registry {
    events: Vec<&'static EventInfo>,
    handlers: Vec<&'static HandlerDescriptor>,
    mappings: Vec<&'static MappingDescriptor>,
}

/// Command types without a handler, said as a problem.
fn orphan_commands(commands: impl IntoIterator<Item = &'static CommandInfo>, handlers: &[&'static HandlerDescriptor]) -> Option<String> {
    let handled = |c: &CommandInfo| handlers.iter().any(|h| matches!(h.kind, HandlerKind::Command { command, .. } if command == c));
    let mut missing: Vec<&str> = commands.into_iter().filter(|c| !handled(c)).map(|c| (c.type_name)()).collect();
    missing.sort();
    missing.dedup();
    (!missing.is_empty()).then(|| {
        format!(
            "no handler for command{} `{}`: add a `#[handler]` fn taking it (commands run in the process that sends them)",
            if missing.len() > 1 { "s" } else { "" },
            missing.join("`, `")
        )
    })
}

/// The handlers of one consumer group, as the runtime will run them.
#[derive(Debug, Clone)]
pub struct GroupPlan {
    /// The group id on the wire (with prefix).
    pub group_id: String,
    /// Topics on the wire that the group subscribes to.
    pub topics: BTreeSet<String>,
    /// Handlers by event type.
    pub handlers: BTreeMap<&'static str, Vec<&'static HandlerDescriptor>>,
    /// Catch-all handlers with the topics (on the wire) they receive.
    pub catch_all: Vec<(&'static HandlerDescriptor, BTreeSet<String>)>,
    /// The group's batch handler, if it is a batch group.
    pub batch: Option<&'static HandlerDescriptor>,
    /// The strictest ordering its handlers ask for (see [`Ordering`]).
    pub ordering: Ordering,
    /// How many records (batches, in a batch group) it handles at the same time: the lowest
    /// concurrency its handlers ask for.
    pub concurrency: usize,
    /// Whether its records are handled in Kafka transactions (exactly once consume → produce).
    pub transactional: bool,
    /// How to read and route records of each topic.
    pub(crate) routes: BTreeMap<String, Arc<TopicRoute>>,
}

/// What a consumer knows about one topic of its group, computed once.
#[derive(Debug, Clone)]
pub(crate) struct TopicRoute {
    /// The topic on the wire.
    pub topic: Arc<str>,
    /// How to read records without type information.
    pub hints: TopicHints,
    /// Catch-all handlers that receive this topic.
    pub catch_all: Vec<&'static HandlerDescriptor>,
}

impl GroupPlan {
    /// The typed handlers of records of `event_type` (catch-all ones come from the topic's route).
    pub(crate) fn typed_handlers(&self, event_type: &str) -> &[&'static HandlerDescriptor] {
        self.handlers.get(event_type).map(Vec::as_slice).unwrap_or_default()
    }

    /// Every handler of the group.
    pub fn all_handlers(&self) -> impl Iterator<Item = &'static HandlerDescriptor> + '_ {
        self.handlers.values().flatten().copied().chain(self.catch_all.iter().map(|(h, _)| *h))
    }
}

impl Registry {
    /// Everything registered in this program, validated on first use.
    pub fn global() -> Result<&'static Registry> {
        static GLOBAL: OnceLock<std::result::Result<Registry, String>> = OnceLock::new();
        GLOBAL
            .get_or_init(|| {
                let events = inventory::iter::<EventDescriptor>.into_iter().map(|e| e.info);
                let handlers: Vec<&'static HandlerDescriptor> = inventory::iter::<HandlerDescriptor>.into_iter().collect();
                let mappings = inventory::iter::<MappingDescriptor>.into_iter();
                let commands = inventory::iter::<CommandDescriptor>.into_iter().map(|c| c.info);
                let orphans = orphan_commands(commands, &handlers);
                let built = Registry::new(events, handlers).map(|r| r.with_mappings(mappings)).map_err(|e| match e {
                    Error::Registry(problems) => problems,
                    other => other.to_string(),
                });
                // Every problem at once.
                match (built, orphans) {
                    (built, None) => built,
                    (Ok(_), Some(orphans)) => Err(orphans),
                    (Err(problems), Some(orphans)) => Err(format!("{problems}; {orphans}")),
                }
            })
            .as_ref()
            .map_err(|e| Error::Registry(e.clone()))
    }

    /// An explicit registry, for platforms where link-time collection is unavailable or to
    /// run a chosen subset. Handler events are added automatically.
    pub fn new(
        events: impl IntoIterator<Item = &'static EventInfo>,
        handlers: impl IntoIterator<Item = &'static HandlerDescriptor>,
    ) -> Result<Registry> {
        let mut handlers: Vec<_> = handlers.into_iter().collect();
        handlers.sort_by_key(|h| h.name);
        let mut events: Vec<_> = events.into_iter().chain(handlers.iter().filter_map(|h| h.event)).collect();
        events.sort_by_key(|e| (e.event_type, (e.type_name)()));
        // The same Rust type, seen through its declaration and its handlers: once.
        let mut seen = std::collections::HashSet::new();
        events.retain(|e| seen.insert((e.type_id)()));
        let mut problems = Vec::new();
        for pair in events.windows(2) {
            if pair[0].event_type == pair[1].event_type {
                problems.push(format!(
                    "event type `{}` is declared twice: by `{}` and by `{}` (set `type = \"...\"` on one)",
                    pair[0].event_type,
                    (pair[0].type_name)(),
                    (pair[1].type_name)()
                ));
            }
        }
        for pair in handlers.windows(2) {
            if pair[0].name == pair[1].name {
                problems.push(format!("handler name `{}` is used twice (set `name = \"...\"` on one)", pair[0].name));
            }
        }
        // One handler per command type.
        let mut by_command: BTreeMap<&'static str, Vec<&'static str>> = BTreeMap::new();
        for h in &handlers {
            if let HandlerKind::Command { command, .. } = h.kind {
                by_command.entry((command.type_name)()).or_default().push(h.name);
            }
        }
        for (command, names) in by_command.iter().filter(|(_, n)| n.len() > 1) {
            problems.push(format!("command `{command}` has {} handlers (`{}`); a command has exactly one", names.len(), names.join("`, `")));
        }
        if problems.is_empty() {
            Ok(Registry { events, handlers, mappings: Vec::new() })
        } else {
            Err(Error::Registry(problems.join("; ")))
        }
    }

    /// Adds `#[maps_to]` mappings (domain event → integration events), for the listing; their
    /// integration events are registered too.
    pub fn with_mappings(mut self, mappings: impl IntoIterator<Item = &'static MappingDescriptor>) -> Registry {
        for m in mappings {
            for target in m.targets {
                if !self.events.iter().any(|e| e == target) {
                    self.events.push(target);
                }
            }
            self.mappings.push(m);
        }
        self.events.sort_by_key(|e| (e.event_type, (e.type_name)()));
        self.mappings.sort_by_key(|m| (m.module, m.domain));
        self
    }

    /// Checks that each of these command types has a handler here.
    pub fn check_commands(self, commands: impl IntoIterator<Item = &'static CommandInfo>) -> Result<Registry> {
        match orphan_commands(commands, &self.handlers) {
            None => Ok(self),
            Some(problem) => Err(Error::Registry(problem)),
        }
    }

    /// The handler of a command type.
    pub fn command_handler(&self, command: &CommandInfo) -> Option<&'static HandlerDescriptor> {
        self.handlers.iter().copied().find(|h| matches!(h.kind, HandlerKind::Command { command: c, .. } if c == command))
    }

    /// The `#[maps_to]` mappings.
    pub fn mappings(&self) -> &[&'static MappingDescriptor] {
        &self.mappings
    }

    /// A registry of the given handlers and event types only.
    pub fn of(handlers: impl IntoIterator<Item = &'static HandlerDescriptor>) -> Result<Registry> {
        Registry::new([], handlers)
    }

    /// Looks up a handler of the global registry by name.
    pub fn handler(&self, name: &str) -> Option<&'static HandlerDescriptor> {
        self.handlers.iter().copied().find(|h| h.name == name)
    }

    /// Registered event types, by type name.
    pub fn events(&self) -> &[&'static EventInfo] {
        &self.events
    }

    /// Registered handlers, by name.
    pub fn handlers(&self) -> &[&'static HandlerDescriptor] {
        &self.handlers
    }

    /// The event registered for a type name.
    pub fn event(&self, event_type: &str) -> Option<&'static EventInfo> {
        self.events.iter().copied().find(|e| e.event_type == event_type)
    }

    /// The consumer groups this configuration runs, with their topics and handlers.
    pub fn groups(&self, config: &Config) -> Vec<GroupPlan> {
        let mut groups: BTreeMap<String, GroupPlan> = BTreeMap::new();
        for &h in &self.handlers {
            if let HandlerKind::Command { .. } = h.kind {
                continue;
            }
            let group_id = config.group_for(h.group);
            if !config.runs_group(&group_id) {
                continue;
            }
            let plan = groups.entry(group_id.clone()).or_insert_with(|| GroupPlan {
                group_id,
                topics: BTreeSet::new(),
                handlers: BTreeMap::new(),
                catch_all: Vec::new(),
                batch: None,
                ordering: Ordering::None,
                concurrency: usize::MAX,
                transactional: false,
                routes: BTreeMap::new(),
            });
            match (h.kind, h.event) {
                (HandlerKind::CatchAll { topics, .. }, _) => {
                    plan.catch_all.push((h, topics.iter().map(|t| config.topic_name(t)).collect()));
                }
                (kind, Some(event)) => {
                    plan.topics.insert(config.topic_name(event.topic));
                    plan.handlers.entry(event.event_type).or_default().push(h);
                    if let HandlerKind::Batch { .. } = kind {
                        plan.batch = Some(h);
                    }
                }
                (_, None) => {}
            }
        }
        // Catch-all handlers without `topics` receive the topics of their group.
        for plan in groups.values_mut() {
            let typed_topics = plan.topics.clone();
            for (_, topics) in &mut plan.catch_all {
                if topics.is_empty() {
                    topics.clone_from(&typed_topics);
                }
                plan.topics.extend(topics.iter().cloned());
            }
        }
        let hints = self.topic_hints(config);
        for plan in groups.values_mut() {
            // Each handler gets its own setting or its group's; the group honours all of them.
            let (group_ordering, group_concurrency) = (config.ordering_of(&plan.group_id), config.concurrency_of(&plan.group_id));
            for h in plan.all_handlers().collect::<Vec<_>>() {
                let ordering = h.ordering.unwrap_or(group_ordering);
                if ordering.stricter_than(plan.ordering) {
                    plan.ordering = ordering;
                }
                plan.concurrency = plan.concurrency.min(h.concurrency.unwrap_or(group_concurrency)).max(1);
            }
            if plan.batch.is_some() {
                plan.ordering = Ordering::Partition;
            }
            // One producer runs one transaction at a time.
            // A transaction commits its record's offset + 1: with one record at a time per
            // partition (and one transaction at a time), that is the partition's watermark.
            plan.transactional = config.is_transactional(&plan.group_id);
            if plan.transactional {
                plan.concurrency = 1;
                plan.ordering = Ordering::Partition;
            }
            plan.routes = plan
                .topics
                .iter()
                .map(|t| {
                    let mut hint = hints.get(t).cloned().unwrap_or_default();
                    let catch_all: Vec<_> = plan.catch_all.iter().filter(|(_, topics)| topics.contains(t)).map(|(h, _)| *h).collect();
                    // Catch-all handlers take records without type information too.
                    if hint.single_type.is_none() && !catch_all.is_empty() {
                        hint.single_type = Some("");
                    }
                    (t.clone(), Arc::new(TopicRoute { topic: t.as_str().into(), hints: hint, catch_all }))
                })
                .collect();
        }
        groups.into_values().collect()
    }

    /// Per wire topic: whether records without CloudEvents headers are legacy envelopes,
    /// and the topic's only event type, if it has exactly one.
    pub(crate) fn topic_hints(&self, config: &Config) -> BTreeMap<String, TopicHints> {
        let mut by_topic: BTreeMap<String, Vec<&'static EventInfo>> = BTreeMap::new();
        for &e in &self.events {
            by_topic.entry(config.topic_name(e.topic)).or_default().push(e);
        }
        for topic in config.topic_formats.keys() {
            by_topic.entry(config.topic_name(topic)).or_default();
        }
        by_topic
            .into_iter()
            .map(|(topic, events)| {
                let bare = topic.strip_prefix(config.topic_prefix.as_str()).unwrap_or(&topic);
                // Legacy when this app publishes legacy envelopes there (by the event's own
                // format, the topic's, or the app's) or the topic is declared legacy.
                let legacy = config.topic_formats.get(bare) == Some(&WireFormat::Legacy)
                    || events.iter().any(|e| config.format_of(e) == WireFormat::Legacy);
                let single_type = match events.as_slice() {
                    [only] => Some(only.event_type),
                    _ => None,
                };
                (topic, TopicHints { legacy, single_type })
            })
            .collect()
    }

    /// Every topic on the wire that events or handlers use.
    pub fn topics(&self, config: &Config) -> BTreeSet<String> {
        let events = self.events.iter().map(|e| config.topic_name(e.topic));
        events.chain(self.groups(config).into_iter().flat_map(|g| g.topics)).collect()
    }

    /// Checks the shapes of the groups this configuration runs: a catch-all handler needs
    /// topics, and a batch handler is the only handler of its group.
    pub fn check_groups(&self, config: &Config) -> Result<()> {
        let mut problems = Vec::new();
        for plan in self.groups(config) {
            for (h, topics) in &plan.catch_all {
                if topics.is_empty() {
                    problems.push(format!(
                        "catch-all handler `{}` of group `{}` has no topics: name them with `topics = [...]` or give its group a typed handler",
                        h.name, plan.group_id
                    ));
                }
            }
            if let (Some(batch), true) = (plan.batch, plan.transactional) {
                problems.push(format!(
                    "batch handler `{}`: group `{}` is transactional, and batch handlers do not run in transactions (give it a group of its own)",
                    batch.name, plan.group_id
                ));
            }
            if let Some(batch) = plan.batch {
                if plan.all_handlers().count() > 1 {
                    problems.push(format!(
                        "batch handler `{}` must be the only handler of group `{}` (give it a group of its own)",
                        batch.name, plan.group_id
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Registry(problems.join("; ")))
        }
    }
}
