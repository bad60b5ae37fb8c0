use super::*;
use serde_json::json;

fn publish(store: &HistoryStore, channel: &str, n: u64, policy: HistoryPolicy) -> Position {
    let publication = Publication::new(channel, Some(json!(n))).expect("encodes");
    store
        .append_with(Arc::new(publication), policy, |_| ())
        .expect("appends")
        .0
}

fn numbers(answer: &HistorySince) -> Option<Vec<u64>> {
    let kept = answer.publications.as_ref()?;
    Some(
        kept.iter()
            .map(|p| p.data().and_then(|d| d.as_u64()).unwrap_or(0))
            .collect(),
    )
}

fn at(offset: u64, epoch: &str) -> Position {
    Position {
        offset,
        epoch: epoch.into(),
    }
}

const POLICY: HistoryPolicy = HistoryPolicy {
    size: 3,
    ttl: Duration::from_secs(60),
};

#[test]
fn keeps_order_and_the_size_cap_and_refuses_too_old_positions() {
    let store = HistoryStore::new();
    let first = publish(&store, "c", 1, POLICY);
    assert_eq!(first.offset, 1);
    for n in 2..=5 {
        let position = publish(&store, "c", n, POLICY);
        assert_eq!((position.offset, &position.epoch), (n, &first.epoch));
    }
    let all = store.since("c", None, POLICY);
    assert_eq!(numbers(&all), Some(vec![3, 4, 5]));
    assert_eq!(all.top, at(5, &first.epoch));
    let e = first.epoch.as_str();
    assert_eq!(
        numbers(&store.since("c", Some(&at(2, e)), POLICY)),
        Some(vec![3, 4, 5])
    );
    assert_eq!(
        numbers(&store.since("c", Some(&at(4, e)), POLICY)),
        Some(vec![5])
    );
    assert_eq!(
        numbers(&store.since("c", Some(&at(5, e)), POLICY)),
        Some(vec![])
    );
    // 2 was dropped by the cap: recovering from 1 would be partial.
    assert_eq!(numbers(&store.since("c", Some(&at(1, e)), POLICY)), None);
    // From the future, or another epoch: nothing.
    assert_eq!(numbers(&store.since("c", Some(&at(6, e)), POLICY)), None);
    assert_eq!(numbers(&store.since("c", Some(&at(4, "x")), POLICY)), None);
    // Each kept publication is the positioned frame delivered.
    let kept = store
        .since("c", Some(&at(4, e)), POLICY)
        .publications
        .expect("kept");
    assert_eq!(kept[0].position(), Some(&at(5, e)));
    assert!(kept[0].frame.as_str().contains("\"offset\":5"));
}

#[test]
fn expiry_drops_old_entries_and_a_quiet_channel_keeps_its_position() {
    // Margins of 300 ms each way: a busy machine that stalls this thread for less than that
    // does not change the outcome (the store reads the real clock).
    let policy = HistoryPolicy::new(10, Duration::from_millis(600));
    let store = HistoryStore::new();
    let first = publish(&store, "c", 1, policy);
    let e = first.epoch.as_str();
    std::thread::sleep(Duration::from_millis(350));
    publish(&store, "c", 2, policy);
    std::thread::sleep(Duration::from_millis(300));
    // 1 expired, 2 is still kept: from 0 is partial, from 1 is whole.
    assert_eq!(numbers(&store.since("c", Some(&at(0, e)), policy)), None);
    assert_eq!(
        numbers(&store.since("c", Some(&at(1, e)), policy)),
        Some(vec![2])
    );
    std::thread::sleep(Duration::from_millis(700));
    // The newest expired: nothing is kept, but the position is. A client that saw 2 missed
    // nothing; one that saw only 1 is not recovered.
    let quiet = store.since("c", Some(&at(2, e)), policy);
    assert_eq!((numbers(&quiet), &quiet.top), (Some(vec![]), &at(2, e)));
    assert_eq!(numbers(&store.since("c", Some(&at(1, e)), policy)), None);
    // The next publication continues the epoch: live subscribers see no gap.
    assert_eq!(publish(&store, "c", 3, policy), at(3, e));
}

