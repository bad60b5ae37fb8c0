//! What a node receives from Redis: the bounded queue between the connection and the reader
//! (see [`Redis::queue_bytes`](super::Redis::queue_bytes)), the parse that decides whether a
//! message is an sc publication for this prefix, and the reader that delivers it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use axum::extract::ws::Utf8Bytes;
use redis::{PushInfo, PushKind, Value as RedisValue};
use tokio::sync::mpsc;

use super::NODE_ID_LEN;
use crate::broker::{DeliverySink, Position, Publication, REDIS_SEPARATOR};

/// What a queued message costs beyond its bytes, so that a flood of tiny messages is bounded too.
const ENTRY_OVERHEAD: usize = 64;

/// Received messages waiting for the reader, bounded in bytes (see [`Redis::queue_bytes`]). The
/// sender stays with the connection (the reader holds only this), so the reader ends when the
/// connection is dropped.
///
/// [`Redis::queue_bytes`]: super::Redis::queue_bytes
pub(super) struct PushQueue {
    limit: usize,
    bytes: AtomicUsize,
    dropped: AtomicU64,
    /// Whether the last message was dropped: the log says when dropping starts and stops.
    dropping: AtomicBool,
    shard: String,
}

/// What a push counts for against the queue's bound: messages their bytes, the rest (disconnection
/// notices, subscription confirmations) nothing, so they always get through.
fn push_cost(push: &PushInfo) -> usize {
    match push.kind {
        PushKind::Message => {
            ENTRY_OVERHEAD
                + push
                    .data
                    .iter()
                    .map(|v| match v {
                        RedisValue::BulkString(b) => b.len(),
                        _ => 0,
                    })
                    .sum::<usize>()
        }
        _ => 0,
    }
}

impl PushQueue {
    pub(super) fn new(limit: usize, shard: String) -> Self {
        Self {
            limit,
            bytes: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            dropping: AtomicBool::new(false),
            shard,
        }
    }

    /// Called on the connection's task: never waits.
    pub(super) fn offer(&self, push: PushInfo, tx: &mpsc::UnboundedSender<PushInfo>) {
        let cost = push_cost(&push);
        let queued = self.bytes.fetch_add(cost, Ordering::AcqRel);
        if cost > 0 && queued > 0 && queued + cost > self.limit {
            self.bytes.fetch_sub(cost, Ordering::AcqRel);
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if !self.dropping.swap(true, Ordering::Relaxed) {
                tracing::warn!(redis = %self.shard, limit = self.limit, dropped_since_start = dropped, "Redis messages arrive faster than this node delivers them; dropping new ones while redis_queue_bytes are queued");
            }
            return;
        }
        if cost > 0 && self.dropping.swap(false, Ordering::Relaxed) {
            tracing::warn!(redis = %self.shard, dropped_since_start = self.dropped.load(Ordering::Relaxed), "Redis messages fit the queue again");
        }
        if tx.send(push).is_err() {
            self.bytes.fetch_sub(cost, Ordering::AcqRel);
        }
    }

    fn release(&self, cost: usize) {
        self.bytes.fetch_sub(cost, Ordering::AcqRel);
    }
}

/// A message from Redis, as [`parse_message`] reads it.
#[derive(Debug, PartialEq)]
pub(super) enum Incoming<'a> {
    /// This node's own publication, echoed back (delivered locally when it was published).
    Echo,
    /// Another node's publication: deliver `frame` to the subscribers of `channel`.
    Publication { channel: &'a str, frame: &'a str },
    /// A `#presence` event, from any node (this one included: events reach every node through
    /// Redis only).
    PresenceEvent { channel: &'a str, frame: &'a str },
    /// A publication on a channel with history, from any node (this one included: the position
    /// comes from Redis, so every node delivers it from here, in Redis's order).
    Positioned {
        channel: &'a str,
        frame: &'a str,
        position: Position,
    },
}

