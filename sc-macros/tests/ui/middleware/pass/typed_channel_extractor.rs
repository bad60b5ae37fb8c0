// `Channel<T>` with a typed channel in the kinds that have a channel.
use sc_core::prelude::*;

#[derive(Serialize)]
struct ChatMsg {
    text: String,
}

#[channel("rooms/{id}", message = ChatMsg)]
struct Room {
    id: u64,
}

#[middleware(subscribe)]
async fn only_small_rooms(Channel(room): Channel<Room>) -> Result<(), Block> {
    if room.id > 100 {
        return Err(Block::new(ScError::new(
            "NoSuchRoom",
            format!("no room {}", room.id),
        )));
    }
    Ok(())
}

#[middleware(publish_in)]
async fn publish_in(Channel(room): Channel<Room>, Json(msg): Json<serde_json::Value>) {
    let _ = (room.id, msg);
}

#[middleware(publish_out)]
async fn publish_out(Channel(room): Channel<Room>) {
    let _ = room.id;
}

fn main() {
    let _app: App = handlers![Room, only_small_rooms, publish_in, publish_out];
}
