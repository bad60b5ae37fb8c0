//! {{name}}: a chat written with sc. Handlers are async functions annotated with what they
//! handle; `app()` lists them. `src/main.rs` serves it, `tests/chat.rs` tests it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sc_core::prelude::*;

/// What every member of a room receives.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ChatMsg {
    pub from: String,
    pub text: String,
    /// When the server accepted it, in milliseconds since the Unix epoch (the page shows it in
    /// the reader's time zone).
    pub at: u64,
}

/// `rooms/{id}` carries only `ChatMsg`, and its declaration is its contract: only logged-in users
/// subscribe (`subscribe = authenticated`), and only the server publishes (the default): members
/// talk through the `chat` event, which sets `from` from their token, so a client's own
/// `#publish` to a room, forged or not, is refused with `PublishRefusedError`. Publishing anything
/// but a `ChatMsg` on a `Room` from the server does not compile.
#[channel("rooms/{id}", message = ChatMsg, subscribe = authenticated)]
pub struct Room {
    pub id: u64,
}

#[derive(Deserialize)]
struct Claims {
    name: String,
}

#[derive(Deserialize)]
struct Say {
    room: u64,
    text: String,
}

/// The last messages of each room (per process).
#[derive(Clone, Default)]
struct History(Arc<Mutex<HashMap<u64, Vec<ChatMsg>>>>);

/// `login {"name": "ann"}`: issues a token (the browser client keeps it in localStorage).
#[event("login")]
async fn login(socket: Socket, Json(name): Json<String>) -> Result<(), ScError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 32 {
        return Err(ScError::new("LoginError", "a name has 1 to 32 characters"));
    }
    socket
        .set_auth_token(&serde_json::json!({ "name": name }))
        .await?;
    Ok(())
}

/// `chat {"room": 1, "text": "hi"}`: publishes to the room (logged-in users only).
#[event("chat")]
async fn chat(
    exchange: Exchange,
    State(history): State<History>,
    Auth(me): Auth<Claims>,
    Json(say): Json<Say>,
) -> Result<(), ScError> {
    let text = say.text.trim();
    if text.is_empty() || text.len() > 2000 {
        return Err(ScError::new("ChatError", "a message has 1 to 2000 bytes"));
    }
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let msg = ChatMsg {
        from: me.name,
        text: text.to_owned(),
        at,
    };
    {
        let mut rooms = history.0.lock().unwrap_or_else(|p| p.into_inner());
        let room = rooms.entry(say.room).or_default();
        room.push(msg.clone());
        let excess = room.len().saturating_sub(50);
        room.drain(..excess);
    }
    exchange.publish(&Room { id: say.room }, &msg).await?;
    Ok(())
}

/// `history 1`: the room's last messages.
#[event("history")]
async fn history(State(history): State<History>, Json(room): Json<u64>) -> Json<Vec<ChatMsg>> {
    let rooms = history.0.lock().unwrap_or_else(|p| p.into_inner());
    Json(rooms.get(&room).cloned().unwrap_or_default())
}

/// Only rooms can be subscribed to: any other name (`rooms/abc`, `secrets`) is refused with
/// `InvalidChannelError` (the `Channel<Room>` extractor does not parse it).
#[middleware(subscribe)]
async fn rooms_only(Channel(_room): Channel<Room>) {}

/// The whole app.
pub fn app() -> App {
    handlers![Room, login, chat, history, rooms_only].state(History::default())
}
