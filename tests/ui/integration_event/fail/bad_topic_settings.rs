// Each bad topic setting is reported on its value.
#[eventkit::integration_event(topic = "users", partitions = 0, retention = "a week", cleanup_policy = "sometimes", compression = "zip")]
pub struct UserCreated {
    pub user_id: u64,
}

fn main() {}
