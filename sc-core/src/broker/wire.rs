//! The framed protocol between workers ([`ClusterBroker`](super::ClusterBroker)) and broker
//! processes ([`serve`](super::server::serve)) over Unix sockets.
//!
//! Each frame is `u32` big-endian length + payload (`tokio-util`'s `LengthDelimitedCodec`
//! framing), at most [`MAX_FRAME_LEN`] bytes of payload. The payload starts with a one-byte op;
//! integers are big-endian; strings are UTF-8:
//!
//! | op | frame | direction | layout after the op byte |
//! |---|---|---|---|
//! | `0x00` | [`Frame::Hello`] | worker -> broker, first frame | `"SCB"`, version `u8` ([`VERSION`]), the run's secret (rest) |
//! | `0x01` | [`Frame::Subscribe`] | worker -> broker | id `u64` (`0`: no ack wanted), channel (rest) |
//! | `0x02` | [`Frame::Unsubscribe`] | worker -> broker | channel (rest) |
//! | `0x03` | [`Frame::Publish`] | worker -> broker | id `u64`, channel length `u32`, channel, `#publish` frame (rest) |
//! | `0x04` | [`Frame::Deliver`] | broker -> worker | channel length `u32`, channel, `#publish` frame (rest) |
//! | `0x05` | [`Frame::KvRequest`] | worker -> broker | id `u64`, [`KvOp`] as JSON (rest) |
//! | `0x06` | [`Frame::KvResponse`] | broker -> worker | id `u64`, result as JSON (rest) |
//! | `0x07` | [`Frame::Ack`] | broker -> worker | id `u64` (answers `Subscribe`, `Publish`, `Ping`) |
//! | `0x08` | [`Frame::Ping`] | worker -> broker | id `u64`; answered with `Ack` after every earlier frame |
//! | `0x09` | [`Frame::Error`] | broker -> worker | id `u64`, message (rest): the request failed |
//! | `0x0a` | [`Frame::PublishWithHistory`] | worker -> broker | id `u64`, size `u64`, ttl ms `u64`, channel length `u32`, channel, `#publish` frame (rest); answered with `KvResponse` `{"offset","epoch"}` |
//! | `0x0b` | [`Frame::DeliverAt`] | broker -> worker | offset `u64`, epoch length `u32`, epoch, channel length `u32`, channel, positioned `#publish` frame (rest) |
//! | `0x0c` | [`Frame::HistoryRequest`] | worker -> broker | id `u64`, [`HistoryQuery`] as JSON (rest); answered with `KvResponse` `{"top":{"offset","epoch"},"frames":[..] or null}` |
//! | `0x0d` | [`Frame::PresenceRequest`] | worker -> broker | id `u64`, [`PresenceOp`] as JSON (rest); answered with `KvResponse` |
//! | `0x0e` | [`Frame::PresenceEvent`] | broker -> worker | channel length `u32`, channel, `#presence` event frame (rest) |
//!
//! Presence (see [`super::presence`]) lives with the channel's broker too: each entry is tagged
//! with the worker connection that added it, and when that connection drops (the worker was
//! SIGKILLed) the broker removes all of its entries and sends their leaves (`PresenceEvent`) to
//! the channels' subscribing workers.
//!
//! History (see [`super::history`]) lives with the channel's broker: it gives each publication
//! on a channel with history its position, keeps it, and fans out the positioned frame
//! (`DeliverAt`), so a worker crash loses nothing. A broker that restarts starts a new epoch
//! base: every channel it owns is "not recovered" once.
//!
//! A publication crosses as its already-encoded `#publish` text, so the broker forwards it and the
//! worker writes it to its sockets without any JSON work. The broker handles one connection's
//! frames in order, so an `Ack` also confirms every earlier frame of that connection.
//!
//! A frame that is too long, of an unknown op, truncated, with trailing bytes, or not UTF-8 /
//! JSON where required is a [`WireError`]; the receiver drops that connection.

use std::io;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde_json::Value;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec, LengthDelimitedCodecError};

use super::history::{HistoryPolicy, HistorySince, Position};
use super::kv::KvOp;
use super::presence::PresenceOp;
use super::{BrokerError, Publication};

/// The protocol version sent in [`Frame::Hello`]; a broker refuses any other.
pub const VERSION: u8 = 4;

