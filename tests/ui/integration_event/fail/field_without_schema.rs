// A type inside an event derives `schemars::JsonSchema` too: the event's schema (AsyncAPI)
// is derived from it. The error points at the field.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Money {
    pub cents: u64,
}

#[eventkit::integration_event(topic = "payments")]
pub struct PaymentTaken {
    pub amount: Money,
}

fn main() {}
