#[eventkit::handler]
async fn handle(_e: String) {}

fn main() {}