/// The largest payload of one frame: 16 MiB (a `#publish` frame of the largest `max_payload`
/// anyone should configure, or a big key-value value).
pub const MAX_FRAME_LEN: usize = 16 * 1024 * 1024;

const MAGIC: &[u8; 3] = b"SCB";

const OP_HELLO: u8 = 0x00;
const OP_SUBSCRIBE: u8 = 0x01;
const OP_UNSUBSCRIBE: u8 = 0x02;
const OP_PUBLISH: u8 = 0x03;
const OP_DELIVER: u8 = 0x04;
const OP_KV_REQUEST: u8 = 0x05;
const OP_KV_RESPONSE: u8 = 0x06;
const OP_ACK: u8 = 0x07;
const OP_PING: u8 = 0x08;
const OP_ERROR: u8 = 0x09;
const OP_PUBLISH_WITH_HISTORY: u8 = 0x0a;
const OP_DELIVER_AT: u8 = 0x0b;
const OP_HISTORY_REQUEST: u8 = 0x0c;
const OP_PRESENCE_REQUEST: u8 = 0x0d;
const OP_PRESENCE_EVENT: u8 = 0x0e;

/// A worker's question for a channel's history ([`Frame::HistoryRequest`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HistoryQuery {
    /// The channel.
    pub channel: String,
    /// The position after which publications are wanted (`None`: all kept ones).
    pub since: Option<Position>,
    /// The channel's policy: most publications kept.
    pub size: usize,
    /// The channel's policy: how long each is kept, in milliseconds.
    pub ttl_ms: u64,
}

