use eventkit::{handler, integration_event, AnyEvent, BatchContext, Context, HandlerKind};

#[integration_event(topic = "views")]
pub struct PageView {
    pub user: String,
}

#[derive(Clone)]
pub struct Sink;

#[handler(group = "batch", batch, max_size = 100, max_wait = "1s")]
async fn batch(_views: Vec<PageView>, _ctx: &BatchContext, _first: &Context, _sink: &Sink) -> eventkit::Result<()> {
    Ok(())
}

#[handler(group = "defaults", batch)]
async fn batch_defaults(_views: Vec<PageView>) {}

#[handler(group = "audit", topics = ["views", "other"])]
async fn everything(_e: AnyEvent, _ctx: &Context) {}

#[handler(group = "batch-all", all)]
async fn flagged(_e: eventkit::AnyEvent) {}

fn main() {
    let registry = eventkit::Registry::global().unwrap();
    let find = |suffix: &str| registry.handlers().iter().copied().find(|h| h.name.ends_with(suffix)).unwrap();
    assert!(matches!(find("::batch").kind, HandlerKind::Batch { max_size: 100, max_wait_ms: 1000, .. }));
    assert!(matches!(find("::batch_defaults").kind, HandlerKind::Batch { max_size: 500, max_wait_ms: 50, .. }));
    assert!(matches!(find("::everything").kind, HandlerKind::CatchAll { topics: ["views", "other"], .. }));
    assert!(matches!(find("::flagged").kind, HandlerKind::CatchAll { topics: [], .. }));
    assert!(find("::everything").event.is_none());
    let mut req = eventkit::Requirements::default();
    (find("::batch").requires)(&mut req);
    assert!(req.state_names().len() == 1 && req.state_names()[0].ends_with("::Sink"));
}
