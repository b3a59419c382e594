#[eventkit::integration_event]
pub enum Moved {
    Left,
    Right,
}

fn main() {}
