use sc_core::prelude::*;

#[derive(Serialize)]
struct ChatMsg {
    text: String,
}

#[channel("rooms//{id}", message = ChatMsg)]
struct Room {
    id: u64,
}

#[channel("/lobby", message = ChatMsg)]
struct Lobby;

fn main() {}
