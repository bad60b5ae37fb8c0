//! Presence in the worker: which [`PresencePolicy`] applies to a channel name, the entry a
//! subscribing socket gets, and the worker's presence task, which tells the engine about joins
//! and leaves in the order they happened and gathers join/leave events per channel into one
//! `#presence` event per window.
//!
//! The registry queues a join or a leave (under its own lock, so a socket's join is always queued
//! before its leave) only when a subscription to a channel with presence starts or ends; a
//! publication never touches presence.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::app::presence::{PresenceAccess, PresencePolicy};
use crate::app::App;
use crate::broker::presence::{encode_event, encode_resync};
use crate::broker::{BrokerEngine, PresenceEntry};
use crate::channel::ChannelPattern;
use crate::config::Config;
use crate::socket::Socket;

/// One change for the engine, in order.
enum Op {
    Join {
        channel: Arc<str>,
        entry: PresenceEntry,
        join_leave: bool,
        /// Answered once the engine has the entry (the subscriber's ack waits for it, so that a
        /// query right after the ack counts the subscriber).
        done: Option<oneshot::Sender<()>>,
        /// The socket was on the channel already and its entry changed (`set_presence_info`):
        /// subscribers heard of it before.
        rejoin: bool,
    },
    /// A socket's entry on a channel changed: its newest entry waits in [`Rejoins`], so any
    /// number of `set_presence_info` calls before the task gets to it queue one op.
    Rejoin {
        channel: Arc<str>,
        socket: Arc<str>,
        join_leave: bool,
        /// The [`Pending`] number it was queued with: it takes only the entry put with it.
        seq: u64,
    },
    Leave {
        channel: Arc<str>,
        socket: Arc<str>,
        join_leave: bool,
    },
}

/// Newest entries of rejoins not yet given to the engine, by channel and socket.
type Rejoins = Arc<std::sync::Mutex<Pending>>;

/// A channel and a socket.
type Key = (Arc<str>, Arc<str>);

/// The newest entry of each pending rejoin, with the number of the [`Op::Rejoin`] that takes
/// it: after rejoin, leave, join, rejoin, the first op must not take the second rejoin's entry
/// (the leave and join behind it would then undo it, and the second op find nothing).
#[derive(Default)]
struct Pending {
    next: u64,
    newest: HashMap<Key, (u64, PresenceEntry)>,
}

impl Pending {
    /// Keeps the newest entry; the number of a new op to queue, or `None` if the queued one
    /// takes it.
    fn put(&mut self, key: Key, entry: PresenceEntry) -> Option<u64> {
        if let Some((_, newest)) = self.newest.get_mut(&key) {
            *newest = entry;
            return None;
        }
        self.next += 1;
        self.newest.insert(key, (self.next, entry));
        Some(self.next)
    }

    /// The entry for op `seq`, if it is still that op's.
    fn take(&mut self, key: &Key, seq: u64) -> Option<PresenceEntry> {
        match self.newest.get(key) {
            Some((queued, _)) if *queued == seq => self.newest.remove(key).map(|(_, e)| e),
            _ => None,
        }
    }

