// A user event that happens to be named `AnyEvent` is an ordinary typed event; eventkit's
// `AnyEvent` under another name is still the catch-all.
mod mine {
    #[eventkit::integration_event(topic = "mine")]
    pub struct AnyEvent {
        pub n: u32,
    }
}

use eventkit::AnyEvent as Everything;

#[eventkit::handler(group = "typed")]
async fn typed(_e: mine::AnyEvent) {}

#[eventkit::handler(group = "everything", topics = ["mine"])]
async fn everything(_e: Everything) {}

fn main() {
    let registry = eventkit::Registry::global().unwrap();
    let kind = |name: &str| registry.handlers().iter().find(|h| h.name.ends_with(name)).unwrap().kind;
    assert!(matches!(kind("typed"), eventkit::HandlerKind::Typed(_)));
    assert!(matches!(kind("everything"), eventkit::HandlerKind::CatchAll { topics: ["mine"], .. }));
}
