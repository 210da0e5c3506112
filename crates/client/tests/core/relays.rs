//! Several relays (the nodes of one relay cluster): joining tries them in order until one
//! answers; a member that loses its relay rotates through the others, backing off per full
//! round, and resumes on whichever answers. The scripted relay plays the whole cluster (its
//! nodes share the room's state); which node a connection reaches is the index the core
//! names in `Output::Connect`.

use std::time::Duration;

use blindcall_client::{Command, Event, JoinError, JoinOptions, ProtocolError};
use blindcall_proto::Body;

use crate::harness::{Room, has, options, three, with_relays};

fn reconnecting_to(events: &[Event]) -> Vec<(u32, usize)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Reconnecting { attempt, relay } => Some((*attempt, *relay)),
            _ => None,
        })
        .collect()
}

fn sent_by(room: &Room, name: &str, pred: impl Fn(&Body) -> bool) -> usize {
    room.relayed
        .iter()
        .filter(|(who, b)| who == name && pred(b))
        .count()
}

/// alice hosts (one relay); bob (with `bob`'s relays) joins and is admitted.
fn call(bob: JoinOptions, first_fails: bool) -> Room {
    let mut room = Room::new();
    let a = room.host("alice", options());
    let b = room.add_peer("bob", bob);
    if first_fails {
        room.join_connection_fails(b);
        room.join_connects(b);
    }
    room.run();
    assert!(room.peers[b].admitted, "bob is not in the waiting room");
    let now = room.now;
    let r = room.request_for(a, room.peers[b].conn);
    room.peers[a].command(now, Command::Approve(r)).unwrap();
    room.run();
    room.tick();
    assert_eq!(room.peers[b].epoch(), Some(2));
    room
}

// covers: SDK-RELAYS-1, SDK-RELAYS-2
#[test]
fn joining_skips_an_unreachable_and_a_silent_relay_and_joins_through_the_third() {
    let mut room = Room::new();
    let a = room.host("alice", options());
    let b = room.add_peer("bob", with_relays(options(), three()));
    assert_eq!(
        room.peers[b].core.relay(),
        0,
        "the first relay is tried first"
    );

    // Relay 0 cannot be reached: the core names relay 1; the Hello queued for relay 0 is void.
    room.join_connection_fails(b);
    assert_eq!(room.peers[b].dialed, vec![1]);
    assert!(room.peers[b].outbox.is_empty());
    assert!(room.peers[b].join_failed.is_none());

    // Relay 1 accepts the connection but never answers the Hello: after the step timeout
    // the core drops it and names relay 2.
    room.join_connects(b);
    assert!(matches!(room.peers[b].outbox.front(), Some(Body::Hello(_))));
    room.peers[b].outbox.clear();
    room.advance(options().step_timeout);
    room.tick();
    assert_eq!(room.peers[b].drops, 1);
    assert_eq!(room.peers[b].dialed, vec![1, 2]);
    assert!(room.peers[b].join_failed.is_none());

    // Relay 2 answers: bob reaches the waiting room and is admitted as usual.
    room.join_connects(b);
    room.run();
    assert!(room.peers[b].admitted);
    assert_eq!(room.peers[b].core.relay(), 2);
    let now = room.now;
    let r = room.request_for(a, room.peers[b].conn);
    room.peers[a].command(now, Command::Approve(r)).unwrap();
    room.run();
    room.tick();
    assert!(room.peers[b].joined);
    assert_eq!(room.peers[b].epoch(), Some(2));
    assert_eq!(sent_by(&room, "bob", |b| matches!(b, Body::Hello(_))), 1);
    assert_eq!(sent_by(&room, "bob", |b| matches!(b, Body::JoinRequest)), 1);
    let s = room.peers[b].core.stats();
    assert_eq!(s.relay, 2);
    assert_eq!(s.relay_addr, Some(three()[2]));
}

// covers: SDK-RELAYS-2
#[test]
fn joining_fails_once_every_relay_was_tried() {
    let mut room = Room::new();
    let b = room.add_peer("bob", with_relays(options(), three()));
    room.join_connection_fails(b);
    room.join_connects(b);
    // Relay 1 closes before answering.
    room.join_connection_fails(b);
    assert_eq!(room.peers[b].dialed, vec![1, 2]);
    room.join_connection_fails(b);
    assert_eq!(room.peers[b].dialed, vec![1, 2], "no relay is tried twice");
    assert!(
        matches!(
            room.peers[b].join_failed,
            Some(JoinError::Protocol(ProtocolError::Closed))
        ),
        "{:?}",
        room.peers[b].join_failed
    );
}

