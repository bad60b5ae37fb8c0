use sc_core::prelude::*;

#[derive(Serialize)]
struct ChatMsg {
    text: String,
}

#[channel("rooms/{id}/replies/{id}", message = ChatMsg)]
struct Reply {
    id: u64,
}

fn main() {}
