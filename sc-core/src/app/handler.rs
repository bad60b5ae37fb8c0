//! Handlers: async functions over extractors, axum's model applied to socket events.
//!
//! A handler is any `async fn(A, B, ..., P) -> R` where every argument but the last implements
//! [`FromRequestParts`] (it only looks at the request), the last implements [`FromRequest`] (it may
//! consume the payload; every parts extractor is also a valid last argument), and `R` implements
//! [`IntoReply`] (events) or [`IntoDecision`](super::middleware::IntoDecision) (middleware).
//! A failed extraction answers the call with the extractor's error; it is never dropped silently.

use std::future::Future;
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

pub use futures_util::future::BoxFuture;

use super::MiddlewareKind;
use crate::protocol::{IntoReplyError, Payload, ScError};
use crate::socket::{RequestInfo, Shared, Socket};

/// Everything about an action except its payload: what parts extractors read.
#[derive(Clone)]
pub struct Parts {
    pub(crate) origin: Origin,
    pub(crate) kind: MiddlewareKind,
    pub(crate) event: Option<Box<str>>,
    pub(crate) channel: Option<Arc<str>>,
    /// Token payload the action runs under: the socket's token, or for `Authenticate` the token
    /// being accepted.
    pub(crate) auth: Option<Arc<Map<String, Value>>>,
    /// Set when the socket's token expired during the session (reference:
    /// `action.authTokenExpiredError`). Boxed: rare, and every action's `Parts` is moved
    /// through the handler's futures (an `ScError` is 4 times the rest).
    pub(crate) auth_token_expired: Option<Box<ScError>>,
    /// `#subscribe` option `waitForAuth`.
    pub(crate) wait_for_auth: bool,
}

/// Where an action comes from. Server and request are the socket's once there is one: no
/// clone of the server's `Arc` per action (shared by every socket and contended), no copy of the
/// request.
#[derive(Clone)]
pub(crate) enum Origin {
    /// Every action of a connected socket.
    Socket(Socket),
    /// The HTTP upgrade request ([`MiddlewareKind::HandshakeWs`]): no socket yet.
    Upgrade {
        shared: Arc<Shared>,
        request: Arc<RequestInfo>,
    },
}

impl Parts {
    /// The server state the action runs in (through the socket once there is one: no clone of
    /// the `Arc` every socket shares per action, it would be contended).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        match &self.origin {
            Origin::Socket(socket) => &socket.0.shared,
            Origin::Upgrade { shared, .. } => shared,
        }
    }

    /// The kind of action.
    pub fn kind(&self) -> MiddlewareKind {
        self.kind
    }

    /// The socket, absent only for [`MiddlewareKind::HandshakeWs`].
    pub fn socket(&self) -> Option<&Socket> {
        match &self.origin {
            Origin::Socket(socket) => Some(socket),
            Origin::Upgrade { .. } => None,
        }
    }

    /// The HTTP upgrade request the socket came from.
    pub fn request(&self) -> &RequestInfo {
        match &self.origin {
            Origin::Socket(socket) => socket.0.request.info(),
            Origin::Upgrade { request, .. } => request,
        }
    }

    /// The upgrade request as a value of its own (the `RequestInfo` extractor): unlike
    /// [`request`](Self::request), leaves no parsed copy kept in the socket.
    pub(crate) fn request_info(&self) -> RequestInfo {
        match &self.origin {
            Origin::Socket(socket) => socket.0.request.to_info(),
            Origin::Upgrade { request, .. } => RequestInfo::clone(request),
        }
    }

    /// The event name of a transmit or invoke.
    pub fn event(&self) -> Option<&str> {
        self.event.as_deref()
    }

    /// The channel of a subscribe, publish-in or publish-out action.
    pub fn channel(&self) -> Option<&str> {
        self.channel.as_deref()
    }

    /// The auth token payload the action runs under, if any.
    pub fn auth_token(&self) -> Option<&Map<String, Value>> {
        self.auth.as_deref()
    }

    /// The `AuthTokenExpiredError` attached when the socket's token expired during the session.
    pub fn auth_token_expired(&self) -> Option<&ScError> {
        self.auth_token_expired.as_deref()
    }

    /// Whether a `#subscribe` asked to wait for authentication.
    pub fn wait_for_auth(&self) -> bool {
        self.wait_for_auth
    }
}

/// One action for a handler or middleware: its [`Parts`] and its payload.
pub struct Request {
    pub(crate) parts: Parts,
    /// As decoded, or still the client's text (parsed when asked: see [`Payload`]).
    pub(crate) data: Payload,
}

impl Request {
    /// The parts.
    pub fn parts(&self) -> &Parts {
        &self.parts
    }

    /// The payload (`data` of the packet), `None` when the packet had none.
    pub fn data(&self) -> Option<&Value> {
        self.data.value()
    }
}

/// An extractor that only reads the request's parts; any number may appear in a handler.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an sc extractor",
    label = "this argument cannot be extracted from a socket event",
    note = "extractors are `Socket`, `Exchange`, `Auth<C>`, `MaybeAuth<C>`, `State<T>`, `Channel<T>`, `EventName`, `RequestInfo`, and, as the last argument only, `Json<T>`, `TryJson<T>` or `Raw`"
)]
pub trait FromRequestParts: Sized + Send {
    /// Extracts the value, or the error the caller receives.
    fn from_request_parts(parts: &Parts) -> impl Future<Output = Result<Self, ScError>> + Send;
}

