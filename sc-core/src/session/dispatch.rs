//! One inbound message: inbound-raw middleware, then each packet to its procedure (`#...`) or to
//! the app's handler, in order; and the publish-out middleware the writer runs per delivery.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use futures_util::FutureExt;
use serde_json::Value;

use super::inbox::InboundMessage;
use super::procedures::{authenticate_request, publish, subscribe, unsubscribe};
use super::Context;
use crate::app::handler::{Origin, Parts, Reply, Request};
use crate::app::middleware::MiddlewareKind;
use crate::broker::Publication;
use crate::protocol::{self, close, Packet, Payload, RawEvent, ScError};
use crate::socket::Socket;

/// The parts of an action of `socket`.
pub(super) fn parts(
    socket: &Socket,
    kind: MiddlewareKind,
    event: Option<Box<str>>,
    channel: Option<Arc<str>>,
    expired: Option<ScError>,
) -> Parts {
    Parts {
        origin: Origin::Socket(socket.clone()),
        kind,
        event,
        channel,
        auth: socket.auth_token(),
        auth_token_expired: expired.map(Box::new),
        wait_for_auth: false,
    }
}

/// Runs one inbound message through inbound-raw middleware and its packets' handlers, in order.
pub(super) async fn dispatch(ctx: &Context, socket: &Socket, message: InboundMessage) {
    if let Some(raw) = message.raw {
        let req = Request {
            parts: parts(socket, MiddlewareKind::InboundRaw, None, None, None),
            data: Some(Value::String(raw)).into(),
        };
        if let Err(block) = Box::pin(ctx.app.middleware.run(MiddlewareKind::InboundRaw, req)).await
        {
            tracing::debug!(socket = %socket.id(), %block, "inbound message dropped by middleware");
            return;
        }
    }
    if let Some(RawEvent { event, data, cid }) = message.event {
        // The fast path's app event: its payload stays text until something asks for a tree.
        call_handler(ctx, socket, event, data.into(), cid).await;
        return;
    }
    for packet in message.packets {
        if let Packet::Event { event, data, cid } = packet {
            handle_event(ctx, socket, event, data, cid).await;
        }
        if !socket.is_open() {
            return;
        }
    }
}

/// Answers a call (nothing without a cid) with success or an error.
pub(super) fn reply(socket: &Socket, cid: Option<u64>, result: Result<(), ScError>) {
    let Some(cid) = cid else { return };
    let frame = match result {
        Ok(()) => protocol::encode_raw_response(cid, None),
        Err(e) => protocol::encode_error_response(cid, &e),
    };
    let _ = socket.push(frame.into());
}

async fn handle_event(
    ctx: &Context,
    socket: &Socket,
    event: String,
    data: Option<Value>,
    cid: Option<u64>,
) {
    match event.as_str() {
        "#handshake" => match cid {
            Some(_) => reply(
                socket,
                cid,
                Err(ScError::invalid_action(
                    "The socket has already completed its handshake",
                )),
            ),
            None => {
                socket.close_now(close::HANDSHAKE_REJECTED, "");
            }
        },
        "#authenticate" => Box::pin(authenticate_request(ctx, socket, data, cid)).await,
        "#removeAuthToken" => socket.forget_auth(),
        // Boxed, like authentication above: their state would otherwise make every message's
        // dispatch future (allocated and moved per message) as large as the largest of them.
        "#subscribe" => Box::pin(subscribe(ctx, socket, data, cid)).await,
        "#unsubscribe" => unsubscribe(ctx, socket, data, cid),
        "#publish" => Box::pin(publish(ctx, socket, data, cid)).await,
        "#presence" => Box::pin(super::presence::presence(ctx, socket, data, cid)).await,
        _ => call_handler(ctx, socket, event, data.into(), cid).await,
    }
}

