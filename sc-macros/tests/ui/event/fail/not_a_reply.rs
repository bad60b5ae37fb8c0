use sc_core::prelude::*;

struct Profile {
    name: String,
}

#[event("profile")]
async fn profile() -> Profile {
    Profile {
        name: "alice".into(),
    }
}

fn main() {
    let _ = profile;
}
