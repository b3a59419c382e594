#[eventkit::integration_event(topic = "stock")]
pub struct LowStock {
    pub sku: String,
}

#[eventkit::handler(group = "purchasing", idempotent)]
async fn order(_e: LowStock, _meta: eventkit::Metadata) {}

fn main() {}
