//! An app that links a handlers-only crate with `eventkit::link!`; prints its handlers.

eventkit::link!(eventkit_test_handlers_only);

#[tokio::main]
async fn main() {
    for h in eventkit::Registry::global().unwrap().handlers() {
        println!("{}", h.name);
    }
}
