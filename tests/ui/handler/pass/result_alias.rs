// An `idempotent` handler may return `()` or `Result<(), E>` under any name: the check reads the
// return type, so aliases count.
use eventkit::outbox::InboxTx;
use sqlx::Sqlite;

#[eventkit::integration_event(topic = "stock")]
pub struct LowStock {
    pub sku: String,
}

type HandlerResult = eventkit::Result<()>;
type Outcome<T> = Result<T, std::io::Error>;
type Nothing = ();

#[eventkit::handler(group = "purchasing", idempotent)]
async fn order(_e: LowStock, tx: InboxTx<Sqlite>) -> HandlerResult {
    tx.commit().await
}

#[eventkit::handler(group = "purchasing", idempotent)]
async fn audit(_e: LowStock, _tx: InboxTx<Sqlite>) -> Outcome<Nothing> {
    Ok(())
}

#[eventkit::handler(group = "purchasing", idempotent)]
async fn note(_e: LowStock, _tx: InboxTx<Sqlite>) -> Nothing {}

fn main() {}
