// Handlers in modules (listed by path), raw identifiers, `#[cfg]` and doc attributes.
use sc_core::prelude::*;

mod chat {
    use sc_core::prelude::*;

    /// Says hello.
    #[event("hello")]
    pub async fn hello(socket: Socket) {
        let _ = socket;
    }

    pub mod rooms {
        use sc_core::prelude::*;

        #[derive(Serialize)]
        pub struct Msg;

        #[channel("rooms/{type}", message = Msg)]
        pub struct Room {
            pub r#type: String,
        }

        #[event("join")]
        pub(crate) async fn join(Json(room): Json<String>) {
            let _ = room;
        }
    }
}

#[event("type")]
async fn r#type() {}

#[cfg(any())]
#[event("never")]
async fn never() {}

#[sc_core::event("qualified")]
async fn qualified() {}

fn main() {
    let app: App = handlers![
        chat::hello,
        chat::rooms::join,
        chat::rooms::Room,
        r#type,
        qualified,
    ];
    let debug = format!("{app:?}");
    assert!(debug.contains("\"hello\"") && debug.contains("\"type\"") && !debug.contains("never"));
    let room = chat::rooms::Room { r#type: "a".into() };
    assert_eq!(room.name(), "rooms/a");
    let _empty: App = handlers![];
}
