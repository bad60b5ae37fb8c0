use sc_core::prelude::*;

#[derive(Serialize, Deserialize)]
struct ChatMsg {
    text: String,
}

#[channel("rooms/{id}", message = ChatMsg, history = 0, history_ttl = "5 minutes")]
struct Room {
    id: u64,
}

#[channel("logs/{id}", message = ChatMsg, history_ttl = "1h")]
struct Log {
    id: u64,
}

fn main() {}
