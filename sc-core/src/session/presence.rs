//! The reserved procedure `#presence`: a client asks who is subscribed to a channel with
//! presence, with data `{"channel": name}`, and gets `{"count", "users", "entries"}` (and
//! `"cut": true` when `entries` stops at `presence_max_entries`). Only sockets the channel's
//! policy allows may ask (by default its subscribers); anyone else gets `InvalidActionError`.

use serde::Serialize;
use serde_json::Value;

use super::dispatch::reply;
use super::procedures::channel_field;
use super::Context;
use crate::broker::{PresenceEntry, PresenceStats};
use crate::protocol::{self, ScError};
use crate::pubsub::presence::Presence;
use crate::socket::Socket;

#[derive(Serialize)]
struct Answer<'a> {
    count: usize,
    users: usize,
    entries: &'a [PresenceEntry],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    cut: bool,
}

pub(super) async fn presence(
    ctx: &Context,
    socket: &Socket,
    data: Option<Value>,
    cid: Option<u64>,
) {
    // A transmit asks nothing: there is nowhere to answer.
    let Some(cid) = cid else { return };
    let frame = match entries(ctx, socket, &data).await {
        Ok(entries) => {
            let stats = PresenceStats::of(&entries);
            let max = ctx.pubsub.presence.max_entries;
            protocol::encode_response(
                cid,
                Some(&Answer {
                    count: stats.sockets,
                    users: stats.users,
                    entries: &entries[..entries.len().min(max)],
                    cut: entries.len() > max,
                }),
            )
        }
        Err(e) => return reply(socket, Some(cid), Err(e)),
    };
    match frame {
        Ok(frame) => {
            let _ = socket.push(frame.into());
        }
        Err(e) => {
            tracing::error!(error = %e, "could not encode a #presence answer");
            reply(socket, Some(cid), Err(ScError::internal()));
        }
    }
}

/// The channel's entries, if the socket may ask for them.
async fn entries(
    ctx: &Context,
    socket: &Socket,
    data: &Option<Value>,
) -> Result<Vec<PresenceEntry>, ScError> {
    let (channel, _) = channel_field(ctx, data, "Presence")?;
    let Some(policy) = ctx.pubsub.presence.of(&channel) else {
        return Err(ScError::invalid_action(format!(
            "Failed to get the presence of the {channel} channel - the channel has no presence"
        )));
    };
    if !Presence::may_query(&policy, socket, &channel) {
        let who = match policy.query_access() {
            crate::app::presence::PresenceAccess::Authenticated => "authenticated sockets",
            _ => "its subscribers",
        };
        return Err(ScError::invalid_action(format!(
            "Failed to get the presence of the {channel} channel - Socket {} may not ask: only {who} may",
            socket.id()
        )));
    }
    ctx.pubsub.engine.presence(&channel).await.map_err(|e| {
        ScError::broker(format!(
            "Failed to get the presence of the {channel} channel - {e}"
        ))
    })
}
