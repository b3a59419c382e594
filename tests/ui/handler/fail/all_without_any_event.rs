#[eventkit::integration_event]
pub struct PageView {
    pub user: String,
}

#[eventkit::handler(all)]
async fn handle(_view: PageView) {}

fn main() {}
