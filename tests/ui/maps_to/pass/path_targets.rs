// Targets given by path: a field rule names its target by the type's name (`Follow` for
// `ev::Follow`), or by a path to the same type.
mod ev {
    #[eventkit::integration_event(topic = "social")]
    pub struct Follow {
        pub follower: u64,
        pub followee: u64,
    }

    #[eventkit::integration_event(topic = "audit")]
    pub struct Audit {
        pub follower: u64,
        pub note: String,
    }
}

#[eventkit::maps_to(ev::Follow, crate::ev::Audit(note = "followed".into()))]
pub struct Followed {
    pub follower: u64,
    #[map(Follow, to = followee)]
    #[map(Audit, skip)]
    pub target: u64,
    #[map(ev::Follow, skip)]
    #[map(self::ev::Audit, skip)]
    pub secret: String,
}

fn main() {
    let d = Followed { follower: 1, target: 2, secret: "s".into() };
    let f: ev::Follow = eventkit::MapsTo::map_to(&d);
    assert_eq!((f.follower, f.followee), (1, 2));
    let a: ev::Audit = eventkit::MapsTo::map_to(&d);
    assert_eq!((a.follower, a.note.as_str()), (1, "followed"));
}
