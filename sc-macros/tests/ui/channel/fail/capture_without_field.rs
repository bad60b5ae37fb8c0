use sc_core::prelude::*;

#[derive(Serialize)]
struct ChatMsg {
    text: String,
}

#[channel("rooms/{id}/{lang}", message = ChatMsg)]
struct Room {
    id: u64,
}

fn main() {}