impl HistoryQuery {
    /// The question for `channel`'s history since `since` under `policy`.
    pub fn new(channel: &str, since: Option<Position>, policy: HistoryPolicy) -> Self {
        Self {
            channel: channel.to_owned(),
            since,
            size: policy.size,
            ttl_ms: u64::try_from(policy.ttl.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The broker's answer: `{"top": position, "frames": [positioned #publish frames] | null}`.
    pub fn encode_answer(answer: &HistorySince) -> Value {
        let frames: Option<Vec<&str>> = answer
            .publications
            .as_ref()
            .map(|kept| kept.iter().map(|p| p.frame.as_str()).collect());
        serde_json::json!({"top": answer.top, "frames": frames})
    }

    /// The worker's reading of [`encode_answer`](Self::encode_answer): the kept frames are
    /// consecutive and end at the top, so each one's position follows from the top's.
    pub fn decode_answer(channel: Arc<str>, answer: Value) -> Result<HistorySince, BrokerError> {
        #[derive(serde::Deserialize)]
        struct Answer {
            top: Position,
            frames: Option<Vec<String>>,
        }
        let answer: Answer =
            serde_json::from_value(answer).map_err(|e| BrokerError::Decode(e.to_string()))?;
        let top = answer.top;
        let publications = answer.frames.map(|frames| {
            let first = top
                .offset
                .saturating_add(1)
                .saturating_sub(frames.len() as u64);
            (first..)
                .zip(frames)
                .map(|(offset, frame)| {
                    let epoch = top.epoch.clone();
                    let position = Position { offset, epoch };
                    let publication =
                        Publication::from_positioned_frame(channel.clone(), frame.into(), position);
                    Arc::new(publication)
                })
                .collect()
        });
        Ok(HistorySince { top, publications })
    }
}

/// One frame of the worker <-> broker protocol (see the module docs for the byte layout).
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// The worker's first frame.
    Hello {
        /// The worker's protocol version.
        version: u8,
        /// The secret its cluster's master handed every child (empty outside a cluster); the
        /// broker refuses a hello without the secret it was given.
        secret: Bytes,
    },
    /// The worker needs `channel`. Acked unless `id` is 0.
    Subscribe {
        /// Request id (`0`: no ack).
        id: u64,
        /// The channel.
        channel: Arc<str>,
    },
    /// The worker no longer needs `channel`. Not acked.
    Unsubscribe {
        /// The channel.
        channel: Arc<str>,
    },
    /// Publish to every worker subscribed to `channel`. Acked once forwarded.
    Publish {
        /// Request id.
        id: u64,
        /// The channel.
        channel: Arc<str>,
        /// The encoded `#publish` frame.
        frame: Utf8Bytes,
    },
    /// A publication on a channel the worker subscribed to.
    Deliver {
        /// The channel.
        channel: Arc<str>,
        /// The encoded `#publish` frame.
        frame: Utf8Bytes,
    },
    /// A key-value operation.
    KvRequest {
        /// Request id.
        id: u64,
        /// The operation.
        op: KvOp,
    },
    /// The result of a key-value operation.
    KvResponse {
        /// The request's id.
        id: u64,
        /// The result (see [`KvOp`]).
        result: Value,
    },
    /// Answers `Subscribe`, `Publish` and `Ping`.
    Ack {
        /// The request's id.
        id: u64,
    },
    /// Asks for an `Ack` once every earlier frame of the connection was handled.
    Ping {
        /// Request id.
        id: u64,
    },
    /// Publish on a channel with history: the broker positions, keeps and fans out the
    /// publication ([`Frame::DeliverAt`]), and answers its position as a `KvResponse`.
    PublishWithHistory {
        /// Request id.
        id: u64,
        /// The channel's policy.
        policy: HistoryPolicy,
        /// The channel.
        channel: Arc<str>,
        /// The encoded `#publish` frame (without a position).
        frame: Utf8Bytes,
    },
    /// A positioned publication on a channel the worker subscribed to.
    DeliverAt {
        /// Its position.
        position: Position,
        /// The channel.
        channel: Arc<str>,
        /// The `#publish` frame with `offset` and `epoch`.
        frame: Utf8Bytes,
    },
    /// A channel's history since a position; answered as a `KvResponse`.
    HistoryRequest {
        /// Request id.
        id: u64,
        /// What is asked.
        query: HistoryQuery,
    },
    /// A presence change or question; answered as a `KvResponse`.
    PresenceRequest {
        /// Request id.
        id: u64,
        /// What is asked.
        op: PresenceOp,
    },
    /// A `#presence` event for the local subscribers of a channel.
    PresenceEvent {
        /// The channel.
        channel: Arc<str>,
        /// The encoded event.
        frame: Utf8Bytes,
    },
    /// The request failed (a key-value result too large to send).
    Error {
        /// The request's id.
        id: u64,
        /// Why.
        message: String,
    },
}

impl Frame {
    /// The frame's name, for log lines.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "hello",
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe { .. } => "unsubscribe",
            Self::Publish { .. } => "publish",
            Self::Deliver { .. } => "deliver",
            Self::KvRequest { .. } => "kv request",
            Self::KvResponse { .. } => "kv response",
            Self::Ack { .. } => "ack",
            Self::Ping { .. } => "ping",
            Self::Error { .. } => "error",
            Self::PublishWithHistory { .. } => "publish with history",
            Self::DeliverAt { .. } => "deliver at",
            Self::HistoryRequest { .. } => "history request",
            Self::PresenceRequest { .. } => "presence request",
            Self::PresenceEvent { .. } => "presence event",
        }
    }

    /// The request id of a frame that must be answered, if any.
    pub fn request_id(&self) -> Option<u64> {
        match self {
            Self::Subscribe { id, .. } if *id != 0 => Some(*id),
            Self::Publish { id, .. }
            | Self::KvRequest { id, .. }
            | Self::Ping { id }
            | Self::PublishWithHistory { id, .. }
            | Self::HistoryRequest { id, .. }
            | Self::PresenceRequest { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// A frame that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed.
    #[error("broker connection i/o error: {0}")]
    Io(io::Error),
    /// A frame longer than [`MAX_FRAME_LEN`].
    #[error("frame longer than {MAX_FRAME_LEN} bytes")]
    TooLong,
    /// A frame that does not follow the protocol.
    #[error("malformed frame: {0}")]
    Malformed(String),
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        let too_long = e
            .get_ref()
            .is_some_and(|inner| inner.is::<LengthDelimitedCodecError>());
        if too_long {
            Self::TooLong
        } else {
            Self::Io(e)
        }
    }
}

fn malformed(what: impl Into<String>) -> WireError {
    WireError::Malformed(what.into())
}

/// The codec for [`Frame`]s: use it with `tokio_util::codec::Framed` on a `UnixStream`.
#[derive(Debug)]
pub struct BrokerCodec {
    frames: LengthDelimitedCodec,
}

impl Default for BrokerCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl BrokerCodec {
    /// A codec with the [`MAX_FRAME_LEN`] limit.
    pub fn new() -> Self {
        Self {
            frames: LengthDelimitedCodec::builder()
                .max_frame_length(MAX_FRAME_LEN)
                .new_codec(),
        }
    }

    /// Lowers (or restores) the longest frame this codec reads, up to [`MAX_FRAME_LEN`]: a
    /// broker reads a connection's hello with a small limit, as it comes before any check.
    pub fn set_max_frame_length(&mut self, len: usize) {
        self.frames.set_max_frame_length(len.min(MAX_FRAME_LEN));
    }
}

impl Decoder for BrokerCodec {
    type Item = Frame;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        match self.frames.decode(src)? {
            Some(payload) => parse(payload.freeze()).map(Some),
            None => Ok(None),
        }
    }
}

impl Encoder<Frame> for BrokerCodec {
    type Error = WireError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), WireError> {
        encode(&frame, dst)
    }
}

