mod ev {
    #[eventkit::integration_event(topic = "social")]
    pub struct Follow {
        pub user_id: u64,
    }
}

#[eventkit::maps_to(ev::Follow)]
pub struct Followed {
    #[map(Unfollow, skip)]
    pub user_id: u64,
}

fn main() {}
