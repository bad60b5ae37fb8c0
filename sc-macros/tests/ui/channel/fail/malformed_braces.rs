use sc_core::prelude::*;

#[derive(Serialize)]
struct ChatMsg {
    text: String,
}

#[channel("rooms/{id", message = ChatMsg)]
struct Room {
    id: u64,
}

#[channel("users/user-{id}", message = ChatMsg)]
struct User {
    id: u64,
}

fn main() {}
