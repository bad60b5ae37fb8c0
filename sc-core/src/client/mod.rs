//! A SocketCluster protocol v20 client (`socketcluster-client@20` semantics) in async Rust.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use futures_util::StreamExt;
//! use sc_core::client::Client;
//!
//! let client = Client::connect("ws://127.0.0.1:8000/socketcluster/").await?;
//! let echoed: serde_json::Value = client.invoke("echo", &serde_json::json!({"a": 1})).await?;
//! let mut room = client.subscribe("room").await?;
//! client.publish("room", &"hello").await?;
//! assert_eq!(room.next().await, Some(serde_json::json!("hello")));
//! client.disconnect().await;
//! # Ok(()) }
//! ```
//!
//! Behaviour follows the official client (`shared/protocol.md` section 10):
//!
//! - handshake `{"event":"#handshake","data":{"authToken":T|null},"cid":N}`; the call-id counter
//!   lives on the client and continues across reconnects;
//! - pings answered (`""` -> `""` in protocol v2, `#1` -> `#2` in v1); a ping watchdog armed with
//!   the handshake's `pingTimeout` closes with 4000 and reconnects at once; a send on a socket
//!   whose last ping is older than `pingTimeout` replaces it (close 1000, reconnect);
//! - `#setAuthToken` / `#removeAuthToken` (answered with `{"rid":N}` when invoked), `#publish`
//!   delivered only to known channels, `#kickOut`, batched arrays of packets;
//! - invokes pending when the connection closes fail with [`InvokeError::BadConnection`];
//!   transmits and invokes issued while not connected are buffered and flushed in order after
//!   the next handshake, each still bound by `ack_timeout` (a failed connection attempt fails
//!   them, like the official client); an outbound call while waiting to reconnect triggers the
//!   reconnect at once;
//! - reconnect with [`Backoff`]; 4000/4001/1005 reconnect immediately on the first attempt; no
//!   reconnect after 1000 or any code >= 4500; after each handshake every channel is
//!   resubscribed, then [`ClientEvent::Connect`] is emitted, then the buffer is flushed;
//! - only text frames are sent; nothing the server sends can make the client panic.
//!
//! Differences from the official client, on purpose: a client closed for good
//! ([`Client::disconnect`], or a close that does not reconnect) does not reconnect on the next
//! call: calls fail at once until [`Client::reconnect`]. [`Client::connect`] makes one attempt
//! and reports its failure instead of retrying. There is no client-side batching, no
//! `channelPrefix`, no query string option (put it in the URL).
//!
//! `wss://` uses rustls (ring): the Mozilla roots by default, or [`ClientOptions::tls`].

mod backoff;
mod codec;
mod driver;
mod errors;
mod state;
mod subscription;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::{self, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub use backoff::Backoff;
pub use errors::{ClientError, InvokeError};
pub use subscription::{EventReceiver, Subscription, TypedSubscription};

use codec::{ChannelTarget, ScError, TypedChannel};
use driver::Control;
use state::{ChannelOptions, Handler, Outbound, Poke, Shared, SubscribeStart, STALE_REASON};

pub use codec::ProtocolVersion;

/// Client configuration. Defaults are the official client's.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Server URL, e.g. `ws://127.0.0.1:8000/socketcluster/` (the trailing slash of the default
    /// path matters to the reference server). A query string is passed through.
    pub url: String,
    /// How long an invoke waits for its response, counted from the call (default 10 s). Also
    /// bounds the `#handshake` reply (failure: close 4003) and how long a transmit may wait in
    /// the offline buffer.
    pub ack_timeout: Duration,
    /// How long opening the WebSocket may take (default 20 s; failure: 4007). Also the ping
    /// watchdog's timeout until the handshake reply gives the server's `pingTimeout`.
    pub connect_timeout: Duration,
    /// Reconnect after a lost connection (default true).
    pub auto_reconnect: bool,
    /// Reconnect delays (default: the official 10 s + up to 10 s, x1.5, max 60 s).
    pub backoff: Backoff,
    /// Ping/pong tokens (default [`ProtocolVersion::V2`]).
    pub protocol_version: ProtocolVersion,
    /// Signed token sent in the first `#handshake` (the official client's stored token).
    pub auth_token: Option<String>,
    /// Ping watchdog (default on; the official `pingTimeoutDisabled: false`): without a ping for
    /// `pingTimeout` the client closes with 4000 and reconnects.
    pub ping_watchdog: bool,
    /// Capacity of the [`Client::events`] broadcast (default 256); slower receivers lag.
    pub event_capacity: usize,
    /// TLS settings for `wss://` URLs (default `None`: rustls with the Mozilla roots of
    /// `webpki-roots`). Set it to trust a private CA.
    pub tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
}

