#[eventkit::handler]
async fn handle() {}

fn main() {}
