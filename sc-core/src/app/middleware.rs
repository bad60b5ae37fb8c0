//! Middleware: handlers that decide whether an action goes ahead, SocketCluster's
//! `handshake`, `inboundRaw`, `inbound` (transmit, invoke, subscribe, publishIn, authenticate) and
//! `outbound` (publishOut) streams, one kind each.
//!
//! A middleware is an async fn over extractors (like an event handler) returning something that
//! implements [`IntoDecision`]: `()` allows, `Err(Block)` blocks, `Json(new_data)` allows with the
//! payload replaced. Several middleware of one kind run in registration order; the first block
//! wins and a replaced payload is what the next one sees. What the client sees on a block follows
//! the reference (see [`MiddlewareKind`]).

use serde::Serialize;
use serde_json::Value;

use super::extract::Json;
use super::handler::{ErasedHandler, Request};
pub use super::kind::MiddlewareKind;
use super::Source;
use crate::protocol::ScError;

/// A middleware's refusal. `Block::silent()` (no error) sends the reference's
/// `SilentMiddlewareBlockedError` where the kind sends anything at all.
#[derive(Clone, Debug, Default)]
pub struct Block {
    error: Option<ScError>,
    status_code: Option<u16>,
}

impl Block {
    /// Blocks with an error the client sees (`name`, `message`, extra fields).
    pub fn new(error: impl Into<ScError>) -> Self {
        Self {
            error: Some(error.into()),
            status_code: None,
        }
    }

    /// Blocks without a reason.
    pub fn silent() -> Self {
        Self::default()
    }

    /// For `Handshake` middleware: the close code (default 4008). Codes >= 4500 tell the official
    /// client not to reconnect.
    pub fn status_code(mut self, code: u16) -> Self {
        self.status_code = Some(code);
        self
    }

    /// The error, `None` for a silent block.
    pub fn error(&self) -> Option<&ScError> {
        self.error.as_ref()
    }

    pub(crate) fn code(&self) -> Option<u16> {
        self.status_code
    }

    /// The error the client receives for this block of `kind`, as the reference words it.
    pub(crate) fn client_error(&self, kind: MiddlewareKind) -> ScError {
        match &self.error {
            Some(e) => e.clone(),
            None => ScError::new(
                "SilentMiddlewareBlockedError",
                format!(
                    "The {} AGAction was blocked by {} middleware",
                    kind.verb(),
                    kind.stream()
                ),
            )
            .with("type", kind.stream()),
        }
    }
}

impl From<ScError> for Block {
    fn from(error: ScError) -> Self {
        Self::new(error)
    }
}

impl std::fmt::Display for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error {
            Some(e) => write!(f, "blocked: {e}"),
            None => f.write_str("blocked silently"),
        }
    }
}

/// A middleware's verdict.
#[derive(Debug)]
pub enum Decision {
    /// Let the action through unchanged.
    Allow,
    /// Let it through with this payload instead (the reference's `action.allow({data})`).
    Replace(Value),
    /// Stop it.
    Block(Block),
}

/// What a middleware may return.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a middleware decision",
    label = "middleware must return a decision",
    note = "return `()`, `Result<(), Block>`, `Result<Json<T>, Block>` (replace the payload) or `Decision`"
)]
pub trait IntoDecision {
    /// Converts into the decision.
    fn into_decision(self) -> Decision;
}

impl IntoDecision for Decision {
    fn into_decision(self) -> Decision {
        self
    }
}

impl IntoDecision for () {
    fn into_decision(self) -> Decision {
        Decision::Allow
    }
}

impl<T: Serialize> IntoDecision for Json<T> {
    fn into_decision(self) -> Decision {
        match serde_json::to_value(&self.0) {
            Ok(v) => Decision::Replace(v),
            Err(e) => Decision::Block(Block::new(ScError::new(
                "ServerError",
                format!("middleware produced data that is not JSON: {e}"),
            ))),
        }
    }
}

impl<T: IntoDecision> IntoDecision for Option<T> {
    fn into_decision(self) -> Decision {
        self.map_or(Decision::Allow, IntoDecision::into_decision)
    }
}

impl<T: IntoDecision, E: Into<Block>> IntoDecision for Result<T, E> {
    fn into_decision(self) -> Decision {
        match self {
            Ok(v) => v.into_decision(),
            Err(e) => Decision::Block(e.into()),
        }
    }
}

/// The registered middleware, by kind, in order.
#[derive(Clone, Default)]
pub(crate) struct MiddlewareStack {
    by_kind: [Vec<(ErasedHandler<Decision>, Source)>; MiddlewareKind::ALL.len()],
}

impl MiddlewareStack {
    pub(crate) fn push(
        &mut self,
        kind: MiddlewareKind,
        handler: ErasedHandler<Decision>,
        source: Source,
    ) {
        self.by_kind[kind.index()].push((handler, source));
    }

    pub(crate) fn extend(&mut self, other: MiddlewareStack) {
        for (mine, theirs) in self.by_kind.iter_mut().zip(other.by_kind) {
            mine.extend(theirs);
        }
    }

    pub(crate) fn has(&self, kind: MiddlewareKind) -> bool {
        !self.by_kind[kind.index()].is_empty()
    }

    /// Runs every middleware of `kind` in order. `Ok(data)` is the (possibly replaced) payload.
    /// A failed extraction blocks with the extractor's error.
    pub(crate) async fn run(
        &self,
        kind: MiddlewareKind,
        req: Request,
    ) -> Result<Option<Value>, Block> {
        let Request { parts, data } = req;
        // Middleware reads the payload and may replace it: a tree from here on.
        let mut data = data.into_value();
        for (mw, source) in &self.by_kind[kind.index()] {
            let req = Request {
                parts: parts.clone(),
                data: data.clone().into(),
            };
            match mw(req).await {
                Ok(Decision::Allow) => {}
                Ok(Decision::Replace(v)) => data = Some(v),
                Ok(Decision::Block(b)) => return Err(b),
                Err(e) => {
                    tracing::debug!(middleware = %source, error = %e, "middleware extraction failed: blocking");
                    return Err(Block::new(e));
                }
            }
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_block_uses_reference_wording() {
        let e = Block::silent().client_error(MiddlewareKind::Invoke);
        assert_eq!(
            serde_json::to_value(&e).expect("json"),
            serde_json::json!({
                "message": "The invoke AGAction was blocked by inbound middleware",
                "name": "SilentMiddlewareBlockedError",
                "type": "inbound"
            })
        );
        let e = Block::silent().client_error(MiddlewareKind::PublishOut);
        assert_eq!(
            e.message(),
            "The publishOut AGAction was blocked by outbound middleware"
        );
    }

    #[test]
    fn decisions_from_results() {
        let r: Result<(), Block> = Err(Block::new(ScError::new("A", "b")));
        assert!(matches!(r.into_decision(), Decision::Block(_)));
        assert!(matches!(
            Ok::<_, Block>(Json("x")).into_decision(),
            Decision::Replace(Value::String(_))
        ));
        assert!(matches!(().into_decision(), Decision::Allow));
    }
}
