// The listing names a key by its JSON name; `crate = "..."` reaches eventkit through a facade.
mod facade {
    pub use eventkit;
}

#[eventkit::integration_event(key = r#type)]
pub struct Typed {
    pub r#type: String,
}

#[eventkit::integration_event(key = user_id)]
#[serde(rename_all = "camelCase")]
pub struct Renamed {
    pub user_id: u64,
}

#[eventkit::integration_event(key = id, crate = "crate::facade::eventkit")]
pub struct Through {
    #[serde(rename = "ID")]
    pub id: u64,
}

fn main() {
    use eventkit::IntegrationEvent;
    assert_eq!(Typed::INFO.key_field, Some("type"));
    assert_eq!(Renamed::INFO.key_field, Some("userId"));
    assert_eq!(Through::INFO.key_field, Some("ID"));
    assert_eq!(Through { id: 7 }.partition_key().as_deref(), Some("7"));
    assert_eq!(serde_json::to_string(&Renamed { user_id: 1 }).unwrap(), r#"{"userId":1}"#);
}
