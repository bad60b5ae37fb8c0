use sc_core::prelude::*;

#[derive(Serialize)]
struct ChatMsg {
    text: String,
}

// One mistake, one error: the capture and the field do not match.
#[channel("rooms/{room_id}", message = ChatMsg)]
struct Room {
    id: u64,
}

fn main() {}
