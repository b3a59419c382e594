#[eventkit::integration_event]
pub struct Moved {
    pub id: u64,
}

pub struct Counter;

#[eventkit::handler]
async fn handle(_e: Moved, _counter: &mut Counter) {}

fn main() {}
