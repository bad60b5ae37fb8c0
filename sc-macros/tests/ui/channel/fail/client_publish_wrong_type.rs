// The client's `publish_to` on a typed channel accepts only its message type.
use sc_core::client::Client;
use sc_core::prelude::*;

#[derive(Serialize)]
struct ChatMsg {
    text: String,
}

#[channel("rooms/{id}", message = ChatMsg)]
struct Room {
    id: u64,
}

async fn send(client: &Client) {
    let _ = client.publish_to(&Room { id: 1 }, &"not a ChatMsg").await;
}

fn main() {
    let _ = send;
}
