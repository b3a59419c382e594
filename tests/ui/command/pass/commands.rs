#[eventkit::command(returns = u64)]
pub struct RegisterUser {
    pub email: String,
}

#[eventkit::handler]
async fn register(cmd: RegisterUser, _ctx: &eventkit::Context) -> eventkit::Result<u64> {
    Ok(cmd.email.len() as u64)
}

#[eventkit::command]
pub enum Ping {
    Once,
}

#[eventkit::handler(name = "pong")]
async fn pong(_cmd: Ping) {}

async fn call() -> eventkit::Result<u64> {
    eventkit::send(Ping::Once).await?;
    eventkit::send(RegisterUser { email: "a".into() }).await
}

fn main() {
    let _ = call();
}
