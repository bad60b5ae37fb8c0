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

// The layers, each importing only those below it (README "Layout"):
//
//   protocol, config, auth, metrics, limit    wire codec, close codes, wire errors; leaves
//   broker                                     engine trait, in-process / broker-process / Redis engines
//   socket                                     the socket handle and the state it shares with the server
//   app, channel                               handlers, extractors, middleware, typed channels, App
//   pubsub                                     channel registry, fan-out, Exchange
//   session                                    one connection: transport, dispatch, `#` procedures, limits
//   server                                     builder, routes, HTTP, TLS
//   process                                    roles, master, balancer, control channel
pub mod app;
pub mod auth;
pub mod broker;
pub mod channel;
pub mod config;
pub mod limit;
mod metrics;
pub(crate) mod process;
pub mod protocol;
mod pubsub;
pub mod server;
mod session;
pub mod socket;

pub use app::{extract, handler, middleware};
pub use protocol::error;
pub use pubsub::exchange;

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

/// ts-rs, for `#[derive(TS)] #[ts(crate = "sc_core::ts_rs")]` on the types of the typed client
/// contract (feature `typescript`, on by default): apps depend on sc-core alone.
#[cfg(feature = "typescript")]
pub use ts_rs;

pub use app::App;
pub use config::Config;
pub use error::{IntoReplyError, ScError};
pub use exchange::Exchange;
pub use handler::IntoReply;
pub use limit::{LimitAction, RateLimit, SlowConsumer};
pub use middleware::{Block, MiddlewareKind};
pub use server::{Result, Server, ServerHandle, SocketCluster, StartupError};
pub use socket::Socket;

/// Everything an app usually needs: `use sc_core::prelude::*;`.
pub mod prelude {
    pub use crate::app::App;
    pub use crate::exchange::{ChannelTarget, Exchange};
    pub use crate::extract::{
        Auth, Channel, EventName, Json, MaybeAuth, Raw, State, TryJson, WaitForAuth,
    };
    pub use crate::limit::{LimitAction, RateLimit, SlowConsumer};
    pub use crate::middleware::{Block, Decision, MiddlewareKind};
    pub use crate::protocol::ScError;
    pub use crate::server::{ServerHandle, SocketCluster};
    pub use crate::socket::{AuthTokenOptions, RequestInfo, Socket};
    #[cfg(feature = "macros")]
    pub use sc_macros::{channel, event, handlers, middleware};
    pub use serde::{Deserialize, Serialize};
    #[cfg(feature = "typescript")]
    pub use ts_rs::TS;
}
