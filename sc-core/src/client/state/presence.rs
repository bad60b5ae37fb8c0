//! `#presence` events from the server (a channel with join/leave events): reported as
//! [`ClientEvent::Presence`] for channels the client has, and handed to `receiver("#presence")`
//! like any transmit.

use serde::Deserialize;
use serde_json::Value;

use super::{emit, State};
use crate::client::codec::PresenceEntry;
use crate::client::ClientEvent;

#[derive(Deserialize)]
struct Event {
    channel: String,
    #[serde(default)]
    joins: Vec<PresenceEntry>,
    #[serde(default)]
    leaves: Vec<PresenceEntry>,
    #[serde(default)]
    cut: bool,
}

impl State {
    pub(super) fn on_presence(&mut self, data: Option<&Value>) {
        let Some(event) = data.and_then(|d| Event::deserialize(d).ok()) else {
            tracing::debug!("ignoring a #presence event of another shape");
            return;
        };
        if !self.channels.contains_key(event.channel.as_str()) {
            return;
        }
        emit(
            &self.events,
            ClientEvent::Presence {
                channel: event.channel,
                joins: event.joins,
                leaves: event.leaves,
                cut: event.cut,
            },
        );
    }
}
