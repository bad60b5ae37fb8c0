//! The macros are sugar: an app written only with `#[event]`, `#[middleware]`, `#[channel]` and
//! `handlers![]` behaves exactly like the same app written by hand with the public API. Both run
//! as real servers and receive the same raw SocketCluster frames; their answers must be identical
//! (socket ids aside).

#![cfg(all(feature = "macros", feature = "testing"))]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use sc_core::prelude::*;
use sc_core::testing::TestServer;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// What both apps publish and deliver.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChatMsg {
    from: String,
    text: String,
}

#[derive(Deserialize)]
pub struct Say {
    room: u64,
    text: String,
}

/// The app, written with the macros.
mod with_macros {
    use super::{ChatMsg, Say};
    use sc_core::prelude::*;

    #[channel("rooms/{id}", message = ChatMsg, publish = anyone)]
    pub struct Room {
        pub id: u64,
    }

    #[event("echo")]
    pub async fn echo(Json(data): Json<serde_json::Value>) -> Json<serde_json::Value> {
        Json(data)
    }

    #[event("fail")]
    pub async fn fail() -> Result<(), ScError> {
        Err(ScError::new("MyError", "custom failure").with("extra", 42))
    }

    #[event("say")]
    pub async fn say(exchange: Exchange, Json(say): Json<Say>) -> Result<Json<u64>, ScError> {
        let msg = ChatMsg {
            from: "server".into(),
            text: say.text,
        };
        exchange.publish(&Room { id: say.room }, &msg).await?;
        Ok(Json(say.room))
    }

    #[middleware(subscribe)]
    pub async fn no_secrets(Channel(name): Channel<String>) -> Result<(), Block> {
        if name.starts_with("secret") {
            return Err(Block::new(ScError::new("Forbidden", "no secrets here")));
        }
        Ok(())
    }

    /// Only rooms can be subscribed to: any other name fails to extract (`InvalidChannelError`).
    #[middleware(subscribe)]
    pub async fn rooms_only(Channel(room): Channel<Room>) -> Result<(), Block> {
        if room.id == 0 {
            return Err(Block::silent());
        }
        Ok(())
    }

    #[middleware(publish_out)]
    pub async fn shout(Json(msg): Json<ChatMsg>) -> Json<ChatMsg> {
        Json(ChatMsg {
            text: msg.text.to_uppercase(),
            ..msg
        })
    }

    pub fn app() -> App {
        handlers![Room, echo, fail, say, no_secrets, rooms_only, shout]
    }
}

/// The same app, by hand: what the macros generate, written with the public API.
mod by_hand {
    use std::borrow::Cow;

    use super::{ChatMsg, Say};
    use sc_core::channel::{self, TypedChannel};
    use sc_core::exchange::ChannelTarget;
    use sc_core::extract::FromChannelName;
    use sc_core::prelude::*;

    pub struct Room {
        pub id: u64,
    }

    impl TypedChannel for Room {
        const PATTERN: &'static str = "rooms/{id}";
        type Message = ChatMsg;
    }