/// Reads a message on a Redis channel: the channel must be `prefix#name`, the payload a node id
/// followed by a `#publish` frame of exactly the shape [`Publication::new`] encodes (with
/// `offset` and `epoch` after `data` when positioned), for `name` (no other or repeated fields: a
/// client reading the last of two `event` fields would see another event). The error says what is
/// wrong, for the log.
pub(super) fn parse_message<'a>(
    prefix: &str,
    node: &str,
    channel: &'a [u8],
    payload: &'a [u8],
) -> Result<Incoming<'a>, &'static str> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Data<'a> {
        #[serde(borrow)]
        channel: std::borrow::Cow<'a, str>,
        /// Read only to check that it is JSON: the frame is forwarded as it is.
        #[serde(default, borrow, rename = "data")]
        _data: Option<&'a serde_json::value::RawValue>,
        offset: Option<u64>,
        #[serde(borrow)]
        epoch: Option<std::borrow::Cow<'a, str>>,
    }
    let channel = std::str::from_utf8(channel).map_err(|_| "the channel is not UTF-8")?;
    let (their_prefix, name) = channel
        .split_once(REDIS_SEPARATOR)
        .ok_or("the channel has no prefix")?;
    if their_prefix != prefix {
        return Err("the channel has another prefix");
    }
    let payload = std::str::from_utf8(payload).map_err(|_| "the message is not UTF-8")?;
    let from = payload.get(..NODE_ID_LEN).ok_or("no node id")?;
    if !from.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("no node id");
    }
    let frame = &payload[NODE_ID_LEN..];
    if let Some(event) = frame.strip_prefix(super::presence::EVENT_MARK) {
        return parse_presence_event(name, event);
    }
    // A positioned frame ends with its epoch, a string: an own echo that does not end like one
    // is dropped without parsing it (one whose data is a string is parsed, then dropped).
    if from == node && !frame.ends_with("\"}}") {
        return Ok(Incoming::Echo);
    }
    let parsed: Envelope<'_, Data<'_>> =
        serde_json::from_str(frame).map_err(|_| "not a #publish frame of the expected shape")?;
    if parsed.event != "#publish" {
        return Err("not a #publish frame");
    }
    if parsed.data.channel != name {
        return Err("the frame names another channel");
    }
    match (parsed.data.offset, parsed.data.epoch) {
        (Some(offset), Some(epoch)) => Ok(Incoming::Positioned {
            channel: name,
            frame,
            position: Position {
                offset,
                epoch: epoch.into_owned(),
            },
        }),
        (None, None) if from == node => Ok(Incoming::Echo),
        (None, None) => Ok(Incoming::Publication {
            channel: name,
            frame,
        }),
        _ => Err("a #publish frame with only one of offset and epoch"),
    }
}

/// The envelope of a frame received from Redis, `{"event": .., "data": D}` and nothing else.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a, D> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    data: D,
}

/// Reads a presence event (after the node id and the mark): a `#presence` frame of exactly the
/// shape `encode_event` writes, for `name`.
fn parse_presence_event<'a>(name: &'a str, frame: &'a str) -> Result<Incoming<'a>, &'static str> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Data<'a> {
        #[serde(borrow)]
        channel: std::borrow::Cow<'a, str>,
        /// Read only to check the shape: the frame is forwarded as it is.
        #[serde(rename = "joins")]
        _joins: Vec<crate::broker::PresenceEntry>,
        #[serde(rename = "leaves")]
        _leaves: Vec<crate::broker::PresenceEntry>,
        #[serde(default, rename = "cut")]
        _cut: bool,
    }
    let parsed: Envelope<'_, Data<'_>> =
        serde_json::from_str(frame).map_err(|_| "not a #presence frame of the expected shape")?;
    if parsed.event != "#presence" {
        return Err("not a #presence frame");
    }
    if parsed.data.channel != name {
        return Err("the frame names another channel");
    }
    Ok(Incoming::PresenceEvent {
        channel: name,
        frame,
    })
}

