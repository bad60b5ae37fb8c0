//! Extractors: the arguments a handler or middleware can ask for. Each says what happens when it
//! cannot be extracted: the call is answered with that error (for middleware: blocked with it).
//!
//! | extractor | gives | fails when |
//! |---|---|---|
//! | [`Socket`] | the calling socket | never (except in `HandshakeWs` middleware: no socket yet) |
//! | [`Exchange`](crate::Exchange) | server-side pub/sub | never |
//! | [`Auth<C>`] | the token payload as `C` | not authenticated (`AuthError`), or payload not a `C` |
//! | [`MaybeAuth<C>`] | `Option<C>` | payload present but not a `C` |
//! | [`State<T>`] | app state registered with `App::state` | no state of type `T` (`ServerError`) |
//! | [`Channel<T>`] | the action's channel as `T` | no channel in this action, or the name does not parse |
//! | [`EventName`] | the event name | no event (e.g. subscribe middleware) |
//! | [`RequestInfo`] | the HTTP upgrade request | never |
//! | [`WaitForAuth`] | the `waitForAuth` flag of a subscribe | never |
//! | [`Json<T>`] (last) | the payload as `T` | payload not a `T` (`InvalidArgumentsError`) |
//! | [`TryJson<T>`] (last) | `Result<T, ScError>` | never |
//! | [`Raw`] (last) | the payload as JSON | never |
//! | [`RawJson`] (last) | the payload as the client's JSON text, no tree | never |

use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::handler::{FromRequest, FromRequestParts, Parts, Request};
use crate::protocol::ScError;
use crate::socket::{RequestInfo, Socket};

impl FromRequestParts for Socket {
    async fn from_request_parts(parts: &Parts) -> Result<Self, ScError> {
        parts.socket().cloned().ok_or_else(|| {
            ScError::new(
                "ServerError",
                "No socket exists yet in HandshakeWs middleware",
            )
        })
    }
}

impl FromRequestParts for RequestInfo {
    async fn from_request_parts(parts: &Parts) -> Result<Self, ScError> {
        Ok(parts.request_info())
    }
}

fn claims<C: DeserializeOwned>(payload: &Map<String, Value>) -> Result<C, ScError> {
    C::deserialize(Value::Object(payload.clone())).map_err(|e| {
        ScError::new(
            "AuthTokenError",
            format!("The auth token does not have the expected claims: {e}"),
        )
    })
}

/// The claims of the socket's auth token, deserialised as `C` (use `serde_json::Value` for any).
/// In `Authenticate` middleware it is the token being accepted.
///
/// Fails with `AuthError` ("This action requires an authenticated socket") when the socket is not
/// authenticated: in middleware that blocks the action, in a handler it answers with the error.
#[derive(Clone, Debug)]
pub struct Auth<C>(pub C);

impl<C: DeserializeOwned + Send> FromRequestParts for Auth<C> {
    async fn from_request_parts(parts: &Parts) -> Result<Self, ScError> {
        match parts.auth.as_deref() {
            Some(payload) => claims(payload).map(Auth),
            None => Err(ScError::new(
                "AuthError",
                "This action requires an authenticated socket",
            )),
        }
    }
}

/// Like [`Auth`], but `None` for an unauthenticated socket.
#[derive(Clone, Debug)]
pub struct MaybeAuth<C>(pub Option<C>);

impl<C: DeserializeOwned + Send> FromRequestParts for MaybeAuth<C> {
    async fn from_request_parts(parts: &Parts) -> Result<Self, ScError> {
        parts.auth.as_deref().map(claims).transpose().map(MaybeAuth)
    }
}

/// Application state registered with [`App::state`](crate::App::state), cloned per call (wrap
/// large state in an `Arc`).
#[derive(Clone, Debug)]
pub struct State<T>(pub T);

impl<T: Clone + Send + Sync + 'static> FromRequestParts for State<T> {
    async fn from_request_parts(parts: &Parts) -> Result<Self, ScError> {
        match parts.shared().state.get::<T>() {
            Some(v) => Ok(State(v.clone())),
            None => {
                tracing::error!(
                    state = std::any::type_name::<T>(),
                    "a handler asked for State that was never registered with App::state"
                );
                Err(ScError::internal())
            }
        }
    }
}

