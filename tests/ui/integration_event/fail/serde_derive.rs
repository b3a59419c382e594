#[eventkit::integration_event]
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Moved {
    pub id: u64,
}

fn main() {}
