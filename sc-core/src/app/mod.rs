//! [`App`]: the registry of event handlers, middleware and shared state, built with explicit
//! calls (no global registries), so order is deterministic and each test builds its own app.
//! The macros (`handlers![..]`) produce the same calls.

use std::collections::HashMap;
use std::panic::Location;

use axum::http::Extensions;

pub mod contract;
pub mod extract;
pub mod handler;
mod kind;
pub mod middleware;
pub mod presence;
pub mod typescript;

#[doc(hidden)]
pub use kind::markers;

/// The protocol's own procedures, which [`App::rate_limit`] may name besides the app's events.
const BUILT_IN: [&str; 6] = [
    "#subscribe",
    "#unsubscribe",
    "#publish",
    "#authenticate",
    "#removeAuthToken",
    "#presence",
];

use crate::channel::{ChannelPattern, PatternError};
use contract::ChannelContract;
use handler::{erase, ErasedHandler, Handler, IntoReply, Reply};
use middleware::{IntoDecision, MiddlewareKind, MiddlewareStack};

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

/// A declared channel pattern, where it was declared, and its contract.
#[derive(Clone)]
pub(crate) struct Declared {
    pub(crate) pattern: ChannelPattern,
    pub(crate) source: Source,
    pub(crate) contract: ChannelContract,
}

#[derive(Clone)]
pub(crate) struct EventRoute {
    /// The event's name (for logs: each call's `Parts` holds the name it was sent with, not a
    /// clone of this `Arc`, whose count every socket's messages would contend on).
    pub name: std::sync::Arc<str>,
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
    /// Declared channels (typed channels and contracts): checked for overlaps at startup, and
    /// their contracts enforced for every client subscribe and publish on a matching name.
    pub(crate) channels: Vec<Declared>,
    pub(crate) invalid_patterns: Vec<(String, PatternError, Source)>,
    /// Per-socket limits of single events.
    pub(crate) event_limits: HashMap<String, crate::limit::RateLimit>,
    /// Whether `event_limits` limits an event of the app's own (not a built-in `#` one): the
    /// default `#authenticate` limit is always there, and an app without limits of its own
    /// should not pay a lookup for each of its events.
    pub(crate) app_event_limits: bool,
    /// Each event's payload and reply types, for the TypeScript contract (`App::event_types`).
    pub(crate) event_types: HashMap<String, (typescript::TsType, typescript::TsType)>,
    /// The contract's hash and files, computed once when the server binds (the handshake
    /// carries the hash as `contractHash`; `/sc-types.d.ts` and `/sc-types.js` serve the files).
    pub(crate) contract: Option<std::sync::Arc<typescript::Rendered>>,
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
            name: name.as_str().into(),
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
    #[track_caller]
    pub fn middleware<H, T>(self, kind: MiddlewareKind, handler: H) -> Self
    where
        H: Handler<T>,
        H::Output: IntoDecision,
        T: 'static,
    {
        self.middleware_at(kind, handler, Source::caller())
    }

    /// [`middleware`](Self::middleware) with an explicit source location (what the macros call).
    pub fn middleware_at<H, T>(mut self, kind: MiddlewareKind, handler: H, source: Source) -> Self
    where
        H: Handler<T>,
        H::Output: IntoDecision,
        T: 'static,
    {
        self.middleware
            .push(kind, erase(handler, IntoDecision::into_decision), source);
        self
    }

    /// Declares a channel pattern (see [`channel`](mod@crate::channel)) with the default
    /// contract: anyone may subscribe, only the server publishes (a client `#publish` on a
    /// matching name is refused; see [`channel_contract`](Self::channel_contract) to allow it).
    /// Two declared patterns that can match the same name (`rooms/{id}` and `rooms/{name}`) fail
    /// at startup, naming both locations; so does an invalid pattern.
    #[track_caller]
    pub fn channel(self, pattern: &str) -> Self {
        self.channel_at(pattern, Source::caller())
    }

    /// [`channel`](Self::channel) with an explicit source location.
    pub fn channel_at(self, pattern: &str, source: Source) -> Self {
        self.channel_contract_at(ChannelContract::new(pattern), source)
    }

