//! Every contract option: the words, and guards over the usual extractors.
use sc_core::prelude::*;

#[derive(Serialize, Deserialize)]
struct ChatMsg {
    from: String,
    text: String,
}

#[derive(Deserialize)]
struct Claims {
    name: String,
}

#[channel("news/{id}", message = ChatMsg, subscribe = anyone, publish = server)]
struct News {
    id: u64,
}

#[channel("rooms/{id}", message = ChatMsg, subscribe = authenticated, publish = authenticated)]
struct Room {
    id: u64,
}

#[channel("open/{id}", message = ChatMsg, publish = anyone)]
struct Open {
    id: u64,
}

mod guards {
    use super::*;

    pub async fn members_only(Auth(_me): Auth<Claims>, Channel(_lobby): Channel<Lobby>) -> Result<(), Block> {
        Ok(())
    }

    pub async fn stamp_sender(Auth(me): Auth<Claims>, Json(msg): Json<ChatMsg>) -> Json<ChatMsg> {
        Json(ChatMsg { from: me.name, ..msg })
    }
}

#[channel("lobby/{id}", message = ChatMsg, subscribe = guards::members_only, publish = guards::stamp_sender)]
struct Lobby {
    id: u64,
}

/// Server-side only: no client subscribes or publishes; a guard named like a word is reached
/// through its path.
#[channel("internal/{id}", message = ChatMsg, subscribe = server, publish = self::anyone)]
struct Internal {
    id: u64,
}

async fn anyone(Json(msg): Json<ChatMsg>) -> Result<Json<ChatMsg>, Block> {
    Ok(Json(msg))
}

fn main() {
    let _app: App = handlers![News, Room, Open, Lobby, Internal].into();
}
