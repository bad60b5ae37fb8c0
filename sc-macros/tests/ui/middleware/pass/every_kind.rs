// One middleware per kind, with the extractors each kind provides.
use sc_core::prelude::*;

#[derive(Deserialize)]
struct Claims {
    name: String,
}

#[derive(Clone)]
struct Banned(Vec<String>);

#[middleware(handshake_ws)]
async fn handshake_ws(
    request: RequestInfo,
    State(banned): State<Banned>,
    exchange: Exchange,
    server: ServerHandle,
    MaybeAuth(none): MaybeAuth<Claims>,
    WaitForAuth(wait): WaitForAuth,
) -> Result<(), Block> {
    let _ = (
        request,
        banned.0,
        exchange,
        server,
        none.map(|c| c.name),
        wait,
    );
    Ok(())
}

#[middleware(handshake)]
async fn handshake(socket: Socket, Raw(data): Raw) -> Result<(), Block> {
    let _ = (socket, data);
    Err(Block::new(ScError::new("Closed", "come back later")).status_code(4500))
}

#[middleware(inbound_raw)]
async fn inbound_raw(Json(text): Json<String>) -> Result<(), Block> {
    if text.len() > 10_000 {
        return Err(Block::silent());
    }
    Ok(())
}

#[middleware(transmit)]
async fn transmit(EventName(event): EventName, socket: Socket) {
    let _ = (event, socket);
}

#[middleware(invoke)]
async fn invoke(EventName(event): EventName, Auth(claims): Auth<Claims>) -> Result<(), Block> {
    let _ = (event, claims.name);
    Ok(())
}

#[middleware(subscribe)]
async fn subscribe(
    Channel(channel): Channel<String>,
    WaitForAuth(wait): WaitForAuth,
    TryJson(data): TryJson<serde_json::Value>,
) -> Result<(), Block> {
    let _ = (channel, wait, data);
    Ok(())
}

#[middleware(publish_in)]
async fn publish_in(
    Channel(channel): Channel<std::sync::Arc<str>>,
    Json(data): Json<serde_json::Value>,
) -> Result<Json<serde_json::Value>, Block> {
    let _ = channel;
    Ok(Json(data))
}

/// Rewrites (`Json(new)`) or drops (`Err(Block)`) each delivery.
#[middleware(publish_out)]
async fn publish_out(socket: Socket, Json(text): Json<String>) -> Result<Json<String>, Block> {
    let _ = socket;
    if text.is_empty() {
        return Err(Block::silent());
    }
    Ok(Json(text.to_uppercase()))
}

#[middleware(authenticate)]
async fn authenticate(Auth(claims): Auth<Claims>, Raw(token): Raw) -> Decision {
    let _ = token;
    if claims.name.is_empty() {
        Decision::Block(Block::new(
            ScError::new("AuthError", "no name").with("isBadToken", true),
        ))
    } else {
        Decision::Allow
    }
}

fn main() {
    let _app: App = handlers![
        handshake_ws,
        handshake,
        inbound_raw,
        transmit,
        invoke,
        subscribe,
        publish_in,
        publish_out,
        authenticate,
    ]
    .state(Banned(Vec::new()));
}
