//! sc-macros: the attribute macros of sc, sugar over sc-core's public handler API. Depend on
//! `sc-core`, which re-exports them (`sc_core::{event, middleware, channel, handlers}`, also in
//! `sc_core::prelude`, feature `macros`, on by default).
//!
//! ```
//! use sc_core::prelude::*;
//!
//! #[derive(Serialize, Deserialize)]
//! struct ChatMsg { text: String }
//!
//! /// A typed channel: the captures are the fields, `ChatMsg` the only message type.
//! #[channel("rooms/{id}", message = ChatMsg)]
//! struct Room { id: u64 }
//!
//! #[event("chat")]
//! async fn chat(exchange: Exchange, Json(msg): Json<ChatMsg>) -> Result<(), ScError> {
//!     exchange.publish(&Room { id: 1 }, &msg).await?;
//!     Ok(())
//! }
//!
//! #[middleware(subscribe)]
//! async fn rooms_only(Channel(room): Channel<Room>) -> Result<(), Block> {
//!     if room.id > 100 {
//!         return Err(Block::new(ScError::new("NoSuchRoom", "rooms are numbered 1 to 100")));
//!     }
//!     Ok(())
//! }
//!
//! let app: App = handlers![Room, chat, rooms_only];
//! ```
//!
//! Everything generated can be written by hand with sc-core's API, e.g. the app above is
//! `App::new().channel("rooms/{id}").event("chat", chat).middleware(MiddlewareKind::Subscribe,
//! rooms_only)` plus the channel impls shown in `sc_core::channel`. What the macros add:
//! literal names checked at compile time, errors at the offending tokens, and each item's name,
//! module, file and line for startup errors (duplicate events, overlapping channels).
//!
//! Set `SC_MACROS_DEBUG=1` while building to print every expansion to stderr (cargo does not
//! rebuild when only the variable changes: touch the file).

mod attr;
mod channel;
mod event;
mod handler_fn;
mod handlers;
mod middleware;
mod output;
mod ts;

use proc_macro::TokenStream;

/// Registers an `async fn` as the handler of client transmits and invokes named `name`.
///
/// ```
/// use sc_core::prelude::*;
///
/// #[event("echo")]
/// async fn echo(Json(data): Json<serde_json::Value>) -> Json<serde_json::Value> {
///     Json(data)
/// }
///
/// let app: App = handlers![echo];
/// ```
///
/// The function stays as written. Next to it the macro adds a hidden item of the same name
/// (`handlers![echo]` names it) whose registration is
/// `App::event_at("echo", handler, Source { name: Some("echo"), module, file, line })`.
///
/// The name is a string literal: not empty, not starting with `#` (reserved by the protocol).
/// The function is a free `async fn`, not generic, without `self`; its arguments are extractors,
/// at most one payload extractor (`Json<T>`, `TryJson<T>`, `Raw`), last; it returns a reply
/// (`IntoReply`) and its future is `Send`. Each of these is checked at compile time, at the
/// offending tokens. `#[event]` takes no options.
///
/// It also declares the event's types for the TypeScript contract (`App::event_types`): the
/// payload extractor's `T` and the reply (the return type without `Result`/`Json`), each
/// `unknown` when it does not derive `TS`.
#[proc_macro_attribute]
pub fn event(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    output::finish(
        "#[event]",
        event::expand(attr.into(), item.clone()),
        |errors| output::with_item(errors, handler_fn::fallback(item)),
    )
}

