use sc_core::prelude::*;

#[derive(Serialize, Deserialize)]
struct ChatMsg {
    text: String,
}

async fn count(Json(msg): Json<ChatMsg>) -> usize {
    msg.text.len()
}

#[channel("rooms/{id}", message = ChatMsg, publish = count)]
struct Room {
    id: u64,
}

fn main() {
    let _app: App = handlers![Room].into();
}
