mod social {
    #[eventkit::integration_event(topic = "social")]
    pub struct Follow {
        pub user_id: u64,
    }
}

mod audit {
    pub struct Follow;
}

#[eventkit::maps_to(social::Follow)]
pub struct Followed {
    pub user_id: u64,
    #[map(audit::Follow, skip)]
    pub note: String,
}

fn main() {}
