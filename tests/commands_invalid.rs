//! A command without a handler, and a command with two, are startup errors that name them,
//! raised before anything is consumed.

use eventkit::{command, handler};

#[command]
pub struct Orphan;

#[command(returns = u32)]
pub struct Twice;

#[handler]
async fn first(_c: Twice) -> eventkit::Result<u32> {
    Ok(1)
}

#[handler]
async fn second(_c: Twice) -> eventkit::Result<u32> {
    Ok(2)
}

#[test]
fn missing_and_duplicate_command_handlers_fail_the_build_of_the_app() {
    let err = eventkit::App::builder().service_name("commands-invalid").build().unwrap_err().to_string();
    assert!(err.contains("command `commands_invalid::Twice` has 2 handlers"), "{err}");
    assert!(err.contains("`commands_invalid::first`") && err.contains("`commands_invalid::second`"), "{err}");
    assert!(err.contains("no handler for command `commands_invalid::Orphan`"), "{err}");
    assert!(eventkit::topology().is_err());
}

#[tokio::test]
async fn send_without_a_running_app_is_an_error() {
    let err = eventkit::send(Orphan).await.unwrap_err();
    assert!(err.to_string().contains("no eventkit app is running"), "{err}");
}
