#[eventkit::integration_event]
pub struct PageView {
    pub user: String,
}

#[eventkit::handler(backoff = "1ms..99999999999999999s")]
async fn handle(_view: PageView) {}

fn main() {}
