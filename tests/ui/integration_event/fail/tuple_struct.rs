#[eventkit::integration_event]
pub struct UserCreated(u64);

fn main() {}
