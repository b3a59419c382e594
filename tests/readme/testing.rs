use eventkit::{command, handler, integration_event, App, Context};

#[command(returns = String)]
pub struct PlaceOrder { pub amount: u32 }

#[integration_event(topic = "orders.placed.v1", key = order_id)]
pub struct OrderPlaced { pub order_id: String, pub amount: u32 }

#[integration_event(topic = "invoices.issued.v1", key = order_id)]
pub struct InvoiceIssued { pub order_id: String, pub total: u32 }

#[derive(Clone, Default)]
pub struct Mailer;

#[handler]
async fn place(cmd: PlaceOrder, ctx: &Context) -> eventkit::Result<String> {
    let order_id = "o-1".to_owned();
    ctx.publish(&OrderPlaced { order_id: order_id.clone(), amount: cmd.amount }).await?;
    Ok(order_id)
}

#[handler(group = "billing")]
async fn bill(order: OrderPlaced, _mailer: &Mailer) -> eventkit::Result<InvoiceIssued> {
    Ok(InvoiceIssued { order_id: order.order_id, total: order.amount + 1 })
}

#[allow(dead_code, unused_variables)]
async fn snippet(mailer: Mailer) -> eventkit::Result<()> {
// statements
Ok(())
}

fn main() {}
