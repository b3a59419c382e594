#[derive(Clone)]
pub struct Db;
impl Db {
    async fn insert_user(&self, email: &str) -> eventkit::Result<u64> { Ok(email.len() as u64) }
}

// items

#[allow(dead_code, unused_variables)]
async fn snippet() -> eventkit::Result<()> {
// statements
Ok(())
}

fn main() {}