    /// Declares a channel pattern with its contract: who may subscribe and publish from a client,
    /// and what a client's publication must be (see [`contract`]). A declared pattern without one
    /// ([`channel`](Self::channel)) gets the defaults: anyone subscribes, only the server
    /// publishes.
    #[track_caller]
    pub fn channel_contract(self, contract: ChannelContract) -> Self {
        self.channel_contract_at(contract, Source::caller())
    }

    /// [`channel_contract`](Self::channel_contract) with an explicit source location (what the
    /// macros call).
    pub fn channel_contract_at(mut self, contract: ChannelContract, source: Source) -> Self {
        match ChannelPattern::parse(&contract.pattern) {
            Ok(pattern) => self.channels.push(Declared {
                pattern,
                source,
                contract,
            }),
            Err(e) => self
                .invalid_patterns
                .push((contract.pattern.clone(), e, source)),
        }
        self
    }

    /// Limits how often each socket may send `event` (invoke or transmit), on top of the
    /// socket-wide [`Config::message_rate_limit`](crate::Config::message_rate_limit):
    /// `App::new().rate_limit("chat", RateLimit::per_second(5.0).burst(10.0))`.
    pub fn rate_limit(mut self, event: &str, limit: crate::limit::RateLimit) -> Self {
        self.app_event_limits |= !event.starts_with('#');
        self.event_limits.insert(event.to_owned(), limit);
        self
    }

    /// Adds shared state, available to handlers as [`State<T>`](extract::State). One value
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
        self.channels.extend(other.channels);
        self.invalid_patterns.extend(other.invalid_patterns);
        self.event_limits.extend(other.event_limits);
        self.app_event_limits |= other.app_event_limits;
        self.middleware.extend(other.middleware);
        self.state.extend(other.state);
        self.event_types.extend(other.event_types);
        self
    }

    /// Startup validation: duplicate or reserved event names, invalid or overlapping channel
    /// patterns.
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
        let mut unrouted: Vec<&String> = self
            .event_limits
            .keys()
            .filter(|event| {
                !self.events.contains_key(*event) && !BUILT_IN.contains(&event.as_str())
            })
            .collect();
        unrouted.sort();
        if let Some(event) = unrouted.first() {
            return Err(format!(
                "rate_limit names event '{event}', which no handler is registered for (a typo?); register the handler or remove the limit (built-in procedures that can be limited: {})",
                BUILT_IN.join(", ")
            ));
        }
        if let Some((pattern, error, at)) = self.invalid_patterns.first() {
            return Err(format!(
                "channel pattern '{pattern}' at {at} is invalid: {error}"
            ));
        }
        if let Some(bad) = self
            .channels
            .iter()
            .find(|d| d.contract.history.is_some_and(|h| h.size == 0))
        {
            return Err(format!(
                "channel '{}' at {} keeps a history of 0 publications: give a size of at least 1, or no history",
                bad.pattern, bad.source
            ));
        }
        if let Some(bad) = self.channels.iter().find(|d| {
            d.contract
                .history
                .is_some_and(|h| h.ttl < std::time::Duration::from_secs(1))
        }) {
            return Err(format!(
                "channel '{}' at {} keeps its history for less than a second: give a history_ttl of at least 1 s",
                bad.pattern, bad.source
            ));
        }
        for (i, later) in self.channels.iter().enumerate() {
            let (second, second_at) = (&later.pattern, &later.source);
            for earlier in &self.channels[..i] {
                let (first, first_at) = (&earlier.pattern, &earlier.source);
                if let Some(example) = first.overlap(second) {
                    return Err(if first == second && first_at == second_at {
                        format!("channel '{first}' at {first_at} is registered twice")
                    } else {
                        format!(
                            "channel patterns '{first}' and '{second}' overlap (both match '{example}'): first at {first_at}, again at {second_at}"
                        )
                    });
                }
            }
        }
        typescript::check_names(self)
    }

    pub(crate) fn route(&self, name: &str) -> Option<&EventRoute> {
        self.events.get(name)
    }

    /// The declared channel whose pattern matches `name` (patterns never overlap: startup checks).
    pub(crate) fn declared(&self, name: &str) -> Option<&Declared> {
        self.channels.iter().find(|d| d.pattern.matches(name))
    }
}