async fn call_handler(
    ctx: &Context,
    socket: &Socket,
    event: String,
    data: Payload,
    cid: Option<u64>,
) {
    let expired = socket.check_expiry();
    let kind = match cid {
        Some(_) => MiddlewareKind::Invoke,
        None => MiddlewareKind::Transmit,
    };
    let route = ctx.app.route(&event);
    // The decoded name, moved (its allocation is exact: no copy). Not the route's shared
    // `Arc<str>`: every socket's messages would count references on that one cache line from
    // every thread (2-3% of the server's samples on that one instruction in `sc bench rpc`; about
    // 5% less CPU per ack without it, side by side).
    let p = parts(socket, kind, Some(event.into_boxed_str()), None, expired);
    // No middleware of this kind (the common case): no copy of the request, no middleware
    // future in every message's dispatch state.
    let data = if ctx.app.middleware.has(kind) {
        let request = Request {
            parts: p.clone(),
            data,
        };
        match Box::pin(ctx.app.middleware.run(kind, request)).await {
            Ok(d) => d.into(),
            Err(block) => {
                reply(socket, cid, Err(block.client_error(kind)));
                return;
            }
        }
    } else {
        data
    };
    let Some(route) = route else {
        let event = p.event().unwrap_or_default();
        match cid {
            Some(_) => reply(
                socket,
                cid,
                Err(ScError::new(
                    "UnhandledEventError",
                    format!("No handler for event '{event}'"),
                )),
            ),
            None => tracing::debug!(socket = %socket.id(), %event, "transmit with no handler"),
        }
        return;
    };
    let event = &*route.name;
    let fut = (route.handler)(Request { parts: p, data });
    let outcome = match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(Ok(reply)) => reply,
        Ok(Err(extraction)) => Reply::Error(extraction),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(socket = %socket.id(), %event, source = %route.source, panic = %what, "handler panicked");
            if ctx.shared.exit_on_panic {
                tracing::error!(
                    "crash_worker_on_error is set: this worker exits and the master replaces it"
                );
                ctx.shared.request_exit();
            }
            Reply::Error(ScError::internal())
        }
    };
    match (cid, outcome) {
        (Some(cid), Reply::Data(d)) => {
            let _ = socket.push(protocol::encode_raw_response(cid, d.as_deref()).into());
        }
        (Some(cid), Reply::Error(e)) => {
            let _ = socket.push(protocol::encode_error_response(cid, &e).into());
        }
        (None, Reply::Error(e)) => {
            tracing::debug!(socket = %socket.id(), %event, error = %e, "transmit handler failed");
        }
        (None, Reply::Data(_)) => {}
    }
}

/// The socket's publish-out task: each publication through the middleware, in order, then into
/// the outbox; ends when the socket closes (dropping its handle on the socket).
pub(super) async fn publish_out_loop(
    mut publications: tokio::sync::mpsc::UnboundedReceiver<Arc<Publication>>,
    socket: Socket,
    ctx: Arc<Context>,
) {
    let closed = socket.0.close.wait();
    tokio::pin!(closed);
    loop {
        let publication = tokio::select! {
            _ = &mut closed => break,
            p = publications.recv() => match p {
                Some(p) => p,
                None => break,
            },
        };
        let frame = publish_out(&ctx, &socket, &publication).await;
        // Reserved when it was delivered to this task; the frame is counted again when queued.
        socket
            .0
            .out
            .release(crate::socket::frame_cost(publication.frame.len()));
        if let Some(frame) = frame {
            let _ = socket.push(frame);
        }
    }
}

/// Publish-out middleware for one delivery to `socket`: the frame to write, or `None` when the
/// middleware blocked it.
async fn publish_out(
    ctx: &Context,
    socket: &Socket,
    publication: &Publication,
) -> Option<Utf8Bytes> {
    let req = Request {
        parts: parts(
            socket,
            MiddlewareKind::PublishOut,
            None,
            Some(publication.channel.clone()),
            None,
        ),
        data: publication.data().cloned().into(),
    };
    match ctx
        .app
        .middleware
        .run(MiddlewareKind::PublishOut, req)
        .await
    {
        Ok(data) if data.as_ref() == publication.data() => Some(publication.frame.clone()),
        Ok(data) => match protocol::encode_publish(&publication.channel, data.as_ref()) {
            Ok(frame) => Some(frame.into()),
            Err(e) => {
                tracing::error!(error = %e, "publish-out data is not JSON");
                None
            }
        },
        Err(block) => {
            tracing::debug!(socket = %socket.id(), channel = %publication.channel, %block, "publishOut blocked");
            None
        }
    }
}
