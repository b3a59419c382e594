//! A service for the trace tests: handles `TracedOrder`s by cascading a `TracedInvoice`, with
//! `eventkit::run()`'s default logging (and OTLP export when `OTEL_EXPORTER_OTLP_ENDPOINT` is set).

use eventkit::{handler, integration_event, Context};

#[integration_event(topic = "trace.orders", key = order_id)]
pub struct TracedOrder {
    pub order_id: String,
}

#[integration_event(topic = "trace.invoices", key = order_id)]
pub struct TracedInvoice {
    pub order_id: String,
}

#[handler(group = "trace-orders")]
async fn invoice(order: TracedOrder, ctx: &Context) -> eventkit::Result<()> {
    ctx.cascade(TracedInvoice { order_id: order.order_id });
    Ok(())
}

#[tokio::main]
async fn main() -> eventkit::Result<()> {
    eventkit::run().await
}
