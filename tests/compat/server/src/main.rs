//! The compat server: the contract of `tests/compat/README.md` on sc-core, written with the
//! macros (`#[event]`, `#[middleware]`, `handlers![]`), driven by the official
//! JavaScript client in `tests/compat/*.test.mjs`. Options come from `SC_*` variables; it prints
//! `LISTENING <port>` once bound (in a cluster, the master does).
//!
//! The process tests build this same file as binaries of their own packages: `tests/cluster`
//! (the process model) and `tests/redis` (the Redis engine).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sc_core::app::contract::{Access, ChannelContract, PresencePolicy};
use sc_core::broker::HistoryPolicy;
use sc_core::prelude::*;
use sc_core::socket::AuthTokenOptions;
use serde_json::{json, Value};

#[derive(Default)]
struct Shared {
    handshakes: u64,
    last_handshake_token: Value,
    notes: HashMap<String, Vec<Value>>,
    last_subscribe: HashMap<String, Value>,
    flags: HashMap<String, HashMap<String, bool>>,
    server_received: HashMap<String, Vec<Value>>,
}

type Store = Arc<Mutex<Shared>>;

fn store(s: &Store) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the contract channels carry.
#[derive(Clone, Serialize, Deserialize)]
struct ChatMsg {
    from: String,
    text: String,
}

/// Channel contracts (contracts.test.mjs): typed, no options: only the server publishes.
#[channel("typed/{id}", message = ChatMsg)]
struct Typed {
    id: u64,
}

/// Logged-in clients publish ChatMsgs.
#[channel("members/{id}", message = ChatMsg, publish = authenticated)]
struct Members {
    id: u64,
}

/// Clients publish, and the guard sets `from` from the token's `username`.
#[channel("stamped/{id}", message = ChatMsg, publish = stamp_sender)]
struct Stamped {
    id: u64,
}

/// Clients publish under their own `username` only.
#[channel("signed/{id}", message = ChatMsg, publish = own_name_only)]
struct Signed {
    id: u64,
}

async fn own_name_only(
    Auth(claims): Auth<serde_json::Map<String, Value>>,
    Json(msg): Json<ChatMsg>,
) -> Result<(), Block> {
    match claims.get("username").and_then(Value::as_str) {
        Some(me) if me == msg.from => Ok(()),
        _ => Err(Block::new(ScError::new(
            "ForgedSenderError",
            "publish under your own name",
        ))),
    }
}

async fn stamp_sender(
    Auth(claims): Auth<serde_json::Map<String, Value>>,
    Json(msg): Json<ChatMsg>,
) -> Json<ChatMsg> {
    let from = claims
        .get("username")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_owned();
    Json(ChatMsg { from, ..msg })
}

#[event("echo")]
async fn echo(Raw(data): Raw) -> Option<Value> {
    data
}

/// `rewriteMe` answers what the invoke middleware left (always `"rewritten"`).
#[event("rewriteMe")]
async fn rewrite_me(Raw(data): Raw) -> Option<Value> {
    data
}

#[event("empty")]
async fn empty() {}

#[event("fail")]
async fn fail() -> Result<(), ScError> {
    Err(ScError::new("CustomError", "boom").with("code", "E_X"))
}

#[event("note")]
async fn note(socket: Socket, State(s): State<Store>, Raw(data): Raw) {
    store(&s)
        .notes
        .entry(socket.id().to_owned())
        .or_default()
        .push(data.unwrap_or(Value::Null));
}

#[event("getNotes")]
async fn get_notes(socket: Socket, State(s): State<Store>) -> Json<Vec<Value>> {
    Json(
        store(&s)
            .notes
            .get(socket.id())
            .cloned()
            .unwrap_or_default(),
    )
}

#[derive(Deserialize)]
struct Ask {
    procedure: String,
    data: Option<Value>,
}

#[event("askClient")]
async fn ask_client(socket: Socket, Json(ask): Json<Ask>) -> Json<Value> {
    match socket
        .invoke::<_, Value>(&ask.procedure, &ask.data.unwrap_or(Value::Null))
        .await
    {
        Ok(data) => Json(json!({"ok": true, "data": data})),
        Err(e) => {
            let e = ScError::from(e);
            Json(json!({"ok": false, "error": {"name": e.name(), "message": e.message()}}))
        }
    }
}

