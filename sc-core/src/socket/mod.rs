//! [`Socket`]: the server's handle on one connected client. Cheap to clone; every method works
//! from any task. Sending never blocks: frames go into the socket's outbound queue ([`Outbox`]),
//! bounded in bytes, which the connection's writer drains (see `outbound_queue_bytes` and
//! `slow_consumer`).
//!
//! This layer sits below the app model (extractors hand out sockets) and knows nothing of
//! handlers, pub/sub or processes: what a socket needs of the server is in [`Shared`], which the
//! server builds; the pub/sub registry answers for the socket's channels through
//! [`SocketChannels`].

mod close_signal;
mod outbox;
mod request;
mod shared;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::ws::Utf8Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::sync::oneshot;

pub(crate) use close_signal::{CloseRequest, CloseSignal};
pub(crate) use outbox::cost;
pub(crate) use outbox::frame_cost;
pub(crate) use outbox::Outbox;
use outbox::PushError;
pub(crate) use request::KeptRequest;
pub use request::RequestInfo;
pub(crate) use shared::{Shared, SocketChannels};

use crate::auth::SignError;
use crate::broker::Publication;
use crate::metrics::Metrics;
pub use crate::protocol::InvokeError;
use crate::protocol::{self, close, ScError};

/// What the writer sends, in order.
#[derive(Debug)]
pub(crate) enum Outbound {
    Frame(Utf8Bytes),
    /// The handshake reply is queued before this: once it is written, the writer gives its
    /// buffers back (most sockets go quiet after the handshake).
    HandshakeDone,
    /// A ping (queued by the reader, whose one timer keeps both the pings and the pong watchdog;
    /// counts nothing against the outbound limit, so a ping is never refused).
    Ping,
    /// Close after everything queued before it has been written.
    Close(u16, String),
}

#[derive(Clone)]
pub(crate) struct AuthState {
    pub signed: Arc<str>,
    pub payload: Arc<Map<String, Value>>,
}

/// Publications waiting for the socket's publish-out middleware.
pub(crate) type PublishOutQueue = tokio::sync::mpsc::UnboundedSender<Arc<Publication>>;

/// Where the client's answer to a server invoke goes.
type PendingInvoke = oneshot::Sender<Result<Option<Value>, ScError>>;

pub(crate) struct SocketInner {
    pub id: Arc<str>,
    pub shared: Arc<Shared>,
    pub request: KeptRequest,
    pub(crate) out: Outbox,
    pub(crate) close: CloseSignal,
    auth: RwLock<Option<AuthState>>,
    /// Whether `auth` holds a token, written with it: most sockets have none, and every action
    /// asks (two read locks per message, about 2% of the server's CPU in `sc bench rpc`).
    authenticated: AtomicBool,
    /// The socket's publish-out task, when the app has publish-out middleware (see
    /// [`Socket::deliver`]).
    publish_out: Option<PublishOutQueue>,
    /// Server invokes waiting for the client's answer; the map is made on the first one (most
    /// sockets are never invoked, and an empty map is 48 bytes in each).
    #[allow(clippy::box_collection)]
    pending: Mutex<Option<Box<HashMap<u64, PendingInvoke>>>>,
    next_cid: AtomicU64,
    pongs: AtomicU64,
    pings_paused: AtomicBool,
    /// The client's publishes waiting for the broker's answer on tasks of their own (see
    /// `session::procedures`): bounded by `inbound_queue_limit`.
    pub(crate) publishes_waiting: AtomicU32,
    /// What the app attached to the socket's presence entries (`set_presence_info`).
    presence_info: RwLock<Option<Arc<Value>>>,
}

/// A connected client. Clone it freely; all clones refer to the same connection.
#[derive(Clone)]
pub struct Socket(pub(crate) Arc<SocketInner>);

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket").field("id", &self.0.id).finish()
    }
}

