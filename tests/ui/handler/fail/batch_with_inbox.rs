use eventkit::outbox::InboxTx as Tx;

#[eventkit::integration_event]
pub struct PageView {
    pub user: String,
}

#[eventkit::handler(batch)]
async fn handle(_views: Vec<PageView>, _tx: Tx<sqlx::Sqlite>) {}

fn main() {}
