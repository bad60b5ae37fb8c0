//! The protocol's own procedures: `#handshake`, `#authenticate`, `#subscribe`, `#unsubscribe` and
//! `#publish` (`shared/protocol.md` section 4), with the reference's error replies.

use std::future::{poll_fn, Future};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::contracts::{admit, check_name};
use super::dispatch::{parts, reply};
use super::Context;
use crate::app::handler::Request;
use crate::app::middleware::MiddlewareKind;
use crate::broker::{HistoryPolicy, Position};
use crate::protocol::{self, close, ScError};
use crate::socket::{AuthState, Socket};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HandshakeReply<'a> {
    id: &'a str,
    ping_timeout: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_error: Option<&'a ScError>,
    is_authenticated: bool,
    /// The app's contract hash (typed client contracts): a page built against another contract
    /// tells its user to reload. Clients that do not know it ignore it (the official one does).
    #[serde(skip_serializing_if = "Option::is_none")]
    contract_hash: Option<&'a str>,
}

/// Processes `#handshake`; returns false when the socket was rejected (and is closing).
pub(super) async fn handshake(
    ctx: &Context,
    socket: &Socket,
    cid: u64,
    data: Option<Value>,
) -> bool {
    let server = &ctx.shared;
    let token = data
        .as_ref()
        .and_then(|d| d.get("authToken"))
        .filter(|t| !t.is_null())
        .cloned();
    let auth_error = match token {
        None => None,
        Some(token) => authenticate(ctx, socket, &token).await.err(),
    };

    let req = Request {
        parts: parts(socket, MiddlewareKind::Handshake, None, None, None),
        data: data.into(),
    };
    if ctx.app.middleware.has(MiddlewareKind::Handshake) {
        if let Err(block) = ctx.app.middleware.run(MiddlewareKind::Handshake, req).await {
            let code = block.code().unwrap_or(close::HANDSHAKE_REJECTED);
            let error = block
                .client_error(MiddlewareKind::Handshake)
                .with("statusCode", code);
            let _ = socket.push(protocol::encode_error_response(cid, &error).into());
            socket.disconnect(code, "");
            return false;
        }
    }

    let reply = HandshakeReply {
        id: socket.id(),
        ping_timeout: server.config.ping_timeout.as_millis() as u64,
        auth_error: auth_error.as_ref(),
        is_authenticated: socket.is_authenticated(),
        contract_hash: ctx.app.contract.as_ref().map(|c| c.hash.as_str()),
    };
    match protocol::encode_response(cid, Some(&reply)) {
        Ok(frame) => {
            let _ = socket.push(frame.into());
        }
        Err(e) => {
            tracing::error!(error = %e, "could not encode the handshake reply");
            socket.close_now(close::HANDSHAKE_REJECTED, "");
            return false;
        }
    }
    if auth_error.as_ref().is_some_and(is_bad_token) {
        let _ = socket.push(Utf8Bytes::from_static(r##"{"event":"#removeAuthToken"}"##));
    }
    server.register(socket);
    socket.handshake_done();
    true
}

fn is_bad_token(e: &ScError) -> bool {
    e.get("isBadToken") == Some(&Value::Bool(true))
}

/// `#authenticate`: answers `{isAuthenticated, authError}`; a bad token is an error reply and
/// `#removeAuthToken`.
pub(super) async fn authenticate_request(
    ctx: &Context,
    socket: &Socket,
    data: Option<Value>,
    cid: Option<u64>,
) {
    let Some(cid) = cid else {
        socket.close_now(close::HANDSHAKE_REJECTED, "");
        return;
    };
    let token = data.unwrap_or(Value::Null);
    let frame = match Box::pin(authenticate(ctx, socket, &token)).await {
        Ok(()) => protocol::encode_raw_response(
            cid,
            serde_json::value::RawValue::from_string(
                r#"{"isAuthenticated":true,"authError":null}"#.into(),
            )
            .ok()
            .as_deref(),
        ),
        Err(e) if is_bad_token(&e) => {
            let frame = protocol::encode_error_response(cid, &e);
            let _ = socket.push(frame.into());
            let _ = socket.push(Utf8Bytes::from_static(r##"{"event":"#removeAuthToken"}"##));
            return;
        }
        Err(e) => protocol::encode_response(
            cid,
            Some(&serde_json::json!({"isAuthenticated": false, "authError": e})),
        )
        .unwrap_or_default(),
    };
    let _ = socket.push(frame.into());
}

/// Verifies a token and runs authenticate middleware. On success the socket is authenticated;
/// on failure it is not, and the error is the `authError` the client receives.
async fn authenticate(ctx: &Context, socket: &Socket, token: &Value) -> Result<(), ScError> {
    let server = &ctx.shared;
    let result = match token.as_str() {
        // Key-pair tokens are verified off the runtime's threads, a bounded number at once.
        Some(signed) => server
            .auth
            .verify_bounded(signed)
            .await
            .map_err(ScError::from),
        None => Err(
            ScError::new("AuthTokenInvalidError", "jwt must be a string").with("isBadToken", true),
        ),
    };
    let payload = match result {
        Ok(p) => Arc::new(p),
        Err(e) => {
            socket.forget_auth();
            return Err(e);
        }
    };
    if ctx.app.middleware.has(MiddlewareKind::Authenticate) {
        let mut p = parts(socket, MiddlewareKind::Authenticate, None, None, None);
        p.auth = Some(payload.clone());
        let req = Request {
            parts: p,
            data: Some(token.clone()).into(),
        };
        if let Err(block) = ctx
            .app
            .middleware
            .run(MiddlewareKind::Authenticate, req)
            .await
        {
            socket.forget_auth();
            return Err(block.client_error(MiddlewareKind::Authenticate));
        }
    }
    let signed: Arc<str> = token.as_str().unwrap_or_default().into();
    socket.set_auth_state(Some(AuthState { signed, payload }));
    Ok(())
}

/// The `{"channel": name, ...}` of a `#subscribe` or `#publish` (`what`), its name within
/// `max_channel_name`.
pub(super) fn channel_field<'d>(
    ctx: &Context,
    data: &'d Option<Value>,
    what: &str,
) -> Result<(Arc<str>, &'d Map<String, Value>), ScError> {
    let malformatted = || ScError::invalid_action(format!("{what} channel name was malformatted"));
    let obj = data
        .as_ref()
        .and_then(Value::as_object)
        .ok_or_else(malformatted)?;
    let channel = obj
        .get("channel")
        .and_then(Value::as_str)
        .ok_or_else(malformatted)?;
    check_name(ctx, channel)?;
    Ok((channel.into(), obj))
}

pub(super) async fn subscribe(
    ctx: &Context,
    socket: &Socket,
    data: Option<Value>,
    cid: Option<u64>,
) {
    let expired = socket.check_expiry();
    let (channel, obj) = match channel_field(ctx, &data, "Subscribe") {
        Ok(field) => field,
        Err(e) => return reply(socket, cid, Err(e)),
    };
    let sub_data = obj.get("data").cloned();
    let wait_for_auth = obj.get("waitForAuth") == Some(&Value::Bool(true));

    if cid.is_some() {
        let limit = ctx.shared.config.socket_channel_limit;
        // As in the reference, the limit is checked before the already-subscribed check.
        if ctx.shared.channels.count(socket) >= limit {
            reply(
                socket,
                cid,
                Err(ScError::broker(format!(
                    "Failed to subscribe socket to the {channel} channel - InvalidActionError: Socket {} tried to exceed the channel subscription limit of {limit}",
                    socket.id()
                ))),
            );
            return;
        }
    }

    // The channel's declaration first, then the app-wide middleware.
    let sub_data = match admit(
        ctx,
        socket,
        MiddlewareKind::Subscribe,
        &channel,
        sub_data,
        expired.clone(),
    )
    .await
    {
        Ok(data) => data,
        Err(e) => {
            reply(socket, cid, Err(e));
            return;
        }
    };
    let mut p = parts(
        socket,
        MiddlewareKind::Subscribe,
        None,
        Some(channel.clone()),
        expired,
    );
    p.wait_for_auth = wait_for_auth;
    if let Err(block) = ctx
        .app
        .middleware
        .run(
            MiddlewareKind::Subscribe,
            Request {
                parts: p,
                data: sub_data.into(),
            },
        )
        .await
    {
        reply(
            socket,
            cid,
            Err(block.client_error(MiddlewareKind::Subscribe)),
        );
        return;
    }
    // A #subscribe without a cid passes middleware but subscribes nothing (v20 reference).
    let Some(cid) = cid else {
        return;
    };
    if let Some(policy) = ctx.pubsub.history.of(&channel) {
        let since = recover_field(obj);
        return subscribe_with_history(ctx, socket, cid, channel, policy, since).await;
    }
    let cid = Some(cid);
    let result = ctx
        .pubsub
        .subscribe_socket(socket, channel.clone())
        .await
        .map_err(|e| {
            ScError::broker(format!(
                "Failed to subscribe socket to the {channel} channel - {e}"
            ))
        });
    reply(socket, cid, result);
}

/// The position a `#subscribe` recovers from: its `recover`, else its subscription data's
/// `recover` (what the official client can send: it resends a subscription's `data` on every
/// resubscribe). Anything that is not `{offset, epoch}` is no recovery.
fn recover_field(obj: &Map<String, Value>) -> Option<Position> {
    let field = obj
        .get("recover")
        .or_else(|| obj.get("data").and_then(|d| d.get("recover")))?;
    Position::deserialize(field).ok()
}

/// A `#subscribe` on a channel with history: the ack carries the channel's top
/// (`{"offset","epoch"}`, and `"recovered"` when a recovery was asked), then come the missed
/// publications and the live ones, each once; when the history cannot cover the gap,
/// `#recoveryFailed` follows the ack and nothing partial is sent.
async fn subscribe_with_history(
    ctx: &Context,
    socket: &Socket,
    cid: u64,
    channel: Arc<str>,
    policy: HistoryPolicy,
    since: Option<Position>,
) {
    let mut recovery = match ctx
        .pubsub
        .subscribe_with_history(socket, channel.clone(), policy, since)
        .await
    {
        Ok(recovery) => recovery,
        Err(e) => {
            let e = ScError::broker(format!(
                "Failed to subscribe socket to the {channel} channel - {e}"
            ));
            return reply(socket, Some(cid), Err(e));
        }
    };
    recovery.settle();
    let mut ack = serde_json::Map::new();
    if let Some(top) = &recovery.top {
        ack.insert("offset".into(), top.offset.into());
        ack.insert("epoch".into(), top.epoch.clone().into());
    }
    if let Some(recovered) = recovery.recovered {
        ack.insert("recovered".into(), recovered.into());
    }
    let ack = (!ack.is_empty()).then_some(Value::Object(ack));
    match protocol::encode_response(cid, ack.as_ref()) {
        Ok(frame) => {
            let _ = socket.push(frame.into());
        }
        Err(e) => tracing::error!(error = %e, "could not encode a #subscribe ack"),
    }
    if recovery.recovered == Some(false) {
        crate::pubsub::recovery::send_recovery_failed(socket, &channel, recovery.top.as_ref());
    }
    recovery.finish(socket);
}

pub(super) fn unsubscribe(ctx: &Context, socket: &Socket, data: Option<Value>, cid: Option<u64>) {
    let Some(channel) = data.as_ref().and_then(Value::as_str) else {
        reply(
            socket,
            cid,
            Err(ScError::invalid_action(
                "Unsubscribe channel name was malformatted",
            )),
        );
        return;
    };
    if let Err(e) = check_name(ctx, channel) {
        reply(socket, cid, Err(e));
        return;
    }
    if ctx.pubsub.unsubscribe_socket(socket, channel) {
        reply(socket, cid, Ok(()));
    } else {
        let message = format!(
            "Failed to unsubscribe socket from the {channel} channel - InvalidActionError: Socket {} tried to unsubscribe from a channel which it is not subscribed to",
            socket.id()
        );
        if cid.is_none() {
            tracing::debug!(socket = %socket.id(), "{message}");
        }
        reply(socket, cid, Err(ScError::broker(message)));
    }
}

pub(super) async fn publish(ctx: &Context, socket: &Socket, data: Option<Value>, cid: Option<u64>) {
    let expired = socket.check_expiry();
    if !ctx.shared.config.allow_client_publish {
        reply(
            socket,
            cid,
            Err(ScError::invalid_action(
                "Client publish feature is disabled",
            )),
        );
        return;
    }
    let (channel, obj) = match channel_field(ctx, &data, "Publish") {
        Ok(field) => field,
        Err(e) => return reply(socket, cid, Err(e)),
    };
    // The channel's declaration (who may publish, the message type, a guard that may rewrite
    // the message) first, then the app-wide middleware.
    let pub_data = match admit(
        ctx,
        socket,
        MiddlewareKind::PublishIn,
        &channel,
        obj.get("data").cloned(),
        expired.clone(),
    )
    .await
    {
        Ok(data) => data,
        Err(e) => {
            reply(socket, cid, Err(e));
            return;
        }
    };
    let req = Request {
        parts: parts(
            socket,
            MiddlewareKind::PublishIn,
            None,
            Some(channel.clone()),
            expired,
        ),
        data: pub_data.into(),
    };
    let pub_data = match ctx.app.middleware.run(MiddlewareKind::PublishIn, req).await {
        Ok(d) => d,
        Err(block) => {
            reply(
                socket,
                cid,
                Err(block.client_error(MiddlewareKind::PublishIn)),
            );
            return;
        }
    };
    if !ctx.pubsub.engine.publish_queued_on_first_poll() {
        let result = ctx.exchange.publish_value(&channel, pub_data).await;
        return publish_answered(socket, &channel, cid, result.map_err(ScError::from));
    }
    let exchange = ctx.exchange.clone();
    let publishing = {
        let channel = channel.clone();
        async move {
            let result = exchange.publish_value(&channel, pub_data).await;
            result.map_err(ScError::from)
        }
    };
    // The first poll queues the publication for the broker, in message order; its answer takes a
    // round trip. It is awaited on a task of its own, so the socket's next message starts now (a
    // socket's publishes would otherwise take a round trip each). Its acknowledgement may then
    // come after the answers to later messages. At most `inbound_queue_limit` wait like that per
    // socket (they are messages still being handled); past it the next one is awaited here, and
    // the socket's later messages wait, so a flood against a slow broker holds no more.
    let mut publishing = Box::pin(publishing);
    match poll_fn(|cx| Poll::Ready(publishing.as_mut().poll(cx))).await {
        Poll::Ready(result) => publish_answered(socket, &channel, cid, result),
        Poll::Pending => {
            let waiting = &socket.0.publishes_waiting;
            if waiting.load(Ordering::Relaxed) as usize >= ctx.shared.config.inbound_queue_limit {
                let result = publishing.await;
                return publish_answered(socket, &channel, cid, result);
            }
            waiting.fetch_add(1, Ordering::Relaxed);
            let socket = socket.clone();
            tokio::spawn(async move {
                let result = publishing.await;
                socket.0.publishes_waiting.fetch_sub(1, Ordering::Relaxed);
                publish_answered(&socket, &channel, cid, result);
            });
        }
    }
}

/// Answers a client's publish with the engine's answer.
fn publish_answered(socket: &Socket, channel: &str, cid: Option<u64>, result: Result<(), ScError>) {
    if let Err(e) = &result {
        tracing::warn!(socket = %socket.id(), %channel, error = %e, "client publish failed");
    }
    reply(socket, cid, result);
}
