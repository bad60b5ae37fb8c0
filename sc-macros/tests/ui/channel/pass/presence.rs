//! Presence declared on channels (alone, with join/leave events, the flags before or after the
//! options), and the same written by hand for an untyped pattern.
use sc_core::app::contract::{ChannelContract, PresenceAccess, PresencePolicy};
use sc_core::prelude::*;

#[derive(Serialize, Deserialize)]
struct ChatMsg {
    text: String,
}

#[channel("rooms/{id}", message = ChatMsg, presence, join_leave)]
struct Room {
    id: u64,
}

#[channel("lobby/{id}", presence, message = ChatMsg, publish = anyone, history = 10)]
struct Lobby {
    id: u64,
}

fn main() {
    let app: App = handlers![Room, Lobby].into();
    let _app = app.channel_contract(
        ChannelContract::new("games/{name}").presence(
            PresencePolicy::new()
                .join_leave(true)
                .query(PresenceAccess::Authenticated),
        ),
    );
}