// covers: SDK-RELAYS-3
#[test]
fn a_member_whose_relay_stays_down_resumes_on_the_next_with_its_leaf() {
    let two = three()[..2].to_vec();
    let mut room = call(with_relays(options(), two), false);
    let b = 1;
    assert_eq!(room.peers[b].core.relay(), 0);
    let (kps, requests) = (
        sent_by(&room, "bob", |b| matches!(b, Body::PublishKeyPackage(_))),
        sent_by(&room, "bob", |b| matches!(b, Body::JoinRequest)),
    );
    room.peers[b].take_events();

    // Relay A (0) goes away for good: the first attempt goes to B (1), at once.
    room.cut(b);
    let ev = room.peers[b].take_events();
    assert_eq!(reconnecting_to(&ev), vec![(1, 1)], "{ev:?}");
    room.tick();
    assert_eq!(room.peers[b].dialed, vec![1]);

    // Meanwhile alice commits (carol joins): bob misses it.
    let c = room.guest("carol", options());
    let now = room.now;
    let r = room.request_for(0, room.peers[c].conn);
    room.peers[0].command(now, Command::Approve(r)).unwrap();
    room.run();
    assert_eq!(room.peers[0].epoch(), Some(3));

    // B answers: Hello, Resume of the same leaf over B's challenge, caught up.
    room.advance(Duration::from_millis(300));
    room.connect(b);
    room.run();
    let resume = room
        .relayed
        .iter()
        .find_map(|(who, body)| match body {
            Body::Resume(r) if who == "bob" => Some(r.clone()),
            _ => None,
        })
        .expect("bob sent a Resume");
    assert_eq!((resume.leaf, resume.epoch), (1, 2));
    let ev = room.peers[b].take_events();
    assert!(
        has(&ev, |e| matches!(e, Event::Reconnected { .. })),
        "{ev:?}"
    );
    assert_eq!(room.peers[b].epoch(), Some(3));
    assert_eq!(room.peers[b].code(), room.peers[0].code());
    // No new join: no KeyPackage, no join request, no approval.
    assert_eq!(
        sent_by(&room, "bob", |b| matches!(b, Body::PublishKeyPackage(_))),
        kps
    );
    assert_eq!(
        sent_by(&room, "bob", |b| matches!(b, Body::JoinRequest)),
        requests
    );
    assert!(!has(&ev, |e| matches!(e, Event::Joined { .. })));
    let s = room.peers[b].core.stats();
    assert_eq!((s.reconnects, s.relay), (1, 1));
    assert_eq!(s.relay_addr, Some(three()[1]));
    assert_eq!(room.peers[b].dialed, vec![1], "relay A was never dialed");
}

/// After a loss, the delay (in 5 ms steps) before each attempt's connection is asked for,
/// while every attempt fails; returns (relay, delay) per attempt.
fn failing_attempts(room: &mut Room, b: usize, n: usize) -> Vec<(usize, Duration)> {
    let step = Duration::from_millis(5);
    let mut seen = Vec::new();
    room.cut(b);
    for _ in 0..n {
        let (start, dialed) = (room.now, room.peers[b].dialed.len());
        room.tick();
        while room.peers[b].dialed.len() == dialed {
            assert!(room.now - start < Duration::from_secs(5), "no attempt");
            room.advance(step);
            room.tick();
        }
        seen.push((*room.peers[b].dialed.last().unwrap(), room.now - start));
        room.connect_fails(b);
    }
    seen
}

// covers: SDK-RELAYS-4
#[test]
fn attempts_rotate_through_the_list_the_lost_relay_last_backing_off_per_round() {
    // bob joined through relay 1 (relay 0 was down).
    let mut room = call(with_relays(options(), three()), true);
    let b = 1;
    assert_eq!(room.peers[b].core.relay(), 1);
    room.peers[b].dialed.clear();
    room.peers[b].take_events();
    let seen = failing_attempts(&mut room, b, 9);
    let relays: Vec<usize> = seen.iter().map(|(r, _)| *r).collect();
    assert_eq!(relays, vec![2, 0, 1, 2, 0, 1, 2, 0, 1]);
    let ev = room.peers[b].take_events();
    let told: Vec<(u32, usize)> = reconnecting_to(&ev);
    assert_eq!(
        told,
        (1..=10)
            .map(|a| (a, [2, 0, 1][(a as usize - 1) % 3]))
            .collect::<Vec<_>>()
    );
    let ms = |i: usize| seen[i].1.as_millis();
    // Round 1: every relay at once. Later rounds: the first attempt waits (100 ms, then
    // 200 ms, the upper half jittered), the rest of the round follows at once.
    for i in [0, 1, 2, 4, 5, 7, 8] {
        assert_eq!(ms(i), 0, "attempt {}: {seen:?}", i + 1);
    }
    assert!((50..=105).contains(&ms(3)), "{seen:?}");
    assert!((100..=205).contains(&ms(6)), "{seen:?}");
}

// covers: SDK-RELAYS-6
#[test]
fn a_single_relay_backs_off_per_attempt_as_before() {
    // No list and a one-entry list behave the same (the jitter differs: it is seeded by
    // each member's identity key).
    for relays in [Vec::new(), three()[..1].to_vec()] {
        let mut room = call(with_relays(options(), relays), false);
        room.peers[1].take_events();
        let seen = failing_attempts(&mut room, 1, 5);
        let told = reconnecting_to(&room.peers[1].take_events());
        assert_eq!(told, (1..=6).map(|a| (a, 0)).collect::<Vec<_>>());
        assert!(seen.iter().all(|(r, _)| *r == 0), "{seen:?}");
        // The first attempt is immediate, attempt n ≥ 2 waits within the upper half of
        // 100 ms × 2^(n-2), at most 1 s (SDK-RES-3).
        let ms: Vec<u128> = seen.iter().map(|(_, d)| d.as_millis()).collect();
        assert_eq!(ms[0], 0);
        for (n, ms) in ms.iter().enumerate().skip(1) {
            let full = (100u128 << (n - 1)).min(1000);
            assert!(
                (full / 2..=full + 5).contains(ms),
                "attempt {}: {ms} ms of {full}",
                n + 1
            );
        }
    }
}

// covers: SDK-RELAYS-6
#[test]
fn a_single_relay_that_cannot_be_reached_fails_the_join_as_before() {
    let mut room = Room::new();
    let b = room.add_peer("bob", options());
    room.join_connection_fails(b);
    assert!(room.peers[b].dialed.is_empty());
    assert!(matches!(
        room.peers[b].join_failed,
        Some(JoinError::Protocol(ProtocolError::Closed))
    ));
}
