use eventkit::{handler, integration_event, AnyEvent, BatchContext};

#[integration_event(topic = "page.views.v1")]
pub struct PageView { pub path: String }

#[integration_event(topic = "orders.v1", key = order_id)]
pub struct OrderCreated { pub order_id: String }

#[derive(Debug)]
pub struct InsertError { pub first_failed_row: usize }
impl std::fmt::Display for InsertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "row {} failed", self.first_failed_row) }
}
impl std::error::Error for InsertError {}

#[derive(Clone)]
pub struct Db;
impl Db {
    async fn insert(&self, rows: &[PageView]) -> Result<(), InsertError> { let _ = rows; Ok(()) }
}

#[derive(Clone, Default)]
pub struct ReadModel;
impl ReadModel {
    fn create(&self, order: OrderCreated) { let _ = order; }
}

// items

fn main() {}
