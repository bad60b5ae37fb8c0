// Typed channels: several captures in any field order, a fixed channel, name/parse round trips.
use sc_core::channel::TypedChannel;
use sc_core::exchange::ChannelTarget;
use sc_core::extract::FromChannelName;
use sc_core::prelude::*;

#[derive(Serialize, Deserialize, Clone)]
pub struct ChatMsg {
    text: String,
}

#[derive(Serialize)]
pub struct Presence {
    online: bool,
}

/// Messages of one thread of a room.
#[channel("rooms/{room}/threads/{thread}", message = ChatMsg)]
#[derive(Debug, PartialEq)]
pub struct Thread {
    pub thread: u32,
    pub room: String,
}

#[channel("presence", message = Presence)]
struct PresenceChannel;

#[channel("lobby", message = ChatMsg)]
struct Lobby {}

fn accepts<C: ChannelTarget<M>, M>(_: &C) {}

#[event("say")]
async fn say(exchange: Exchange, Json(msg): Json<ChatMsg>) -> Result<(), ScError> {
    let thread = Thread {
        room: "a".into(),
        thread: 2,
    };
    exchange.publish(&thread, &msg).await?;
    exchange.publish(&Lobby {}, &msg).await?;
    exchange
        .publish(&PresenceChannel, &Presence { online: true })
        .await?;
    exchange.transmit_publish(&thread, &msg);
    Ok(())
}

fn main() {
    let thread = Thread {
        room: "a".into(),
        thread: 2,
    };
    assert_eq!(Thread::PATTERN, "rooms/{room}/threads/{thread}");
    assert_eq!(<Thread as TypedChannel>::PATTERN, Thread::PATTERN);
    assert_eq!(thread.name(), "rooms/a/threads/2");
    assert_eq!(thread.to_string(), "rooms/a/threads/2");
    assert_eq!(Thread::parse("rooms/a/threads/2"), Ok(thread));
    assert_eq!(
        Thread::from_channel_name("rooms/b/threads/3").map(|t| t.room),
        Ok("b".into())
    );

    let err = Thread::parse("rooms/a/threads/x").expect_err("not a u32");
    assert_eq!(err.name(), "InvalidChannelError");
    assert_eq!(
        err.message(),
        "Channel 'rooms/a/threads/x' does not match the pattern 'rooms/{room}/threads/{thread}': 'x' is not a valid {thread} (invalid digit found in string)"
    );
    let err = Thread::parse("rooms/a").expect_err("too short");
    assert_eq!(
        err.message(),
        "Channel 'rooms/a' does not match the pattern 'rooms/{room}/threads/{thread}'"
    );

    assert_eq!(PresenceChannel.name(), "presence");
    assert!(PresenceChannel::parse("presence").is_ok());
    assert!(Lobby::parse("lobby/1").is_err());
    accepts::<_, ChatMsg>(&Lobby {});

    let _app: App = handlers![Thread, PresenceChannel, Lobby, say];
}
