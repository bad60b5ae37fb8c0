//! Channel subscriptions (the official client's `_channelMap`): which channels the client wants,
//! whether the server acknowledged each on this connection, the `#subscribe` in flight, the
//! streams of its [`super::super::Subscription`] handles and the `subscribe()` calls waiting for
//! an ack. Also the server's `#publish` deliveries and `#kickOut`s. Owns the channel table.

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::super::errors::InvokeError;
use super::calls::{bad_connection, Pending};
use super::codec::{self, ScError};
use super::{emit, ClientEvent, Phase, State};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChannelState {
    Pending,
    Subscribed,
}

/// A channel the client wants to be subscribed to (official `_channelMap` entry).
pub(super) struct Channel {
    state: ChannelState,
    /// Insertion order, the tie-break of `priority` when resubscribing.
    seq: u64,
    wait_for_auth: bool,
    data: Option<Value>,
    priority: i32,
    /// Call id of the `#subscribe` in flight (only one per channel).
    in_flight: Option<u64>,
    /// One sender per live [`super::super::Subscription`] handle, by handle id.
    listeners: Vec<(u64, mpsc::UnboundedSender<Value>)>,
    /// `subscribe()` calls waiting for the server's ack, by handle id.
    waiters: Vec<(u64, oneshot::Sender<Result<(), InvokeError>>)>,
}

/// Options of a new channel entry.
pub(crate) struct ChannelOptions {
    pub(crate) wait_for_auth: bool,
    pub(crate) data: Option<Value>,
    pub(crate) priority: i32,
}

/// What a new `subscribe()` call waits for.
pub(crate) enum SubscribeStart {
    /// The channel is already subscribed.
    Ready,
    /// Wait for the ack (or failure).
    Wait(oneshot::Receiver<Result<(), InvokeError>>),
}

impl State {
    /// Names of the channels in the given states.
    pub(crate) fn subscriptions(&self, include_pending: bool) -> Vec<String> {
        let mut list: Vec<(&String, &Channel)> = self
            .channels
            .iter()
            .filter(|(_, c)| include_pending || c.state == ChannelState::Subscribed)
            .collect();
        list.sort_by_key(|(_, c)| c.seq);
        list.into_iter().map(|(n, _)| n.clone()).collect()
    }

    pub(crate) fn is_subscribed(&self, channel: &str, include_pending: bool) -> bool {
        self.channels
            .get(channel)
            .is_some_and(|c| include_pending || c.state == ChannelState::Subscribed)
    }

    /// Adds a subscription handle `sub` to `name` (creating the channel, pending, if needed)
    /// and tries to subscribe.
    pub(crate) fn add_subscription(
        &mut self,
        name: &str,
        sub: u64,
        tx: mpsc::UnboundedSender<Value>,
        options: ChannelOptions,
    ) -> SubscribeStart {
        if !self.channels.contains_key(name) {
            self.channel_seq += 1;
            self.channels.insert(
                name.to_owned(),
                Channel {
                    state: ChannelState::Pending,
                    seq: self.channel_seq,
                    wait_for_auth: options.wait_for_auth,
                    data: options.data,
                    priority: options.priority,
                    in_flight: None,
                    listeners: Vec::new(),
                    waiters: Vec::new(),
                },
            );
        }
        let Some(ch) = self.channels.get_mut(name) else {
            return SubscribeStart::Ready;
        };
        ch.listeners.push((sub, tx));
        if ch.state == ChannelState::Subscribed {
            return SubscribeStart::Ready;
        }
        let (wtx, wrx) = oneshot::channel();
        ch.waiters.push((sub, wtx));
        self.try_subscribe(name);
        SubscribeStart::Wait(wrx)
    }

    /// A subscription handle went away: when it was the channel's last, unsubscribe.
    pub(crate) fn remove_subscription(&mut self, name: &str, sub: u64) {
        let Some(ch) = self.channels.get_mut(name) else {
            return;
        };
        ch.listeners.retain(|(id, _)| *id != sub);
        ch.waiters.retain(|(id, _)| *id != sub);
        if ch.listeners.is_empty() {
            self.drop_channel(name, true);
        }
    }

    /// The official `_trySubscribe`: sends `#subscribe` when open, none in flight, and the
    /// auth requirement is met. Subscribe invokes have no timeout.
    fn try_subscribe(&mut self, name: &str) {
        if self.phase != Phase::Open {
            return;
        }
        let authenticated = self.auth.is_authenticated();
        let Some(ch) = self.channels.get(name) else {
            return;
        };
        if ch.in_flight.is_some()
            || ch.state == ChannelState::Subscribed
            || (ch.wait_for_auth && !authenticated)
        {
            return;
        }
        let data = codec::subscribe_data(name, ch.wait_for_auth, ch.data.as_ref());
        let cid = self.next_cid();
        if let Some(ch) = self.channels.get_mut(name) {
            ch.in_flight = Some(cid);
        }
        self.pending.insert(
            cid,
            Pending::Subscribe {
                channel: name.to_owned(),
            },
        );
        self.send(codec::event_frame("#subscribe", Some(&data), Some(cid)));
    }

