#[eventkit::integration_event(topic = "users", key = user_id)]
pub struct UserRegistered {
    pub user_id: String,
    pub email: String,
}

fn upper(s: &str) -> String {
    s.to_uppercase()
}

#[eventkit::maps_to(UserRegistered)]
pub struct UserSignedUp {
    #[map(to = user_id, with = ToString::to_string)]
    pub id: u32,
    #[map(with = upper)]
    pub email: String,
}

#[eventkit::maps_to(UserRegistered, with = from_tuple)]
pub struct Pair(String, String);

fn from_tuple(p: &Pair) -> UserRegistered {
    UserRegistered { user_id: p.0.clone(), email: p.1.clone() }
}

#[eventkit::handler(group = "g")]
async fn returns_domain(_e: UserRegistered) -> eventkit::Result<Option<UserSignedUp>> {
    Ok(None)
}

#[eventkit::handler(group = "g")]
async fn returns_many(_e: UserRegistered) -> Result<(Vec<UserSignedUp>, UserRegistered), std::io::Error> {
    Ok((vec![], UserRegistered { user_id: "1".into(), email: "e".into() }))
}

fn main() {
    let e: UserRegistered = eventkit::MapsTo::map_to(&UserSignedUp { id: 7, email: "a".into() });
    assert_eq!(e.user_id, "7");
    assert_eq!(e.email, "A");
}
