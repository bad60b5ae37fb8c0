use sc_core::prelude::*;

#[derive(Serialize)]
struct ChatMsg {
    text: String,
}

#[derive(Serialize)]
struct Presence {
    online: bool,
}

#[channel("rooms/{id}", message = ChatMsg)]
struct Room {
    id: u64,
}

#[event("away")]
async fn away(exchange: Exchange) -> Result<(), ScError> {
    exchange
        .publish(&Room { id: 1 }, &Presence { online: false })
        .await?;
    Ok(())
}

fn main() {}
