use sc_core::prelude::*;

#[event("chat")]
async fn chat(count: u32, Json(text): Json<String>) {
    let _ = (count, text);
}

fn main() {}
