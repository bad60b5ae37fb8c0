//! Errors as the client sees them: [`ScError`] is the `{ "message", "name", ...extra }` object that
//! SocketCluster puts in an error response (`{"rid":N,"error":E}`), in an `authError`, or in a
//! rejected invoke. Handlers return it (or anything that converts into it through
//! [`IntoReplyError`]); the Rust client hands it back when the server answers with an error.

use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

/// An error in SocketCluster's wire shape: a `name`, a `message` and any extra fields
/// (`isBadToken`, `statusCode`, `expiry`, an application `code`, ...).
///
/// It serialises exactly as the reference dehydrates an `Error`:
/// `{"message":"boom","name":"CustomError","code":"E_X"}` (message first, then name, then extras in
/// insertion order). The official JavaScript client turns it into an `Error` with those properties.
#[derive(Clone, PartialEq)]
pub struct ScError {
    name: Cow<'static, str>,
    message: Cow<'static, str>,
    extra: Map<String, Value>,
}

impl ScError {
    /// An error with a `name` (the JS client's `err.name`) and a `message`.
    pub fn new(name: impl Into<Cow<'static, str>>, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            name: name.into(),
            message: message.into(),
            extra: Map::new(),
        }
    }

    /// Adds an extra property (`err.code`, `err.isBadToken`, ...). `name` and `message` cannot be
    /// overridden this way; setting them is ignored.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        let key = key.into();
        if key != "name" && key != "message" {
            self.extra.insert(key, value.into());
        }
        self
    }

    /// The error's `name`, e.g. `AuthTokenExpiredError`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The error's `message`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// One extra property, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.extra.get(key)
    }

    /// All extra properties.
    pub fn extra(&self) -> &Map<String, Value> {
        &self.extra
    }

    /// The reference's `InvalidActionError` (malformed packets, disabled features).
    pub fn invalid_action(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new("InvalidActionError", message)
    }

    /// `InvalidArgumentsError`: the data of an event did not have the shape the handler expects.
    pub fn invalid_arguments(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new("InvalidArgumentsError", message)
    }

    /// `BrokerError`: subscribe/unsubscribe/publish failures.
    pub fn broker(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new("BrokerError", message)
    }

    /// `TimeoutError` as the reference words it for an unanswered invoke.
    pub fn timeout(event: &str) -> Self {
        Self::new(
            "TimeoutError",
            format!("Event response for {event} event timed out"),
        )
    }

    /// An internal server failure. The message is generic on purpose: details go to the log, not
    /// to the client.
    pub fn internal() -> Self {
        Self::new("ServerError", "The server failed to process the request")
    }

    /// Builds an error from any JSON the other side sent as an `error`: an object becomes an error
    /// with its `name` (default `Error`) and `message` (default `Invalid error message format`, as in
    /// the JS client); a string becomes the message of an `Error`.
    pub fn from_wire(value: &Value) -> Self {
        match value {
            Value::Object(map) => {
                let name = map
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("Error")
                    .to_owned();
                let message = map
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("Invalid error message format")
                    .to_owned();
                let extra = map
                    .iter()
                    .filter(|(k, _)| k.as_str() != "name" && k.as_str() != "message")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                Self {
                    name: name.into(),
                    message: message.into(),
                    extra,
                }
            }
            Value::String(s) => Self::new("Error", s.clone()),
            other => Self::new("Error", other.to_string()),
        }
    }
}

impl Serialize for ScError {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2 + self.extra.len()))?;
        map.serialize_entry("message", &self.message)?;
        map.serialize_entry("name", &self.name)?;
        for (k, v) in &self.extra {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for ScError {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Self::from_wire(&Value::deserialize(deserializer)?))
    }
}

impl fmt::Debug for ScError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ScError");
        d.field("name", &self.name).field("message", &self.message);
        if !self.extra.is_empty() {
            d.field("extra", &self.extra);
        }
        d.finish()
    }
}

impl fmt::Display for ScError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.message)
    }
}

impl std::error::Error for ScError {}

/// Anything a handler may return as its error: it becomes the `error` of the reply.
///
/// Implemented for [`ScError`] and for the crate's per-operation errors. For your own error types,
/// implement it (or `From<YourError> for ScError`, which gives this trait for free).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be sent to the client as an error",
    label = "handlers' errors must implement `IntoReplyError`",
    note = "return `sc_core::ScError` (name + message), or implement `From<{Self}> for sc_core::ScError`"
)]
pub trait IntoReplyError {
    /// The error as the client will see it.
    fn into_reply_error(self) -> ScError;
}

impl<E: Into<ScError>> IntoReplyError for E {
    fn into_reply_error(self) -> ScError {
        self.into()
    }
}