    /// Subscribes every pending channel, highest priority first, then in creation order.
    pub(super) fn process_pending_subscriptions(&mut self) {
        let mut pending: Vec<(i32, u64, String)> = self
            .channels
            .iter()
            .filter(|(_, c)| c.state == ChannelState::Pending)
            .map(|(n, c)| (c.priority, c.seq, n.clone()))
            .collect();
        pending.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for (_, _, name) in pending {
            self.try_subscribe(&name);
        }
    }

    pub(super) fn on_subscribe_reply(&mut self, name: &str, cid: u64, error: Option<Value>) {
        let authenticated = self.auth.is_authenticated();
        let Some(ch) = self.channels.get_mut(name) else {
            return;
        };
        if ch.in_flight != Some(cid) {
            return;
        }
        ch.in_flight = None;
        match error {
            None => {
                if ch.state != ChannelState::Subscribed {
                    ch.state = ChannelState::Subscribed;
                    emit(
                        &self.events,
                        ClientEvent::Subscribe {
                            channel: name.to_owned(),
                        },
                    );
                }
                for (_, w) in ch.waiters.drain(..) {
                    let _ = w.send(Ok(()));
                }
            }
            Some(error) => {
                let error = ScError::from_wire(&error);
                // Official `_triggerChannelSubscribeFail`: only when the auth requirement is
                // (still) met; otherwise the channel stays pending.
                if !ch.wait_for_auth || authenticated {
                    if let Some(ch) = self.channels.remove(name) {
                        for (_, w) in ch.waiters {
                            let _ = w.send(Err(InvokeError::Remote(error.clone())));
                        }
                    }
                    emit(
                        &self.events,
                        ClientEvent::SubscribeFail {
                            channel: name.to_owned(),
                            error,
                        },
                    );
                }
            }
        }
    }

    /// Removes channel `name` (unsubscribe, last handle dropped, kick-out): its streams end,
    /// its pending `subscribe()` calls fail, an in-flight `#subscribe` is forgotten. With
    /// `notify_server`, `#unsubscribe` (a transmit, no cid, like the official client) is sent
    /// when the server may hold the subscription.
    pub(crate) fn drop_channel(&mut self, name: &str, notify_server: bool) {
        let Some(ch) = self.channels.remove(name) else {
            return;
        };
        if let Some(cid) = ch.in_flight {
            self.pending.remove(&cid);
        }
        let was_subscribed = ch.state == ChannelState::Subscribed;
        if was_subscribed {
            emit(
                &self.events,
                ClientEvent::Unsubscribe {
                    channel: name.to_owned(),
                },
            );
        }
        if notify_server && self.phase == Phase::Open && (was_subscribed || ch.in_flight.is_some())
        {
            self.send(codec::event_frame(
                "#unsubscribe",
                Some(&codec::json_string(name)),
                None,
            ));
        }
        for (_, w) in ch.waiters {
            let _ = w.send(Err(InvokeError::Unsubscribed {
                channel: name.to_owned(),
            }));
        }
    }

    /// The connection is gone: every channel becomes pending again (the next handshake
    /// resubscribes it) and `Unsubscribe` is emitted for those that were subscribed.
    pub(super) fn suspend_channels(&mut self) {
        let mut order: Vec<(u64, String)> = Vec::new();
        for (name, ch) in self.channels.iter_mut() {
            ch.in_flight = None;
            if ch.state == ChannelState::Subscribed {
                ch.state = ChannelState::Pending;
                order.push((ch.seq, name.clone()));
            }
        }
        order.sort();
        for (_, channel) in order {
            emit(&self.events, ClientEvent::Unsubscribe { channel });
        }
    }

    /// Subscribe calls still waiting fail: the client will not reconnect by itself.
    pub(super) fn fail_subscribe_waiters(&mut self, code: u16, reason: &str) {
        for ch in self.channels.values_mut() {
            for (_, w) in ch.waiters.drain(..) {
                let _ = w.send(Err(bad_connection("#subscribe", code, reason)));
            }
        }
    }

    /// `#publish` from the server: the data goes to every handle of that channel. Publications
    /// for channels the client does not want are dropped.
    pub(super) fn on_publish(&mut self, data: Option<Value>) {
        let Some(Value::Object(mut d)) = data else {
            return;
        };
        let Some(Value::String(name)) = d.get("channel") else {
            return;
        };
        let Some(ch) = self.channels.get_mut(name.as_str()) else {
            return;
        };
        let payload = d.remove("data").unwrap_or(Value::Null);
        ch.listeners
            .retain(|(_, tx)| tx.send(payload.clone()).is_ok());
    }

    /// `#kickOut` from the server: the server already dropped the subscription, so the channel
    /// is dropped without telling it.
    pub(super) fn on_kick_out(&mut self, data: Option<Value>) {
        let Some(Value::Object(d)) = data else {
            return;
        };
        let Some(Value::String(name)) = d.get("channel") else {
            return;
        };
        if self.channels.contains_key(name.as_str()) {
            let channel = name.clone();
            emit(
                &self.events,
                ClientEvent::KickOut {
                    channel: channel.clone(),
                    message: d.get("message").cloned(),
                },
            );
            self.drop_channel(&channel, false);
        }
    }
}
