#[eventkit::integration_event]
pub struct PageView {
    pub user: String,
}

#[eventkit::handler(batch, max_wait = "soon")]
async fn handle(_views: Vec<PageView>) {}

fn main() {}
