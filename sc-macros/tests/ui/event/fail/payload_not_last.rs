use sc_core::prelude::*;

#[event("chat")]
async fn chat(Json(text): Json<String>, socket: Socket) {
    let _ = (text, socket);
}

fn main() {}
