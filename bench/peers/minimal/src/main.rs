//! A minimal SocketCluster-protocol server: the ceiling `bench/run.sh` measures sc against. It
//! knows just enough protocol for the `sc bench` scenarios and nothing else: `#handshake`,
//! `#subscribe`/`#unsubscribe`, `#publish` fanned out to every subscriber, and any other invoke
//! answered with its own data (`echo`). No pings, auth, limits, origins, middleware or
//! backpressure: what it reaches is what the kernel, the runtime and the load generator allow.
//!
//! One task per connection, reading and writing (replies and deliveries are fed, then flushed
//! once nothing more is ready); frames are parsed with borrowed `RawValue`s (no JSON tree); a
//! publication is encoded once and shared by all its subscribers. Listens on 127.0.0.1:SC_PORT
//! (default 8000) with the system's largest backlog, prints `LISTENING <port>`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

type Subscribers = HashMap<u64, UnboundedSender<Utf8Bytes>>;

#[derive(Default)]
struct Hub {
    channels: Mutex<HashMap<String, Subscribers>>,
    next_id: AtomicU64,
}

#[derive(Deserialize)]
struct Inbound<'a> {
    #[serde(borrow)]
    event: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    cid: Option<u64>,
}

#[derive(Deserialize)]
struct ChannelData<'a> {
    #[serde(borrow)]
    channel: std::borrow::Cow<'a, str>,
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("SC_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8000);
    let backlog = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4096u32);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let socket = TcpSocket::new_v4()?;
            socket.set_reuseaddr(true)?;
            socket.bind(([127, 0, 0, 1], port).into())?;
            let listener = socket.listen(backlog)?;
            println!("LISTENING {}", listener.local_addr()?.port());
            let hub = Arc::new(Hub::default());
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of file descriptors: retrying at once would spin a core and skew
                    // the comparison.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(hub.clone(), stream));
            }
        })
}

async fn connection(hub: Arc<Hub>, stream: TcpStream) {
    // A small read buffer: tungstenite zero-fills all of it before each read.
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    let id = hub.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let (tx, mut rx) = unbounded_channel();
    let mut conn = Conn {
        hub: &hub,
        id,
        tx,
        subscribed: Vec::new(),
    };
    let _ = conn.run(&mut ws, &mut rx).await;
    conn.leave();
}

struct Conn<'h> {
    hub: &'h Hub,
    id: u64,
    tx: UnboundedSender<Utf8Bytes>,
    subscribed: Vec<String>,
}

enum Next {
    Out(Utf8Bytes),
    In(Message),
    End,
}

impl Conn<'_> {
    async fn run(
        &mut self,
        ws: &mut WebSocketStream<TcpStream>,
        rx: &mut UnboundedReceiver<Utf8Bytes>,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        loop {
            let next = tokio::select! {
                biased;
                out = rx.recv() => out.map_or(Next::End, Next::Out),
                msg = ws.next() => match msg {
                    Some(Ok(m)) => Next::In(m),
                    _ => Next::End,
                },
            };
            match next {
                Next::Out(text) => ws.feed(Message::Text(text)).await?,
                Next::In(msg) => self.handle(ws, msg).await?,
                Next::End => return Ok(()),
            }
            // Everything else ready now goes out in the same write.
            loop {
                while let Ok(text) = rx.try_recv() {
                    ws.feed(Message::Text(text)).await?;
                }
                match ws.next().now_or_never() {
                    Some(Some(Ok(msg))) => self.handle(ws, msg).await?,
                    Some(_) => return Ok(()),
                    None => break,
                }
            }
            ws.flush().await?;
        }
    }

    async fn handle(
        &mut self,
        ws: &mut WebSocketStream<TcpStream>,
        msg: Message,
    ) -> Result<(), tokio_tungstenite::tungstenite::Error> {
        let Message::Text(text) = msg else {
            return Ok(());
        };
        let Ok(frame) = serde_json::from_str::<Inbound>(&text) else {
            return Ok(());
        };
        let data = frame.data.map_or("null", RawValue::get);
        let reply = match frame.event.as_deref() {
            Some("#handshake") => format!(
                "{{\"rid\":{},\"data\":{{\"id\":\"m{}\",\"pingTimeout\":20000,\"isAuthenticated\":false}}}}",
                frame.cid.unwrap_or(0),
                self.id
            ),
            Some("#subscribe") => {
                if let Ok(c) = serde_json::from_str::<ChannelData>(data) {
                    self.subscribe(&c.channel);
                }
                ack(frame.cid)
            }
            Some("#unsubscribe") => {
                if let Ok(channel) = serde_json::from_str::<std::borrow::Cow<str>>(data) {
                    self.unsubscribe(&channel);
                }
                ack(frame.cid)
            }
            Some("#publish") => {
                if let Ok(c) = serde_json::from_str::<ChannelData>(data) {
                    // The inbound data is already `{"channel":..,"data":..}`.
                    let out: Utf8Bytes = format!("{{\"event\":\"#publish\",\"data\":{data}}}").into();
                    self.publish(&c.channel, out);
                }
                ack(frame.cid)
            }
            Some(_) => match frame.cid {
                Some(cid) => format!("{{\"rid\":{cid},\"data\":{data}}}"),
                None => String::new(),
            },
            None => String::new(),
        };
        if !reply.is_empty() {
            ws.feed(Message::text(reply)).await?;
        }
        Ok(())
    }

    fn subscribe(&mut self, channel: &str) {
        let mut channels = self.hub.channels.lock().unwrap_or_else(|e| e.into_inner());
        channels
            .entry(channel.to_owned())
            .or_default()
            .insert(self.id, self.tx.clone());
        if !self.subscribed.iter().any(|c| c == channel) {
            self.subscribed.push(channel.to_owned());
        }
    }

    fn unsubscribe(&mut self, channel: &str) {
        let mut channels = self.hub.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(subs) = channels.get_mut(channel) {
            subs.remove(&self.id);
            if subs.is_empty() {
                channels.remove(channel);
            }
        }
        self.subscribed.retain(|c| c != channel);
    }

    fn publish(&self, channel: &str, frame: Utf8Bytes) {
        let channels = self.hub.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(subs) = channels.get(channel) {
            for tx in subs.values() {
                let _ = tx.send(frame.clone());
            }
        }
    }

    fn leave(&mut self) {
        for channel in std::mem::take(&mut self.subscribed) {
            self.unsubscribe(&channel);
        }
    }
}

fn ack(cid: Option<u64>) -> String {
    cid.map_or_else(String::new, |cid| format!("{{\"rid\":{cid}}}"))
}