/// Failure to queue a message for a socket.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The socket is closed.
    #[error("the socket is closed")]
    Closed,
    /// The outbound queue was full: the socket was closed as a slow consumer (4100).
    #[error("the socket's outbound queue is full; it was disconnected as a slow consumer")]
    SlowConsumer,
    /// The outbound queue was full and the server drops what does not fit
    /// ([`SlowConsumer::Drop`](crate::limit::SlowConsumer::Drop)): this message was discarded.
    #[error("the socket's outbound queue is full; the message was dropped")]
    Dropped,
    /// The data could not be serialised to JSON.
    #[error("data is not serialisable to JSON: {0}")]
    Encode(#[from] serde_json::Error),
    /// [`Socket::set_presence_info`] got more than `presence_max_info_bytes` (as JSON).
    #[error(
        "presence info of {size} bytes is over presence_max_info_bytes ({max}); it was not set"
    )]
    PresenceInfoTooLarge {
        /// Its size as JSON.
        size: usize,
        /// `presence_max_info_bytes`.
        max: usize,
    },
}

impl From<SendError> for ScError {
    fn from(e: SendError) -> Self {
        let name = match e {
            SendError::PresenceInfoTooLarge { .. } => "InvalidArgumentsError",
            _ => "BadConnectionError",
        };
        ScError::new(name, e.to_string())
    }
}

/// Failure of [`Socket::set_auth_token`].
#[derive(Debug, thiserror::Error)]
pub enum SetAuthTokenError {
    /// The claims are not a JSON object.
    #[error("auth token claims must serialise to a JSON object")]
    NotAnObject,
    /// Signing failed; the socket was closed with 4002, as in the reference.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// `reject_on_failed_delivery` was set and the client did not confirm.
    #[error("Failed to deliver auth token to client - {0}")]
    Delivery(Box<InvokeError>),
    /// The socket is closed.
    #[error(transparent)]
    Send(#[from] SendError),
}

impl From<SetAuthTokenError> for ScError {
    fn from(e: SetAuthTokenError) -> Self {
        ScError::new("AuthError", e.to_string())
    }
}

/// Options of [`Socket::set_auth_token_with`].
#[derive(Clone, Debug, Default)]
pub struct AuthTokenOptions {
    /// Lifetime in seconds; default: the server's `auth_default_expiry`. Ignored when the claims
    /// carry their own `exp`.
    pub expires_in: Option<u64>,
    /// Send `#setAuthToken` as an invoke and wait for the client to confirm it saved the token.
    pub reject_on_failed_delivery: bool,
}

impl Socket {
    pub(crate) fn new(
        shared: Arc<Shared>,
        request: KeptRequest,
        publish_out: Option<PublishOutQueue>,
    ) -> Self {
        let id = shared.next_socket_id();
        let out = Outbox::new(
            shared.config.outbound_queue_bytes,
            shared.config.slow_consumer,
        );
        Self(Arc::new(SocketInner {
            id,
            shared,
            request,
            out,
            close: CloseSignal::default(),
            auth: RwLock::new(None),
            authenticated: AtomicBool::new(false),
            publish_out,
            pending: Mutex::new(None),
            next_cid: AtomicU64::new(1),
            pongs: AtomicU64::new(0),
            pings_paused: AtomicBool::new(false),
            publishes_waiting: AtomicU32::new(0),
            presence_info: RwLock::new(None),
        }))
    }

    /// The socket id sent to the client in the handshake reply (20 URL-safe characters).
    pub fn id(&self) -> &str {
        &self.0.id
    }

    /// The HTTP upgrade request (URL with query, headers, peer address).
    ///
    /// Parsed from what the socket keeps on the first call, and kept from then on (it is a
    /// reference); the [`RequestInfo`] extractor gives a copy that is not kept.
    pub fn request(&self) -> &RequestInfo {
        self.0.request.info()
    }

    /// Whether the connection is still open.
    pub fn is_open(&self) -> bool {
        !self.0.close.is_set() && !self.0.out.is_closed()
    }

    /// Sends an event the client receives with `socket.receiver(event)` (no answer).
    pub fn transmit<T: Serialize + ?Sized>(&self, event: &str, data: &T) -> Result<(), SendError> {
        let frame = protocol::encode_event(event, None, Some(data))?;
        self.push(frame.into())
    }

