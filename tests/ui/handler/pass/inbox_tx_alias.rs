// An `InboxTx` imported under another name is still the inbox transaction: the `idempotent`
// check reads the argument's type, not its name.
use eventkit::outbox::InboxTx as Tx;
use sqlx::Sqlite;

#[eventkit::integration_event(topic = "stock")]
pub struct LowStock {
    pub sku: String,
}

#[eventkit::handler(group = "purchasing", idempotent)]
async fn order(_e: LowStock, _ctx: &eventkit::Context, tx: Tx<Sqlite>) -> eventkit::Result<()> {
    tx.commit().await
}

fn main() {
    let registry = eventkit::Registry::global().unwrap();
    let h = registry.handlers().iter().copied().find(|h| h.name.ends_with("::order")).unwrap();
    let mut req = eventkit::Requirements::default();
    (h.requires)(&mut req);
    assert!(req.state_names().iter().any(|n| n.contains("Inbox<") && n.contains("Sqlite")), "{:?}", req.state_names());
}
