#[eventkit::command(returns = u64)]
pub struct RegisterUser {
    pub email: String,
}

#[eventkit::handler(group = "users")]
async fn register(cmd: RegisterUser) -> eventkit::Result<u64> {
    Ok(cmd.email.len() as u64)
}

fn main() {}
