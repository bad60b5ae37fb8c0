// Every extractor an event handler can take, the payload extractors last.
use sc_core::prelude::*;

#[derive(Deserialize)]
struct Claims {
    name: String,
}

#[derive(Clone)]
struct Counter(u64);

#[event("parts")]
async fn parts(
    socket: Socket,
    exchange: Exchange,
    Auth(claims): Auth<Claims>,
    MaybeAuth(maybe): MaybeAuth<serde_json::Value>,
    State(counter): State<Counter>,
    EventName(event): EventName,
    request: RequestInfo,
    WaitForAuth(wait): WaitForAuth,
    server: ServerHandle,
) {
    let _ = (
        socket,
        exchange,
        claims.name,
        maybe,
        counter.0,
        event,
        request,
        wait,
        server,
    );
}

#[event("json")]
async fn json(socket: Socket, Json(data): Json<Vec<u32>>) -> Json<usize> {
    let _ = socket;
    Json(data.len())
}

#[event("try_json")]
async fn try_json(TryJson(data): TryJson<u32>) -> Result<(), ScError> {
    data.map(|_| ())
}

#[event("raw")]
async fn raw(Raw(data): Raw) -> Option<serde_json::Value> {
    data
}

#[event("nothing")]
async fn nothing() {}

#[event("many")]
async fn many(
    a: Socket,
    b: Exchange,
    c: RequestInfo,
    d: ServerHandle,
    e: EventName,
    f: WaitForAuth,
    g: MaybeAuth<serde_json::Value>,
    h: Socket,
    i: Exchange,
    j: RequestInfo,
    k: ServerHandle,
    l: EventName,
    m: WaitForAuth,
    Json(n): Json<u8>,
) {
    let _ = (a, b, c, d, e, f, g, h, i, j, k, l, m, n);
}

fn main() {
    let app: App = handlers![parts, json, try_json, raw, nothing, many].state(Counter(0));
    assert!(format!("{app:?}").contains("\"try_json\""));
}
