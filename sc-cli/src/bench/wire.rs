//! A minimal SocketCluster-protocol connection for the load generator: raw text frames over
//! tokio-tungstenite and no JSON trees on the hot path (a publication's send time and a
//! response's id are read straight from the text), so that the instrument costs far less per
//! message than the servers it measures. Setup steps (handshake, subscribe) parse JSON; they are
//! not measured.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};

use futures_util::{FutureExt, SinkExt, StreamExt};
use nix::sys::socket::{setsockopt, sockopt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::BoxError;

/// Bytes read per read call: enough for dozens of frames at full rate.
const READ_BUFFER_SIZE: usize = 8 * 1024;

/// The server answered a call with an error: the scenario cannot measure anything on this server
/// (no handler for the event, a channel it does not allow, a limit), so the run stops with the
/// server's reason rather than counting its answers as lost messages.
#[derive(Debug)]
pub(crate) struct Refused {
    /// The event the server refused (`echo`, `#subscribe`, `#publish`).
    pub(crate) event: String,
    /// The error's name (`UnhandledEventError`, `InvalidChannelError`, ..).
    pub(crate) name: String,
    pub(crate) message: String,
}

impl Refused {
    fn from_error(event: &str, error: &Value) -> Self {
        let field = |k: &str| match &error[k] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        Self {
            event: event.to_owned(),
            name: field("name"),
            message: field("message"),
        }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server refused `{}`: {}: {}. The scenarios need a server that answers `echo` and \
             lets clients subscribe and publish on any channel, e.g. the echo example \
             (`cargo run --release -p echo`, on port 8000)",
            self.event, self.name, self.message
        )
    }
}

impl std::error::Error for Refused {}

/// One raw connection that completed `#handshake`.
pub(crate) struct Wire {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_cid: u64,
    unflushed: bool,
}

/// What a frame turned out to be.
pub(crate) enum Frame {
    /// A `#publish` delivery; its message's `t` (send time, µs) when present.
    Publish(Option<u64>),
    /// A response: its `rid`, and the server's error when it carries one.
    Response(u64, Option<Box<Refused>>),
    /// Anything else (pings are answered and never returned).
    Other,
}

impl Wire {
    /// Connects and completes the handshake.
    pub(crate) async fn connect(url: &str) -> Result<Self, BoxError> {
        // tungstenite zero-fills its whole read buffer before every read (EAGAIN ones included):
        // its 128 KiB default made that memset most of the generator's CPU per message.
        let config = WebSocketConfig::default().read_buffer_size(READ_BUFFER_SIZE);
        let tcp = tcp_connect(url).await?;
        let (ws, _) =
            tokio_tungstenite::client_async_tls_with_config(url, tcp, Some(config), None).await?;
        let mut wire = Self {
            ws,
            next_cid: 1,
            unflushed: false,
        };
        wire.call("#handshake", json!({})).await?;
        Ok(wire)
    }

    /// Invokes `event` and waits for its answer (setup only: frames in between are skipped).
    pub(crate) async fn call(&mut self, event: &str, data: Value) -> Result<Value, BoxError> {
        let cid = self.next_cid;
        self.next_cid += 1;
        let text = json!({"event": event, "data": data, "cid": cid}).to_string();
        self.ws.send(Message::text(text)).await?;
        loop {
            let text = self.next_text().await.ok_or("connection closed")??;
            let Ok(reply) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if reply["rid"] == json!(cid) {
                if let Some(error) = reply.get("error").filter(|e| !e.is_null()) {
                    return Err(Refused::from_error(event, error).into());
                }
                return Ok(reply["data"].clone());
            }
        }
    }

    pub(crate) async fn subscribe(&mut self, channel: &str) -> Result<(), BoxError> {
        self.call("#subscribe", json!({ "channel": channel }))
            .await
            .map(|_| ())
    }

    /// Queues an invoke of `event` whose data is the JSON object `{"t":t,"p":"pad"}`; returns
    /// its cid. Written at the next [`flush`](Self::flush) or when the next read would wait.
    /// The frame is built in one allocation of the right size.
    pub(crate) async fn feed_invoke(
        &mut self,
        event: &str,
        t: u64,
        pad: &str,
        channel: Option<&str>,
    ) -> Result<u64, BoxError> {
        let cid = self.next_cid;
        self.next_cid += 1;
        let mut text =
            String::with_capacity(80 + event.len() + pad.len() + channel.map_or(0, str::len));
        let _ = match channel {
            Some(channel) => write!(
                text,
                "{{\"event\":\"{event}\",\"data\":{{\"channel\":\"{channel}\",\"data\":{{\"t\":{t},\"p\":\"{pad}\"}}}},\"cid\":{cid}}}"
            ),
            None => write!(
                text,
                "{{\"event\":\"{event}\",\"data\":{{\"t\":{t},\"p\":\"{pad}\"}},\"cid\":{cid}}}"
            ),
        };
        self.ws.feed(Message::text(text)).await?;
        self.unflushed = true;
        Ok(cid)
    }