#[test]
fn idle_channels_become_tombstones_that_go_after_their_ttl() {
    let policy = HistoryPolicy::new(10, Duration::from_millis(50));
    let limits = HistoryLimits {
        tombstone_ttl: Duration::from_millis(1500),
        ..HistoryLimits::default()
    };
    let store = HistoryStore::with_limits(limits);
    let mut epochs = Vec::new();
    for i in 0..100 {
        epochs.push(publish(&store, &format!("c{i}"), 1, policy).epoch);
    }
    assert_eq!(store.channels(), 100);
    std::thread::sleep(SWEEP_EVERY + Duration::from_millis(50));
    publish(&store, "other", 1, policy);
    let usage = store.usage();
    assert_eq!((usage.channels, usage.tombstones), (1, 100));
    assert_eq!(
        usage.tombstone_bytes,
        (0..100)
            .map(|i| tombstone_cost(&format!("c{i}"), &epochs[i]))
            .sum::<usize>()
    );
    // A tombstone answers like the channel did: at the top is recovered; a read renews it.
    std::thread::sleep(Duration::from_millis(1000));
    let answer = store.since("c7", Some(&at(1, &epochs[7])), policy);
    assert_eq!(numbers(&answer), Some(vec![]));
    // Past the tombstone ttl for all but c7 (renewed) and `other` (expired after them), and
    // past the next sweep.
    std::thread::sleep(Duration::from_millis(1100));
    let other = store.since("other", None, policy).top;
    let usage = store.usage();
    assert_eq!(
        (usage.tombstones, usage.tombstone_bytes),
        (
            2,
            tombstone_cost("other", &other.epoch) + tombstone_cost("c7", &epochs[7])
        )
    );
    let again = publish(&store, "c0", 1, policy);
    assert_eq!(again.offset, 1);
    assert_ne!(again.epoch, epochs[0]);
    let restarted = HistoryStore::new();
    assert_ne!(
        publish(&store, "c", 1, POLICY).epoch,
        publish(&restarted, "c", 1, POLICY).epoch
    );
}

/// Publications of about `size` bytes each.
fn publish_sized(store: &HistoryStore, channel: &str, size: usize) -> Position {
    let publication = Publication::new(channel, Some(json!("x".repeat(size)))).expect("encodes");
    store
        .append_with(Arc::new(publication), POLICY, |_| ())
        .expect("appends")
        .0
}

#[test]
fn many_channels_stay_under_the_cap_and_the_least_recently_published_go_first() {
    let limits = HistoryLimits {
        max_bytes: 64 * 1024,
        ..HistoryLimits::default()
    };
    let store = HistoryStore::with_limits(limits);
    let first = publish_sized(&store, "room-0", 1000);
    let mut tops = vec![first.clone()];
    // Each channel keeps 3 of ~1 KB: ~3.3 KB a channel, 64 KiB holds about 19.
    for i in 1..200 {
        let name = format!("room-{i}");
        for _ in 0..3 {
            publish_sized(&store, &name, 1000);
        }
        // room-0 stays the most recently published, so it is never the victim.
        tops[0] = publish_sized(&store, "room-0", 1000);
        tops.push(store.since(&name, None, POLICY).top);
        let usage = store.usage();
        assert!(
            usage.bytes <= limits.max_bytes,
            "{} bytes kept over a cap of {}",
            usage.bytes,
            limits.max_bytes
        );
    }
    let usage = store.usage();
    assert!(usage.channels < 25, "{usage:?}");
    assert!(usage.tombstones > 150, "{usage:?}");
    // What is counted is what is kept: each kept publication its frame and overhead.
    let kept: usize = (0..200)
        .map(|i| format!("room-{i}"))
        .filter_map(|name| store.since(&name, None, POLICY).publications)
        .flatten()
        .map(|p| p.frame.len() + ENTRY_OVERHEAD)
        .sum();
    assert!(kept > 0 && kept <= usage.bytes, "{kept} of {usage:?}");
    // The survivors are the most recently published: room-0 and the last ones.
    assert_eq!(numbers_len(&store, "room-0"), 3);
    assert_eq!(numbers_len(&store, "room-199"), 3);
    assert_eq!(numbers_len(&store, "room-1"), 0, "the oldest went first");
    // An evicted channel kept its position: at the top recovers, behind it does not.
    let e1 = &tops[1];
    let at_top = store.since("room-1", Some(e1), POLICY);
    assert_eq!((numbers(&at_top), &at_top.top), (Some(vec![]), e1));
    let behind = at(e1.offset - 1, &e1.epoch);
    assert_eq!(numbers(&store.since("room-1", Some(&behind), POLICY)), None);
    // And continues its epoch.
    assert_eq!(
        publish_sized(&store, "room-1", 10),
        at(e1.offset + 1, &e1.epoch)
    );
}

