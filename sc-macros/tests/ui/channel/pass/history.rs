//! History declared on a channel, with and without a TTL, and the same written by hand.
use std::time::Duration;

use sc_core::app::contract::ChannelContract;
use sc_core::broker::HistoryPolicy;
use sc_core::prelude::*;

#[derive(Serialize, Deserialize)]
struct ChatMsg {
    text: String,
}

#[channel("rooms/{id}", message = ChatMsg, history = 100, history_ttl = "5m")]
struct Room {
    id: u64,
}

#[channel("logs/{id}", message = ChatMsg, publish = anyone, history = 10)]
struct Log {
    id: u64,
}

fn main() {
    let app: App = handlers![Room, Log].into();
    let _app = app.channel_contract(
        ChannelContract::new("feeds/{name}").history(HistoryPolicy::new(50, Duration::from_secs(30))),
    );
}
