//! The test harness: a command or event, and everything it causes across cascades, waited for
//! and then inspected; a timeout names what is still pending.

use std::time::Duration;

use eventkit::testing::TestApp;
use eventkit::{command, handler, integration_event, Context, Error};
use eventkit_tests::{on_both_brokers, Log, Target};

#[integration_event(topic = "testing.orders", key = order_id)]
#[derive(Debug, Clone, PartialEq)]
pub struct OrderPlaced {
    pub order_id: String,
    pub amount: u32,
}

#[integration_event(topic = "testing.invoices", key = order_id)]
#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceIssued {
    pub order_id: String,
    pub total: u32,
}

#[integration_event(topic = "testing.slow")]
#[derive(Debug, Clone)]
pub struct SlowEvent {
    pub n: u32,
}

#[command(returns = String)]
pub struct PlaceOrder {
    pub amount: u32,
}

#[handler]
async fn place_order(cmd: PlaceOrder, ctx: &Context) -> eventkit::Result<String> {
    let order_id = format!("o-{}", cmd.amount);
    ctx.cascade(OrderPlaced { order_id: order_id.clone(), amount: cmd.amount });
    Ok(order_id)
}

#[handler(group = "testing-billing")]
async fn bill(e: OrderPlaced) -> eventkit::Result<InvoiceIssued> {
    if e.amount == 0 {
        return Err(Error::permanent("nothing to bill"));
    }
    Ok(InvoiceIssued { order_id: e.order_id, total: e.amount + 1 })
}

#[derive(Clone, Default)]
struct Mail(Log<String>);

#[handler(group = "testing-mail")]
async fn mail_invoice(e: InvoiceIssued, mail: &Mail) {
    tokio::time::sleep(Duration::from_millis(200)).await;
    mail.0.push(e.order_id);
}

#[handler(group = "testing-slow")]
async fn slow(_e: SlowEvent) {
    tokio::time::sleep(Duration::from_secs(5)).await;
}

async fn a_session_waits_for_the_whole_cascade(target: Target) {
    let mail = Mail::default();
    let app = TestApp::start(target.app().groups(["testing-billing", "testing-mail"]).state(mail.clone())).await.unwrap();

    let (order_id, session) = app.send(PlaceOrder { amount: 41 }).await.unwrap();
    assert_eq!(order_id, "o-41");
    // It returned only after the mail group handled the invoice the billing group cascaded.
    assert_eq!(mail.0.snapshot(), ["o-41"], "[{}]", target.kind);
    assert_eq!(session.published_of::<OrderPlaced>(), [OrderPlaced { order_id: "o-41".into(), amount: 41 }]);
    assert_eq!(session.published_of::<InvoiceIssued>(), [InvoiceIssued { order_id: "o-41".into(), total: 42 }]);
    let handlers: Vec<String> = session.handled().iter().map(|h| h.handler.rsplit("::").next().unwrap().to_owned()).collect();
    assert_eq!(handlers, ["bill", "mail_invoice"]);
    assert!(session.groups_that_handled::<InvoiceIssued>().contains(&target.group("testing-mail")));

    // A dead-lettered event ends the session too, and is reported.
    let session = app.publish(&OrderPlaced { order_id: "o-0".into(), amount: 0 }).await.unwrap();
    let dead = session.dead_lettered();
    assert_eq!(dead.len(), 1, "{:?}", session.handled());
    assert!(dead[0].dead_lettered.as_deref().unwrap().contains("nothing to bill"));
    assert!(session.published_of::<InvoiceIssued>().is_empty());
    app.shutdown().await.unwrap();
}
on_both_brokers!(a_session_waits_for_the_whole_cascade);

async fn a_timeout_names_what_is_pending(target: Target) {
    let app = TestApp::start(target.app().groups(["testing-slow"])).await.unwrap().timeout(Duration::from_secs(1));
    let err = app.publish(&SlowEvent { n: 1 }).await.err().expect("the session times out").to_string();
    assert!(err.contains("still pending: SlowEvent") && err.contains(&target.group("testing-slow")), "{err}");
    app.shutdown().await.unwrap();
}
on_both_brokers!(a_timeout_names_what_is_pending);