fn numbers_len(store: &HistoryStore, channel: &str) -> usize {
    store
        .since(channel, None, POLICY)
        .publications
        .map_or(0, |p| p.len())
}

#[test]
fn the_lru_victim_is_the_oldest_publication_not_the_oldest_channel() {
    let limits = HistoryLimits {
        max_bytes: 64 * 1024,
        ..HistoryLimits::default()
    };
    let store = HistoryStore::with_limits(limits);
    // a, b, c created in that order; a published again last, so b is the oldest.
    for name in ["a", "b", "c", "a"] {
        for _ in 0..3 {
            publish_sized(&store, name, 6000);
        }
    }
    assert_eq!(store.channels(), 3);
    // 3 x 3 x 6 KB is 54 KB; the second of d's passes 64 KiB and evicts down to 56 KiB.
    for _ in 0..3 {
        publish_sized(&store, "d", 6000);
    }
    assert_eq!(
        numbers_len(&store, "b"),
        0,
        "b was the least recently published"
    );
    assert_eq!(numbers_len(&store, "a"), 3);
    assert_eq!(numbers_len(&store, "c"), 3);
    assert_eq!(numbers_len(&store, "d"), 3);
}

#[test]
fn tombstones_are_bounded_in_bytes_and_the_oldest_go() {
    let limits = HistoryLimits {
        tombstone_bytes: 20 * 1024,
        ..HistoryLimits::default()
    };
    let store = HistoryStore::with_limits(limits);
    // A read of a channel never published on leaves a tombstone (its epoch at offset 0).
    let first = store.since("t-0", None, POLICY).top;
    for i in 1..1000 {
        store.since(&format!("t-{i}"), None, POLICY);
        assert!(store.usage().tombstone_bytes <= limits.tombstone_bytes);
    }
    let usage = store.usage();
    assert!(
        usage.tombstones > 50 && usage.tombstones < 1000,
        "{usage:?}"
    );
    // t-0 was dropped: its old position is not recovered, a new epoch answers.
    let again = store.since("t-0", Some(&first), POLICY);
    assert_eq!(numbers(&again), None);
    assert_ne!(again.top.epoch, first.epoch);
    // The newest is still there.
    let newest = store.since("t-999", None, POLICY).top;
    assert_eq!(
        numbers(&store.since("t-999", Some(&newest), POLICY)),
        Some(vec![])
    );
}

#[test]
fn concurrent_publishers_on_many_channels_keep_each_channel_in_offset_order() {
    // Small enough that eviction runs while publishing: a channel evicted between two
    // publications continues its epoch from its tombstone.
    let limits = HistoryLimits {
        max_bytes: 64 * 1024,
        ..HistoryLimits::default()
    };
    let store = Arc::new(HistoryStore::with_limits(limits));
    let delivered: Arc<Vec<Mutex<Vec<Position>>>> =
        Arc::new((0..32).map(|_| Mutex::default()).collect());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (store, delivered) = (store.clone(), delivered.clone());
            std::thread::spawn(move || {
                for n in 0..500u64 {
                    let c = ((n * 7 + t) % 32) as usize;
                    let publication =
                        Publication::new(format!("c{c}"), Some(json!("y".repeat(300))))
                            .expect("encodes");
                    // Recorded under the channel's lock, as a delivery would be queued.
                    store
                        .append_with(Arc::new(publication), POLICY, |p| {
                            let position = p.position().cloned().expect("positioned");
                            lock(&delivered[c]).push(position);
                        })
                        .expect("appends");
                    if n % 50 == 0 {
                        store.since(&format!("c{c}"), None, POLICY);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("no panic");
    }
    let mut total = 0;
    for (c, positions) in delivered.iter().enumerate() {
        let positions = lock(positions);
        total += positions.len();
        // One epoch per channel (its tombstones kept it), offsets 1, 2, 3, ... in delivery
        // order: no offset twice, none skipped.
        for (i, p) in positions.iter().enumerate() {
            assert_eq!(
                (p.offset, &p.epoch),
                (i as u64 + 1, &positions[0].epoch),
                "channel c{c}"
            );
        }
        let top = store.since(&format!("c{c}"), None, POLICY).top;
        assert_eq!(Some(&top), positions.last(), "channel c{c}");
    }
    assert_eq!(total, 8 * 500);
    assert!(store.usage().bytes <= limits.max_bytes);
}
