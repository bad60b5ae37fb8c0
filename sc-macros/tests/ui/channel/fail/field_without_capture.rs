use sc_core::prelude::*;

#[derive(Serialize)]
struct ChatMsg {
    text: String,
}

#[channel("rooms/{id}", message = ChatMsg)]
struct Room {
    id: u64,
    lang: String,
}

fn main() {}
