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
    /// On a channel with history, the last (offset, epoch) received: sent as `recover` on every
    /// resubscribe, and publications at or below it (in its epoch) are dropped as duplicates.
    position: Option<(u64, String)>,
    /// How many times what was missed could not be recovered.
    not_recovered: u64,
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

    /// A channel with history: its last position received, and how many times a gap could
    /// not be recovered.
    pub(crate) fn history_of(&self, channel: &str) -> (Option<(u64, String)>, u64) {
        self.channels
            .get(channel)
            .map_or((None, 0), |c| (c.position.clone(), c.not_recovered))
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
                    position: None,
                    not_recovered: 0,
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
        let data = codec::subscribe_data(
            name,
            ch.wait_for_auth,
            ch.data.as_ref(),
            ch.position.as_ref(),
        );
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

    pub(super) fn on_subscribe_reply(
        &mut self,
        name: &str,
        cid: u64,
        data: Option<Value>,
        error: Option<Value>,
    ) {
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
                // On a channel with history the ack says where the channel is: without a
                // recovery (or a failed one) the client continues from there; after a
                // successful one the missed publications follow and move the position.
                let top = data
                    .as_ref()
                    .and_then(Value::as_object)
                    .and_then(position_of);
                let recovered = data
                    .as_ref()
                    .and_then(|d| d.get("recovered"))
                    .and_then(Value::as_bool);
                if let Some(top) = top {
                    if recovered != Some(true) {
                        ch.position = Some(top);
                    }
                }
                if recovered == Some(false) {
                    ch.not_recovered += 1;
                    emit(
                        &self.events,
                        ClientEvent::NotRecovered {
                            channel: name.to_owned(),
                        },
                    );
                }
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
        if let Some((offset, epoch)) = position_of(&d) {
            if let Some((last, last_epoch)) = &ch.position {
                if *last_epoch == epoch && offset <= *last {
                    return;
                }
                // The history was lost (a broker restarted) and the new epoch's first
                // publications went by: nobody can tell the app what it missed.
                if *last_epoch != epoch && offset > 1 {
                    ch.not_recovered += 1;
                    emit(
                        &self.events,
                        ClientEvent::NotRecovered {
                            channel: name.clone(),
                        },
                    );
                }
            }
            ch.position = Some((offset, epoch));
        }
        let payload = d.remove("data").unwrap_or(Value::Null);
        ch.listeners
            .retain(|(_, tx)| tx.send(payload.clone()).is_ok());
    }

    /// `#recoveryFailed` from the server: publications before the one after its position will
    /// not come (a live gap: lost between a broker and the server, or dropped from a full
    /// queue); the client reports it and continues from there. After a `#subscribe` ack with
    /// `recovered:false` it repeats the ack's position, already reported.
    pub(super) fn on_recovery_failed(&mut self, data: Option<&Value>) {
        let Some(d) = data.and_then(Value::as_object) else {
            return;
        };
        let Some(Value::String(name)) = d.get("channel") else {
            return;
        };
        let Some(ch) = self.channels.get_mut(name.as_str()) else {
            return;
        };
        let at = position_of(d);
        if at.is_some() && at == ch.position {
            return;
        }
        if at.is_some() {
            ch.position = at;
        }
        ch.not_recovered += 1;
        emit(
            &self.events,
            ClientEvent::NotRecovered {
                channel: name.clone(),
            },
        );
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

/// The `{"offset","epoch"}` of a positioned `#publish` or a `#subscribe` ack.
fn position_of(data: &serde_json::Map<String, Value>) -> Option<(u64, String)> {
    let offset = data.get("offset")?.as_u64()?;
    let epoch = data.get("epoch")?.as_str()?;
    Some((offset, epoch.to_owned()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tokio::sync::mpsc::error::TryRecvError;

    use super::super::testkit::{options, status, Rig, Sub};
    use super::*;

    /// An open client subscribed to `names` (acknowledged), wire and events read back.
    fn subscribed(names: &[&str]) -> (Rig, Vec<Sub>) {
        let mut rig = Rig::open();
        let subs: Vec<Sub> = names.iter().map(|n| rig.subscribe(n)).collect();
        let acks: Vec<String> = (0..names.len())
            .map(|i| format!(r#"{{"rid":{}}}"#, i + 2))
            .collect();
        rig.feed(&format!("[{}]", acks.join(",")));
        rig.sent();
        rig.events();
        (rig, subs)
    }

    fn ack_of(sub: &mut Sub) -> Option<Result<(), InvokeError>> {
        match &mut sub.start {
            SubscribeStart::Ready => Some(Ok(())),
            SubscribeStart::Wait(rx) => rx.try_recv().ok(),
        }
    }

    fn unsubscribe_event(channel: &str) -> ClientEvent {
        ClientEvent::Unsubscribe {
            channel: channel.to_owned(),
        }
    }

    #[test]
    fn subscribe_waits_for_the_handshake_then_for_the_ack() {
        let mut rig = Rig::connecting(options());
        rig.sent();
        let mut sub = rig.subscribe("room");
        assert!(rig.sent().is_empty(), "not before the handshake");
        rig.reply_handshake(status("s", 1000));
        assert_eq!(
            rig.sent(),
            [r##"{"event":"#subscribe","data":{"channel":"room"},"cid":2}"##]
        );
        assert!(ack_of(&mut sub).is_none(), "waiting for the ack");
        assert!(!rig.st.is_subscribed("room", false));
        assert_eq!(rig.st.subscriptions(true), ["room"]);
        rig.events();

        rig.feed(r#"{"rid":2}"#);
        assert!(matches!(ack_of(&mut sub), Some(Ok(()))));
        assert!(rig.st.is_subscribed("room", false));
        assert_eq!(rig.st.subscriptions(false), ["room"]);
        assert_eq!(
            rig.events(),
            [ClientEvent::Subscribe {
                channel: "room".to_owned()
            }]
        );
        assert_eq!(rig.st.awaiting_responses(), 0);
    }

    #[test]
    fn a_second_handle_on_a_subscribed_channel_is_ready_at_once() {
        let (mut rig, _subs) = subscribed(&["room"]);
        let second = rig.subscribe("room");
        assert!(matches!(second.start, SubscribeStart::Ready));
        assert!(rig.sent().is_empty());
    }

    #[test]
    fn one_subscribe_in_flight_per_channel() {
        let mut rig = Rig::open();
        let mut first = rig.subscribe("room");
        let mut second = rig.subscribe("room");
        assert_eq!(rig.sent().len(), 1);
        rig.feed(r#"{"rid":2}"#);
        assert!(matches!(ack_of(&mut first), Some(Ok(()))));
        assert!(matches!(ack_of(&mut second), Some(Ok(()))));
    }

    #[test]
    fn subscribe_options_go_on_the_wire_but_priority_does_not() {
        let mut rig = Rig::open();
        rig.subscribe_with("s", false, Some(json!({"hint": 1})), 7);
        rig.subscribe_with("falsy", false, Some(json!("")), 0);
        assert_eq!(
            rig.sent(),
            [
                r##"{"event":"#subscribe","data":{"channel":"s","data":{"hint":1}},"cid":2}"##,
                r##"{"event":"#subscribe","data":{"channel":"falsy"},"cid":3}"##,
            ]
        );
    }

    #[test]
    fn wait_for_auth_channels_subscribe_once_authenticated() {
        let mut rig = Rig::open();
        rig.subscribe_with("secret", true, None, 0);
        rig.subscribe("public");
        assert_eq!(
            rig.sent(),
            [r##"{"event":"#subscribe","data":{"channel":"public"},"cid":2}"##]
        );
        rig.feed(r##"{"event":"#setAuthToken","data":{"token":"h.p.s"}}"##);
        assert_eq!(
            rig.sent(),
            [r##"{"event":"#subscribe","data":{"channel":"secret","waitForAuth":true},"cid":3}"##]
        );
    }

    #[test]
    fn after_a_reconnect_channels_resubscribe_by_priority_then_age() {
        let mut rig = Rig::open();
        let _a = rig.subscribe_with("a", false, None, 0);
        let _b = rig.subscribe_with("b", false, None, 5);
        let _c = rig.subscribe_with("c", false, None, 0);
        rig.feed(r#"[{"rid":2},{"rid":3},{"rid":4}]"#);
        rig.sent();
        rig.events();

        rig.close(4000);
        let events = rig.events();
        assert_eq!(
            events[..3],
            [
                unsubscribe_event("a"),
                unsubscribe_event("b"),
                unsubscribe_event("c")
            ]
        );
        assert!(rig.st.subscriptions(false).is_empty());
        assert_eq!(rig.st.subscriptions(true), ["a", "b", "c"]);

        rig.reconnect();
        rig.reply_handshake(status("s2", 1000));
        assert_eq!(
            rig.sent(),
            [
                r##"{"event":"#handshake","data":{"authToken":null},"cid":5}"##,
                r##"{"event":"#subscribe","data":{"channel":"b"},"cid":6}"##,
                r##"{"event":"#subscribe","data":{"channel":"a"},"cid":7}"##,
                r##"{"event":"#subscribe","data":{"channel":"c"},"cid":8}"##,
            ]
        );
        // An ack for the lost connection's cids means nothing now.
        rig.feed(r#"{"rid":2}"#);
        assert!(!rig.st.is_subscribed("a", false));
        rig.feed(r#"{"rid":7}"#);
        assert!(rig.st.is_subscribed("a", false));
    }

    #[test]
    fn positions_are_tracked_sent_as_recover_and_duplicates_dropped() {
        let mut rig = Rig::open();
        let mut sub = rig.subscribe("room");
        rig.feed(r#"{"rid":2,"data":{"offset":3,"epoch":"e1"}}"#);
        rig.sent();
        rig.events();
        let publish = |n: u64, epoch: &str| {
            format!(
                r##"{{"event":"#publish","data":{{"channel":"room","data":{n},"offset":{n},"epoch":"{epoch}"}}}}"##
            )
        };
        rig.feed(&publish(4, "e1"));
        rig.feed(&publish(4, "e1"));
        rig.feed(&publish(3, "e1"));
        rig.feed(&publish(5, "e1"));
        let mut got = Vec::new();
        while let Ok(v) = sub.rx.try_recv() {
            got.push(v);
        }
        assert_eq!(got, [json!(4), json!(5)], "each offset once");

        rig.close(4000);
        rig.reconnect();
        rig.reply_handshake(status("s2", 1000));
        let sent = rig.sent();
        assert_eq!(
            sent[1],
            r##"{"event":"#subscribe","data":{"channel":"room","recover":{"offset":5,"epoch":"e1"}},"cid":4}"##
        );
        rig.events();
        // Recovered: the missed ones follow the ack and move the position.
        rig.feed(r#"{"rid":4,"data":{"offset":6,"epoch":"e1","recovered":true}}"#);
        rig.feed(&publish(6, "e1"));
        assert_eq!(sub.rx.try_recv().ok(), Some(json!(6)));
        assert!(!rig.events().contains(&ClientEvent::NotRecovered {
            channel: "room".into()
        }));

        // Not recovered (another epoch): the event, and the client goes on from the new top.
        rig.close(4000);
        rig.reconnect();
        rig.reply_handshake(status("s3", 1000));
        assert!(rig.sent()[1].contains(r#""recover":{"offset":6,"epoch":"e1"}"#));
        rig.events();
        rig.feed(r#"{"rid":6,"data":{"offset":9,"epoch":"e2","recovered":false}}"#);
        assert!(rig.events().contains(&ClientEvent::NotRecovered {
            channel: "room".into()
        }));
        assert_eq!(rig.st.history_of("room"), (Some((9, "e2".into())), 1));
        rig.feed(&publish(9, "e2"));
        rig.feed(&publish(10, "e2"));
        assert_eq!(sub.rx.try_recv().ok(), Some(json!(10)));
        rig.events();
        // A live publication of a new epoch past its first: a gap nobody can fill.
        rig.feed(&publish(3, "e3"));
        assert_eq!(sub.rx.try_recv().ok(), Some(json!(3)));
        assert!(rig.events().contains(&ClientEvent::NotRecovered {
            channel: "room".into()
        }));
        rig.feed(&publish(1, "e4"));
        assert!(
            rig.events().is_empty(),
            "a new epoch from its start misses nothing"
        );
    }

    #[test]
    fn a_live_recovery_failed_is_reported_once_and_moves_the_position() {
        let mut rig = Rig::open();
        let _sub = rig.subscribe("room");
        rig.feed(r#"{"rid":2,"data":{"offset":3,"epoch":"e1","recovered":false}}"#);
        rig.feed(
            r##"{"event":"#recoveryFailed","data":{"channel":"room","offset":3,"epoch":"e1"}}"##,
        );
        let not_recovered = ClientEvent::NotRecovered {
            channel: "room".into(),
        };
        let events = rig.events();
        assert_eq!(
            events.iter().filter(|e| **e == not_recovered).count(),
            1,
            "the ack's failure is not counted twice: {events:?}"
        );
        // A gap while subscribed: the server tells where to continue from.
        rig.feed(
            r##"{"event":"#recoveryFailed","data":{"channel":"room","offset":0,"epoch":"e2"}}"##,
        );
        assert!(rig.events().contains(&not_recovered));
        assert_eq!(rig.st.history_of("room"), (Some((0, "e2".into())), 2));
    }

    #[test]
    fn a_refused_subscription_drops_the_channel_and_fails_the_caller() {
        let mut rig = Rig::open();
        let mut sub = rig.subscribe("room");
        rig.events();
        rig.feed(r#"{"rid":2,"error":{"name":"SubDenied","message":"not you"}}"#);
        let denied = ScError::new("SubDenied", "not you");
        assert!(matches!(
            ack_of(&mut sub),
            Some(Err(InvokeError::Remote(e))) if e == denied
        ));
        assert_eq!(
            rig.events(),
            [ClientEvent::SubscribeFail {
                channel: "room".to_owned(),
                error: denied,
            }]
        );
        assert!(rig.st.subscriptions(true).is_empty());
        assert_eq!(sub.rx.try_recv(), Err(TryRecvError::Disconnected));
    }

    #[test]
    fn a_wait_for_auth_refusal_after_deauthentication_keeps_the_channel_pending() {
        let mut rig = Rig::open();
        rig.feed(r##"{"event":"#setAuthToken","data":{"token":"h.p.s"}}"##);
        let mut sub = rig.subscribe_with("secret", true, None, 0);
        rig.feed(r##"{"event":"#removeAuthToken"}"##);
        rig.events();
        rig.feed(r#"{"rid":2,"error":{"name":"AuthError","message":"login first"}}"#);
        assert!(rig.events().is_empty(), "no SubscribeFail");
        assert!(ack_of(&mut sub).is_none(), "still waiting");
        assert_eq!(rig.st.subscriptions(true), ["secret"]);
        rig.sent();
        // Logging in again subscribes it.
        rig.feed(r##"{"event":"#setAuthToken","data":{"token":"h.p.s"}}"##);
        assert_eq!(
            rig.sent(),
            [r##"{"event":"#subscribe","data":{"channel":"secret","waitForAuth":true},"cid":3}"##]
        );
    }

    #[test]
    fn unsubscribe_is_a_transmit_and_ends_every_stream() {
        let (mut rig, mut subs) = subscribed(&["room"]);
        let mut second = rig.subscribe("room");
        rig.st.drop_channel("room", true);
        assert_eq!(rig.sent(), [r##"{"event":"#unsubscribe","data":"room"}"##]);
        assert_eq!(rig.events(), [unsubscribe_event("room")]);
        assert_eq!(subs[0].rx.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(second.rx.try_recv(), Err(TryRecvError::Disconnected));
        assert!(!rig.st.is_subscribed("room", true));
    }

    #[test]
    fn only_the_last_handle_going_away_unsubscribes() {
        let (mut rig, subs) = subscribed(&["room"]);
        let second = rig.subscribe("room");
        rig.st.remove_subscription("room", subs[0].id);
        assert!(rig.sent().is_empty());
        assert!(rig.st.is_subscribed("room", false));
        rig.st.remove_subscription("room", second.id);
        assert_eq!(rig.sent(), [r##"{"event":"#unsubscribe","data":"room"}"##]);
    }

    #[test]
    fn a_channel_the_server_does_not_hold_is_dropped_silently() {
        // Pending for a connection.
        let mut rig = Rig::connecting(options());
        rig.sent();
        rig.events();
        let mut sub = rig.subscribe("room");
        rig.st.drop_channel("room", true);
        assert!(rig.sent().is_empty());
        assert!(rig.events().is_empty());
        assert!(matches!(
            ack_of(&mut sub),
            Some(Err(InvokeError::Unsubscribed { channel })) if channel == "room"
        ));

        // Open, but pending for authentication.
        let mut rig = Rig::open();
        rig.subscribe_with("secret", true, None, 0);
        rig.st.drop_channel("secret", true);
        assert!(rig.sent().is_empty());
        assert!(rig.st.subscriptions(true).is_empty());
    }

    #[test]
    fn an_unsubscribed_channel_ignores_its_late_ack() {
        let mut rig = Rig::open();
        rig.subscribe("room");
        rig.sent();
        rig.st.drop_channel("room", true);
        // In flight: the server may subscribe it, so it is told.
        assert_eq!(rig.sent(), [r##"{"event":"#unsubscribe","data":"room"}"##]);
        rig.feed(r#"{"rid":2}"#);
        assert!(rig.events().is_empty());
        assert!(rig.st.subscriptions(true).is_empty());
    }

    #[test]
    fn publish_reaches_only_the_named_channel() {
        let (mut rig, mut subs) = subscribed(&["a", "b"]);
        let mut a2 = rig.subscribe("a");
        rig.feed(r##"{"event":"#publish","data":{"channel":"a","data":"x"}}"##);
        rig.feed(r##"{"event":"#publish","data":{"channel":"a"}}"##);
        rig.feed(r##"{"event":"#publish","data":{"channel":"elsewhere","data":1}}"##);
        rig.feed(r##"{"event":"#publish","data":"a"}"##);
        rig.feed(r##"{"event":"#publish","data":{"channel":7,"data":1}}"##);
        rig.feed(
            r##"[{"event":"#publish","data":{"channel":"b","data":1}},{"event":"#publish","data":{"channel":"b","data":2}}]"##,
        );
        for rx in [&mut subs[0].rx, &mut a2.rx] {
            assert_eq!(rx.try_recv(), Ok(json!("x")));
            assert_eq!(rx.try_recv(), Ok(Value::Null));
            assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        }
        assert_eq!(subs[1].rx.try_recv(), Ok(json!(1)));
        assert_eq!(subs[1].rx.try_recv(), Ok(json!(2)));
        assert_eq!(subs[1].rx.try_recv(), Err(TryRecvError::Empty));
        assert!(rig.sent().is_empty());
    }

    #[test]
    fn publications_are_not_event_receiver_transmits() {
        let (mut rig, _subs) = subscribed(&["a"]);
        let (tx, mut rx) = mpsc::unbounded_channel();
        rig.st.add_receiver("#publish", tx);
        rig.feed(r##"{"event":"#publish","data":{"channel":"a","data":"x"}}"##);
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    }

    #[test]
    fn kick_out_drops_the_channel_without_telling_the_server() {
        let (mut rig, mut subs) = subscribed(&["room", "other"]);
        rig.feed(r##"{"event":"#kickOut","data":{"channel":"room","message":"bye"}}"##);
        assert_eq!(
            rig.events(),
            [
                ClientEvent::KickOut {
                    channel: "room".to_owned(),
                    message: Some(json!("bye")),
                },
                unsubscribe_event("room"),
            ]
        );
        assert!(rig.sent().is_empty());
        assert_eq!(subs[0].rx.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(rig.st.subscriptions(true), ["other"]);

        rig.feed(r##"{"event":"#kickOut","data":{"channel":"room"}}"##);
        rig.feed(r##"{"event":"#kickOut","data":{"channel":"nowhere"}}"##);
        assert!(rig.events().is_empty());
        assert!(rig.st.is_subscribed("other", false));
    }
}
