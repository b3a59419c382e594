#[derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Email(pub String);

#[eventkit::integration_event(topic = "users")]
pub struct UserRegistered {
    pub user_id: u64,
    pub email: Email,
}

#[eventkit::maps_to(UserRegistered)]
pub struct UserSignedUp {
    pub user_id: u64,
    pub email: Vec<u8>,
}

fn main() {}
