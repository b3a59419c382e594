#[eventkit::integration_event]
pub struct Moved {
    pub id: u64,
}

#[derive(Clone)]
pub struct Mailer;

#[eventkit::handler]
async fn handle(_e: Moved, _mailer: &eventkit::State<Mailer>) {}

fn main() {}
