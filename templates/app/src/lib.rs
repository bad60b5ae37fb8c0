//! {{name}}: a chat written with sc. Handlers are async functions annotated with what they
//! handle; `app()` lists them. `src/main.rs` serves it, `tests/chat.rs` tests it.

use sc_core::prelude::*;

/// What every member of a room receives. `TS` puts it in the page's types (`sc types`): the page
/// is type-checked against these fields (`#[ts(crate = ..)]`: the derive comes through sc-core).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, TS)]
#[ts(crate = "sc_core::ts_rs")]
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
///
/// Each room keeps its last 50 messages for an hour (`history`, shared by every worker and node):
/// the `history` event reads them, and a member whose connection drops gets what it missed when
/// it reconnects (the browser client asks by itself), or a `recoveryFail` event when the gap is
/// longer than what is kept.
///
/// Each room knows who is in it (`presence`, cluster-wide): members ask with `#presence` and get
/// join/leave events (`join_leave`), which the page shows as the room's member list. A member's
/// name is its token's `sub` claim (see `login`).
#[channel(
    "rooms/{id}",
    message = ChatMsg,
    subscribe = authenticated,
    history = 50,
    history_ttl = "1h",
    presence,
    join_leave
)]
pub struct Room {
    pub id: u64,
}

#[derive(Deserialize)]
struct Claims {
    name: String,
}

/// The `chat` event's payload.
#[derive(Deserialize, TS)]
#[ts(crate = "sc_core::ts_rs")]
struct Say {
    room: u64,
    text: String,
}

/// `login {"name": "ann"}`: issues a token (the browser client keeps it in localStorage).
#[event("login")]
async fn login(socket: Socket, Json(name): Json<String>) -> Result<(), ScError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 32 {
        return Err(ScError::new("LoginError", "a name has 1 to 32 characters"));
    }
    // `sub` (the standard subject claim) is what presence lists as the member's user.
    socket
        .set_auth_token(&serde_json::json!({ "name": name, "sub": name }))
        .await?;
    Ok(())
}

/// `chat {"room": 1, "text": "hi"}`: publishes to the room (logged-in users only).
#[event("chat")]
async fn chat(
    exchange: Exchange,
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
    exchange.publish(&Room { id: say.room }, &msg).await?;
    Ok(())
}

/// `history 1`: the room's last messages, oldest first (the channel's history).
#[event("history")]
async fn history(exchange: Exchange, Json(room): Json<u64>) -> Result<Json<Vec<ChatMsg>>, ScError> {
    let kept = exchange
        .history(&Room { id: room }.to_string(), None)
        .await?;
    let messages = kept
        .publications
        .unwrap_or_default()
        .iter()
        .filter_map(|p| serde_json::from_value(p.data()?.clone()).ok())
        .collect();
    Ok(Json(messages))
}

/// Only rooms can be subscribed to: any other name (`rooms/abc`, `secrets`) is refused with
/// `InvalidChannelError` (the `Channel<Room>` extractor does not parse it).
#[middleware(subscribe)]
async fn rooms_only(Channel(_room): Channel<Room>) {}

/// The whole app.
pub fn app() -> App {
    handlers![Room, login, chat, history, rooms_only]
}
