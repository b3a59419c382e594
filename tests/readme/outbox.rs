#[eventkit::integration_event(topic = "users.registered.v1", key = user_id)]
pub struct UserRegistered { pub user_id: String, pub email: String }

#[eventkit::maps_to(UserRegistered)]
pub struct UserRegisteredDomainEvent { #[map(to = user_id, with = ToString::to_string)] pub aggregate_id: u64, pub email: String }

// items

#[allow(dead_code, unused_variables)]
async fn snippet(pool: sqlx::SqlitePool, ctx: &eventkit::Context, registered: UserRegisteredDomainEvent) -> eventkit::Result<()> {
let _: Option<Inbox<sqlx::Sqlite>> = None;
// statements
Ok(())
}

fn main() {}