/// Why an invoke failed, on either side: the Rust client invoking the server (`invoke`, and
/// `publish`, `subscribe`, `authenticate`), or the server invoking a client procedure
/// (`Socket::invoke`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InvokeError {
    /// No response within `ack_timeout` (counted from the call, including time spent in the
    /// offline buffer). The official client's `TimeoutError`.
    #[error("Event response for {event} event timed out")]
    Timeout {
        /// The event (procedure) name.
        event: String,
    },
    /// The connection closed (or could not be established) before the response arrived, or the
    /// client is closed. The official client's `BadConnectionError`.
    #[error("Event {event} was aborted due to a bad connection (code {code}: {reason})")]
    BadConnection {
        /// The event (procedure) name.
        event: String,
        /// The close code of the connection that failed.
        code: u16,
        /// The close reason (the close frame's text, or the code's standard text).
        reason: String,
    },
    /// The server answered with an error (`{"rid":N,"error":E}`).
    #[error("{0}")]
    Remote(ScError),
    /// The request data could not be serialised to JSON.
    #[error("failed to encode the data of {event}: {source}")]
    Encode {
        /// The event (procedure) name.
        event: String,
        /// The serialisation error.
        source: serde_json::Error,
    },
    /// The response data did not deserialise into the requested type.
    #[error("failed to decode the response to {event}: {source}")]
    Decode {
        /// The event (procedure) name.
        event: String,
        /// The deserialisation error.
        source: serde_json::Error,
    },
    /// The server's outbound queue for the socket was full and its policy drops what does not fit
    /// (`SlowConsumer::Drop`): the invoke was never sent.
    #[error("Event {event} was dropped: the socket's outbound queue is full")]
    Dropped {
        /// The event (procedure) name.
        event: String,
    },
    /// A subscription was dropped locally (unsubscribed, kicked out) before the server's ack.
    #[error("subscription to channel {channel} was cancelled before it completed")]
    Unsubscribed {
        /// The channel name.
        channel: String,
    },
}

impl InvokeError {
    /// The server's error, if the failure is one ([`InvokeError::Remote`]).
    pub fn remote(&self) -> Option<&ScError> {
        match self {
            Self::Remote(e) => Some(e),
            _ => None,
        }
    }
}

impl From<InvokeError> for ScError {
    /// The failure as the official client would surface it: `TimeoutError`,
    /// `BadConnectionError` (with `type`, `code`, `reason`), the server's own error as is.
    fn from(err: InvokeError) -> Self {
        match err {
            InvokeError::Timeout { event } => ScError::timeout(&event),
            InvokeError::BadConnection {
                event,
                code,
                reason,
            } => ScError::new(
                "BadConnectionError",
                format!("Event {event} was aborted due to a bad connection"),
            )
            .with("type", "disconnect")
            .with("code", code)
            .with("reason", reason),
            InvokeError::Remote(e) => e,
            InvokeError::Encode { event, source } => ScError::invalid_arguments(format!(
                "Failed to encode the data of {event}: {source}"
            )),
            InvokeError::Decode { event, source } => ScError::new(
                "InvalidMessageError",
                format!("Failed to decode the response to {event}: {source}"),
            ),
            InvokeError::Dropped { event } => ScError::new(
                "BadConnectionError",
                format!("Event {event} was dropped: the socket's outbound queue is full"),
            ),
            InvokeError::Unsubscribed { channel } => ScError::new(
                "BrokerError",
                format!("Subscription to the {channel} channel was cancelled"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serialises_message_then_name_then_extras() {
        let e = ScError::new("CustomError", "boom")
            .with("code", "E_X")
            .with("n", 1);
        assert_eq!(
            serde_json::to_string(&e).expect("serialise"),
            r#"{"message":"boom","name":"CustomError","code":"E_X","n":1}"#
        );
    }

    #[test]
    fn name_and_message_cannot_be_overridden_by_extras() {
        let e = ScError::new("A", "b")
            .with("name", "X")
            .with("message", "Y");
        assert_eq!((e.name(), e.message()), ("A", "b"));
        assert!(e.extra().is_empty());
    }

    #[test]
    fn hydrates_like_the_js_client() {
        let e = ScError::from_wire(&json!({"message":"no","name":"Nope","isBadToken":true}));
        assert_eq!(e.name(), "Nope");
        assert_eq!(e.get("isBadToken"), Some(&json!(true)));
        let e = ScError::from_wire(&json!({"foo": 1}));
        assert_eq!(
            (e.name(), e.message()),
            ("Error", "Invalid error message format")
        );
        let e = ScError::from_wire(&json!("plain string error"));
        assert_eq!(e.message(), "plain string error");
    }
}