impl ClientOptions {
    /// Defaults with the given URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            url: "ws://127.0.0.1:8000/socketcluster/".to_owned(),
            ack_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(20),
            auto_reconnect: true,
            backoff: Backoff::default(),
            protocol_version: ProtocolVersion::V2,
            auth_token: None,
            ping_watchdog: true,
            event_capacity: 256,
            tls: None,
        }
    }
}

/// The connection's state (the official client's `state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Opening the WebSocket or waiting for the handshake reply.
    Connecting,
    /// Handshake done.
    Open,
    /// Not connected: waiting to reconnect, or closed for good.
    Closed,
}

/// What happens to the client, from [`Client::events`].
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// A connection attempt starts.
    Connecting,
    /// The handshake completed (after the resubscriptions were sent, before the offline buffer
    /// is flushed).
    Connect {
        /// The socket id the server assigned.
        id: String,
        /// Whether the token sent in the handshake was accepted.
        is_authenticated: bool,
        /// Why the token was rejected, if one was sent and rejected.
        auth_error: Option<ScError>,
        /// The server's `pingTimeout`.
        ping_timeout: Duration,
    },
    /// An open connection closed.
    Disconnect {
        /// Close code.
        code: u16,
        /// Close reason (the frame's text, else the code's standard text).
        reason: String,
    },
    /// A connection attempt failed before the handshake completed.
    ConnectAbort {
        /// Close code (1006 when the WebSocket could not be opened, 4007 on connect timeout,
        /// 4003 on handshake timeout, the error's `statusCode` on a rejected handshake).
        code: u16,
        /// Close reason.
        reason: String,
    },
    /// The client is authenticated with this token (a handshake accepted the token, the server
    /// sent `#setAuthToken`, or [`Client::authenticate`] succeeded).
    Authenticate {
        /// The signed token (JWT).
        signed_token: String,
    },
    /// The client is no longer authenticated.
    Deauthenticate,
    /// The server acknowledged a subscription.
    Subscribe {
        /// The channel.
        channel: String,
    },
    /// A subscription ended or became pending again (disconnect).
    Unsubscribe {
        /// The channel.
        channel: String,
    },
    /// The server refused a subscription; the channel is dropped.
    SubscribeFail {
        /// The channel.
        channel: String,
        /// The server's error.
        error: ScError,
    },
    /// The server kicked the client out of a channel; the channel is dropped.
    KickOut {
        /// The channel.
        channel: String,
        /// The server's message, if any.
        message: Option<Value>,
    },
    /// An error the official client would emit: `SocketProtocolError` (with `code`) for closes
    /// other than 1000/1001, the handshake's `TimeoutError` or rejection error.
    Error(ScError),
}

/// The outcome of [`Client::authenticate`].
#[derive(Debug, Clone, PartialEq)]
pub struct AuthStatus {
    /// Whether the server accepted the token.
    pub is_authenticated: bool,
    /// Why not, when the server said so without failing the call.
    pub auth_error: Option<ScError>,
}

