#[eventkit::integration_event]
pub struct PageView {
    pub user: String,
}

#[eventkit::handler(max_size = 10)]
async fn handle(_view: PageView) {}

fn main() {}
