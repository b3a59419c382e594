use eventkit::integration_event;
// items
fn main() {}