/// Hands every Redis message on our channels to the worker; logs disconnections.
pub(super) async fn read_pushes(
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    queue: Arc<PushQueue>,
    sink: Weak<dyn DeliverySink>,
    prefix: String,
    node: String,
    up: Arc<AtomicBool>,
) {
    while let Some(push) = pushes.recv().await {
        let cost = push_cost(&push);
        match push.kind {
            PushKind::Message => {
                let [RedisValue::BulkString(channel), RedisValue::BulkString(payload)] =
                    push.data.as_slice()
                else {
                    queue.release(cost);
                    continue;
                };
                match parse_message(&prefix, &node, channel, payload) {
                    Ok(Incoming::Echo) => {}
                    Ok(Incoming::Publication { channel, frame }) => {
                        let publication =
                            Publication::from_frame(channel, Utf8Bytes::from(frame.to_owned()));
                        let Some(sink) = sink.upgrade() else {
                            return;
                        };
                        sink.deliver(Arc::new(publication)).await;
                    }
                    Ok(Incoming::PresenceEvent { channel, frame }) => {
                        let Some(sink) = sink.upgrade() else {
                            return;
                        };
                        sink.deliver_event(channel, Utf8Bytes::from(frame.to_owned()));
                    }
                    Ok(Incoming::Positioned {
                        channel,
                        frame,
                        position,
                    }) => {
                        let publication = Publication::from_positioned_frame(
                            channel,
                            Utf8Bytes::from(frame.to_owned()),
                            position,
                        );
                        let Some(sink) = sink.upgrade() else {
                            return;
                        };
                        sink.deliver(Arc::new(publication)).await;
                    }
                    Err(reason) => {
                        let channel = String::from_utf8_lossy(channel);
                        tracing::warn!(%channel, reason, "ignoring a Redis message that is not an sc publication");
                    }
                }
            }
            PushKind::Disconnection if up.swap(false, Ordering::Relaxed) => {
                tracing::warn!(redis = %queue.shard, "lost the connection to Redis; reconnecting (publishes fail until it is back)");
            }
            _ => {}
        }
        queue.release(cost);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_events_are_read_from_every_node_and_checked() {
        let node = "00000000000000aa";
        let frame = crate::broker::presence::encode_event("room", &[], &[], 10).expect("encodes");
        for from in [node, "00000000000000bb"] {
            let payload = format!("{from}P{frame}");
            assert_eq!(
                parse_message("sc:", node, b"sc:#room", payload.as_bytes()),
                Ok(Incoming::PresenceEvent {
                    channel: "room",
                    frame: frame.as_str()
                })
            );
        }
        let other = crate::broker::presence::encode_event("hall", &[], &[], 10).expect("encodes");
        for bad in [
            format!("{node}P{other}"),
            format!(
                r##"{node}P{{"event":"#presence","data":{{"channel":"room","joins":[],"leaves":[],"x":1}}}}"##
            ),
            format!(
                r##"{node}P{{"event":"#publish","data":{{"channel":"room","joins":[],"leaves":[]}}}}"##
            ),
        ] {
            assert!(
                parse_message("sc:", node, b"sc:#room", bad.as_bytes()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn only_our_prefix_and_exact_publish_frames_are_accepted() {
        let node = "00000000000000aa";
        let other = "00000000000000bb";
        let frame = Publication::new("room", Some(serde_json::json!({"a": 1})))
            .expect("encodes")
            .frame;
        let payload = format!("{other}{}", frame.as_str());
        assert_eq!(
            parse_message("sc:", node, b"sc:#room", payload.as_bytes()),
            Ok(Incoming::Publication {
                channel: "room",
                frame: frame.as_str()
            })
        );
        let no_data = Publication::new("room", None).expect("encodes").frame;
        assert!(parse_message(
            "sc:",
            node,
            b"sc:#room",
            format!("{other}{}", no_data.as_str()).as_bytes()
        )
        .is_ok());
        // `sc:` and `sc:app2:` never read each other's channels, whatever the channel name.
        assert!(parse_message("sc:", node, b"sc:app2:#room", payload.as_bytes()).is_err());
        assert!(parse_message("sc:app2:", node, b"sc:#app2:room", payload.as_bytes()).is_err());
        assert!(parse_message("sc:", node, b"sc:room", payload.as_bytes()).is_err());
        // A channel name may hold the separator itself: only the first one ends the prefix.
        let hashed = Publication::new("a#b", None).expect("encodes").frame;
        let hashed = format!("{other}{}", hashed.as_str());
        assert!(parse_message("sc:", node, b"sc:#a#b", hashed.as_bytes()).is_ok());
        // Our own echo.
        let own = format!("{node}{}", frame.as_str());
        assert_eq!(
            parse_message("sc:", node, b"sc:#room", own.as_bytes()),
            Ok(Incoming::Echo)
        );
        // Anything that merely starts like a publication is refused: a repeated `event` (which
        // a client reads as the last one), extra fields, another channel, no node id, no JSON.
        for bad in [
            r##"{"event":"#publish","event":"#kickOut","data":{"channel":"room"}}"##,
            r##"{"event":"#publish","data":{"channel":"room"},"cid":1}"##,
            r##"{"event":"#publish","data":{"channel":"room","data":1,"x":2}}"##,
            r##"{"event":"#publish","data":{"channel":"other","data":1}}"##,
            r##"{"event":"#setAuthToken","data":{"channel":"room","data":1}}"##,
            r##"{"event":"#publish","data":{"channel":"room","data":1}} trailing"##,
            r##"{"event":"#publish""##,
        ] {
            let payload = format!("{other}{bad}");
            assert!(
                parse_message("sc:", node, b"sc:#room", payload.as_bytes()).is_err(),
                "{bad}"
            );
        }
        assert!(parse_message("sc:", node, b"sc:#room", frame.as_bytes()).is_err());
        assert!(parse_message("sc:", node, b"sc:#room", b"short").is_err());
        assert!(parse_message("sc:", node, b"sc:#room", &[0xff; 40]).is_err());
    }

    #[test]
    fn positioned_frames_are_delivered_from_every_node_this_one_included() {
        let node = "00000000000000aa";
        let position = Position {
            offset: 7,
            epoch: "e1".into(),
        };
        for data in [
            None,
            Some(serde_json::json!("text")),
            Some(serde_json::json!(1)),
        ] {
            let frame = Publication::new("room", data)
                .and_then(|p| p.with_position(position.clone()))
                .expect("encodes")
                .frame;
            for from in [node, "00000000000000bb"] {
                let payload = format!("{from}{}", frame.as_str());
                assert_eq!(
                    parse_message("sc:", node, b"sc:#room", payload.as_bytes()),
                    Ok(Incoming::Positioned {
                        channel: "room",
                        frame: frame.as_str(),
                        position: position.clone(),
                    })
                );
            }
        }
        // An own plain echo whose data is a string ends like a positioned frame: still an echo.
        let plain = Publication::new("room", Some(serde_json::json!("x\"}}")))
            .expect("encodes")
            .frame;
        let own = format!("{node}{}", plain.as_str());
        assert_eq!(
            parse_message("sc:", node, b"sc:#room", own.as_bytes()),
            Ok(Incoming::Echo)
        );
        for half in [
            r##"{"event":"#publish","data":{"channel":"room","data":1,"offset":7}}"##,
            r##"{"event":"#publish","data":{"channel":"room","data":1,"epoch":"e"}}"##,
            r##"{"event":"#publish","data":{"channel":"room","offset":-1,"epoch":"e"}}"##,
        ] {
            let payload = format!("00000000000000bb{half}");
            assert!(
                parse_message("sc:", node, b"sc:#room", payload.as_bytes()).is_err(),
                "{half}"
            );
        }
    }

    #[test]
    fn prefixes_with_the_separator_are_refused() {
        assert!(crate::broker::validate_redis_prefix("sc:").is_ok());
        assert!(crate::broker::validate_redis_prefix("sc:app2:").is_ok());
        let err = crate::broker::validate_redis_prefix("sc#2:").expect_err("has a #");
        assert!(err.contains("redis_prefix") && err.contains('#'), "{err}");
        assert!(crate::broker::validate_redis_prefix("sc\n").is_err());
        assert!(crate::broker::validate_redis_prefix("sc\u{0}").is_err());
    }

    fn message(bytes: usize) -> PushInfo {
        PushInfo {
            kind: PushKind::Message,
            data: vec![
                RedisValue::BulkString(b"sc:#room".to_vec()),
                RedisValue::BulkString(vec![b'x'; bytes]),
            ],
        }
    }

    #[test]
    fn the_received_queue_stays_within_its_byte_bound_and_passes_notices() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let queue = PushQueue::new(10_000, "test".into());
        for _ in 0..100 {
            queue.offer(message(1000), &tx);
        }
        // 1072 bytes each (1000 + the channel + 64): 9 fit into 10 000.
        let cost = push_cost(&message(1000));
        assert_eq!(cost, 1072);
        assert_eq!(queue.bytes.load(Ordering::Relaxed), 9 * cost);
        assert_eq!(queue.dropped.load(Ordering::Relaxed), 91);
        // A disconnection notice is never dropped, even when full.
        queue.offer(
            PushInfo {
                kind: PushKind::Disconnection,
                data: vec![],
            },
            &tx,
        );
        let mut received = Vec::new();
        while let Ok(push) = rx.try_recv() {
            received.push(push.kind);
        }
        assert_eq!(received.len(), 10);
        assert_eq!(received.last(), Some(&PushKind::Disconnection));
        // Delivered messages make room again; a message always fits an empty queue.
        queue.release(9 * cost);
        queue.offer(message(50_000), &tx);
        assert_eq!(rx.try_recv().map(|p| p.kind), Ok(PushKind::Message));
        assert_eq!(queue.dropped.load(Ordering::Relaxed), 91);
    }
}