#[event("login")]
async fn login(
    socket: Socket,
    Json(claims): Json<serde_json::Map<String, Value>>,
) -> Result<(), ScError> {
    socket.set_auth_token(&claims).await?;
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoginWith {
    claims: serde_json::Map<String, Value>,
    expires_in: Option<u64>,
    #[serde(default)]
    confirm: bool,
}

#[event("loginWith")]
async fn login_with(
    socket: Socket,
    Json(l): Json<LoginWith>,
) -> Result<Option<Json<Value>>, ScError> {
    socket
        .set_auth_token_with(
            &l.claims,
            AuthTokenOptions {
                expires_in: l.expires_in,
                reject_on_failed_delivery: l.confirm,
            },
        )
        .await?;
    Ok(l.confirm.then(|| Json(json!({"confirmed": true}))))
}

/// Attaches `info` to the socket's presence entries (presence.test.mjs).
#[event("presenceInfo")]
async fn presence_info(socket: Socket, Json(info): Json<Value>) -> Result<(), ScError> {
    socket.set_presence_info(&info)?;
    Ok(())
}

#[event("whoami")]
async fn whoami(socket: Socket) -> Json<Value> {
    let token = socket
        .auth_token()
        .map(|t| Value::Object((*t).clone()))
        .unwrap_or(Value::Null);
    Json(json!({"id": socket.id(), "authToken": token}))
}

#[event("logout")]
async fn logout(socket: Socket) {
    socket.deauthenticate();
}

#[derive(Deserialize)]
struct Kick {
    channel: Option<String>,
    message: Option<String>,
}

#[event("kick")]
async fn kick(socket: Socket, Json(k): Json<Kick>) {
    socket.kick_out(k.channel.as_deref(), k.message.as_deref());
}

#[derive(Deserialize)]
struct DisconnectMe {
    code: u16,
    reason: Option<String>,
}

#[event("disconnectMe")]
async fn disconnect_me(socket: Socket, Json(d): Json<DisconnectMe>) {
    // The reply is queued before the close, so the client gets both, in that order.
    let socket2 = socket.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        socket2.disconnect(d.code, d.reason.unwrap_or_default());
    });
}

#[derive(Deserialize)]
struct ChannelData {
    channel: String,
    data: Option<Value>,
}

#[event("serverPublish")]
async fn server_publish(exchange: Exchange, Json(p): Json<ChannelData>) -> Result<(), ScError> {
    exchange.publish_value(&p.channel, p.data).await?;
    Ok(())
}

#[event("serverSubscribe")]
async fn server_subscribe(
    exchange: Exchange,
    State(s): State<Store>,
    Json(p): Json<ChannelData>,
) -> Result<(), ScError> {
    let mut stream = exchange.subscribe(&p.channel).await?;
    store(&s)
        .server_received
        .entry(p.channel.clone())
        .or_default();
    tokio::spawn(async move {
        while let Some(data) = stream.recv().await {
            store(&s)
                .server_received
                .entry(p.channel.clone())
                .or_default()
                .push(data);
        }
    });
    Ok(())
}

#[event("serverReceived")]
async fn server_received(State(s): State<Store>, Json(p): Json<ChannelData>) -> Json<Vec<Value>> {
    Json(
        store(&s)
            .server_received
            .get(&p.channel)
            .cloned()
            .unwrap_or_default(),
    )
}

#[event("stats")]
async fn stats(socket: Socket, server: ServerHandle, State(s): State<Store>) -> Json<Value> {
    let s = store(&s);
    Json(json!({
        "handshakes": s.handshakes,
        "connections": server.clients_count(),
        "pongs": socket.pongs_received(),
        "lastHandshakeAuthToken": s.last_handshake_token,
        "pid": std::process::id(),
    }))
}

#[event("lastSubscribe")]
async fn last_subscribe(socket: Socket, State(s): State<Store>) -> Json<Value> {
    Json(
        store(&s)
            .last_subscribe
            .get(socket.id())
            .cloned()
            .unwrap_or(Value::Null),
    )
}

#[derive(Deserialize)]
struct Flag {
    flag: String,
    value: bool,
}

#[event("setFlag")]
async fn set_flag(socket: Socket, State(s): State<Store>, Json(f): Json<Flag>) {
    store(&s)
        .flags
        .entry(socket.id().to_owned())
        .or_default()
        .insert(f.flag, f.value);
}

/// The cluster's key-value store (`{"op":"set","key":"k","value":1}`, ...).
#[event("kv")]
async fn kv(
    exchange: Exchange,
    Json(op): Json<sc_core::broker::KvOp>,
) -> Result<Json<Value>, ScError> {
    Ok(Json(exchange.kv(op).await?))
}

#[event("boom")]
async fn boom() {
    panic!("deliberate panic in the boom handler");
}

#[event("stopPinging")]
async fn stop_pinging(socket: Socket) {
    socket.pause_pings();
}

// ---- middleware ----

#[middleware(handshake_ws)]
async fn handshake_ws(req: RequestInfo) -> Result<(), Block> {
    if req.query_param("rejectWs").as_deref() == Some("1") {
        return Err(Block::new(ScError::new("HandshakeWsDenied", "not here")));
    }
    Ok(())
}

#[middleware(handshake)]
async fn handshake(socket: Socket, State(s): State<Store>, Raw(data): Raw) -> Result<(), Block> {
    if socket.request().query_param("rejectHandshake").as_deref() == Some("1") {
        return Err(Block::new(ScError::new("HandshakeDenied", "go away")).status_code(4501));
    }
    let mut s = store(&s);
    s.handshakes += 1;
    s.last_handshake_token = data
        .and_then(|d| d.get("authToken").cloned())
        .unwrap_or(Value::Null);
    Ok(())
}

