use sc_core::prelude::*;

struct Chat;

impl Chat {
    #[event("chat")]
    async fn chat(&self, Json(text): Json<String>) {
        let _ = text;
    }
}

fn main() {}