    impl std::fmt::Display for Room {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "rooms/{}", self.id)
        }
    }

    impl ChannelTarget<ChatMsg> for Room {
        fn channel_name(&self) -> Cow<'_, str> {
            Cow::Owned(self.to_string())
        }
    }

    impl FromChannelName for Room {
        fn from_channel_name(name: &str) -> Result<Self, ScError> {
            let [id] = channel::captures(Self::PATTERN, name)?;
            Ok(Room {
                id: channel::parse_capture(Self::PATTERN, name, "id", id)?,
            })
        }
    }

    async fn echo(Json(data): Json<serde_json::Value>) -> Json<serde_json::Value> {
        Json(data)
    }

    async fn fail() -> Result<(), ScError> {
        Err(ScError::new("MyError", "custom failure").with("extra", 42))
    }

    async fn say(exchange: Exchange, Json(say): Json<Say>) -> Result<Json<u64>, ScError> {
        let msg = ChatMsg {
            from: "server".into(),
            text: say.text,
        };
        exchange.publish(&Room { id: say.room }, &msg).await?;
        Ok(Json(say.room))
    }

    async fn no_secrets(Channel(name): Channel<String>) -> Result<(), Block> {
        if name.starts_with("secret") {
            return Err(Block::new(ScError::new("Forbidden", "no secrets here")));
        }
        Ok(())
    }

    async fn rooms_only(Channel(room): Channel<Room>) -> Result<(), Block> {
        if room.id == 0 {
            return Err(Block::silent());
        }
        Ok(())
    }

    async fn shout(Json(msg): Json<ChatMsg>) -> Json<ChatMsg> {
        Json(ChatMsg {
            text: msg.text.to_uppercase(),
            ..msg
        })
    }

    pub fn app() -> App {
        App::new()
            .channel_contract(
                sc_core::app::contract::ChannelContract::new(Room::PATTERN)
                    .message::<ChatMsg>()
                    .publish(sc_core::app::contract::Access::Anyone),
            )
            .event("echo", echo)
            .event("fail", fail)
            .event("say", say)
            .middleware(MiddlewareKind::Subscribe, no_secrets)
            .middleware(MiddlewareKind::Subscribe, rooms_only)
            .middleware(MiddlewareKind::PublishOut, shout)
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON frame (pings, empty text frames, are skipped).
async fn next_frame(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame within 5 s")
            .expect("the socket stays open")
            .expect("a valid frame");
        if let Message::Text(text) = message {
            if text.is_empty() {
                continue;
            }
            return serde_json::from_str(&text).expect("JSON frame");
        }
    }
}

/// Sends each frame and collects everything the server sends until the reply to that frame's
/// `cid` (for `say`, also until its publication arrived). The socket id and the contract hash in
/// the handshake reply are replaced by `"<id>"` and `"<hash>"`. Publish-out middleware runs on the subscriber's own task, so the
/// publication `say` makes and the reply to `say` may arrive in either order: the publication is
/// recorded right after the reply.
async fn transcript(server: &TestServer, frames: &[Value]) -> Vec<Value> {
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url())
        .await
        .expect("WebSocket connects");
    let mut seen = Vec::new();
    for frame in frames {
        ws.send(Message::text(frame.to_string()))
            .await
            .expect("send");
        let cid = frame["cid"].as_u64().expect("every test frame has a cid");
        // A `say` with a room publishes (one with bad data does not).
        let publishes = frame["event"] == json!("say") && frame["data"].is_object();
        let mut publications = Vec::new();
        let mut replied = false;
        while !replied || (publishes && publications.is_empty()) {
            let mut received = next_frame(&mut ws).await;
            if received.get("rid") == Some(&json!(1)) {
                if let Some(id) = received.pointer_mut("/data/id") {
                    *id = json!("<id>");
                }
                // The macros also declare the TypeScript types: another contract.
                if let Some(hash) = received.pointer_mut("/data/contractHash") {
                    *hash = json!("<hash>");
                }
            }
            if received.get("event") == Some(&json!("#publish")) {
                publications.push(received);
                continue;
            }
            replied |= received.get("rid") == Some(&json!(cid));
            seen.push(received);
        }
        seen.extend(publications);
    }
    seen
}

fn subscribe(channel: &str, cid: u64) -> Value {
    json!({"event": "#subscribe", "data": {"channel": channel}, "cid": cid})
}

fn invoke(event: &str, data: Value, cid: u64) -> Value {
    json!({"event": event, "data": data, "cid": cid})
}

