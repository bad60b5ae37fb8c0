//! `chat`: a small app written with the macros: a login that issues a token, a `chat` event that
//! publishes on a typed channel, a `history` procedure, and a subscribe middleware that keeps
//! rooms for logged-in users. Set `SC_WORKERS=2` to run the same binary as a cluster.
//!
//! Run: `cargo run -p chat`, then connect any SocketCluster client to
//! `ws://127.0.0.1:8000/socketcluster/`:
//!
//! 1. invoke `login` with `{"name":"alice"}` -> the client receives a token;
//! 2. subscribe to `rooms/1` (refused before login);
//! 3. invoke `chat` with `{"room":1,"text":"hi"}` -> every subscriber of `rooms/1` receives
//!    `{"from":"alice","text":"hi"}`; `history` answers with the room's last messages.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sc_core::prelude::*;

/// What every subscriber of a room receives.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ChatMsg {
    from: String,
    text: String,
}

/// A typed channel: `rooms/{id}` only carries `ChatMsg`; publishing anything else does not
/// compile, and a client subscribing to `rooms/abc` is refused with `InvalidChannelError`.
#[channel("rooms/{id}", message = ChatMsg)]
struct Room {
    id: u64,
}

#[derive(Deserialize)]
struct Claims {
    name: String,
}

#[derive(Deserialize)]
struct Login {
    name: String,
}

#[derive(Deserialize)]
struct Say {
    room: u64,
    text: String,
}

/// Last messages per room, shared by the sockets of this process (in a cluster each worker keeps
/// its own; `exchange.set`/`get` is the cluster-wide store).
#[derive(Clone, Default)]
struct History(Arc<Mutex<HashMap<u64, Vec<ChatMsg>>>>);

#[event("login")]
async fn login(socket: Socket, Json(login): Json<Login>) -> Result<(), ScError> {
    let name = login.name.trim();
    if name.is_empty() || name.len() > 32 {
        return Err(ScError::new(
            "LoginError",
            "name must be 1 to 32 characters",
        ));
    }
    socket
        .set_auth_token(&serde_json::json!({ "name": name }))
        .await?;
    Ok(())
}

#[event("chat")]
async fn chat(
    exchange: Exchange,
    State(history): State<History>,
    Auth(claims): Auth<Claims>,
    Json(say): Json<Say>,
) -> Result<(), ScError> {
    let msg = ChatMsg {
        from: claims.name,
        text: say.text,
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

#[event("history")]
async fn history(State(history): State<History>, Json(room): Json<u64>) -> Json<Vec<ChatMsg>> {
    let rooms = history.0.lock().unwrap_or_else(|p| p.into_inner());
    Json(rooms.get(&room).cloned().unwrap_or_default())
}

/// Rooms are for logged-in users; other channels are open.
#[middleware(subscribe)]
async fn members_only(
    Channel(channel): Channel<String>,
    MaybeAuth(claims): MaybeAuth<serde_json::Value>,
) -> Result<(), Block> {
    if !channel.starts_with("rooms/") {
        return Ok(());
    }
    // `rooms/abc` is refused with a clear InvalidChannelError naming the pattern.
    Room::parse(&channel).map_err(Block::new)?;
    if claims.is_none() {
        return Err(Block::new(ScError::new(
            "AuthRequired",
            "log in before joining a room",
        )));
    }
    Ok(())
}

fn main() -> sc_core::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    SocketCluster::builder()
        .auth_key_from_env("SC_AUTH_KEY")
        .handlers(handlers![Room, login, chat, history, members_only].state(History::default()))
        .run()
}
