//! Channel contracts enforced for a client's `#subscribe` and `#publish` (see
//! [`crate::app::contract`]): the name's length, then the declaration of the pattern the name
//! matches (who may, what a publication must be, a guard that may rewrite it). Names no pattern
//! declares are left to `allow_client_publish_undeclared` and middleware, as in SocketCluster.

use std::sync::Arc;

use serde_json::Value;

use super::dispatch::parts;
use super::Context;
use crate::app::contract::Access;
use crate::app::handler::Request;
use crate::app::middleware::{Decision, MiddlewareKind};
use crate::protocol::ScError;
use crate::socket::Socket;

/// Refuses a channel name over `max_channel_name` bytes.
pub(super) fn check_name(ctx: &Context, channel: &str) -> Result<(), ScError> {
    let max = ctx.shared.config.max_channel_name;
    if channel.len() > max {
        return Err(ScError::invalid_action(format!(
            "Channel name is {} bytes long; the server accepts at most {max} (max_channel_name)",
            channel.len()
        )));
    }
    Ok(())
}

/// Whether `socket` may subscribe to (`kind` [`MiddlewareKind::Subscribe`]) or publish on
/// ([`MiddlewareKind::PublishIn`]) `channel` under its declaration; the data to go on with (a
/// publish guard may have replaced it).
pub(super) async fn admit(
    ctx: &Context,
    socket: &Socket,
    kind: MiddlewareKind,
    channel: &Arc<str>,
    data: Option<Value>,
    expired: Option<ScError>,
) -> Result<Option<Value>, ScError> {
    let publishing = kind == MiddlewareKind::PublishIn;
    let Some(declared) = ctx.app.declared(channel) else {
        if publishing && !ctx.shared.config.allow_client_publish_undeclared {
            return Err(refused(
                kind,
                channel,
                "no channel pattern declares it, and allow_client_publish_undeclared is off",
            ));
        }
        return Ok(data);
    };
    let contract = &declared.contract;
    let access = if publishing {
        &contract.publish
    } else {
        &contract.subscribe
    };
    let what = if publishing { "publish" } else { "subscribe" };
    match access {
        Access::Anyone | Access::Guard(_) => {}
        Access::Authenticated if socket.is_authenticated() => {}
        Access::Authenticated => {
            return Err(refused(
                kind,
                channel,
                &format!(
                    "{} requires an authenticated socket ({what} = authenticated)",
                    declared.pattern
                ),
            ))
        }
        Access::Server => {
            let why = if publishing {
                format!(
                    "only the server publishes on {} (publish = server)",
                    declared.pattern
                )
            } else {
                format!(
                    "no client may subscribe to {} (subscribe = server)",
                    declared.pattern
                )
            };
            return Err(refused(kind, channel, &why));
        }
    }
    // What a client publishes becomes the channel's message type (or is refused), before the
    // guard sees it.
    let data = match (&contract.message, publishing) {
        (Some((type_name, check)), true) => match check(data.as_ref().unwrap_or(&Value::Null)) {
            Ok(message) => Some(message),
            Err(why) => {
                return Err(ScError::invalid_arguments(format!(
                    "Client publish to channel '{channel}' refused: the message is not a {type_name}: {why}"
                )))
            }
        },
        _ => data,
    };
    let Access::Guard(guard) = access else {
        return Ok(data);
    };
    let request = Request {
        parts: parts(socket, kind, None, Some(channel.clone()), expired),
        data: data.clone().into(),
    };
    match (guard.0)(request).await {
        Ok(Decision::Allow) => Ok(data),
        Ok(Decision::Replace(value)) => match (&contract.message, publishing) {
            // A guard's rewrite is held to the same type: subscribers get only messages.
            (Some((type_name, check)), true) => check(&value).map(Some).map_err(|why| {
                tracing::error!(%channel, %why, "a publish guard rewrote the message into something that is not a {type_name}");
                ScError::internal()
            }),
            _ => Ok(Some(value)),
        },
        Ok(Decision::Block(block)) => Err(block.client_error(kind)),
        // An extractor of the guard refused (no token for `Auth<C>`, say): say which channel.
        Err(extraction) => Err(ScError::new(
            extraction.name().to_owned(),
            format!("{}: {}", refusal(kind, channel), extraction.message()),
        )),
    }
}

fn refusal(kind: MiddlewareKind, channel: &str) -> String {
    if kind == MiddlewareKind::PublishIn {
        format!("Client publish to channel '{channel}' refused")
    } else {
        format!("Subscription to channel '{channel}' refused")
    }
}

/// The error a client gets when the declaration refuses its action.
fn refused(kind: MiddlewareKind, channel: &str, why: &str) -> ScError {
    let name = if kind == MiddlewareKind::PublishIn {
        "PublishRefusedError"
    } else {
        "SubscribeRefusedError"
    };
    ScError::new(name, format!("{}: {why}", refusal(kind, channel)))
}
