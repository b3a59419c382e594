#[eventkit::integration_event(topic = "stock")]
pub struct LowStock {
    pub sku: String,
}

#[eventkit::handler(group = "purchasing", idempotent)]
async fn order(e: LowStock, _tx: eventkit::outbox::InboxTx<sqlx::Sqlite>) -> eventkit::Result<LowStock> {
    Ok(e)
}

fn main() {}
