use sc_core::prelude::*;

struct ChatMsg {
    text: String,
}

#[channel("rooms/{id}", message = ChatMsg)]
struct Room {
    id: u64,
}

fn main() {
    let _ = ChatMsg {
        text: String::new(),
    }
    .text;
}