/// Registers an `async fn` as middleware of one kind.
///
/// ```
/// use sc_core::prelude::*;
///
/// #[middleware(handshake_ws)]
/// async fn same_site(request: RequestInfo) -> Result<(), Block> {
///     let _ = request;
///     Ok(())
/// }
///
/// /// Every delivery is rewritten (`Json(new)`) or dropped (`Err(Block)`).
/// #[middleware(publish_out)]
/// async fn shout(Json(text): Json<String>) -> Result<Json<String>, Block> {
///     if text.is_empty() {
///         return Err(Block::silent());
///     }
///     Ok(Json(text.to_uppercase()))
/// }
///
/// let app: App = handlers![same_site, shout];
/// ```
///
/// Kinds: `handshake_ws`, `handshake`, `inbound_raw`, `transmit`, `invoke`, `subscribe`,
/// `publish_in`, `publish_out`, `authenticate` (`MiddlewareKind::*`); the registration is
/// `App::middleware_at(kind, handler, source)`, in `handlers![]` order. The function follows the
/// rules of `#[event]`, returns a decision (`IntoDecision`), and may only use the extractors its
/// kind provides: no `Socket`, `Auth`, payload, `EventName` or `Channel` in `handshake_ws`;
/// `EventName` only in `transmit` and `invoke`; `Channel<T>` only in `subscribe`, `publish_in`
/// and `publish_out`.
#[proc_macro_attribute]
pub fn middleware(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    output::finish(
        "#[middleware]",
        middleware::expand(attr.into(), item.clone()),
        |errors| output::with_item(errors, handler_fn::fallback(item)),
    )
}

/// Makes a struct a typed channel: a name pattern whose captures are the struct's fields, and
/// the one message type published on it.
///
/// ```
/// use sc_core::prelude::*;
///
/// #[derive(Serialize)]
/// struct ChatMsg { text: String }
///
/// #[channel("rooms/{room}/threads/{id}", message = ChatMsg)]
/// struct Thread { room: String, id: u32 }
///
/// let thread = Thread { room: "rust".into(), id: 7 };
/// assert_eq!(thread.name(), "rooms/rust/threads/7");
/// assert_eq!(Thread::PATTERN, "rooms/{room}/threads/{id}");
/// assert_eq!(Thread::parse("rooms/rust/threads/7").map(|t| t.id).ok(), Some(7));
/// let err = Thread::parse("rooms/rust").err().map(|e| e.name().to_owned());
/// assert_eq!(err.as_deref(), Some("InvalidChannelError"));
/// ```
///
/// A pattern is `/`-separated non-empty segments, each literal text or a whole capture
/// `{field}`; every capture is a field and every field a capture (parsed with `FromStr`, written
/// with `Display`). Generated: `TypedChannel` (`PATTERN`, `Message`), `ChannelTarget<Message>`
/// (publishing another type does not compile), `FromChannelName` (for `Channel<Thread>`; a name
/// that does not match is an `InvalidChannelError`), `Display`, inherent `PATTERN`, `name()`,
/// `parse()`, and for `handlers![Thread]` the registration
/// `App::channel_contract_at(contract, source)`, which makes overlapping channels fail at startup.
/// The contract carries the TypeScript types of the message and the captures
/// (`ChannelContract::ts_message`, `ts_capture`; `unknown` for types that do not derive `TS`).
///
/// The declaration is the channel's contract, enforced for every client action:
/// `subscribe = anyone | authenticated | server | guard_fn` (default `anyone`) and
/// `publish = server | authenticated | anyone | guard_fn` (default `server`: a client's `#publish`
/// is refused with `PublishRefusedError`). A guard is an async fn over extractors returning a
/// middleware decision; a publish guard may rewrite the message (`Json(new)`). Where clients may
/// publish, the message type must also be `Deserialize`: a publication that is not one is refused
/// with `InvalidArgumentsError`. The words win over a fn of the same name; name such a guard by
/// its path (`publish = self::anyone`).
#[proc_macro_attribute]
pub fn channel(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    output::finish(
        "#[channel]",
        channel::expand(attr.into(), item.clone()),
        |errors| output::with_item(errors, channel::fallback(item)),
    )
}

/// An `sc_core::App` with each listed item registered, in order: `#[event]` and `#[middleware]`
/// functions and `#[channel]` structs, by path.
///
/// ```
/// use sc_core::prelude::*;
///
/// mod chat {
///     use sc_core::prelude::*;
///
///     #[event("hello")]
///     pub async fn hello() -> Json<&'static str> {
///         Json("hi")
///     }
/// }
///
/// #[middleware(invoke)]
/// async fn log(EventName(event): EventName) {
///     let _ = event;
/// }
///
/// let builder = SocketCluster::builder().handlers(handlers![log, chat::hello]);
/// ```
///
/// An item without one of the attributes is a compile error at its path.
#[proc_macro]
pub fn handlers(input: TokenStream) -> TokenStream {
    output::finish(
        "handlers![]",
        handlers::expand(input.into()),
        handlers::fallback,
    )
}