/// Options of [`Client::subscribe_with`].
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// Sent to the server with `#subscribe` (visible to its subscribe middleware) when truthy.
    pub data: Option<Value>,
    /// Subscribe only while authenticated: the subscription stays pending until the client is
    /// authenticated, and `waitForAuth: true` is sent.
    pub wait_for_auth: bool,
    /// Resubscription order after a reconnect (higher first); never sent.
    pub priority: i32,
}

struct Inner {
    shared: Arc<Shared>,
    ctl: mpsc::UnboundedSender<Control>,
}

/// A SocketCluster client. Cheap to clone (an `Arc` inside); a background task owns the
/// connection and stops (closing with 1000) when the last clone is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.shared.lock();
        f.debug_struct("Client")
            .field("url", &self.inner.shared.opts.url)
            .field("state", &st.connection_state())
            .field("id", &st.id())
            .finish()
    }
}

/// Cancels an invoke when its caller stops waiting (timeout or dropped future).
struct CancelGuard<'a> {
    shared: &'a Shared,
    req: u64,
    armed: bool,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.lock().cancel(self.req);
        }
    }
}

fn encode<T: Serialize + ?Sized>(event: &str, data: &T) -> Result<String, InvokeError> {
    serde_json::to_string(data).map_err(|source| InvokeError::Encode {
        event: event.to_owned(),
        source,
    })
}

fn publish_data(channel: &str, data_json: &str) -> String {
    format!(
        "{{\"channel\":{},\"data\":{}}}",
        codec::json_string(channel),
        data_json
    )
}

impl Client {
    /// Connects with default options; resolves after the first handshake reply. A failure of
    /// this first attempt is returned (no retry).
    pub async fn connect(url: &str) -> Result<Client, ClientError> {
        Self::connect_with(ClientOptions::new(url)).await
    }

    /// Connects with `opts`; resolves after the first handshake reply. A failure of this first
    /// attempt is returned (no retry); later connection losses reconnect per the options.
    pub async fn connect_with(opts: ClientOptions) -> Result<Client, ClientError> {
        let scheme_ok = opts.url.starts_with("ws://") || opts.url.starts_with("wss://");
        if let Err(e) = opts.url.as_str().into_client_request() {
            return Err(ClientError::InvalidUrl {
                url: opts.url.clone(),
                message: e.to_string(),
            });
        }
        if !scheme_ok {
            return Err(ClientError::InvalidUrl {
                url: opts.url.clone(),
                message: "the scheme must be ws or wss".to_owned(),
            });
        }
        let shared = Arc::new(Shared::new(opts));
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let (first_tx, first_rx) = oneshot::channel();
        tokio::spawn(driver::run(shared.clone(), ctl_rx, first_tx));
        let client = Client {
            inner: Arc::new(Inner { shared, ctl }),
        };
        match first_rx.await {
            Ok(Ok(())) => Ok(client),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClientError::Closed),
        }
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    fn poke(&self, poke: Poke) {
        let control = match poke {
            Poke::None => return,
            Poke::ConnectNow => Control::ConnectNow,
            Poke::Restart { target } => Control::Restart {
                target,
                code: 1000,
                reason: STALE_REASON.to_owned(),
            },
        };
        let _ = self.inner.ctl.send(control);
    }

    /// The socket id from the last handshake (`None` while not connected).
    pub fn id(&self) -> Option<String> {
        self.shared().lock().id()
    }

    /// The connection state.
    pub fn state(&self) -> ConnectionState {
        self.shared().lock().connection_state()
    }

