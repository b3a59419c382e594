//! A second crate of the workspace whose event and handler must be found at link time. It
//! names eventkit `ek` (see Cargo.toml).

use std::sync::{Arc, Mutex};

/// Declared in this crate, handled here and in the test crate.
#[ek::integration_event(topic = "registration.pings", key = n)]
pub struct Ping {
    /// A number to tell pings apart.
    pub n: u32,
}

/// What the handler of this crate saw.
#[derive(Clone, Default)]
pub struct ExtraSeen(pub Arc<Mutex<Vec<u32>>>);

#[ek::handler(group = "extra-crate")]
async fn on_ping_extra(ping: Ping, seen: &ExtraSeen) {
    seen.0.lock().unwrap().push(ping.n);
}