    /// Forgets a pending rejoin.
    fn forget(&mut self, key: &Key) {
        if !self.newest.is_empty() {
            self.newest.remove(key);
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The presence policy of every channel name, and the queue to the worker's presence task.
#[derive(Default)]
pub(crate) struct Presence {
    /// Every declared pattern with its policy; empty when neither a declaration nor the default
    /// gives any channel presence (then a lookup costs nothing).
    declared: Vec<(ChannelPattern, Option<PresencePolicy>)>,
    default: Option<PresencePolicy>,
    user_claim: String,
    /// Most entries in a `#presence` answer and in each list of an event.
    pub(crate) max_entries: usize,
    window: Duration,
    ops: OnceLock<mpsc::UnboundedSender<Op>>,
    rejoins: Rejoins,
}

impl Presence {
    pub(crate) fn new(app: &App, config: &Config) -> Self {
        let default = config
            .presence
            .then(|| PresencePolicy::new().join_leave(config.presence_join_leave));
        let any_declared = app.channels.iter().any(|d| d.contract.presence.is_some());
        let declared = if any_declared || default.is_some() {
            app.channels
                .iter()
                .map(|d| (d.pattern.clone(), d.contract.presence))
                .collect()
        } else {
            Vec::new()
        };
        Self {
            declared,
            default,
            user_claim: config.presence_user_claim.clone(),
            max_entries: config.presence_max_entries,
            window: config.presence_window,
            ops: OnceLock::new(),
            rejoins: Rejoins::default(),
        }
    }

    /// What gives some channel presence, in words for a startup error; `None`: no channel has it.
    pub(crate) fn configured_by(app: &App, config: &Config) -> Option<String> {
        if let Some(d) = app.channels.iter().find(|d| d.contract.presence.is_some()) {
            return Some(format!(
                "channel '{}' at {} declares presence",
                d.pattern, d.source
            ));
        }
        config
            .presence
            .then(|| "presence (SC_PRESENCE) is set".to_owned())
    }

    /// The policy for `channel`, if it has presence.
    pub(crate) fn of(&self, channel: &str) -> Option<PresencePolicy> {
        if self.declared.is_empty() {
            return self.default;
        }
        match self.declared.iter().find(|(p, _)| p.matches(channel)) {
            Some((_, policy)) => *policy,
            None => self.default,
        }
    }

    /// Whether `socket` may ask for the presence of `channel` under `policy`.
    pub(crate) fn may_query(policy: &PresencePolicy, socket: &Socket, channel: &str) -> bool {
        match policy.query {
            PresenceAccess::Subscribers => socket.is_subscribed(channel),
            PresenceAccess::Authenticated => socket.is_authenticated(),
            PresenceAccess::Anyone => true,
        }
    }

    /// The entry `socket` has on a channel with presence.
    pub(crate) fn entry_of(&self, socket: &Socket) -> PresenceEntry {
        let user = socket
            .auth_token()
            .and_then(|claims| match claims.get(&self.user_claim)? {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
        PresenceEntry {
            socket: socket.id().to_owned(),
            user,
            info: socket.presence_info().map(|info| (*info).clone()),
        }
    }

    /// Queues a join; the receiver answers once the engine has it.
    pub(crate) fn join(
        &self,
        engine: &Arc<dyn BrokerEngine>,
        channel: Arc<str>,
        entry: PresenceEntry,
        policy: PresencePolicy,
    ) -> oneshot::Receiver<()> {
        self.drop_rejoin(&channel, &entry.socket);
        let (done, answered) = oneshot::channel();
        self.send(
            engine,
            Op::Join {
                channel,
                entry,
                join_leave: policy.join_leave,
                done: Some(done),
                rejoin: false,
            },
        );
        answered
    }

    /// Queues the new entry of a socket that is on the channel already.
    pub(crate) fn rejoin(
        &self,
        engine: &Arc<dyn BrokerEngine>,
        channel: Arc<str>,
        entry: PresenceEntry,
        policy: PresencePolicy,
    ) {
        let socket: Arc<str> = entry.socket.as_str().into();
        let seq = lock(&self.rejoins).put((channel.clone(), socket.clone()), entry);
        if let Some(seq) = seq {
            let join_leave = policy.join_leave;
            self.send(
                engine,
                Op::Rejoin {
                    channel,
                    socket,
                    join_leave,
                    seq,
                },
            );
        }
    }

    /// Queues a leave.
    pub(crate) fn leave(
        &self,
        engine: &Arc<dyn BrokerEngine>,
        channel: Arc<str>,
        socket: Arc<str>,
        policy: PresencePolicy,
    ) {
        self.drop_rejoin(&channel, &socket);
        self.send(
            engine,
            Op::Leave {
                channel,
                socket,
                join_leave: policy.join_leave,
            },
        );
    }

    /// Forgets a pending rejoin of the socket on the channel: a join or leave queued after it
    /// decides (a rejoin op still queued before them would otherwise carry a newer entry than
    /// the join behind it, which then wins with an older one).
    fn drop_rejoin(&self, channel: &Arc<str>, socket: &str) {
        lock(&self.rejoins).forget(&(channel.clone(), Arc::from(socket)));
    }

    fn send(&self, engine: &Arc<dyn BrokerEngine>, op: Op) {
        let ops = self.ops.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            // Weak: the task must not keep the engine alive after the server let go of it; it
            // ends when the registry (and this sender) is dropped.
            tokio::spawn(run(
                Arc::downgrade(engine),
                rx,
                self.rejoins.clone(),
                self.window,
                self.max_entries,
            ));
            tx
        });
        let _ = ops.send(op);
    }
}

/// Joins and leaves of one channel waiting for the end of its window, by socket: what its
/// subscribers knew of each socket when the window began, and what is true now.
#[derive(Default)]
struct Batch {
    sockets: HashMap<String, Change>,
}

/// One socket's changes within a window.
struct Change {
    /// Its subscribers had been told it is there (its join was announced in an earlier window).
    announced: bool,
    /// Its entry now; `None` once it left.
    now: Option<PresenceEntry>,
    /// Its latest entry, for a leave.
    last: PresenceEntry,
}

impl Batch {
    /// A socket joined (`rejoin`: it was there already, with another entry).
    fn join(&mut self, entry: PresenceEntry, rejoin: bool) {
        match self.sockets.get_mut(&entry.socket) {
            Some(change) => {
                change.now = Some(entry.clone());
                change.last = entry;
            }
            None => {
                self.sockets.insert(
                    entry.socket.clone(),
                    Change {
                        announced: rejoin,
                        now: Some(entry.clone()),
                        last: entry,
                    },
                );
            }
        }
    }

    /// A socket left.
    fn leave(&mut self, entry: PresenceEntry) {
        match self.sockets.get_mut(&entry.socket) {
            Some(change) => change.now = None,
            None => {
                self.sockets.insert(
                    entry.socket.clone(),
                    Change {
                        announced: true,
                        now: None,
                        last: entry,
                    },
                );
            }
        }
    }

    /// The event's lists: a socket that is there now is a join (new, or its entry replaced), one
    /// that was announced and is gone a leave, one that came and went within the window nothing;
    /// never both for one socket.
    fn lists(self) -> (Vec<PresenceEntry>, Vec<PresenceEntry>) {
        let (mut joins, mut leaves) = (Vec::new(), Vec::new());
        for change in self.sockets.into_values() {
            match change.now {
                Some(entry) => joins.push(entry),
                None if change.announced => leaves.push(change.last),
                None => {}
            }
        }
        (joins, leaves)
    }
}

/// The worker's presence task: each change to the engine, in order; events gathered per channel
/// and sent once per `window`.
async fn run(
    engine: Weak<dyn BrokerEngine>,
    mut ops: mpsc::UnboundedReceiver<Op>,
    rejoins: Rejoins,
    window: Duration,
    max: usize,
) {
    let mut pending: HashMap<Arc<str>, Batch> = HashMap::new();
    // Channels whose event the engine did not take: their subscribers are told to ask again
    // (`"cut": true`) once it answers, tried every `RESYNC_RETRY`.
    let mut stale: HashSet<Arc<str>> = HashSet::new();
    let mut deadline: Option<Instant> = None;
    loop {
        let wake = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        let op = tokio::select! {
            op = ops.recv() => match op {
                Some(op) => op,
                None => return,
            },
            () = tokio::time::sleep_until(wake), if deadline.is_some() => {
                deadline = None;
                let Some(engine) = engine.upgrade() else { return };
                resync(&engine, &mut stale).await;
                stale.extend(flush(&engine, std::mem::take(&mut pending), max).await);
                if !stale.is_empty() {
                    deadline = Some(Instant::now() + RESYNC_RETRY.max(window));
                }
                continue;
            }
        };
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let op = match op {
            Op::Rejoin {
                channel,
                socket,
                join_leave,
                seq,
            } => {
                let newest = lock(&rejoins).take(&(channel.clone(), socket), seq);
                let Some(entry) = newest else { continue };
                Op::Join {
                    channel,
                    entry,
                    join_leave,
                    done: None,
                    rejoin: true,
                }
            }
            op => op,
        };
        match op {
            Op::Join {
                channel,
                entry,
                join_leave,
                done,
                rejoin,
            } => {
                let joined = engine
                    .presence_join(&channel, entry.clone(), join_leave)
                    .await;
                if let Some(done) = done {
                    let _ = done.send(());
                }
                if let Err(e) = joined {
                    tracing::warn!(%channel, socket = %entry.socket, error = %e, "presence join failed");
                    if join_leave {
                        // Its subscribers' lists may now be wrong: they ask again later.
                        stale.insert(channel);
                        deadline.get_or_insert_with(|| Instant::now() + window);
                    }
                    continue;
                }
                if !join_leave {
                    continue;
                }
                pending
                    .entry(channel.clone())
                    .or_default()
                    .join(entry, rejoin);
            }
            Op::Leave {
                channel,
                socket,
                join_leave,
            } => match engine.presence_leave(&channel, &socket).await {
                Ok(Some(entry)) if join_leave => {
                    pending.entry(channel.clone()).or_default().leave(entry);
                }
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(%channel, %socket, error = %e, "presence leave failed");
                    if join_leave {
                        stale.insert(channel);
                        deadline.get_or_insert_with(|| Instant::now() + window);
                    }
                    continue;
                }
            },
            Op::Rejoin { .. } => continue,
        }
        // Only batched changes get here.
        if deadline.is_none() {
            deadline = Some(Instant::now() + window);
        }
    }
}

/// How often a worker tries again to tell the subscribers of a channel whose event was lost
/// to ask again.
const RESYNC_RETRY: Duration = Duration::from_secs(1);

/// Sends a `"cut": true` event on each stale channel; keeps those the engine did not take.
async fn resync(engine: &Arc<dyn BrokerEngine>, stale: &mut HashSet<Arc<str>>) {
    let mut left = HashSet::new();
    for channel in stale.drain() {
        let Ok(frame) = encode_resync(&channel) else {
            continue;
        };
        if engine.presence_event(&channel, frame.into()).await.is_err() {
            left.insert(channel);
        }
    }
    *stale = left;
}

/// Sends one event per channel with anything to say; answers the channels whose event the
/// engine did not take.
async fn flush(
    engine: &Arc<dyn BrokerEngine>,
    pending: HashMap<Arc<str>, Batch>,
    max: usize,
) -> Vec<Arc<str>> {
    let mut failed = Vec::new();
    for (channel, batch) in pending {
        let (joins, leaves) = batch.lists();
        if joins.is_empty() && leaves.is_empty() {
            continue;
        }
        let frame = match encode_event(&channel, &joins, &leaves, max) {
            Ok(frame) => frame,
            Err(e) => {
                tracing::error!(%channel, error = %e, "could not encode a presence event");
                continue;
            }
        };
        if let Err(e) = engine.presence_event(&channel, frame.into()).await {
            tracing::warn!(%channel, error = %e, "presence event not sent; its subscribers are told to ask again once the engine answers");
            failed.push(channel);
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(socket: &str, info: Option<i64>) -> PresenceEntry {
        PresenceEntry {
            socket: socket.into(),
            user: None,
            info: info.map(Value::from),
        }
    }

    fn sockets(list: &[PresenceEntry]) -> Vec<(&str, Option<&Value>)> {
        list.iter()
            .map(|e| (e.socket.as_str(), e.info.as_ref()))
            .collect()
    }

    #[test]
    fn a_rejoin_op_takes_only_the_entry_queued_with_it() {
        let key: Key = (Arc::from("c"), Arc::from("s"));
        let mut p = Pending::default();
        let first = p.put(key.clone(), entry("s", Some(1))).expect("a new op");
        // A second change before the task gets there rides on the queued op.
        assert_eq!(p.put(key.clone(), entry("s", Some(2))), None);
        // Unsubscribe, subscribe, and a newer change: a new op of its own.
        p.forget(&key);
        let second = p.put(key.clone(), entry("s", Some(3))).expect("a new op");
        assert_ne!(first, second);
        // The older op, reached first, must not take the newer entry...
        assert_eq!(p.take(&key, first), None);
        // ...which stays for its own op.
        assert_eq!(p.take(&key, second), Some(entry("s", Some(3))));
        assert_eq!(p.take(&key, second), None);
    }

    #[test]
    fn a_window_ends_in_each_sockets_true_state() {
        let mut b = Batch::default();
        // Came and went: never announced.
        b.join(entry("new", None), false);
        b.leave(entry("new", None));
        // Announced earlier, changed its info, then left: a leave.
        b.join(entry("changed", Some(1)), true);
        b.leave(entry("changed", Some(1)));
        // Announced earlier, left and came back: a join only, with its latest entry.
        b.leave(entry("back", None));
        b.join(entry("back", Some(2)), false);
        // Changed twice: one join, the newest.
        b.join(entry("twice", Some(1)), true);
        b.join(entry("twice", Some(3)), true);
        let (mut joins, leaves) = b.lists();
        joins.sort_by(|a, b| a.socket.cmp(&b.socket));
        let three = Value::from(3);
        let two = Value::from(2);
        assert_eq!(
            sockets(&joins),
            vec![("back", Some(&two)), ("twice", Some(&three))]
        );
        assert_eq!(sockets(&leaves), vec![("changed", Some(&Value::from(1)))]);
    }
}
