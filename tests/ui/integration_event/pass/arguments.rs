use eventkit::{integration_event, IntegrationEvent};

#[integration_event(topic = "users.created.v1", key = user_id, version = 3, type = "com.example.user.created")]
#[derive(Debug, Clone, PartialEq)]
pub struct UserCreated {
    pub user_id: u64,
    pub email: String,
}

#[integration_event]
pub struct Defaults {
    pub n: i32,
}

fn main() {
    let e = UserCreated { user_id: 9, email: "a@b.c".into() };
    assert_eq!(e.partition_key().as_deref(), Some("9"));
    assert_eq!(UserCreated::INFO.version, 3);
    assert_eq!(UserCreated::INFO.event_type, "com.example.user.created");
    assert_eq!(UserCreated::INFO.key_field, Some("user_id"));
    assert_eq!(Defaults::INFO.topic, "integration-events.defaults");
    let json = serde_json::to_string(&e).unwrap();
    assert_eq!(serde_json::from_str::<UserCreated>(&json).unwrap(), e);
}
