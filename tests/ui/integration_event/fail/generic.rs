#[eventkit::integration_event]
pub struct Envelope<T> {
    pub body: T,
}

fn main() {}
