//! # sc-core
//!
//! A SocketCluster-protocol realtime server (and client) for Rust: the official JavaScript
//! `socketcluster-client` works against it unmodified.
//!
//! - [`App`] registers event handlers and middleware: async fns over extractors
//!   ([`extract`]), replies through [`IntoReply`], middleware decisions through
//!   [`IntoDecision`](middleware::IntoDecision).
//! - [`SocketCluster::builder`] configures and runs the server ([`Config`] lists every option).
//! - [`Socket`] is the server's handle on one client; [`Exchange`] is server-side pub/sub.
//! - [`client`] (feature `client`) is a Rust client for the same protocol.
//!
//! ```no_run
//! use sc_core::prelude::*;
//!
//! async fn echo(Json(data): Json<serde_json::Value>) -> Json<serde_json::Value> {
//!     Json(data)
//! }
//!
//! fn main() -> sc_core::Result<()> {
//!     SocketCluster::builder()
//!         .port(8000)
//!         .app(App::new().event("echo", echo))
//!         .run()
//! }
//! ```

#![warn(missing_docs)]

pub mod app;
pub mod auth;
mod balancer;
pub mod broker;
pub mod channel;
pub mod config;
mod connection;
pub mod error;
pub mod exchange;
pub mod extract;
pub mod handler;
mod http;
pub mod limit;
pub mod master;
mod metrics;
pub mod middleware;
mod outbox;
pub mod protocol;
mod pubsub;
pub mod server;
pub mod socket;
mod tls;

#[cfg(feature = "client")]
pub mod client;

#[cfg(feature = "testing")]
pub mod testing;

#[doc(hidden)]
pub mod __private;

/// The macros (feature `macros`, on by default): `#[event("name")]`, `#[middleware(kind)]`,
/// `#[channel("pattern", message = T)]` and `handlers![..]`. See the `sc-macros` crate docs.
#[cfg(feature = "macros")]
pub use sc_macros::{channel, event, handlers, middleware};

pub use app::App;
pub use config::Config;
pub use error::{IntoReplyError, ScError};
pub use exchange::Exchange;
pub use handler::IntoReply;
pub use limit::{LimitAction, RateLimit, SlowConsumer};
pub use middleware::{Block, MiddlewareKind};
pub use server::{Error, Result, Server, ServerHandle, SocketCluster};
pub use socket::Socket;

/// Everything an app usually needs: `use sc_core::prelude::*;`.
pub mod prelude {
    pub use crate::app::App;
    pub use crate::error::ScError;
    pub use crate::exchange::{ChannelTarget, Exchange};
    pub use crate::extract::{
        Auth, Channel, EventName, Json, MaybeAuth, Raw, State, TryJson, WaitForAuth,
    };
    pub use crate::limit::{LimitAction, RateLimit, SlowConsumer};
    pub use crate::middleware::{Block, Decision, MiddlewareKind};
    pub use crate::server::{ServerHandle, SocketCluster};
    pub use crate::socket::{AuthTokenOptions, RequestInfo, Socket};
    #[cfg(feature = "macros")]
    pub use sc_macros::{channel, event, handlers, middleware};
    pub use serde::{Deserialize, Serialize};
}
