//! Typed client contracts: the TypeScript file an app renders (`App::typescript`) from what the
//! macros declare, equal to the same app declared by hand; serde's attributes honoured; types
//! without the `TS` derive are `unknown`; the server serves the file and the client declarations,
//! and its handshake carries the contract's hash.

#![cfg(all(feature = "macros", feature = "testing", feature = "typescript"))]

use futures_util::{SinkExt, StreamExt};
use sc_core::app::contract::{Access, ChannelContract};
use sc_core::app::typescript::TsType;
use sc_core::prelude::*;
use sc_core::testing::TestServer;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// serde's attributes shape the JSON, so they shape the TypeScript.
#[derive(Clone, Serialize, Deserialize, TS)]
#[ts(crate = "sc_core::ts_rs")]
#[serde(rename_all = "camelCase")]
pub struct ChatMsg {
    sent_by: String,
    #[serde(rename = "body")]
    text: String,
    #[serde(skip)]
    #[allow(dead_code)]
    secret: u32,
    edited: Option<u64>,
}

#[derive(Serialize, Deserialize, TS)]
#[ts(crate = "sc_core::ts_rs")]
#[serde(tag = "kind")]
pub enum Command {
    Join { room: u64 },
    Leave,
}

/// No `TS` derive: `unknown` in the file, and everything else works as before.
#[derive(Serialize, Deserialize)]
pub struct Opaque {
    anything: String,
}

mod with_macros {
    use super::{ChatMsg, Command, Opaque};
    use sc_core::prelude::*;

    #[channel("rooms/{id}/{topic}", message = ChatMsg, publish = anyone)]
    pub struct Room {
        pub id: u64,
        pub topic: String,
    }

    #[channel("opaque/{name}", message = Opaque)]
    pub struct OpaqueChannel {
        pub name: String,
    }

    #[event("command")]
    pub async fn command(Json(_c): Json<Command>) -> Result<Json<Vec<ChatMsg>>, ScError> {
        Ok(Json(Vec::new()))
    }

    #[event("opaque")]
    pub async fn opaque(Json(o): Json<Opaque>) -> Option<Json<Opaque>> {
        Some(Json(o))
    }

    #[event("ping")]
    pub async fn ping() {}

    #[event("raw")]
    pub async fn raw(Raw(_data): Raw) -> Result<(), ScError> {
        Ok(())
    }

    pub fn app() -> App {
        handlers![Room, OpaqueChannel, command, opaque, ping, raw]
    }
}

/// The same contract with the public API alone.
fn by_hand() -> App {
    async fn command(Json(_c): Json<Command>) -> Result<Json<Vec<ChatMsg>>, ScError> {
        Ok(Json(Vec::new()))
    }
    async fn opaque(Json(o): Json<Opaque>) -> Option<Json<Opaque>> {
        Some(Json(o))
    }
    async fn ping() {}
    async fn raw(Raw(_data): Raw) -> Result<(), ScError> {
        Ok(())
    }
    App::new()
        .channel_contract(
            ChannelContract::new("rooms/{id}/{topic}")
                .publish(Access::Anyone)
                .message::<ChatMsg>()
                .ts_message(TsType::of::<ChatMsg>())
                .ts_capture("id", TsType::of::<u64>())
                .ts_capture("topic", TsType::of::<String>()),
        )
        .channel_contract(
            ChannelContract::new("opaque/{name}")
                .ts_message(TsType::unknown())
                .ts_capture("name", TsType::of::<String>()),
        )
        .event("command", command)
        .event_types(
            "command",
            TsType::of::<Command>(),
            TsType::of::<Vec<ChatMsg>>(),
        )
        .event("opaque", opaque)
        .event_types("opaque", TsType::unknown(), TsType::unknown().optional())
        .event("ping", ping)
        .event_types("ping", TsType::undefined(), TsType::void())
        .event("raw", raw)
        .event_types("raw", TsType::unknown(), TsType::void())
}

