//! Issue 19: a payload a handler passes through is never parsed into a tree. `RawJson` hands the
//! handler the client's text and sends it back as it is; `Json<T>` reads `T` from the text with
//! the same errors as before; middleware still sees (and may replace) a tree.

mod common;

use common::{raw_call, RawWs};

use sc_core::prelude::*;
use sc_core::testing::TestServer;
use serde_json::Value;

type Ws = RawWs;

async fn echo(data: RawJson) -> RawJson {
    data
}

#[derive(serde::Deserialize)]
struct Point {
    x: u32,
}

async fn point(Json(p): Json<Point>) -> Json<u32> {
    Json(p.x)
}

/// A socket past `#handshake`.
async fn handshaken(server: &TestServer) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(server.url())
        .await
        .expect("WebSocket connects");
    let reply = raw_call(&mut ws, r##"{"event":"#handshake","data":{},"cid":1}"##).await;
    assert!(reply.starts_with(r#"{"rid":1,"#), "{reply}");
    ws
}

#[tokio::test]
async fn raw_json_passes_the_clients_text_through_untouched() {
    let server = TestServer::start_app(App::new().event("echo", echo)).await;
    let mut ws = handshaken(&server).await;
    // Spacing, key order and number spelling a tree would have changed (`1.50` -> `1.5`).
    let reply = raw_call(
        &mut ws,
        r#"{"event":"echo","data":{"b": 1, "a":[1.50, 10000000000000000000001]},"cid":2}"#,
    )
    .await;
    assert_eq!(
        reply,
        r#"{"rid":2,"data":{"b": 1, "a":[1.50, 10000000000000000000001]}}"#
    );
    // What the fast path leaves to the general decoder (a `\u` escape) still round-trips, as
    // JSON (re-encoded from the tree).
    let reply = raw_call(&mut ws, r#"{"event":"echo","data":"\u0041 b","cid":3}"#).await;
    assert_eq!(reply, r#"{"rid":3,"data":"A b"}"#);
    // No data: no data in the answer.
    assert_eq!(
        raw_call(&mut ws, r#"{"event":"echo","cid":4}"#).await,
        r#"{"rid":4}"#
    );
    server.stop().await;
}

#[tokio::test]
async fn json_reads_from_the_text_with_the_same_errors() {
    let server = TestServer::start_app(App::new().event("point", point)).await;
    let mut ws = handshaken(&server).await;
    let ok = raw_call(&mut ws, r#"{"event":"point","data":{"x":7},"cid":2}"#).await;
    assert_eq!(ok, r#"{"rid":2,"data":7}"#);
    // The fast path (plain text) and the general one (a `\u` escape) give the same error, with
    // no line and column of a text the client never sees.
    let fast = raw_call(&mut ws, r#"{"event":"point","data":{"x":"a"},"cid":3}"#).await;
    let general = raw_call(
        &mut ws,
        r#"{"event":"point","data":{"x":"\u0061"},"cid":4}"#,
    )
    .await;
    let message = |reply: &str| {
        let v: Value = serde_json::from_str(reply).expect("JSON");
        v["error"]["message"]
            .as_str()
            .expect("a message")
            .to_owned()
    };
    assert_eq!(
        message(&fast),
        "Invalid data for event 'point': invalid type: string \"a\", expected u32"
    );
    assert_eq!(message(&fast), message(&general));
    server.stop().await;
}

#[tokio::test]
async fn invoke_middleware_sees_a_tree_and_its_replacement_reaches_raw_json() {
    async fn double(Raw(data): Raw) -> Decision {
        let n = data.and_then(|d| d.as_u64()).unwrap_or(0);
        Decision::Replace(Value::from(n * 2))
    }
    let app = App::new()
        .event("echo", echo)
        .middleware(MiddlewareKind::Invoke, double);
    let server = TestServer::start_app(app).await;
    let mut ws = handshaken(&server).await;
    let reply = raw_call(&mut ws, r#"{"event":"echo","data":21,"cid":2}"#).await;
    assert_eq!(reply, r#"{"rid":2,"data":42}"#);
    server.stop().await;
}

/// In the app's TypeScript contract a `RawJson` payload and reply are `unknown`, like `Raw`'s
/// (the macro reads the extractor's name).
#[test]
fn raw_json_is_unknown_in_the_typescript_contract() {
    #[event("relay")]
    async fn relay(data: RawJson) -> RawJson {
        data
    }
    let app: App = handlers![relay];
    let file = app.typescript();
    assert!(
        file.contains(r#""relay": { payload: unknown; reply: unknown };"#),
        "{file}"
    );
}
