mod social {
    #[eventkit::integration_event(topic = "social")]
    pub struct Follow {
        pub user_id: u64,
    }
}

mod audit {
    #[eventkit::integration_event(topic = "audit")]
    pub struct Follow {
        pub user_id: u64,
    }
}

#[eventkit::maps_to(social::Follow, audit::Follow)]
pub struct Followed {
    #[map(Follow, skip)]
    pub user_id: u64,
}

fn main() {}
