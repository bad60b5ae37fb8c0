//! [`App`]: the registry of event handlers, middleware and shared state, built with explicit
//! calls (no global registries), so order is deterministic and each test builds its own app.
//! The macros (`handlers![..]`) produce the same calls.

use std::collections::HashMap;
use std::panic::Location;

use axum::http::Extensions;

use crate::handler::{erase, ErasedHandler, Handler, IntoReply, Reply};
use crate::middleware::{IntoDecision, MiddlewareKind, MiddlewareStack};

/// Where a handler was registered, for startup errors and logs. The macros fill in the annotated
/// function; hand-written registrations use the caller's location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// Function or item name, when known.
    pub name: Option<&'static str>,
    /// `module_path!()` of the registration, when known.
    pub module: Option<&'static str>,
    /// Source file.
    pub file: &'static str,
    /// Line.
    pub line: u32,
}

impl Source {
    /// The location of the caller of a `#[track_caller]` function.
    #[track_caller]
    pub fn caller() -> Self {
        let l = Location::caller();
        Self {
            name: None,
            module: None,
            file: l.file(),
            line: l.line(),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(name) = self.name {
            write!(f, "`{name}` at ")?;
        }
        write!(f, "{}:{}", self.file, self.line)
    }
}

#[derive(Clone)]
pub(crate) struct EventRoute {
    pub handler: ErasedHandler<Reply>,
    pub source: Source,
}

/// Event handlers, middleware and state: what a server runs.
///
/// ```
/// use sc_core::prelude::*;
///
/// async fn echo(Json(data): Json<serde_json::Value>) -> Json<serde_json::Value> {
///     Json(data)
/// }
///
/// let app = App::new().event("echo", echo);
/// ```
#[derive(Clone, Default)]
pub struct App {
    pub(crate) events: HashMap<String, EventRoute>,
    pub(crate) middleware: MiddlewareStack,
    pub(crate) state: Extensions,
    pub(crate) duplicates: Vec<(String, Source, Source)>,
    pub(crate) invalid_names: Vec<(String, Source)>,
}

impl App {
    /// An empty app.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for event `name` (both client transmits and invokes). The handler's
    /// return value is the invoke's reply; for a transmit it is dropped (errors are logged).
    ///
    /// Registering a name twice, or a name starting with `#` (reserved by the protocol), fails at
    /// startup naming both locations.
    #[track_caller]
    pub fn event<H, T>(self, name: impl Into<String>, handler: H) -> Self
    where
        H: Handler<T>,
        H::Output: IntoReply,
        T: 'static,
    {
        self.event_at(name, handler, Source::caller())
    }

    /// [`event`](Self::event) with an explicit source location (what the macros call).
    pub fn event_at<H, T>(mut self, name: impl Into<String>, handler: H, source: Source) -> Self
    where
        H: Handler<T>,
        H::Output: IntoReply,
        T: 'static,
    {
        let name = name.into();
        if name.is_empty() || name.starts_with('#') {
            self.invalid_names.push((name, source));
            return self;
        }
        let route = EventRoute {
            handler: erase(handler, IntoReply::into_reply),
            source,
        };
        if let Some(first) = self.events.get(&name) {
            self.duplicates
                .push((name, first.source.clone(), route.source));
            return self;
        }
        self.events.insert(name, route);
        self
    }

    /// Registers a middleware of `kind`. Several of one kind run in registration order.
    pub fn middleware<H, T>(mut self, kind: MiddlewareKind, handler: H) -> Self
    where
        H: Handler<T>,
        H::Output: IntoDecision,
        T: 'static,
    {
        self.middleware
            .push(kind, erase(handler, IntoDecision::into_decision));
        self
    }

    /// Adds shared state, available to handlers as [`State<T>`](crate::extract::State). One value
    /// per type; a second value of the same type replaces the first.
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(value);
        self
    }

    /// Adds every registration of `other` after this app's (its state too).
    pub fn merge(mut self, other: App) -> Self {
        for (name, route) in other.events {
            if let Some(first) = self.events.get(&name) {
                self.duplicates
                    .push((name, first.source.clone(), route.source));
            } else {
                self.events.insert(name, route);
            }
        }
        self.duplicates.extend(other.duplicates);
        self.invalid_names.extend(other.invalid_names);
        self.middleware.extend(other.middleware);
        self.state.extend(other.state);
        self
    }

    /// Startup validation: duplicate or reserved event names.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if let Some((name, first, second)) = self.duplicates.first() {
            return Err(format!(
                "event '{name}' is registered twice: first at {first}, again at {second}"
            ));
        }
        if let Some((name, at)) = self.invalid_names.first() {
            return Err(format!(
                "event name {name:?} at {at} is invalid: names must be non-empty and must not start with '#' (reserved by the protocol)"
            ));
        }
        Ok(())
    }

    pub(crate) fn route(&self, name: &str) -> Option<&EventRoute> {
        self.events.get(name)
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.events.keys().collect();
        names.sort();
        f.debug_struct("App")
            .field("events", &names)
            .finish_non_exhaustive()
    }
}