#[test]
fn the_macros_declare_each_events_and_channels_types_like_the_api_by_hand() {
    let file = with_macros::app().typescript();
    assert_eq!(file, by_hand().typescript());
    for line in [
        // rename_all, rename, skip, Option.
        "export type ChatMsg = { sentBy: string, body: string, edited: number | null, };",
        // tag
        r#"export type Command = { "kind": "Join", room: number, } | { "kind": "Leave" };"#,
        r#""command": { payload: Command; reply: Array<ChatMsg> };"#,
        r#""opaque": { payload: unknown; reply: unknown | undefined };"#,
        r#""ping": { payload: undefined; reply: void };"#,
        r#""raw": { payload: unknown; reply: void };"#,
        "| { pattern: `opaque/${string}`; message: unknown }",
        "| { pattern: `rooms/${number}/${string}`; message: ChatMsg }",
        "export interface Contract { events: Events; channels: Channels; hash: ",
    ] {
        assert!(file.contains(line), "missing {line:?} in:\n{file}");
    }
    assert!(!file.contains("secret"), "{file}");
    assert!(
        !file.contains("Opaque"),
        "no declaration without the derive:\n{file}"
    );
    let hash = with_macros::app().contract_hash();
    assert_eq!(hash.len(), 16);
    assert!(file.contains(&format!("hash: {hash:?}")));
    assert!(with_macros::app()
        .typescript_module()
        .contains(&format!("export const contractHash = {hash:?};")));
}

/// `GET path`: the status line and the body.
async fn http(server: &TestServer, path: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(server.addr())
        .await
        .expect("connects");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("writes");
    let mut response = String::new();
    s.read_to_string(&mut response).await.expect("reads");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

async fn http_get(server: &TestServer, path: &str) -> String {
    let (status, body) = http(server, path).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    body
}

#[tokio::test]
async fn the_server_serves_its_contract_and_the_handshake_carries_its_hash() {
    let server = TestServer::start_app(with_macros::app()).await;
    assert_eq!(
        http_get(&server, "/sc-types.d.ts").await,
        with_macros::app().typescript()
    );
    assert_eq!(
        http_get(&server, "/socketcluster.d.ts").await,
        sc_core::server::BROWSER_CLIENT_TYPES
    );

    let (mut ws, _) = tokio_tungstenite::connect_async(server.url())
        .await
        .expect("WebSocket connects");
    let handshake = json!({"event": "#handshake", "data": {"authToken": null}, "cid": 1});
    ws.send(Message::text(handshake.to_string()))
        .await
        .expect("send");
    let reply = loop {
        match ws.next().await.expect("a reply").expect("a frame") {
            Message::Text(t) if !t.is_empty() => {
                break serde_json::from_str::<Value>(&t).expect("JSON")
            }
            _ => continue,
        }
    };
    assert_eq!(
        reply["data"]["contractHash"],
        json!(with_macros::app().contract_hash())
    );
    // Another contract, another hash.
    assert_ne!(by_hand().contract_hash(), App::new().contract_hash());
}

#[tokio::test]
async fn a_stale_module_on_disk_is_not_served_and_the_contract_can_be_kept_private() {
    // A page dir with an `sc-types.js` from an older build: the server answers with its own, so
    // a fresh page is not told to reload for good.
    let dir = std::env::temp_dir().join(format!("sc-types-stale-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a dir");
    std::fs::write(
        dir.join("sc-types.js"),
        "export const contractHash = \"stale\";\n",
    )
    .expect("writes");
    let server = TestServer::start(
        sc_core::testing::builder()
            .app(with_macros::app())
            .serve_dir(&dir)
            .serve_types(false),
    )
    .await;
    assert_eq!(
        http_get(&server, "/sc-types.js").await,
        with_macros::app().typescript_module()
    );
    assert!(
        http(&server, "/sc-types.d.ts").await.0.contains(" 404"),
        "serve_types(false) keeps the contract private"
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
