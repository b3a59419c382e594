//! Rebalances lose nothing: a second consumer joins the group mid-stream and leaves again.

use std::collections::HashSet;
use std::time::Duration;

use eventkit::{handler, integration_event, Context};
use eventkit_tests::{eventually, on_both_brokers, Log, Target};

#[integration_event(topic = "rebalance.readings", key = sensor)]
#[derive(Debug, Clone)]
pub struct Reading {
    pub sensor: String,
    pub seq: u32,
}

#[handler(group = "meters")]
async fn meter(r: Reading, ctx: &Context, log: &Log<(u32, String)>) {
    tokio::time::sleep(Duration::from_micros(300)).await;
    log.push((r.seq, ctx.event_id().to_owned()));
}

async fn consumer_joining_and_leaving_loses_nothing(target: Target) {
    const EVENTS: u32 = 3_000;
    let log = Log::<(u32, String)>::default();
    let a = target.app().state(log.clone()).build().unwrap().start().await.unwrap();
    let publisher = a.publisher();
    let mut b = None;
    for chunk in 0..30u32 {
        let readings: Vec<Reading> = (chunk * 100..(chunk + 1) * 100).map(|seq| Reading { sensor: format!("s{}", seq % 12), seq }).collect();
        publisher.publish_many(&readings).await.unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        if chunk == 8 {
            b = Some(target.app().state(log.clone()).build().unwrap().start().await.unwrap());
        }
        if chunk == 20 {
            b.take().unwrap().shutdown().await.unwrap();
        }
    }
    let all_seen = eventually(Duration::from_secs(120), || log.snapshot().iter().map(|(s, _)| *s).collect::<HashSet<_>>().len() == EVENTS as usize).await;
    a.shutdown().await.unwrap();
    let seen = log.snapshot();
    let unique: HashSet<u32> = seen.iter().map(|(s, _)| *s).collect();
    assert!(all_seen, "[{}] 0 lost: {} of {EVENTS} seen", target.kind, unique.len());
    eprintln!("[{}] rebalance: {EVENTS} events, {} duplicates", target.kind, seen.len() - unique.len());
}
on_both_brokers!(consumer_joining_and_leaving_loses_nothing);
