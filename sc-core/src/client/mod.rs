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

// This file holds the `Client` handle, connecting and the connection's lifecycle; its other
// methods are grouped by concern in `calls.rs`, `channels.rs` and `auth.rs`, above the sans-IO
// state machine in `state/` and the connection task in `driver.rs`.

mod auth;
mod backoff;
mod calls;
mod channels;
mod codec;
mod driver;
mod errors;
mod events;
mod options;
mod presence;
mod state;
mod subscription;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub use backoff::Backoff;
pub use codec::ProtocolVersion;
pub use errors::{ClientError, InvokeError};
pub use events::{AuthStatus, ClientEvent, ConnectionState};
pub use options::{ClientOptions, SubscribeOptions};
pub use presence::Presence;
pub use subscription::{EventReceiver, Subscription, TypedSubscription};

use driver::Control;
use state::{Poke, Shared, STALE_REASON};

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

#[cfg(test)]
impl Client {
    /// A client without a connection task: the test plays the task's part on `shared()` and
    /// reads what the API asks of it from the returned receiver.
    pub(crate) fn offline(opts: ClientOptions) -> (Client, mpsc::UnboundedReceiver<Control>) {
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let inner = Inner {
            shared: Arc::new(Shared::new(opts)),
            ctl,
        };
        (
            Client {
                inner: Arc::new(inner),
            },
            ctl_rx,
        )
    }
}
