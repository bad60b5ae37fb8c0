use sc_core::prelude::*;

#[event("chat")]
async fn chat(socket: Socket, Json(text): Json<String>, Raw(raw): Raw) {
    let _ = (socket, text, raw);
}

fn main() {}
