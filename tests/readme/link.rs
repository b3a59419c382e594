// Two crates of handlers, as a binary would list them in its Cargo.toml.
extern crate eventkit_test_extra as billing_handlers;
extern crate eventkit_test_handlers_only as shipping_handlers;
// items
fn main() {}
