use sc_core::prelude::*;

#[derive(Serialize)]
struct ChatMsg {
    text: String,
}

#[channel("rooms/{id}", message = ChatMsg, message = String)]
struct Room {
    id: u64,
}

fn main() {}