impl Encoder<&Frame> for BrokerCodec {
    type Error = WireError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), WireError> {
        encode(frame, dst)
    }
}

/// Writes the length prefix and the payload straight into `dst` (one copy of the `#publish`
/// text), in `LengthDelimitedCodec`'s default framing.
fn encode(frame: &Frame, dst: &mut BytesMut) -> Result<(), WireError> {
    let json;
    let (op, id, channel, body): (u8, Option<u64>, Option<&str>, &[u8]) = match frame {
        Frame::Hello { version, secret } => {
            let len = 1 + MAGIC.len() + 1 + secret.len();
            if len > MAX_FRAME_LEN {
                return Err(malformed("hello secret too long"));
            }
            dst.reserve(4 + len);
            dst.put_u32(len as u32);
            dst.put_u8(OP_HELLO);
            dst.put_slice(MAGIC);
            dst.put_u8(*version);
            dst.put_slice(secret);
            return Ok(());
        }
        Frame::PublishWithHistory {
            id,
            policy,
            channel,
            frame,
        } => {
            let ttl_ms = u64::try_from(policy.ttl.as_millis()).unwrap_or(u64::MAX);
            let head = [*id, policy.size as u64, ttl_ms];
            return put_frame(
                dst,
                OP_PUBLISH_WITH_HISTORY,
                &head,
                &[channel],
                frame.as_bytes(),
            );
        }
        Frame::DeliverAt {
            position,
            channel,
            frame,
        } => {
            let head = [position.offset];
            return put_frame(
                dst,
                OP_DELIVER_AT,
                &head,
                &[&position.epoch, channel],
                frame.as_bytes(),
            );
        }
        Frame::HistoryRequest { id, query } => {
            json = serde_json::to_vec(query).map_err(|e| malformed(e.to_string()))?;
            (OP_HISTORY_REQUEST, Some(*id), None, &json)
        }
        Frame::PresenceRequest { id, op } => {
            json = serde_json::to_vec(op).map_err(|e| malformed(e.to_string()))?;
            (OP_PRESENCE_REQUEST, Some(*id), None, &json)
        }
        Frame::PresenceEvent { channel, frame } => {
            (OP_PRESENCE_EVENT, None, Some(channel), frame.as_bytes())
        }
        Frame::Subscribe { id, channel } => (OP_SUBSCRIBE, Some(*id), None, channel.as_bytes()),
        Frame::Unsubscribe { channel } => (OP_UNSUBSCRIBE, None, None, channel.as_bytes()),
        Frame::Publish { id, channel, frame } => {
            (OP_PUBLISH, Some(*id), Some(channel), frame.as_bytes())
        }
        Frame::Deliver { channel, frame } => (OP_DELIVER, None, Some(channel), frame.as_bytes()),
        Frame::KvRequest { id, op } => {
            json = serde_json::to_vec(op).map_err(|e| malformed(e.to_string()))?;
            (OP_KV_REQUEST, Some(*id), None, &json)
        }
        Frame::KvResponse { id, result } => {
            json = serde_json::to_vec(result).map_err(|e| malformed(e.to_string()))?;
            (OP_KV_RESPONSE, Some(*id), None, &json)
        }
        Frame::Ack { id } => (OP_ACK, Some(*id), None, &[]),
        Frame::Ping { id } => (OP_PING, Some(*id), None, &[]),
        Frame::Error { id, message } => (OP_ERROR, Some(*id), None, message.as_bytes()),
    };
    let len = 1 + id.map_or(0, |_| 8) + channel.map_or(0, |c| 4 + c.len()) + body.len();
    if len > MAX_FRAME_LEN {
        return Err(WireError::TooLong);
    }
    dst.reserve(4 + len);
    // `len <= MAX_FRAME_LEN < u32::MAX`.
    dst.put_u32(len as u32);
    dst.put_u8(op);
    if let Some(id) = id {
        dst.put_u64(id);
    }
    if let Some(channel) = channel {
        dst.put_u32(channel.len() as u32);
        dst.put_slice(channel.as_bytes());
    }
    dst.put_slice(body);
    Ok(())
}