/// A channel name that a [`Channel`] extractor can produce: `String`, `Arc<str>`, or a typed
/// channel (the `#[channel]` macro implements it from the pattern).
pub trait FromChannelName: Sized + Send {
    /// Parses the name; the error is sent to the client.
    fn from_channel_name(name: &str) -> Result<Self, ScError>;
}

impl FromChannelName for String {
    fn from_channel_name(name: &str) -> Result<Self, ScError> {
        Ok(name.to_owned())
    }
}

impl FromChannelName for Arc<str> {
    fn from_channel_name(name: &str) -> Result<Self, ScError> {
        Ok(name.into())
    }
}

/// The channel of a subscribe, publish-in or publish-out action, as `T`.
#[derive(Clone, Debug)]
pub struct Channel<T = String>(pub T);

impl<T: FromChannelName> FromRequestParts for Channel<T> {
    async fn from_request_parts(parts: &Parts) -> Result<Self, ScError> {
        match parts.channel.as_deref() {
            Some(name) => T::from_channel_name(name).map(Channel),
            None => Err(ScError::new(
                "ServerError",
                format!("A {} action has no channel", parts.kind.verb()),
            )),
        }
    }
}

/// The event name of a transmit or invoke.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventName(pub String);

impl FromRequestParts for EventName {
    async fn from_request_parts(parts: &Parts) -> Result<Self, ScError> {
        match parts.event.as_deref() {
            Some(e) => Ok(EventName(e.to_owned())),
            None => Err(ScError::new(
                "ServerError",
                format!("A {} action has no event name", parts.kind.verb()),
            )),
        }
    }
}

/// Whether a `#subscribe` asked to wait for authentication (`waitForAuth`); false elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitForAuth(pub bool);

impl FromRequestParts for WaitForAuth {
    async fn from_request_parts(parts: &Parts) -> Result<Self, ScError> {
        Ok(WaitForAuth(parts.wait_for_auth))
    }
}

/// The payload deserialised as `T` (a missing payload is `null`). As a reply or a middleware
/// decision, `Json(value)` is sent / replaces the payload.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequest for Json<T> {
    async fn from_request(req: Request) -> Result<Self, ScError> {
        let what = req
            .parts
            .event
            .as_deref()
            .map(|e| format!("event '{e}'"))
            .unwrap_or_else(|| format!("{} action", req.parts.kind.verb()));
        // From the client's text when the payload is still text: no tree on the way to `T`.
        req.data
            .deserialize::<T>()
            .map(Json)
            .map_err(|e| ScError::invalid_arguments(format!("Invalid data for {what}: {e}")))
    }
}

impl<T: serde::Serialize> super::handler::IntoReply for Json<T> {
    fn into_reply(self) -> super::handler::Reply {
        super::handler::Reply::json(&self.0)
    }
}

/// Like [`Json`], but hands the handler the deserialisation error instead of answering with it.
#[derive(Clone, Debug)]
pub struct TryJson<T>(pub Result<T, ScError>);

impl<T: DeserializeOwned + Send> FromRequest for TryJson<T> {
    async fn from_request(req: Request) -> Result<Self, ScError> {
        Ok(TryJson(Json::<T>::from_request(req).await.map(|j| j.0)))
    }
}

/// The payload as JSON, untouched; `None` when the packet had no `data`. In `InboundRaw`
/// middleware it is the message text as a JSON string.
#[derive(Clone, Debug, PartialEq)]
pub struct Raw(pub Option<Value>);

impl FromRequest for Raw {
    async fn from_request(req: Request) -> Result<Self, ScError> {
        Ok(Raw(req.data.into_value()))
    }
}

/// The payload as the client's JSON text, never parsed into a tree when the message took the
/// fast path (one app event; otherwise the decoded tree is serialised back); `None` when the
/// packet had no `data`. As a reply, sent as it is: a handler that passes data through (an echo,
/// a relay) costs no JSON tree either way. Its text is what the client sent (spacing, number
/// spelling), valid JSON.
#[derive(Debug)]
pub struct RawJson(pub Option<Box<serde_json::value::RawValue>>);

impl FromRequest for RawJson {
    async fn from_request(req: Request) -> Result<Self, ScError> {
        Ok(RawJson(req.data.into_raw()))
    }
}

impl super::handler::IntoReply for RawJson {
    fn into_reply(self) -> super::handler::Reply {
        super::handler::Reply::Data(self.0)
    }
}
