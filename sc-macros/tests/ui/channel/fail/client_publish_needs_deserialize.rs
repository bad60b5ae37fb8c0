use sc_core::prelude::*;

#[derive(Serialize)]
struct ChatMsg {
    text: String,
}

#[channel("rooms/{id}", message = ChatMsg, publish = authenticated)]
struct Room {
    id: u64,
}

fn main() {
    let _app: App = handlers![Room].into();
}