#[tokio::test]
async fn an_app_written_with_macros_answers_exactly_like_the_same_app_written_by_hand() {
    let frames = [
        json!({"event": "#handshake", "data": {"authToken": null}, "cid": 1}),
        invoke("echo", json!({"a": [1, 2]}), 2),
        invoke("fail", Value::Null, 3),
        invoke("say", json!(7), 4),
        subscribe("secret/plans", 5),
        subscribe("lobby", 6),
        subscribe("rooms/abc", 7),
        subscribe("rooms/0", 8),
        subscribe("rooms/7", 9),
        invoke("say", json!({"room": 7, "text": "hi"}), 10),
        invoke("missing", Value::Null, 11),
    ];
    let macros = transcript(&TestServer::start_app(with_macros::app()).await, &frames).await;
    let by_hand = transcript(&TestServer::start_app(by_hand::app()).await, &frames).await;
    assert_eq!(macros, by_hand);

    // And the answers are the ones the app means (not just equally wrong).
    let expected = [
        json!({"rid": 1, "data": {"id": "<id>", "pingTimeout": 30000, "isAuthenticated": false, "contractHash": "<hash>"}}),
        json!({"rid": 2, "data": {"a": [1, 2]}}),
        json!({"rid": 3, "error": {"message": "custom failure", "name": "MyError", "extra": 42}}),
        json!({"rid": 4, "error": {
            "message": "Invalid data for event 'say': invalid type: integer `7`, expected struct Say",
            "name": "InvalidArgumentsError"
        }}),
        json!({"rid": 5, "error": {"message": "no secrets here", "name": "Forbidden"}}),
        json!({"rid": 6, "error": {
            "message": "Channel 'lobby' does not match the pattern 'rooms/{id}'",
            "name": "InvalidChannelError",
            "channel": "lobby"
        }}),
        json!({"rid": 7, "error": {
            "message": "Channel 'rooms/abc' does not match the pattern 'rooms/{id}': 'abc' is not a valid {id} (invalid digit found in string)",
            "name": "InvalidChannelError",
            "channel": "rooms/abc"
        }}),
        json!({"rid": 8, "error": {
            "message": "The subscribe AGAction was blocked by inbound middleware",
            "name": "SilentMiddlewareBlockedError",
            "type": "inbound"
        }}),
        json!({"rid": 9}),
        json!({"rid": 10, "data": 7}),
        json!({"event": "#publish", "data": {"channel": "rooms/7", "data": {"from": "server", "text": "HI"}}}),
        json!({"rid": 11, "error": {"message": "No handler for event 'missing'", "name": "UnhandledEventError"}}),
    ];
    assert_eq!(macros, expected);
}

#[channel("rooms/{name}", message = ChatMsg)]
struct RoomByName {
    name: String,
}

#[channel("rooms/{id}/log", message = ChatMsg)]
struct RoomLog {
    id: u64,
}

const ECHO_AGAIN_LINE: u32 = line!() + 2;
#[event("echo")]
async fn echo_again() {}

#[tokio::test]
async fn overlapping_channels_and_duplicate_events_fail_at_startup_naming_both_locations() {
    let bind = |app: App| async {
        SocketCluster::builder()
            .ignore_env()
            .port(0)
            .host([127, 0, 0, 1].into())
            .handlers(app)
            .bind()
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    let file = file!();

    let err = bind(handlers![with_macros::Room, RoomLog, RoomByName]).await;
    assert!(
        err.contains(&format!(
            "channel patterns 'rooms/{{id}}' and 'rooms/{{name}}' overlap (both match 'rooms/x'): first at `Room` at {file}:"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("again at `RoomByName` at {file}:")),
        "{err}"
    );

    let err = bind(handlers![with_macros::echo, echo_again]).await;
    assert!(
        err.contains(&format!(
            "event 'echo' is registered twice: first at `echo` at {file}:"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("again at `echo_again` at {file}:")),
        "{err}"
    );

    // The source is the annotated function's line.
    assert!(
        err.ends_with(&format!("`echo_again` at {file}:{ECHO_AGAIN_LINE}")),
        "{err}"
    );
}

/// The Rust client speaks typed channels too: `publish_to` takes only the channel's message type
/// (a UI case shows the wrong type failing), `subscribe_to` yields it decoded, and a name that is
/// not a room is refused by the server's `Channel<Room>` middleware.
#[tokio::test]
async fn the_client_publishes_and_subscribes_typed_channels() {
    use with_macros::Room;

    let server = TestServer::start_app(with_macros::app()).await;
    let client = server.client().await;
    let mut room = client
        .subscribe_to(&Room { id: 4 })
        .await
        .expect("subscribe");
    assert_eq!(room.channel(), "rooms/4");
    let msg = ChatMsg {
        from: "ann".into(),
        text: "hi".into(),
    };
    client
        .publish_to(&Room { id: 4 }, &msg)
        .await
        .expect("publish");
    let got = tokio::time::timeout(Duration::from_secs(5), room.recv())
        .await
        .expect("delivered")
        .expect("open")
        .expect("a ChatMsg");
    // The app's publish_out middleware shouts.
    assert_eq!((got.from.as_str(), got.text.as_str()), ("ann", "HI"));

    let err = client.subscribe("rooms/abc").await.expect_err("not a room");
    assert!(err.to_string().contains("InvalidChannelError"), "{err}");
}
