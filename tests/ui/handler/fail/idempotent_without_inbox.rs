#[eventkit::integration_event(topic = "stock")]
pub struct LowStock {
    pub sku: String,
}

#[eventkit::handler(group = "purchasing", idempotent)]
async fn order(_e: LowStock, _ctx: &eventkit::Context) {}

fn main() {}
