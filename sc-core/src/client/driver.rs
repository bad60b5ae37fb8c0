//! The connection task: one per [`super::Client`]. It opens the WebSocket, runs the handshake,
//! pumps frames both ways, answers pings, runs the ping watchdog and reconnects with backoff.
//! Protocol decisions live in [`super::state`] (and the reconnect policy in [`super::backoff`]);
//! this module only does the I/O and the timing.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{self, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::backoff::reconnect_delay;
use super::codec::ScError;
use super::errors::ClientError;
use super::state::{pong_for, rejection_code, Shared};
use super::ClientEvent;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long closing a WebSocket may take before it is simply dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Bytes per read call (larger messages take several reads).
const READ_BUFFER_SIZE: usize = 16 * 1024;

/// Requests from the API to the connection task. Whoever tears a connection down from the API
/// side (see [`super::state::State::destroy`]) sends one of these afterwards.
#[derive(Debug)]
pub(crate) enum Control {
    /// Connect now if waiting to reconnect (an outbound call on a closed client).
    ConnectNow,
    /// Abandon attempt `target` (if still running) with this close code and reason, and
    /// connect again at once (`reconnect()`, stale socket).
    Restart {
        target: u64,
        code: u16,
        reason: String,
    },
    /// Close with this code and reason and stay closed (`disconnect()`).
    Disconnect {
        code: u16,
        reason: String,
        done: oneshot::Sender<()>,
    },
}

/// Reports the outcome of the first connection to `Client::connect`.
pub(crate) type FirstTx = oneshot::Sender<Result<(), ClientError>>;

enum Wait {
    Now,
    Delay(Duration),
    Idle,
}

enum End {
    /// Every `Client` handle is gone.
    Shutdown,
    /// `reconnect()` or a stale socket: connect again now.
    Restart,
    /// `disconnect()`: stay closed.
    Stop,
    /// The attempt was torn down by the API before its socket opened; a `Control` follows.
    Superseded,
    /// The connection ended by itself, or by the client's watchdog / handshake failure.
    Closed {
        code: u16,
        reason: String,
        cause: Option<ClientError>,
        opened: bool,
    },
}

/// The connection task's main loop.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut ctl: mpsc::UnboundedReceiver<Control>,
    first: FirstTx,
) {
    let mut first = Some(first);
    let mut attempts: u32 = 0;
    let mut wait = Wait::Now;
    loop {
        match wait {
            Wait::Now => {}
            Wait::Delay(delay) => {
                tracing::debug!(?delay, "reconnecting after delay");
                let stop = tokio::select! {
                    _ = time::sleep(delay) => false,
                    c = ctl.recv() => match c {
                        None => return shutdown(&shared),
                        Some(Control::Disconnect { done, .. }) => {
                            let _ = done.send(());
                            true
                        }
                        Some(Control::ConnectNow | Control::Restart { .. }) => false,
                    },
                };
                if stop {
                    wait = Wait::Idle;
                    continue;
                }
            }
            Wait::Idle => match ctl.recv().await {
                None => return shutdown(&shared),
                Some(Control::Disconnect { done, .. }) => {
                    let _ = done.send(());
                    continue;
                }
                Some(Control::ConnectNow | Control::Restart { .. }) => {}
            },
        }

        let Some(attempt) = shared.lock().begin_attempt() else {
            wait = Wait::Idle;
            continue;
        };
        let end = session(&shared, attempt, &mut ctl, &mut first).await;
        wait = match end {
            End::Shutdown => return shutdown(&shared),
            End::Restart => Wait::Now,
            End::Stop | End::Superseded => Wait::Idle,
            End::Closed {
                code,
                reason,
                cause,
                opened,
            } => {
                if opened {
                    attempts = 0;
                }
                if let Some(first) = first.take() {
                    // The first connection failed: `connect` reports it and the client is done.
                    shared.lock().destroy(attempt, code, &reason, true);
                    let reason = shared.lock().last_close().1;
                    let _ = first.send(Err(
                        cause.unwrap_or(ClientError::ConnectAbort { code, reason })
                    ));
                    return;
                }
                let mut next_attempts = attempts;
                let delay = reconnect_delay(&shared.opts, code, &mut next_attempts);
                match shared
                    .lock()
                    .destroy(attempt, code, &reason, delay.is_none())
                {
                    // The API tore the connection down first and sent a Control.
                    None => Wait::Idle,
                    Some(_) => {
                        attempts = next_attempts;
                        match delay {
                            Some(d) if d.is_zero() => Wait::Now,
                            Some(d) => Wait::Delay(d),
                            None => Wait::Idle,
                        }
                    }
                }
            }
        };
    }
}

/// Every `Client` is gone: close for good and end all subscription and receiver streams.
fn shutdown(shared: &Shared) {
    let mut st = shared.lock();
    st.close_for_good(1000, "");
    st.clear_streams();
}

