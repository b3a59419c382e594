#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Id(pub u64);

#[eventkit::integration_event(key = id)]
pub struct Moved {
    pub id: Id,
}

fn main() {}
