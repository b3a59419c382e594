//! Two different structs with the same name and topic, declared in two functions of one
//! module, are two event types with one type name: the registry says so, naming both.

use eventkit::{EventInfo, IntegrationEvent, Registry};

fn first() -> &'static EventInfo {
    #[eventkit::integration_event(topic = "dupes.created")]
    struct Created {
        _n: u32,
    }
    &Created::INFO
}

fn second() -> &'static EventInfo {
    #[eventkit::integration_event(topic = "dupes.created")]
    struct Created {
        _name: String,
    }
    &Created::INFO
}

#[test]
fn same_named_types_in_two_functions_are_two_types() {
    let error = Registry::new([first(), second()], []).unwrap_err().to_string();
    assert!(error.contains("event type `Created` is declared twice"), "{error}");
    assert!(error.contains("first::Created") && error.contains("second::Created"), "both named: {error}");
    // The same type seen twice is one type.
    assert!(Registry::new([first(), first()], []).is_ok());
    // What every app of this binary would meet at startup, said once.
    let global = Registry::global().unwrap_err().to_string();
    assert!(global.starts_with("registry: event type `Created`") && !global.contains("registry: registry"), "{global}");
}

mod elsewhere {
    /// Another Rust type claiming the type of `super::first`'s event.
    #[eventkit::integration_event(topic = "dupes.other", type = "Created")]
    pub struct Other {
        pub n: u32,
    }
}

#[test]
fn an_explicit_type_clash_across_modules_is_rejected() {
    let error = Registry::new([first(), &elsewhere::Other::INFO], []).unwrap_err().to_string();
    assert!(error.contains("event type `Created` is declared twice") && error.contains("elsewhere::Other"), "{error}");
}
