pub struct UserRow {
    pub user_id: u64,
}

#[eventkit::maps_to(UserRow)]
pub struct UserSignedUp {
    pub user_id: u64,
}

fn main() {}
