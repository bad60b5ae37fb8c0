use sc_core::prelude::*;

#[derive(Serialize, Deserialize)]
struct ChatMsg {
    text: String,
}

#[channel("rooms/{id}", message = ChatMsg, presence, presence)]
struct Room {
    id: u64,
}

fn main() {}