#[middleware(inbound_raw)]
async fn inbound_raw(Raw(data): Raw) -> Result<(), Block> {
    match data {
        Some(Value::String(text)) if text.contains("dropme") => Err(Block::silent()),
        _ => Ok(()),
    }
}

#[middleware(transmit)]
async fn transmit_mw(EventName(event): EventName) -> Result<(), Block> {
    if event == "blockedTransmit" {
        return Err(Block::silent());
    }
    Ok(())
}

#[middleware(invoke)]
async fn invoke_mw(EventName(event): EventName) -> Result<Option<Json<Value>>, Block> {
    match event.as_str() {
        "blockedSilently" => Err(Block::silent()),
        "blockedLoud" => Err(Block::new(ScError::new("NopeError", "You shall not pass"))),
        "rewriteMe" => Ok(Some(Json(json!("rewritten")))),
        _ => Ok(None),
    }
}

#[middleware(subscribe)]
async fn subscribe_mw(
    socket: Socket,
    parts_channel: Channel<String>,
    State(s): State<Store>,
    MaybeAuth(auth): MaybeAuth<Value>,
    WaitForAuth(wait): WaitForAuth,
    Raw(data): Raw,
) -> Result<(), Block> {
    let channel = parts_channel.0;
    store(&s).last_subscribe.insert(
        socket.id().to_owned(),
        json!({"channel": channel, "data": data, "waitForAuth": wait}),
    );
    if channel.starts_with("denied") {
        return Err(Block::new(ScError::new("SubDenied", "no")));
    }
    if channel.starts_with("private") && auth.is_none() {
        return Err(Block::new(ScError::new("AuthRequired", "login first")));
    }
    Ok(())
}

#[middleware(publish_in)]
async fn publish_in_mw(Channel(channel): Channel<String>) -> Result<(), Block> {
    if channel.starts_with("nopub") {
        return Err(Block::new(ScError::new("PublishDenied", "nope")));
    }
    Ok(())
}

#[middleware(publish_out)]
async fn publish_out_mw(
    socket: Socket,
    State(s): State<Store>,
) -> Result<Option<Json<Value>>, Block> {
    let s = store(&s);
    let flags = s.flags.get(socket.id());
    let flag = |f: &str| flags.and_then(|m| m.get(f)).copied().unwrap_or(false);
    if flag("blockOut") {
        return Err(Block::silent());
    }
    if flag("mutateOut") {
        return Ok(Some(Json(json!(format!("mutated-for-{}", socket.id())))));
    }
    Ok(None)
}

#[middleware(authenticate)]
async fn authenticate_mw(Auth(claims): Auth<Value>) -> Result<(), Block> {
    match claims.get("authBlock").and_then(Value::as_str) {
        Some("bad") => Err(Block::new(
            ScError::new("AuthBlocked", "blocked").with("isBadToken", true),
        )),
        Some("soft") => Err(Block::new(
            ScError::new("AuthBlocked", "soft block").with("isBadToken", false),
        )),
        _ => Ok(()),
    }
}

fn app() -> App {
    handlers![
        Typed,
        Members,
        Stamped,
        Signed,
        echo,
        rewrite_me,
        empty,
        fail,
        note,
        get_notes,
        ask_client,
        login,
        login_with,
        whoami,
        presence_info,
        logout,
        kick,
        disconnect_me,
        server_publish,
        server_subscribe,
        server_received,
        stats,
        last_subscribe,
        set_flag,
        stop_pinging,
        kv,
        boom,
        handshake_ws,
        handshake,
        inbound_raw,
        transmit_mw,
        invoke_mw,
        subscribe_mw,
        publish_in_mw,
        publish_out_mw,
        authenticate_mw,
    ]
    .state(Store::default())
    // History (history.test.mjs): `hist/{id}` keeps 1000 publications, `histsmall/{id}` two, so a
    // gap of more is not recovered; clients publish on both.
    .channel_contract(history_channel("hist/{id}", 1000))
    .channel_contract(history_channel("histsmall/{id}", 2))
    // Presence (presence.test.mjs, tests/cluster, tests/redis): `pres/{id}` keeps presence,
    // `presjl/{id}` also sends join/leave events; clients publish on neither.
    .channel_contract(ChannelContract::new("pres/{id}").presence(PresencePolicy::new()))
    .channel_contract(
        ChannelContract::new("presjl/{id}").presence(PresencePolicy::new().join_leave(true)),
    )
}

fn history_channel(pattern: &str, size: usize) -> ChannelContract {
    ChannelContract::new(pattern)
        .publish(Access::Anyone)
        .history(HistoryPolicy::new(size, std::time::Duration::from_secs(60)))
}

/// One binary for every role: single-process by default, a cluster when `SC_WORKERS`,
/// `SC_BROKERS` or `SC_BALANCERS` say so (the master prints the port).
fn main() -> sc_core::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    SocketCluster::builder()
        .app(app())
        .on_listening(|addr| println!("LISTENING {}", addr.port()))
        .run()
}
