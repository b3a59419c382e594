use eventkit::{handler, integration_event, Context, FromContext, Metadata, Publisher, State};

#[integration_event(topic = "orders")]
pub struct OrderPlaced {
    pub id: u64,
}

#[derive(Clone)]
pub struct Db;

pub struct Tenant(pub String);

impl FromContext for Tenant {
    fn from_context(ctx: &Context) -> eventkit::Result<Self> {
        Ok(Tenant(ctx.metadata().tenant_id.clone().unwrap_or_default()))
    }
}

#[handler]
async fn event_only(_e: OrderPlaced) {}

#[handler(group = "g", name = "custom-name")]
async fn with_context(_e: OrderPlaced, _ctx: &Context) -> eventkit::Result<()> {
    Ok(())
}

#[handler(group = "g")]
async fn extractors_in_any_order(
    _e: OrderPlaced,
    _db: State<Db>,
    _ctx: &Context,
    _tenant: Tenant,
    _publisher: Publisher,
    _meta: Metadata,
    _db_ref: &Db,
) -> Result<(), String> {
    Ok(())
}

fn main() {
    let registry = eventkit::Registry::global().unwrap();
    assert!(registry.handler("custom-name").is_some());
    let named = |suffix: &str| registry.handlers().iter().copied().find(|h| h.name.ends_with(suffix));
    assert_eq!(named("::event_only").unwrap().group, None);
    let h = named("::extractors_in_any_order").unwrap();
    assert_eq!(h.group, Some("g"));
    let mut req = eventkit::Requirements::default();
    (h.requires)(&mut req);
    assert!(req.state_names().len() == 1 && req.state_names()[0].ends_with("::Db"));
}
