pub struct UserSignedUp {
    pub user_id: u64,
}

fn main() {
    let _ = eventkit::Cascade::new().with(UserSignedUp { user_id: 1 });
}