/// Op, `u64`s, length-prefixed strings, then the body.
fn put_frame(
    dst: &mut BytesMut,
    op: u8,
    numbers: &[u64],
    strings: &[&str],
    body: &[u8],
) -> Result<(), WireError> {
    let len =
        1 + 8 * numbers.len() + strings.iter().map(|s| 4 + s.len()).sum::<usize>() + body.len();
    if len > MAX_FRAME_LEN {
        return Err(WireError::TooLong);
    }
    dst.reserve(4 + len);
    dst.put_u32(len as u32);
    dst.put_u8(op);
    for n in numbers {
        dst.put_u64(*n);
    }
    for s in strings {
        dst.put_u32(s.len() as u32);
        dst.put_slice(s.as_bytes());
    }
    dst.put_slice(body);
    Ok(())
}

fn take_u64(b: &mut Bytes) -> Result<u64, WireError> {
    b.try_get_u64()
        .map_err(|_| malformed("truncated request id"))
}

fn take_str(b: &mut Bytes, len: usize) -> Result<Arc<str>, WireError> {
    if b.remaining() < len {
        return Err(malformed("truncated channel"));
    }
    let raw = b.split_to(len);
    std::str::from_utf8(&raw)
        .map(Arc::from)
        .map_err(|_| malformed("channel is not UTF-8"))
}

fn take_channel(b: &mut Bytes) -> Result<Arc<str>, WireError> {
    let len = b
        .try_get_u32()
        .map_err(|_| malformed("truncated channel length"))?;
    take_str(b, len as usize)
}

fn rest_str(b: Bytes) -> Result<Arc<str>, WireError> {
    std::str::from_utf8(&b)
        .map(Arc::from)
        .map_err(|_| malformed("channel is not UTF-8"))
}

fn rest_text(b: Bytes) -> Result<Utf8Bytes, WireError> {
    Utf8Bytes::try_from(b).map_err(|_| malformed("#publish frame is not UTF-8"))
}

fn no_rest(b: &Bytes) -> Result<(), WireError> {
    if b.has_remaining() {
        Err(malformed("trailing bytes"))
    } else {
        Ok(())
    }
}