    /// Invokes a procedure the client serves (`socket.procedure(event)` in the JS client) and waits
    /// for its answer, at most the server's `ack_timeout`.
    pub async fn invoke<T: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        event: &str,
        data: &T,
    ) -> Result<R, InvokeError> {
        let value = self.invoke_raw(event, Some(&data)).await?;
        R::deserialize(value.unwrap_or(Value::Null)).map_err(|source| InvokeError::Decode {
            event: event.to_owned(),
            source,
        })
    }

    pub(crate) async fn invoke_raw<T: Serialize + ?Sized>(
        &self,
        event: &str,
        data: Option<&T>,
    ) -> Result<Option<Value>, InvokeError> {
        let cid = self.0.next_cid.fetch_add(1, Ordering::Relaxed);
        let frame = protocol::encode_event(event, Some(cid), data).map_err(|source| {
            InvokeError::Encode {
                event: event.to_owned(),
                source,
            }
        })?;
        let (tx, rx) = oneshot::channel();
        lock(&self.0.pending)
            .get_or_insert_with(Default::default)
            .insert(cid, tx);
        if let Err(e) = self.push(frame.into()) {
            self.forget_pending(cid);
            return Err(match e {
                SendError::Dropped => InvokeError::Dropped {
                    event: event.to_owned(),
                },
                SendError::Encode(source) => InvokeError::Encode {
                    event: event.to_owned(),
                    source,
                },
                // `push` never answers `PresenceInfoTooLarge`.
                SendError::Closed
                | SendError::SlowConsumer
                | SendError::PresenceInfoTooLarge { .. } => self.bad_connection(event),
            });
        }
        match tokio::time::timeout(self.0.shared.config.ack_timeout, rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(InvokeError::Remote(e)),
            Ok(Err(_)) => Err(self.bad_connection(event)),
            Err(_) => {
                self.forget_pending(cid);
                Err(InvokeError::Timeout {
                    event: event.to_owned(),
                })
            }
        }
    }

    /// The connection ended before `event` was answered: with the close code we sent, or 1006
    /// (abnormal closure) when the peer went away.
    fn bad_connection(&self, event: &str) -> InvokeError {
        let (code, reason) = match self.0.close.get() {
            Some(CloseRequest {
                code: Some(code),
                reason,
            }) => (code, reason),
            _ => (1006, String::new()),
        };
        let reason = if reason.is_empty() {
            protocol::close_reason(code).to_owned()
        } else {
            reason
        };
        InvokeError::BadConnection {
            event: event.to_owned(),
            code,
            reason,
        }
    }

    /// Resolves a pending server invoke with the client's response.
    pub(crate) fn resolve(&self, rid: u64, result: Result<Option<Value>, ScError>) {
        if let Some(tx) = self.forget_pending(rid) {
            let _ = tx.send(result);
        }
    }

    fn forget_pending(&self, cid: u64) -> Option<PendingInvoke> {
        lock(&self.0.pending).as_mut()?.remove(&cid)
    }

    /// Fails every pending invoke (the connection is gone).
    pub(crate) fn abort_pending(&self) {
        *lock(&self.0.pending) = None;
    }

    /// Signs `claims` (any serialisable object) into a JWT with the server's auth key, makes it the
    /// socket's token, and sends it to the client (`#setAuthToken`). `iat` is added, and `exp`
    /// unless the claims have one. A signing failure closes the socket with 4002.
    pub async fn set_auth_token<C: Serialize + ?Sized>(
        &self,
        claims: &C,
    ) -> Result<(), SetAuthTokenError> {
        self.set_auth_token_with(claims, AuthTokenOptions::default())
            .await
    }

