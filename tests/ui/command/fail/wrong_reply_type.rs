#[eventkit::command(returns = u64)]
pub struct RegisterUser {
    pub email: String,
}

#[eventkit::handler]
async fn register(cmd: RegisterUser) -> eventkit::Result<String> {
    Ok(cmd.email)
}

fn main() {}