/// One connection attempt, from opening the WebSocket to its close.
async fn session(
    shared: &Arc<Shared>,
    attempt: u64,
    ctl: &mut mpsc::UnboundedReceiver<Control>,
    first: &mut Option<FirstTx>,
) -> End {
    let opts = &shared.opts;

    // 1. Open the WebSocket within connect_timeout (else 4007, like the official client).
    let connect = time::timeout(
        opts.connect_timeout,
        tokio_tungstenite::connect_async_tls_with_config(
            opts.url.as_str(),
            // tungstenite zero-fills its whole read buffer before every read, so its 128 KiB
            // default costs a 128 KiB memset per received message at low rates.
            Some(WebSocketConfig::default().read_buffer_size(READ_BUFFER_SIZE)),
            true,
            opts.tls.clone().map(tokio_tungstenite::Connector::Rustls),
        ),
    );
    tokio::pin!(connect);
    let mut ws: Ws = loop {
        tokio::select! {
            r = &mut connect => match r {
                Ok(Ok((ws, _response))) => break ws,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "WebSocket connection failed");
                    return End::Closed {
                        code: 1006,
                        reason: String::new(),
                        cause: Some(ClientError::Connect(e.to_string())),
                        opened: false,
                    };
                }
                Err(_) => {
                    return End::Closed {
                        code: 4007,
                        reason: String::new(),
                        cause: None,
                        opened: false,
                    };
                }
            },
            c = ctl.recv() => match c {
                None => return End::Shutdown,
                Some(Control::ConnectNow) => {}
                Some(Control::Restart { target, .. }) => {
                    if target >= attempt {
                        return End::Restart;
                    }
                }
                Some(Control::Disconnect { done, .. }) => {
                    let _ = done.send(());
                    return End::Stop;
                }
            },
        }
    };

    // 2. Register the writer queue and send #handshake.
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let handshake = shared
        .lock()
        .ws_open(attempt, tx.clone(), opts.connect_timeout);
    let Some(mut hs) = handshake else {
        close(&mut ws, 1000, "").await;
        return End::Superseded;
    };

    // 3. Pump until the connection ends.
    let watchdog_enabled = opts.ping_watchdog;
    let mut ping_timeout = opts.connect_timeout;
    let watchdog = time::sleep(ping_timeout);
    tokio::pin!(watchdog);
    let handshake_timer = time::sleep(opts.ack_timeout);
    tokio::pin!(handshake_timer);
    let mut opened = false;

    // (code, local reason, close frame to send, cause for a failed first connection)
    let (code, reason, send_close, cause) = loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if let Some(pong) = pong_for(opts.protocol_version, text.as_str()) {
                        watchdog.as_mut().reset(Instant::now() + ping_timeout);
                        shared.lock().pinged(attempt);
                        let _ = tx.send(Message::text(pong));
                        continue;
                    }
                    shared.lock().handle_text(attempt, text.as_str(), &mut hs);
                    match hs.outcome.take() {
                        None => {}
                        Some(Ok(timeout)) => {
                            opened = true;
                            ping_timeout = timeout;
                            watchdog.as_mut().reset(Instant::now() + ping_timeout);
                            if let Some(first) = first.take() {
                                let _ = first.send(Ok(()));
                            }
                        }
                        Some(Err(err)) => {
                            // Official: emit the error, close with its code.
                            let code = rejection_code(&err);
                            let reason = err.to_string();
                            shared.lock().emit(ClientEvent::Error(err.clone()));
                            break (code, reason, Some(code), Some(ClientError::Handshake(err)));
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = match frame {
                        Some(f) => (u16::from(f.code), f.reason.as_str().to_owned()),
                        None => (1005, String::new()),
                    };
                    // Lets tungstenite send its queued close reply.
                    let _ = time::timeout(CLOSE_GRACE, ws.flush()).await;
                    break (code, reason, None, None);
                }
                // Binary frames are not part of the protocol (the official client ignores them);
                // WebSocket-level pings are answered by tungstenite.
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "WebSocket error");
                    break (1006, String::new(), None, None);
                }
                None => break (1006, String::new(), None, None),
            },
            Some(out) = rx.recv() => {
                let mut ok = ws.feed(out).await.is_ok();
                while ok {
                    match rx.try_recv() {
                        Ok(more) => ok = ws.feed(more).await.is_ok(),
                        Err(_) => break,
                    }
                }
                if ok {
                    ok = ws.flush().await.is_ok();
                }
                if !ok {
                    break (1006, String::new(), None, None);
                }
            }
            _ = &mut watchdog, if watchdog_enabled => {
                tracing::debug!(?ping_timeout, "no ping from the server in time");
                break (4000, String::new(), Some(4000), None);
            }
            _ = &mut handshake_timer, if !opened => {
                let err = ScError::timeout("#handshake");
                let reason = err.to_string();
                shared.lock().emit(ClientEvent::Error(err));
                break (4003, reason, Some(4003), None);
            }
            c = ctl.recv() => match c {
                None => {
                    close(&mut ws, 1000, "").await;
                    return End::Shutdown;
                }
                Some(Control::ConnectNow) => {}
                Some(Control::Restart { target, code, reason }) => {
                    if target >= attempt {
                        close(&mut ws, code, &reason).await;
                        return End::Restart;
                    }
                }
                Some(Control::Disconnect { code, reason, done }) => {
                    close(&mut ws, code, &reason).await;
                    let _ = done.send(());
                    return End::Stop;
                }
            },
        }
    };
    if let Some(code) = send_close {
        // Client-initiated closes carry no reason text on the wire, like the official client.
        close(&mut ws, code, "").await;
    }
    End::Closed {
        code,
        reason,
        cause,
        opened,
    }
}

/// Sends a close frame (bounded by [`CLOSE_GRACE`]). Codes that may not be sent on the wire
/// become 1000; the reason is cut to the 123 bytes a close frame can carry.
async fn close(ws: &mut Ws, code: u16, reason: &str) {
    let code = match code {
        1000..=1003 | 1007..=1011 | 3000..=4999 => code,
        _ => 1000,
    };
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason[..end].into(),
    };
    let _ = time::timeout(CLOSE_GRACE, ws.close(Some(frame))).await;
}