    /// [`set_auth_token`](Self::set_auth_token) with options.
    pub async fn set_auth_token_with<C: Serialize + ?Sized>(
        &self,
        claims: &C,
        options: AuthTokenOptions,
    ) -> Result<(), SetAuthTokenError> {
        let Ok(Value::Object(claims)) = serde_json::to_value(claims) else {
            return Err(SetAuthTokenError::NotAnObject);
        };
        let (signed, payload) = match self.0.shared.auth.sign(&claims, options.expires_in) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(socket = %self.id(), error = %e, "failed to sign auth token");
                self.close_now(close::AUTH_SIGN_FAILED, "");
                return Err(e.into());
            }
        };
        self.set_auth_state(Some(AuthState {
            signed: signed.as_str().into(),
            payload: Arc::new(payload),
        }));
        let data = serde_json::json!({ "token": signed });
        if options.reject_on_failed_delivery {
            self.invoke_raw("#setAuthToken", Some(&data))
                .await
                .map_err(|e| SetAuthTokenError::Delivery(Box::new(e)))?;
        } else {
            self.transmit("#setAuthToken", &data)?;
        }
        Ok(())
    }

    /// The payload of the socket's auth token (with `iat`/`exp`), if authenticated.
    pub fn auth_token(&self) -> Option<Arc<Map<String, Value>>> {
        if !self.0.authenticated.load(Ordering::Acquire) {
            return None;
        }
        read(&self.0.auth).as_ref().map(|a| a.payload.clone())
    }

    /// The signed token string, if authenticated.
    pub fn signed_auth_token(&self) -> Option<Arc<str>> {
        read(&self.0.auth).as_ref().map(|a| a.signed.clone())
    }

    /// Whether the socket holds a valid token.
    pub fn is_authenticated(&self) -> bool {
        self.0.authenticated.load(Ordering::Acquire)
    }

    pub(crate) fn set_auth_state(&self, state: Option<AuthState>) {
        let mut auth = write(&self.0.auth);
        self.0
            .authenticated
            .store(state.is_some(), Ordering::Release);
        *auth = state;
    }

    /// Takes the token out, if any.
    fn take_auth(&self) -> Option<AuthState> {
        let mut auth = write(&self.0.auth);
        self.0.authenticated.store(false, Ordering::Release);
        auth.take()
    }

    /// Removes the socket's token and tells the client to drop it (`#removeAuthToken`).
    pub fn deauthenticate(&self) {
        let was = self.take_auth().is_some();
        if was {
            let _ = self.push(Utf8Bytes::from_static(r##"{"event":"#removeAuthToken"}"##));
        }
    }

    /// Removes the token without telling the client (it asked for it).
    pub(crate) fn forget_auth(&self) {
        self.take_auth();
    }

    /// If the token's `exp` has passed, deauthenticates and returns the reference's in-session
    /// `AuthTokenExpiredError`.
    pub(crate) fn check_expiry(&self) -> Option<ScError> {
        if !self.0.authenticated.load(Ordering::Acquire) {
            return None;
        }
        let exp = {
            let auth = read(&self.0.auth);
            let payload = &auth.as_ref()?.payload;
            if !crate::auth::is_expired(payload) {
                return None;
            }
            payload.get("exp").and_then(Value::as_i64).unwrap_or(0)
        };
        self.deauthenticate();
        Some(crate::auth::session_expired_error(exp))
    }

    /// Unsubscribes the socket from `channel` (or from every channel with `None`) and tells the
    /// client (`#kickOut`, one per channel) with an optional message.
    pub fn kick_out(&self, channel: Option<&str>, message: Option<&str>) {
        let registry = &self.0.shared.channels;
        let channels: Vec<Arc<str>> = match channel {
            Some(c) if registry.contains(self, c) => vec![c.into()],
            Some(_) => Vec::new(),
            None => registry.of(self),
        };
        for ch in channels {
            let data = match message {
                Some(m) => serde_json::json!({ "channel": &*ch, "message": m }),
                None => serde_json::json!({ "channel": &*ch }),
            };
            let _ = self.transmit("#kickOut", &data);
            registry.unsubscribe(self, &ch);
        }
    }

    /// Attaches `info` to the socket's presence entry on every channel with presence (`info` in
    /// `Exchange::presence`, `#presence` answers and join events): on the channels it subscribes
    /// to from now on, and, replacing the entry, on those it is subscribed to already (a join
    /// event for it follows on channels with join/leave events). Keep it small: it is copied
    /// into every entry: over `presence_max_info_bytes` (as JSON, 1 KiB by default) it is
    /// [`SendError::PresenceInfoTooLarge`] and nothing changes.
    pub fn set_presence_info<T: Serialize + ?Sized>(&self, info: &T) -> Result<(), SendError> {
        let info = serde_json::to_value(info)?;
        let size = serde_json::to_vec(&info)?.len();
        let max = self.0.shared.config.presence_max_info_bytes;
        if size > max {
            return Err(SendError::PresenceInfoTooLarge { size, max });
        }
        *write(&self.0.presence_info) = Some(Arc::new(info));
        self.0.shared.channels.presence_changed(self);
        Ok(())
    }

    /// What [`set_presence_info`](Self::set_presence_info) attached, if anything.
    pub fn presence_info(&self) -> Option<Arc<Value>> {
        read(&self.0.presence_info).clone()
    }

    /// The channels the socket is subscribed to.
    pub fn subscriptions(&self) -> Vec<String> {
        self.0
            .shared
            .channels
            .of(self)
            .iter()
            .map(|c| c.to_string())
            .collect()
    }

    /// Whether the socket is subscribed to `channel`.
    pub fn is_subscribed(&self, channel: &str) -> bool {
        self.0.shared.channels.contains(self, channel)
    }

    /// Closes the connection with `code` and `reason` once everything already queued for the client
    /// has been written. Codes 1000 and >= 4500 tell the official client not to reconnect; 1001 and
    /// 4000..4499 make it come back.
    pub fn disconnect(&self, code: u16, reason: impl Into<String>) {
        let reason = reason.into();
        if !self
            .0
            .out
            .push_control(Outbound::Close(code, reason.clone()))
        {
            self.close_now(code, reason);
        }
    }

    /// Closes without waiting for the queue; whether this call started the close.
    pub(crate) fn close_now(&self, code: u16, reason: impl Into<String>) -> bool {
        self.request_close(CloseRequest {
            code: Some(code),
            reason: reason.into(),
        })
    }

    /// Marks the connection as ending without a close code of ours (the peer closed, or the
    /// reader finished); keeps a close already requested.
    pub(crate) fn close_stop(&self) {
        self.request_close(CloseRequest {
            code: None,
            reason: String::new(),
        });
    }

    /// Sets the close signal (which wakes the reader) and wakes the writer, which waits for a
    /// close through the outbox's waker; whether this call set it.
    fn request_close(&self, request: CloseRequest) -> bool {
        let set = self.0.close.set(request);
        self.0.out.wake();
        set
    }

    /// Queues an encoded frame. Never blocks; a full queue disconnects the socket (4100) or drops
    /// the frame, as `slow_consumer` says.
    pub(crate) fn push(&self, frame: Utf8Bytes) -> Result<(), SendError> {
        self.push_item(Outbound::Frame(frame))
    }

    /// Delivers a publication: its shared frame straight into the queue, or, with publish-out
    /// middleware, to the socket's publish-out task (which runs the middleware in order and then
    /// queues the frame). Counted against the outbound bound either way.
    pub(crate) fn deliver(&self, publication: &Arc<Publication>) -> Result<(), SendError> {
        let Some(publish_out) = &self.0.publish_out else {
            return self.push(publication.frame.clone());
        };
        let size = frame_cost(publication.frame.len());
        self.outcome(self.0.out.reserve(size))?;
        if publish_out.send(publication.clone()).is_err() {
            self.0.out.release(size);
            return Err(SendError::Closed);
        }
        Ok(())
    }

    /// The bytes of frames (see [`frame_cost`]) the outbound queue takes before it is full.
    pub(crate) fn outbound_free(&self) -> usize {
        self.0.out.free()
    }

    fn push_item(&self, item: Outbound) -> Result<(), SendError> {
        self.outcome(self.0.out.push(item))
    }

    /// What a refused push means for the socket: a slow consumer is closed (4100), a dropped
    /// frame counted.
    fn outcome(&self, pushed: Result<(), PushError>) -> Result<(), SendError> {
        match pushed {
            Ok(()) => Ok(()),
            Err(PushError::Full) => {
                if self.close_now(close::SLOW_CONSUMER, "") {
                    tracing::warn!(socket = %self.id(), "outbound queue full: disconnecting slow consumer");
                    Metrics::add(&self.0.shared.metrics.slow_consumer_disconnects, 1);
                }
                Err(SendError::SlowConsumer)
            }
            Err(PushError::Dropped) => {
                Metrics::add(&self.0.shared.metrics.outbound_dropped, 1);
                Err(SendError::Dropped)
            }
            Err(PushError::Closed) => Err(SendError::Closed),
        }
    }

    /// The handshake reply is queued (see [`Outbound::HandshakeDone`]).
    pub(crate) fn handshake_done(&self) {
        self.0.out.push_control(Outbound::HandshakeDone);
    }

    /// Queues a ping.
    pub(crate) fn ping(&self) {
        self.0.out.push_control(Outbound::Ping);
    }

    pub(crate) fn count_pong(&self) {
        self.0.pongs.fetch_add(1, Ordering::Relaxed);
    }

    /// Pongs received from this client so far.
    pub fn pongs_received(&self) -> u64 {
        self.0.pongs.load(Ordering::Relaxed)
    }

    /// Test hook (feature `test-util`): stop pinging this socket and watching its pongs, which
    /// makes the client's own ping watchdog fire. Not for applications.
    #[cfg(feature = "test-util")]
    pub fn pause_pings(&self) {
        self.0.pings_paused.store(true, Ordering::Relaxed);
    }

    pub(crate) fn pings_paused(&self) -> bool {
        self.0.pings_paused.load(Ordering::Relaxed)
    }
}

impl PartialEq for Socket {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Locks a mutex, recovering from poisoning: the protected data stays consistent because no code
/// path panics while holding these locks, and one panicking handler must not take the server down.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

/// A socket with no connection behind it, for the unit tests of the layers above: what it
/// would send is read with [`Socket::take_sent`].
#[cfg(test)]
pub(crate) mod testkit {
    use super::*;
    use crate::config::Config;

    /// A registry that knows no channels (the socket layer's own tests use it too).
    pub(crate) struct NoChannels;

    impl SocketChannels for NoChannels {
        fn of(&self, _: &Socket) -> Vec<Arc<str>> {
            Vec::new()
        }
        fn contains(&self, _: &Socket, _: &str) -> bool {
            false
        }
        fn count(&self, _: &Socket) -> usize {
            0
        }
        fn unsubscribe(&self, _: &Socket, _: &str) -> bool {
            false
        }
        fn total(&self) -> usize {
            0
        }
    }

    /// A socket under `config` (its outbound limit and slow-consumer policy apply).
    pub(crate) fn socket(config: Config) -> Socket {
        let shared = Arc::new(Shared::new(
            config,
            crate::auth::AuthEngine::new(crate::auth::AuthOptions::default()).expect("auth"),
            Arc::default(),
            axum::http::Extensions::new(),
            axum::http::Extensions::new(),
            Arc::new(NoChannels),
            false,
        ));
        Socket::new(shared, KeptRequest::default(), None)
    }

    impl Socket {
        /// The frames queued so far (taken: the queue is empty afterwards).
        pub(crate) fn take_sent(&self) -> Vec<String> {
            let mut batch = std::collections::VecDeque::new();
            self.0.out.take_now(&mut batch);
            self.0.out.release(batch.iter().map(outbox::cost).sum());
            batch
                .into_iter()
                .filter_map(|item| match item {
                    Outbound::Frame(frame) => Some(frame.to_string()),
                    _ => None,
                })
                .collect()
        }
    }
}
