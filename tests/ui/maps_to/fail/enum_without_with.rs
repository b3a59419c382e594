#[eventkit::integration_event(topic = "users")]
pub struct UserRegistered {
    pub user_id: u64,
}

#[eventkit::maps_to(UserRegistered)]
pub enum UserEvent {
    SignedUp { user_id: u64 },
}

fn main() {}
