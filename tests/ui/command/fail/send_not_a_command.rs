pub struct RegisterUser {
    pub email: String,
}

async fn call() {
    let _ = eventkit::send(RegisterUser { email: String::new() }).await;
}

fn main() {
    let _ = call();
}