/// Parses one payload (without its length prefix).
fn parse(mut b: Bytes) -> Result<Frame, WireError> {
    let op = b.try_get_u8().map_err(|_| malformed("empty frame"))?;
    let frame = match op {
        OP_HELLO => {
            if b.remaining() < MAGIC.len() || &b[..MAGIC.len()] != MAGIC {
                return Err(malformed("not a broker protocol hello"));
            }
            b.advance(MAGIC.len());
            let version = b
                .try_get_u8()
                .map_err(|_| malformed("hello without a version"))?;
            Frame::Hello { version, secret: b }
        }
        OP_SUBSCRIBE => Frame::Subscribe {
            id: take_u64(&mut b)?,
            channel: rest_str(b)?,
        },
        OP_UNSUBSCRIBE => Frame::Unsubscribe {
            channel: rest_str(b)?,
        },
        OP_PUBLISH => Frame::Publish {
            id: take_u64(&mut b)?,
            channel: take_channel(&mut b)?,
            frame: rest_text(b)?,
        },
        OP_DELIVER => Frame::Deliver {
            channel: take_channel(&mut b)?,
            frame: rest_text(b)?,
        },
        OP_KV_REQUEST => Frame::KvRequest {
            id: take_u64(&mut b)?,
            op: serde_json::from_slice(&b)
                .map_err(|e| malformed(format!("key-value request: {e}")))?,
        },
        OP_KV_RESPONSE => Frame::KvResponse {
            id: take_u64(&mut b)?,
            result: serde_json::from_slice(&b)
                .map_err(|e| malformed(format!("key-value response: {e}")))?,
        },
        OP_ACK | OP_PING => {
            let id = take_u64(&mut b)?;
            no_rest(&b)?;
            if op == OP_ACK {
                Frame::Ack { id }
            } else {
                Frame::Ping { id }
            }
        }
        OP_ERROR => Frame::Error {
            id: take_u64(&mut b)?,
            message: String::from_utf8(b.to_vec())
                .map_err(|_| malformed("error message is not UTF-8"))?,
        },
        OP_PUBLISH_WITH_HISTORY => {
            let id = take_u64(&mut b)?;
            let size = usize::try_from(take_u64(&mut b)?).unwrap_or(usize::MAX);
            let ttl = std::time::Duration::from_millis(take_u64(&mut b)?);
            Frame::PublishWithHistory {
                id,
                policy: HistoryPolicy::new(size, ttl),
                channel: take_channel(&mut b)?,
                frame: rest_text(b)?,
            }
        }
        OP_DELIVER_AT => {
            let offset = take_u64(&mut b)?;
            let epoch = take_channel(&mut b)?.to_string();
            Frame::DeliverAt {
                position: Position { offset, epoch },
                channel: take_channel(&mut b)?,
                frame: rest_text(b)?,
            }
        }
        OP_HISTORY_REQUEST => Frame::HistoryRequest {
            id: take_u64(&mut b)?,
            query: serde_json::from_slice(&b)
                .map_err(|e| malformed(format!("history request: {e}")))?,
        },
        OP_PRESENCE_REQUEST => Frame::PresenceRequest {
            id: take_u64(&mut b)?,
            op: serde_json::from_slice(&b)
                .map_err(|e| malformed(format!("presence request: {e}")))?,
        },
        OP_PRESENCE_EVENT => Frame::PresenceEvent {
            channel: take_channel(&mut b)?,
            frame: rest_text(b)?,
        },
        other => return Err(malformed(format!("unknown op 0x{other:02x}"))),
    };
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(frame: Frame) {
        let mut codec = BrokerCodec::new();
        let mut buf = BytesMut::new();
        codec.encode(&frame, &mut buf).expect("encodes");
        // Two frames back to back, fed one byte at a time: framing must hold across reads.
        codec.encode(frame.clone(), &mut buf).expect("encodes");
        let mut input = BytesMut::new();
        let mut out = Vec::new();
        for byte in buf {
            input.put_u8(byte);
            while let Some(f) = codec.decode(&mut input).expect("decodes") {
                out.push(f);
            }
        }
        assert_eq!(out, vec![frame.clone(), frame]);
    }

    #[test]
    fn every_frame_round_trips() {
        let ch: Arc<str> = "rooms/é/1".into();
        let text = Utf8Bytes::from(r##"{"event":"#publish","data":{"channel":"c","data":1}}"##);
        for frame in [
            Frame::Hello {
                version: VERSION,
                secret: Bytes::from_static(b"run secret"),
            },
            Frame::Subscribe {
                id: 7,
                channel: ch.clone(),
            },
            Frame::Subscribe {
                id: 0,
                channel: "".into(),
            },
            Frame::Unsubscribe {
                channel: ch.clone(),
            },
            Frame::Publish {
                id: u64::MAX,
                channel: ch.clone(),
                frame: text.clone(),
            },
            Frame::Deliver {
                channel: ch.clone(),
                frame: text.clone(),
            },
            Frame::PublishWithHistory {
                id: 8,
                policy: HistoryPolicy::new(100, std::time::Duration::from_millis(300_000)),
                channel: ch.clone(),
                frame: text.clone(),
            },
            Frame::DeliverAt {
                position: Position {
                    offset: 9,
                    epoch: "ab-1".into(),
                },
                channel: ch.clone(),
                frame: text,
            },
            Frame::HistoryRequest {
                id: 10,
                query: HistoryQuery {
                    channel: ch.to_string(),
                    since: Some(Position {
                        offset: 3,
                        epoch: "e".into(),
                    }),
                    size: 5,
                    ttl_ms: 1000,
                },
            },
            Frame::KvRequest {
                id: 1,
                op: KvOp::Set {
                    key: "k".into(),
                    value: json!({"a": [1, null]}),
                },
            },
            Frame::KvRequest {
                id: 2,
                op: KvOp::Count,
            },
            Frame::KvResponse {
                id: 3,
                result: json!(null),
            },
            Frame::Ack { id: 4 },
            Frame::Ping { id: 5 },
            Frame::Error {
                id: 6,
                message: "too big".into(),
            },
            Frame::PresenceRequest {
                id: 11,
                op: PresenceOp::Join {
                    channel: ch.to_string(),
                    entry: super::super::PresenceEntry {
                        socket: "s1".into(),
                        user: Some("ann".into()),
                        info: Some(json!({"nick": "A"})),
                    },
                    join_leave: true,
                },
            },
            Frame::PresenceRequest {
                id: 12,
                op: PresenceOp::Query {
                    channel: ch.to_string(),
                },
            },
            Frame::PresenceEvent {
                channel: ch.clone(),
                frame: r##"{"event":"#presence","data":{"channel":"c","joins":[],"leaves":[]}}"##
                    .into(),
            },
        ] {
            round_trip(frame);
        }
    }

    #[test]
    fn the_layout_is_as_documented() {
        let mut buf = BytesMut::new();
        encode(
            &Frame::Deliver {
                channel: "ab".into(),
                frame: "xyz".into(),
            },
            &mut buf,
        )
        .expect("encodes");
        assert_eq!(&buf[..], b"\0\0\0\x0a\x04\0\0\0\x02abxyz");
        let mut buf = BytesMut::new();
        encode(&Frame::Ack { id: 258 }, &mut buf).expect("encodes");
        assert_eq!(&buf[..], b"\0\0\0\x09\x07\0\0\0\0\0\0\x01\x02");
    }

    fn decode_payload(payload: &[u8]) -> Result<Option<Frame>, WireError> {
        let mut buf = BytesMut::new();
        buf.put_u32(payload.len() as u32);
        buf.put_slice(payload);
        BrokerCodec::new().decode(&mut buf)
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let cases: &[&[u8]] = &[
            b"",
            b"\x0a",
            b"\xff\x00",
            b"\x00SCX\x01",
            b"\x00SCB",
            b"\x01\0\0",
            b"\x01\0\0\0\0\0\0\0\x01\xff\xfe",
            b"\x03\0\0\0\0\0\0\0\x01\0\0\0\x09ab",
            b"\x03\0\0\0\0\0\0\0\x01\xff\xff\xff\xff",
            b"\x04\0\0\0\x01a\xc3\x28",
            b"\x05\0\0\0\0\0\0\0\x01{\"op\":\"nope\"}",
            b"\x05\0\0\0\0\0\0\0\x01not json",
            b"\x06\0\0\0\0\0\0\0\x01",
            b"\x07\0\0\0\0\0\0\0\x01\x00",
            b"\x08\0\0\0",
            b"\x09\0\0\0\0\0\0\0\x01\xff",
        ];
        for payload in cases {
            match decode_payload(payload) {
                Err(WireError::Malformed(_)) => {}
                other => panic!("{payload:?}: expected a malformed frame, got {other:?}"),
            }
        }
    }

    #[test]
    fn oversized_frames_are_refused_both_ways() {
        let mut buf = BytesMut::new();
        buf.put_u32(MAX_FRAME_LEN as u32 + 1);
        buf.put_slice(b"\x07");
        assert!(matches!(
            BrokerCodec::new().decode(&mut buf),
            Err(WireError::TooLong)
        ));
        let huge = Frame::Deliver {
            channel: "c".into(),
            frame: "x".repeat(MAX_FRAME_LEN).into(),
        };
        let mut out = BytesMut::new();
        assert!(matches!(
            BrokerCodec::new().encode(huge, &mut out),
            Err(WireError::TooLong)
        ));
        assert!(out.is_empty());
    }
}