mod private {
    #[derive(Debug, Clone, Copy)]
    pub enum ViaParts {}
    #[derive(Debug, Clone, Copy)]
    pub enum ViaRequest {}
}

/// An extractor that may consume the payload; it must be a handler's last argument.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an sc extractor",
    label = "this argument cannot be extracted from a socket event",
    note = "payload extractors (`Json<T>`, `TryJson<T>`, `Raw`) must be the last argument"
)]
pub trait FromRequest<M = private::ViaRequest>: Sized + Send {
    /// Extracts the value, or the error the caller receives.
    fn from_request(req: Request) -> impl Future<Output = Result<Self, ScError>> + Send;
}

impl<T: FromRequestParts> FromRequest<private::ViaParts> for T {
    async fn from_request(req: Request) -> Result<Self, ScError> {
        T::from_request_parts(&req.parts).await
    }
}

/// The answer of an event handler: data, nothing, or an error.
#[derive(Debug)]
pub enum Reply {
    /// Success; `None` sends `{"rid":N}` (the JS client resolves `undefined`).
    Data(Option<Box<RawValue>>),
    /// Failure; sent as `{"rid":N,"error":{...}}`.
    Error(ScError),
}

impl Reply {
    /// A success reply carrying `value` serialised to JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Self {
        match serde_json::value::to_raw_value(value) {
            Ok(raw) => Self::Data(Some(raw)),
            Err(e) => {
                tracing::error!(error = %e, "handler reply could not be serialised to JSON");
                Self::Error(ScError::internal())
            }
        }
    }
}

/// What an event handler may return.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be sent back as a reply",
    label = "event handlers must return a reply",
    note = "return `()`, `Json<T>`, `serde_json::Value`, `Option<R>` or `Result<R, E>` where `E: IntoReplyError` (e.g. `ScError`)"
)]
pub trait IntoReply {
    /// Converts into the reply sent to the client.
    fn into_reply(self) -> Reply;
}

impl IntoReply for Reply {
    fn into_reply(self) -> Reply {
        self
    }
}

impl IntoReply for () {
    fn into_reply(self) -> Reply {
        Reply::Data(None)
    }
}

impl IntoReply for Value {
    fn into_reply(self) -> Reply {
        Reply::json(&self)
    }
}

impl<T: IntoReply> IntoReply for Option<T> {
    fn into_reply(self) -> Reply {
        self.map_or(Reply::Data(None), IntoReply::into_reply)
    }
}

impl<T: IntoReply, E: IntoReplyError> IntoReply for Result<T, E> {
    fn into_reply(self) -> Reply {
        match self {
            Ok(v) => v.into_reply(),
            Err(e) => Reply::Error(e.into_reply_error()),
        }
    }
}

/// An async function usable as an event handler or middleware. Implemented for every
/// `Fn(T1, ..., Tn) -> impl Future` whose arguments are extractors (up to 12).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an sc handler",
    label = "not a valid handler",
    note = "a handler is an `async fn` whose arguments are extractors (the payload extractor last), that returns a reply or a middleware decision, and whose future is `Send`"
)]
pub trait Handler<T>: Clone + Send + Sync + 'static {
    /// What the function returns.
    type Output: Send + 'static;
    /// Runs the handler: extracts the arguments, then calls the function.
    fn call(&self, req: Request) -> BoxFuture<'static, Result<Self::Output, ScError>>;
}

impl<F, Fut, R> Handler<()> for F
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    type Output = R;
    fn call(&self, _req: Request) -> BoxFuture<'static, Result<R, ScError>> {
        let f = self.clone();
        Box::pin(async move { Ok(f().await) })
    }
}

macro_rules! impl_handler {
    ($($p:ident),* ; $last:ident) => {
        #[diagnostic::do_not_recommend]
        #[allow(non_snake_case, unused_variables)]
        impl<F, Fut, R, M, $($p,)* $last> Handler<(M, $($p,)* $last,)> for F
        where
            F: Fn($($p,)* $last) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = R> + Send + 'static,
            R: Send + 'static,
            $($p: FromRequestParts + 'static,)*
            $last: FromRequest<M> + 'static,
            M: 'static,
        {
            type Output = R;
            fn call(&self, req: Request) -> BoxFuture<'static, Result<R, ScError>> {
                let f = self.clone();
                Box::pin(async move {
                    $(let $p = $p::from_request_parts(&req.parts).await?;)*
                    let $last = $last::from_request(req).await?;
                    Ok(f($($p,)* $last).await)
                })
            }
        }
    };
}

impl_handler!(; T1);
impl_handler!(T1; T2);
impl_handler!(T1, T2; T3);
impl_handler!(T1, T2, T3; T4);
impl_handler!(T1, T2, T3, T4; T5);
impl_handler!(T1, T2, T3, T4, T5; T6);
impl_handler!(T1, T2, T3, T4, T5, T6; T7);
impl_handler!(T1, T2, T3, T4, T5, T6, T7; T8);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8; T9);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9; T10);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10; T11);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11; T12);

/// A type-erased handler producing `O`.
pub(crate) type ErasedHandler<O> =
    Arc<dyn Fn(Request) -> BoxFuture<'static, Result<O, ScError>> + Send + Sync>;

/// Erases a handler, mapping its output with `map`.
pub(crate) fn erase<H, T, O>(handler: H, map: fn(H::Output) -> O) -> ErasedHandler<O>
where
    H: Handler<T>,
    T: 'static,
    O: 'static,
{
    Arc::new(move |req| {
        let fut = handler.call(req);
        Box::pin(async move { fut.await.map(map) })
    })
}
