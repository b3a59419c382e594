//! Rebalances with work in flight lose nothing and keep per-key order: a second consumer
//! joins the group mid-stream and leaves again while a slow handler runs many keys at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventkit::{handler, integration_event};
use eventkit_tests::{eventually, on_both_brokers, Log, Target};

#[integration_event(topic = "rebalance.readings", key = sensor)]
#[derive(Debug, Clone)]
pub struct Reading {
    pub sensor: String,
    pub seq: u32,
}

/// One group member: its name, the shared log, and how many of each key it runs at once.
#[derive(Clone)]
struct Owner {
    name: &'static str,
    log: Log<(&'static str, String, u32)>,
    running: Arc<Mutex<HashMap<String, usize>>>,
    overlaps: Log<String>,
}

impl Owner {
    fn new(name: &'static str, log: &Log<(&'static str, String, u32)>, overlaps: &Log<String>) -> Self {
        Owner { name, log: log.clone(), running: Arc::default(), overlaps: overlaps.clone() }
    }
}

#[handler(group = "meters")]
async fn meter(r: Reading, owner: &Owner) {
    {
        let mut running = owner.running.lock().unwrap();
        let n = running.entry(r.sensor.clone()).or_default();
        *n += 1;
        if *n > 1 {
            owner.overlaps.push(format!("{} ran {} twice at once", owner.name, r.sensor));
        }
    }
    tokio::time::sleep(Duration::from_millis(3)).await;
    *owner.running.lock().unwrap().get_mut(&r.sensor).unwrap() -= 1;
    owner.log.push((owner.name, r.sensor, r.seq));
}

async fn consumer_joining_and_leaving_loses_nothing_and_keeps_key_order(target: Target) {
    const SENSORS: u32 = 40;
    let log = Log::default();
    let overlaps = Log::default();
    let a = target.app().state(Owner::new("a", &log, &overlaps)).build().unwrap().start().await.unwrap();
    let publisher = a.publisher();
    let handled_by = |owner: &str| log.snapshot().iter().filter(|(o, _, _)| *o == owner).count();
    // A steady flow: 100 readings every 60 ms. The second member joins after 8 chunks and
    // leaves once it has handled some (its join takes a while on some brokers); the flow goes
    // on for 8 more chunks after that.
    let (mut b, mut left_at, mut chunk) = (None, None, 0u32);
    while left_at.is_none_or(|at| chunk < at + 8) {
        assert!(chunk < 600, "[{}] the second member never took part", target.kind);
        let readings: Vec<Reading> = (chunk * 100..(chunk + 1) * 100).map(|seq| Reading { sensor: format!("s{}", seq % SENSORS), seq }).collect();
        publisher.publish_many(&readings).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        if chunk == 8 {
            b = Some(target.app().state(Owner::new("b", &log, &overlaps)).build().unwrap().start().await.unwrap());
        }
        if chunk >= 20 && left_at.is_none() && handled_by("b") >= 200 {
            b.take().unwrap().shutdown().await.unwrap();
            left_at = Some(chunk);
        }
        chunk += 1;
    }
    let events = chunk * 100;
    let all_seen = eventually(Duration::from_secs(120), || log.snapshot().iter().map(|(_, _, s)| *s).collect::<HashSet<_>>().len() == events as usize).await;
    a.shutdown().await.unwrap();
    let seen = log.snapshot();
    let unique: HashSet<u32> = seen.iter().map(|(_, _, s)| *s).collect();
    assert!(all_seen, "[{}] 0 lost: {} of {events} seen", target.kind, unique.len());
    assert!(overlaps.is_empty(), "[{}] {:?}", target.kind, overlaps.snapshot());

    // Within each owner, each key's events come in increasing order, except where a rebalance
    // handed its partition back and it resumed from a committed offset: each owner saw at most
    // two such changes (b joining, b leaving).
    let mut by_owner_key: BTreeMap<(&str, String), Vec<u32>> = BTreeMap::new();
    for (owner, key, seq) in &seen {
        by_owner_key.entry((owner, key.clone())).or_default().push(*seq);
    }
    let mut restarts = 0;
    for ((owner, key), seqs) in &by_owner_key {
        let runs = 1 + seqs.windows(2).filter(|w| w[1] <= w[0]).count();
        assert!(runs <= 3, "[{}] {owner} handled {key} out of order: {seqs:?}", target.kind);
        restarts += runs - 1;
    }
    eprintln!(
        "[{}] rebalance: {events} events, {SENSORS} keys, {} handled by the second member, {} duplicates, {restarts} key restarts after rebalances",
        target.kind,
        handled_by("b"),
        seen.len() - unique.len()
    );
}
on_both_brokers!(consumer_joining_and_leaving_loses_nothing_and_keeps_key_order);
