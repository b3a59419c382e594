#[eventkit::integration_event(topic = "stock")]
pub struct LowStock {
    pub sku: String,
}

type Reorder = eventkit::Result<LowStock>;

#[eventkit::handler(group = "purchasing", idempotent)]
async fn order(e: LowStock, _tx: eventkit::outbox::InboxTx<sqlx::Sqlite>) -> Reorder {
    Ok(e)
}

fn main() {}
