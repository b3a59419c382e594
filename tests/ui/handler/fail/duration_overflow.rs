#[eventkit::integration_event]
pub struct PageView {
    pub user: String,
}

#[eventkit::handler(batch, max_wait = "400000000000000m")]
async fn handle(_views: Vec<PageView>) {}

fn main() {}
