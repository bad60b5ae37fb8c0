// The generated code is warning-free, items inside function bodies work, and handlers that are
// never listed do not warn either (their registration is an impl).
#![deny(warnings, missing_docs, unused_qualifications, unused_results)]
//! A crate that denies warnings.

use sc_core::prelude::*;

/// The chat API.
pub mod api {
    use sc_core::prelude::*;

    /// A message.
    #[derive(Serialize, Deserialize)]
    pub struct ChatMsg {
        /// Its text.
        pub text: String,
    }

    /// A room.
    #[channel("rooms/{id}", message = ChatMsg)]
    pub struct Room {
        /// Its id.
        pub id: u64,
    }

    /// Says something.
    #[event("say")]
    pub async fn say(exchange: Exchange, Json(msg): Json<ChatMsg>) -> Result<(), ScError> {
        exchange.publish(&Room { id: 1 }, &msg).await?;
        Ok(())
    }

    /// Never listed anywhere.
    #[middleware(publish_out)]
    pub async fn unused(Channel(room): Channel<Room>) -> Result<(), Block> {
        let _ = room.id;
        Ok(())
    }
}

fn main() {
    #[derive(Serialize)]
    struct Ping;

    #[channel("ping", message = Ping)]
    struct PingChannel;

    #[event("ping")]
    async fn ping(exchange: Exchange) -> Result<(), ScError> {
        exchange.publish(&PingChannel, &Ping).await?;
        Ok(())
    }

    let _app: App = handlers![api::Room, api::say, ping, PingChannel];
}
