//! A minimal SocketCluster-protocol connection for the load generator: raw text frames over
//! tokio-tungstenite and no JSON trees on the hot path (a publication's send time and a
//! response's id are read straight from the text), so that the instrument costs far less per
//! message than the servers it measures. Setup steps (handshake, subscribe) parse JSON; they are
//! not measured.

use futures_util::{FutureExt, SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::BoxError;

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
    /// A response: its `rid`, and whether it carries an error.
    Response(u64, bool),
    /// Anything else (pings are answered and never returned).
    Other,
}

impl Wire {
    /// Connects and completes the handshake.
    pub(crate) async fn connect(url: &str) -> Result<Self, BoxError> {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
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
                    return Err(format!("{event} failed: {error}").into());
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

    /// Queues an invoke of `event` with `data` (already JSON text); returns its cid. Written at
    /// the next [`flush`](Self::flush) or when the next read would wait.
    pub(crate) async fn feed_invoke(&mut self, event: &str, data: &str) -> Result<u64, BoxError> {
        let cid = self.next_cid;
        self.next_cid += 1;
        let text = format!("{{\"event\":\"{event}\",\"data\":{data},\"cid\":{cid}}}");
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
    pub(crate) async fn next_frame(&mut self) -> Option<Result<Frame, BoxError>> {
        let text = match self.next_text().await? {
            Ok(t) => t,
            Err(e) => return Some(Err(e)),
        };
        Some(Ok(classify(&text)))
    }

    /// The next non-ping text frame. Pings are answered here; queued writes are flushed before
    /// the read would wait.
    async fn next_text(&mut self) -> Option<Result<String, BoxError>> {
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
            return Some(Ok(text.as_str().to_owned()));
        }
    }

    pub(crate) async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Classifies a frame by its text, without parsing JSON.
fn classify(text: &str) -> Frame {
    if let Some(digits) = text.strip_prefix("{\"rid\":") {
        let end = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        return match digits[..end].parse() {
            Ok(rid) => Frame::Response(rid, text.contains("\"error\":")),
            Err(_) => Frame::Other,
        };
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
            classify(publish),
            Frame::Publish(Some(1764000000123456))
        ));
        assert!(matches!(
            classify(r#"{"rid":42,"data":{"t":1,"p":""}}"#),
            Frame::Response(42, false)
        ));
        assert!(matches!(
            classify(r#"{"rid":7,"error":{"name":"E","message":"m"}}"#),
            Frame::Response(7, true)
        ));
        assert!(matches!(
            classify(r##"{"event":"#kickOut"}"##),
            Frame::Other
        ));
        assert!(matches!(classify("{\"rid\":x}"), Frame::Other));
    }
}
