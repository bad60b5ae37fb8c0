use sc_core::prelude::*;

#[derive(Serialize, Deserialize)]
struct ChatMsg {
    text: String,
}

struct NotAnExtractor;

async fn members_only(_nope: NotAnExtractor) -> Result<(), Block> {
    Ok(())
}

#[channel("rooms/{id}", message = ChatMsg, subscribe = members_only)]
struct Room {
    id: u64,
}

fn main() {
    let _app: App = handlers![Room].into();
}
