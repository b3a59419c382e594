//! A crate of handlers only, as one bounded context per crate: a binary that lists it in its
//! Cargo.toml but never names it does not link it (see `tests/registration.rs`).

/// Declared and handled here.
#[eventkit::integration_event(topic = "billing.invoiced")]
pub struct Invoiced {
    /// The invoice number.
    pub number: u32,
}

#[eventkit::handler(group = "billing")]
async fn on_invoiced(_e: Invoiced) {}