    /// A new receiver of the client's events (only events emitted after this call).
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.shared().lock().subscribe_events()
    }

    /// Invokes a server procedure and deserialises its response (`null` when the server sent
    /// no data). Fails with [`InvokeError::Timeout`] after `ack_timeout`.
    pub async fn invoke<T: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<R, InvokeError> {
        let data = encode(event, data)?;
        let value = self.call(event, Some(data)).await?;
        serde_json::from_value(value.unwrap_or(Value::Null)).map_err(|source| InvokeError::Decode {
            event: event.to_owned(),
            source,
        })
    }

    /// Invokes a server procedure with raw JSON: `None` data is omitted from the packet
    /// (undefined); a `None` result means the response had no data.
    pub async fn invoke_value(
        &self,
        event: &str,
        data: Option<Value>,
    ) -> Result<Option<Value>, InvokeError> {
        let data = data.map(|d| d.to_string());
        self.call(event, data).await
    }

    async fn call(&self, event: &str, data: Option<String>) -> Result<Option<Value>, InvokeError> {
        let shared = self.shared();
        let deadline = Instant::now() + shared.opts.ack_timeout;
        let (tx, rx) = oneshot::channel();
        let (req, queued) = {
            let mut st = shared.lock();
            let req = st.next_req();
            let queued = st
                .outbound(Outbound {
                    req,
                    event: event.to_owned(),
                    data,
                    reply: Some(tx),
                    deadline,
                })
                .map_err(|_| st.last_close());
            (req, queued)
        };
        match queued {
            Ok(poke) => self.poke(poke),
            Err((code, reason)) => {
                return Err(InvokeError::BadConnection {
                    event: event.to_owned(),
                    code,
                    reason,
                })
            }
        }
        let mut guard = CancelGuard {
            shared,
            req,
            armed: true,
        };
        match time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => {
                guard.armed = false;
                result
            }
            Ok(Err(_)) => {
                guard.armed = false;
                let (code, reason) = shared.lock().last_close();
                Err(InvokeError::BadConnection {
                    event: event.to_owned(),
                    code,
                    reason,
                })
            }
            Err(_) => Err(InvokeError::Timeout {
                event: event.to_owned(),
            }),
        }
    }

    fn send_transmit(&self, event: &str, data: Option<String>) -> Result<(), ClientError> {
        let queued = {
            let mut st = self.shared().lock();
            let req = st.next_req();
            st.outbound(Outbound {
                req,
                event: event.to_owned(),
                data,
                reply: None,
                deadline: Instant::now() + self.shared().opts.ack_timeout,
            })
        };
        match queued {
            Ok(poke) => {
                self.poke(poke);
                Ok(())
            }
            Err(_) => Err(ClientError::Closed),
        }
    }

    /// Sends an event that expects no response (`{"event":E,"data":D}`). While not connected
    /// it is buffered (dropped if not sent within `ack_timeout`). Fails only if the data does
    /// not serialise or the client is closed for good.
    pub fn transmit<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<(), ClientError> {
        let data = serde_json::to_string(data)?;
        self.send_transmit(event, Some(data))
    }

    /// Subscribes to `channel` and waits for the server's ack. See [`Client::subscribe_with`].
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription, InvokeError> {
        self.subscribe_with(channel, SubscribeOptions::default())
            .await
    }

    /// Subscribes to `channel` and waits until the server acknowledges it: while the client is
    /// (re)connecting, or for `wait_for_auth` until it is authenticated, the subscription is
    /// pending and this waits (like the official client, subscribe has no ack timeout; wrap it
    /// in `tokio::time::timeout` if needed; dropping the future abandons the subscription).
    /// A channel that is already subscribed resolves at once; options of a channel that
    /// already exists are kept. Fails with [`InvokeError::Remote`] when the server refuses,
    /// [`InvokeError::BadConnection`] when the client is (or becomes) closed for good.
    pub async fn subscribe_with(
        &self,
        channel: &str,
        opts: SubscribeOptions,
    ) -> Result<Subscription, InvokeError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (id, start) = {
            let mut st = self.shared().lock();
            if st.is_terminal() {
                let (code, reason) = st.last_close();
                return Err(InvokeError::BadConnection {
                    event: "#subscribe".to_owned(),
                    code,
                    reason,
                });
            }
            let id = st.next_req();
            let start = st.add_subscription(
                channel,
                id,
                tx,
                ChannelOptions {
                    wait_for_auth: opts.wait_for_auth,
                    data: opts.data,
                    priority: opts.priority,
                },
            );
            (id, start)
        };
        let subscription = Subscription {
            shared: self.inner.shared.clone(),
            channel: channel.to_owned(),
            id,
            rx,
        };
        match start {
            SubscribeStart::Ready => Ok(subscription),
            SubscribeStart::Wait(ack) => match ack.await {
                Ok(Ok(())) => Ok(subscription),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(InvokeError::Unsubscribed {
                    channel: channel.to_owned(),
                }),
            },
        }
    }

    /// Subscribes to a typed channel (`#[channel("rooms/{id}", message = T)]`): the stream
    /// yields the channel's message type, decoded. See [`Client::subscribe_with`].
    pub async fn subscribe_to<C>(
        &self,
        channel: &C,
    ) -> Result<TypedSubscription<C::Message>, InvokeError>
    where
        C: TypedChannel + ChannelTarget<C::Message>,
        C::Message: DeserializeOwned,
    {
        let name = channel.channel_name();
        Ok(TypedSubscription::new(self.subscribe(&name).await?))
    }

    /// Publishes on a channel and waits for the ack, like [`Client::publish`]; on a typed channel
    /// only its message type compiles (`client.publish_to(&Room { id: 1 }, &ChatMsg { .. })`).
    pub async fn publish_to<C, M>(&self, channel: &C, message: &M) -> Result<(), InvokeError>
    where
        C: ChannelTarget<M> + ?Sized,
        M: Serialize + ?Sized,
    {
        self.publish(&channel.channel_name(), message).await
    }

    /// Unsubscribes `channel` (every handle's stream ends); `#unsubscribe` is sent without cid.
    pub fn unsubscribe(&self, channel: &str) {
        self.shared().lock().drop_channel(channel, true);
    }

    /// Channels the client is subscribed to; with `include_pending`, also those waiting for a
    /// connection, for authentication or for the server's ack.
    pub fn subscriptions(&self, include_pending: bool) -> Vec<String> {
        self.shared().lock().subscriptions(include_pending)
    }

    /// Whether `channel` is subscribed (acknowledged by the server on this connection).
    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.shared().lock().is_subscribed(channel, false)
    }

    /// Publishes to `channel` and waits for the server's ack (`#publish` with a cid, the
    /// official `invokePublish`). The publisher receives its own publication if subscribed.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        data: &T,
    ) -> Result<(), InvokeError> {
        let data = encode("#publish", data)?;
        self.call("#publish", Some(publish_data(channel, &data)))
            .await
            .map(|_| ())
    }

    /// Publishes to `channel` without waiting (`#publish` without cid, the official
    /// `transmitPublish`).
    pub fn transmit_publish<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        data: &T,
    ) -> Result<(), ClientError> {
        let data = serde_json::to_string(data)?;
        self.send_transmit("#publish", Some(publish_data(channel, &data)))
    }

    /// The signed token (JWT) the client is authenticated with.
    pub fn auth_token(&self) -> Option<String> {
        self.shared().lock().signed_token()
    }

    /// The claims of [`Client::auth_token`]: its middle segment, decoded but **not verified**.
    pub fn auth_claims(&self) -> Option<Map<String, Value>> {
        self.shared().lock().claims()
    }

    /// Why the server rejected the token sent in the last handshake (its `authError`), e.g.
    /// `AuthTokenExpiredError` for an expired [`ClientOptions::auth_token`].
    pub fn auth_error(&self) -> Option<ScError> {
        self.shared().lock().auth_error()
    }

    /// Whether the client is authenticated.
    pub fn is_authenticated(&self) -> bool {
        self.shared().lock().is_authenticated()
    }

    /// Authenticates the connection with a signed token (`#authenticate`). On success the
    /// token is stored and sent in later handshakes. A rejection by the server
    /// ([`InvokeError::Remote`], e.g. `AuthTokenInvalidError`) leaves the client
    /// unauthenticated; a timeout or bad connection keeps the previous state.
    pub async fn authenticate(&self, token: &str) -> Result<AuthStatus, InvokeError> {
        let result = self
            .call("#authenticate", Some(codec::json_string(token)))
            .await;
        let data = match result {
            Ok(data) => data,
            Err(e) => {
                if matches!(e, InvokeError::Remote(_)) {
                    self.shared().lock().set_unauthenticated();
                }
                return Err(e);
            }
        };
        let status = data.as_ref().and_then(Value::as_object);
        let mut st = self.shared().lock();
        let (is_authenticated, auth_error) = match status.and_then(|s| s.get("isAuthenticated")) {
            Some(v) if !v.is_null() => (
                codec::is_truthy(v),
                status
                    .and_then(|s| s.get("authError"))
                    .filter(|e| !e.is_null())
                    .map(ScError::from_wire),
            ),
            _ => (st.is_authenticated(), None),
        };
        if is_authenticated {
            st.set_authenticated(token.to_owned());
        } else {
            st.set_unauthenticated();
        }
        st.store_token(token.to_owned());
        Ok(AuthStatus {
            is_authenticated,
            auth_error,
        })
    }

    /// Drops the token locally and tells the server (`#removeAuthToken`, never answered) when
    /// connected or connecting.
    pub async fn deauthenticate(&self) {
        let poke = {
            let mut st = self.shared().lock();
            st.remove_token();
            if st.phase() == state::Phase::Closed {
                None
            } else {
                let req = st.next_req();
                st.outbound(Outbound {
                    req,
                    event: "#removeAuthToken".to_owned(),
                    data: None,
                    reply: None,
                    deadline: Instant::now() + self.shared().opts.ack_timeout,
                })
                .ok()
            }
        };
        if let Some(poke) = poke {
            self.poke(poke);
        }
    }

    /// Answers server invokes of `procedure` with `handler` (replacing any previous one). `Ok`
    /// becomes `{"rid":N[,"data":D]}`, `Err` becomes `{"rid":N,"error":E}`. Each invoke runs in
    /// its own task. Procedures without a handler are not answered (the server times out),
    /// like the official client.
    pub fn on_invoke<F, Fut>(&self, procedure: &str, handler: F)
    where
        F: Fn(Option<Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Value>, ScError>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |data| Box::pin(handler(data)));
        self.shared().lock().set_procedure(procedure, handler);
    }

    /// Removes the handler of `procedure`.
    pub fn remove_invoke_handler(&self, procedure: &str) {
        self.shared().lock().remove_procedure(procedure);
    }

    /// A stream of the data of every server transmit named `event` (`None` when it had no
    /// data), from now on. Reserved events (`#publish`, `#kickOut`, `#setAuthToken`,
    /// `#removeAuthToken`) are handled by the client and never appear here.
    pub fn receiver(&self, event: &str) -> EventReceiver {
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared().lock().add_receiver(event, tx);
        EventReceiver { rx }
    }

    /// Closes the connection with 1000 and stays closed: pending invokes fail with
    /// `BadConnection`, later calls fail at once, no reconnect (until [`Client::reconnect`]).
    /// Waits (at most about a second) for the close frame to be sent.
    pub async fn disconnect(&self) {
        self.shared().lock().close_for_good(1000, "");
        let (done, wait) = oneshot::channel();
        let sent = self.inner.ctl.send(Control::Disconnect {
            code: 1000,
            reason: String::new(),
            done,
        });
        if sent.is_ok() {
            let _ = time::timeout(Duration::from_secs(2), wait).await;
        }
    }

    /// Drops the current connection (close 1000, `Disconnect` event, pending invokes fail) and
    /// connects again at once, sending the stored token in the handshake. Also reopens a client
    /// closed for good.
    pub fn reconnect(&self) {
        let target = self.shared().lock().restart();
        let _ = self.inner.ctl.send(Control::Restart {
            target,
            code: 1000,
            reason: String::new(),
        });
    }
}