impl App {
    /// Declares event `name`'s payload and reply types for the TypeScript contract
    /// ([`typescript`](Self::typescript)); `#[event]` writes it from the handler's payload
    /// extractor and return type. An event without it is `unknown` both ways.
    pub fn event_types(
        mut self,
        name: impl Into<String>,
        payload: typescript::TsType,
        reply: typescript::TsType,
    ) -> Self {
        self.event_types.insert(name.into(), (payload, reply));
        self
    }

    /// The TypeScript declaration file of the app's contract: every event with its payload and
    /// reply types, every declared channel with its pattern (a template literal type) and
    /// message type, and the contract's hash. What `sc types` writes and the server serves at
    /// `/sc-types.d.ts`.
    pub fn typescript(&self) -> String {
        typescript::render(self)
    }

    /// The declaration file's companion module (`sc-types.js`): `contract` and `contractHash`,
    /// the hash the page was built against, for `create({ contract })`.
    pub fn typescript_module(&self) -> String {
        typescript::module(self)
    }

    /// The contract's hash (hex), as in the generated file and the handshake's `contractHash`.
    pub fn contract_hash(&self) -> String {
        typescript::hash(self)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(name: &'static str, line: u32) -> Source {
        Source {
            name: Some(name),
            module: Some("app"),
            file: "src/main.rs",
            line,
        }
    }

    #[test]
    fn overlapping_channel_patterns_fail_validation_naming_both_locations() {
        let app = App::new()
            .channel_at("rooms/{id}", at("Room", 3))
            .channel_at("users/{id}", at("User", 5))
            .channel_at("rooms/{id}/log", at("RoomLog", 7));
        assert_eq!(app.validate(), Ok(()));

        let err = app
            .clone()
            .channel_at("rooms/{name}", at("Lobby", 9))
            .validate()
            .expect_err("overlap");
        assert_eq!(
            err,
            "channel patterns 'rooms/{id}' and 'rooms/{name}' overlap (both match 'rooms/x'): first at `Room` at src/main.rs:3, again at `Lobby` at src/main.rs:9"
        );

        // A literal segment overlaps a capture; merged apps are checked together.
        let err = app
            .merge(App::new().channel_at("users/admin", at("Admin", 11)))
            .validate()
            .expect_err("overlap");
        assert!(err.contains("'users/{id}' and 'users/admin'"), "{err}");
        assert!(
            err.contains("`User` at src/main.rs:5") && err.contains("`Admin` at src/main.rs:11")
        );
    }

    #[test]
    fn the_same_channel_twice_and_invalid_patterns_fail_validation() {
        let err = App::new()
            .channel_at("rooms/{id}", at("Room", 3))
            .channel_at("rooms/{id}", at("Room", 3))
            .validate()
            .expect_err("twice");
        assert_eq!(
            err,
            "channel 'rooms/{id}' at `Room` at src/main.rs:3 is registered twice"
        );

        let err = App::new().channel("a//b").validate().expect_err("invalid");
        assert!(err.starts_with("channel pattern 'a//b' at "), "{err}");
        assert!(
            err.contains("app/mod.rs:"),
            "hand-written registrations use the caller's location: {err}"
        );
        assert!(err.ends_with("segment 2 is empty: separate segments with a single '/', with none at the start or the end"), "{err}");
    }

    #[test]
    fn a_rate_limit_for_an_event_no_handler_has_fails_validation() {
        async fn chat() {}
        let limit = crate::limit::RateLimit::per_second(1.0);
        let ok = App::new()
            .event("chat", chat)
            .rate_limit("chat", limit)
            .rate_limit("#publish", limit);
        assert_eq!(ok.validate(), Ok(()));
        let err = App::new()
            .event("chat", chat)
            .rate_limit("caht", limit)
            .validate()
            .expect_err("typo");
        assert!(
            err.starts_with("rate_limit names event 'caht', which no handler is registered for"),
            "{err}"
        );
        assert!(err.contains("#publish"), "{err}");
    }
}
