#[eventkit::handler(group = "audit", topics = ["orders", "not a topic!"])]
async fn audit(_e: eventkit::AnyEvent) {}

fn main() {}
