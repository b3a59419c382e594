use eventkit::{handler, integration_event, Ordering};

#[integration_event(topic = "moves", key = id)]
pub struct Moved {
    pub id: u64,
}

#[handler(group = "a", ordering = "key", concurrency = 64)]
async fn by_key(_e: Moved) {}

#[handler(group = "b", ordering = "partition")]
async fn by_partition(_e: Moved) {}

#[handler(group = "c", ordering = "none", concurrency = 1)]
async fn unordered(_e: Moved) {}

#[handler(group = "d", batch, concurrency = 4)]
async fn batches(_e: Vec<Moved>) {}

fn main() {
    let registry = eventkit::Registry::global().unwrap();
    let of = |name: &str| {
        let h = registry.handlers().iter().find(|h| h.name.ends_with(name)).unwrap();
        (h.ordering, h.concurrency)
    };
    assert_eq!(of("by_key"), (Some(Ordering::Key), Some(64)));
    assert_eq!(of("by_partition"), (Some(Ordering::Partition), None));
    assert_eq!(of("unordered"), (Some(Ordering::None), Some(1)));
    assert_eq!(of("batches"), (None, Some(4)));
}