    pub(crate) async fn flush(&mut self) -> Result<(), BoxError> {
        if self.unflushed {
            self.unflushed = false;
            self.ws.flush().await?;
        }
        Ok(())
    }

    /// The next frame, classified; `None` once closed. Flushes queued writes before waiting.
    /// `event` names what this connection invokes, for the refusal an error response becomes.
    pub(crate) async fn next_frame(&mut self, event: &str) -> Option<Result<Frame, BoxError>> {
        let text = match self.next_text().await? {
            Ok(t) => t,
            Err(e) => return Some(Err(e)),
        };
        Some(Ok(classify(&text, event)))
    }

    /// The next non-ping text frame. Pings are answered here; queued writes are flushed before
    /// the read would wait.
    async fn next_text(&mut self) -> Option<Result<Utf8Bytes, BoxError>> {
        loop {
            let msg = match self.ws.next().now_or_never() {
                Some(m) => m,
                None => {
                    if let Err(e) = self.flush().await {
                        return Some(Err(e));
                    }
                    self.ws.next().await
                }
            };
            let text = match msg? {
                Ok(Message::Text(t)) => t,
                Ok(Message::Binary(b)) => match String::from_utf8(b.to_vec()) {
                    Ok(t) => t.into(),
                    Err(e) => return Some(Err(e.into())),
                },
                Ok(Message::Close(_)) => return None,
                Ok(_) => continue,
                Err(e) => return Some(Err(e.into())),
            };
            // Pings: '' (protocol v2) or '#1' (v1).
            let pong = match text.as_str() {
                "" => Some(""),
                "#1" => Some("#2"),
                _ => None,
            };
            if let Some(pong) = pong {
                if let Err(e) = self.ws.feed(Message::text(pong)).await {
                    return Some(Err(e.into()));
                }
                self.unflushed = true;
                continue;
            }
            return Some(Ok(text));
        }
    }

    pub(crate) async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Opens the TCP connection for `url`. To a loopback IPv4 server, connections come from
/// 127.0.0.1 to 127.0.0.64 in turn with the port left to `connect` (`IP_BIND_ADDRESS_NO_PORT`),
/// as a real fleet of clients would come from many addresses: from one source address, the
/// kernel's search for a free ephemeral port grows with every open connection (and TIME_WAIT
/// ones of earlier runs) and took a third of the generator's CPU in the connect scenario.
async fn tcp_connect(url: &str) -> Result<TcpStream, BoxError> {
    static NEXT_SOURCE: AtomicU8 = AtomicU8::new(0);
    let uri: Uri = url.parse()?;
    let host = uri.host().ok_or("the URL has no host")?;
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("wss") {
            443
        } else {
            80
        });
    let stream = match host.parse::<Ipv4Addr>() {
        Ok(ip) if ip.is_loopback() => {
            let socket = TcpSocket::new_v4()?;
            setsockopt(&socket, sockopt::IpBindAddressNoPort, &true)?;
            let source = 1 + NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % 64;
            socket.bind(SocketAddr::from(([127, 0, 0, source], 0)))?;
            socket.connect(SocketAddr::from((ip, port))).await?
        }
        _ => TcpStream::connect((host, port)).await?,
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Classifies a frame by its text, without parsing JSON (but for an error response, which
/// ends the run).
fn classify(text: &str, event: &str) -> Frame {
    if let Some(digits) = text.strip_prefix("{\"rid\":") {
        let end = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        let Ok(rid) = digits[..end].parse() else {
            return Frame::Other;
        };
        if !text.contains("\"error\":") {
            return Frame::Response(rid, None);
        }
        let error = serde_json::from_str::<Value>(text)
            .map(|reply| reply["error"].clone())
            .unwrap_or(Value::Null);
        return Frame::Response(rid, Some(Box::new(Refused::from_error(event, &error))));
    }
    if text.starts_with("{\"event\":\"#publish\"") {
        return Frame::Publish(number_after(text, "\"t\":"));
    }
    Frame::Other
}

/// The unsigned integer right after the first `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_classified_from_their_text() {
        let publish = r##"{"event":"#publish","data":{"channel":"bench/1/0","data":{"t":1764000000123456,"p":"xx"}}}"##;
        assert!(matches!(
            classify(publish, "echo"),
            Frame::Publish(Some(1764000000123456))
        ));
        assert!(matches!(
            classify(r#"{"rid":42,"data":{"t":1,"p":""}}"#, "echo"),
            Frame::Response(42, None)
        ));
        let Frame::Response(7, Some(refused)) = classify(
            r#"{"rid":7,"error":{"name":"UnhandledEventError","message":"m"}}"#,
            "echo",
        ) else {
            panic!("an error response is a refusal");
        };
        assert_eq!(
            (
                refused.event.as_str(),
                refused.name.as_str(),
                refused.message.as_str()
            ),
            ("echo", "UnhandledEventError", "m")
        );
        assert!(matches!(
            classify(r##"{"event":"#kickOut"}"##, "echo"),
            Frame::Other
        ));
        assert!(matches!(classify("{\"rid\":x}", "echo"), Frame::Other));
    }
}
