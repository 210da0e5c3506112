//! Relay cluster redirects: a node that is not the room's home answers `Hello` with
//! `Redirect`, a node handing a room over sends `Redirect` to its seated members, and a node
//! that cannot reach its store answers `Refused(STORE_UNAVAILABLE)` (SDK-REDIR-*). The
//! scripted relay plays every node (they share the room's state); which node a connection
//! reaches is what the core names in `Output::Connect`.

use std::time::Duration;

use blindcall_client::{
    CallError, Command, Event, MediaKind, ReconnectPolicy, RefusedReason, RelayRef,
};
use blindcall_proto::{Body, Refused};

use crate::harness::{Room, has, options, redirect_to, three, with_relays};

const HOME: &str = "node-b.cluster.example:4433";

fn redirected(a: &str) -> RelayRef {
    RelayRef::Redirected(a.to_owned())
}

fn store_unavailable() -> Body {
    Body::Refused(Refused {
        reason: RefusedReason::STORE_UNAVAILABLE,
    })
}

fn hellos(room: &Room, name: &str) -> usize {
    room.relayed
        .iter()
        .filter(|(who, b)| who == name && matches!(b, Body::Hello(_)))
        .count()
}

/// alice hosts; bob (three relays, reconnecting) joins and is approved: both at epoch 2.
fn call() -> Room {
    let mut room = Room::new();
    let a = room.host("alice", options());
    let b = room.guest("bob", with_relays(options(), three()));
    let now = room.now;
    let r = room.request_for(a, room.peers[b].conn);
    room.peers[a].command(now, Command::Approve(r)).unwrap();
    room.run();
    room.tick();
    assert_eq!(room.peers[b].epoch(), Some(2));
    room
}

// covers: SDK-REDIR-1
#[test]
fn joining_through_a_node_that_redirects_continues_at_the_named_node() {
    let mut room = Room::new();
    let a = room.host("alice", options());
    room.hello_answers.push_back(redirect_to(HOME));
    let b = room.add_peer("bob", with_relays(options(), three()));
    room.run();

    // The first node's answer is a Redirect: the core drops that connection and names the
    // redirect's address at once (no backoff, not a failed attempt).
    let p = &room.peers[b];
    assert!(p.join_failed.is_none() && !p.admitted);
    assert_eq!(p.targets, vec![redirected(HOME)]);
    assert_eq!(p.drops, 1);
    assert!(p.dialed.is_empty(), "no listed relay was tried next");
    assert!(has(
        &p.events,
        |e| matches!(e, Event::Redirected { relay } if relay == HOME)
    ));
    assert_eq!(p.core.relay_target(), redirected(HOME));
    assert!(
        p.outbox.is_empty(),
        "nothing is sent on the closed connection"
    );

    // At the named node: Hello again, then the waiting room and the host's approval.
    room.join_connects(b);
    room.run();
    assert!(room.peers[b].admitted);
    assert_eq!(hellos(&room, "bob"), 2);
    let now = room.now;
    let r = room.request_for(a, room.peers[b].conn);
    room.peers[a].command(now, Command::Approve(r)).unwrap();
    room.run();
    room.tick();
    assert!(room.peers[b].joined);
    assert_eq!(room.peers[b].epoch(), Some(2));
    let s = room.peers[b].core.stats();
    assert_eq!(s.relay, 0, "the listed relay that redirected");
    assert_eq!(s.relay_redirect.as_deref(), Some(HOME));
}

// covers: SDK-REDIR-2
#[test]
fn a_seated_member_redirected_resumes_at_the_named_node_with_its_leaf_and_epoch() {
    let mut room = call();
    let b = 1;
    let leaf = room.peers[b].core.call_group().unwrap().own_leaf();
    let epoch = room.peers[b].epoch();
    room.peers[b].take_events();

    room.redirect_member(b, HOME);
    let p = &mut room.peers[b];
    assert!(!p.ended, "a redirect does not end the call");
    let events = p.take_events();
    assert!(has(
        &events,
        |e| matches!(e, Event::Redirected { relay } if relay == HOME)
    ));
    assert!(has(&events, |e| matches!(
        e,
        Event::Reconnecting { attempt: 1, .. }
    )));
    assert_eq!(
        p.targets.last(),
        Some(&redirected(HOME)),
        "connects at once"
    );
    // Away: nothing is sealed.
    let now = room.now;
    assert!(matches!(
        room.peers[b]
            .core
            .publish(now, MediaKind::Audio, b"x", None),
        Err(CallError::Reconnecting)
    ));

    room.connect(b);
    room.run();
    let p = &mut room.peers[b];
    assert!(!p.ended && !p.away);
    let events = p.take_events();
    assert!(has(&events, |e| matches!(e, Event::Reconnected { .. })));
    assert_eq!(p.core.call_group().unwrap().own_leaf(), leaf);
    assert_eq!(p.epoch(), epoch);
    let resumed_leaf = room
        .relayed
        .iter()
        .rev()
        .find_map(|(who, body)| match body {
            Body::Resume(r) if who == "bob" => Some(r.leaf),
            _ => None,
        });
    assert_eq!(resumed_leaf, Some(leaf));
    let s = room.peers[b].core.stats();
    assert_eq!(s.reconnects, 1);
    assert_eq!(s.relay_redirect.as_deref(), Some(HOME));
}

// covers: SDK-REDIR-3
#[test]
fn a_fourth_redirect_in_a_row_is_a_failed_attempt_and_the_next_relay_is_tried() {
    let mut room = Room::new();
    let a = room.host("alice", options());
    for k in 0..4 {
        room.hello_answers
            .push_back(redirect_to(&format!("node-{k}.cluster.example:4433")));
    }
    let b = room.add_peer("bob", with_relays(options(), three()));
    room.run();
    for _ in 0..3 {
        room.join_connects(b);
        room.run();
    }
    let p = &room.peers[b];
    assert!(p.join_failed.is_none());
    assert_eq!(
        p.targets,
        vec![
            redirected("node-0.cluster.example:4433"),
            redirected("node-1.cluster.example:4433"),
            redirected("node-2.cluster.example:4433"),
            RelayRef::Listed(1),
        ],
        "three redirects followed, the fourth is a failed attempt: the next listed relay"
    );
    room.join_connects(b);
    room.run();
    assert!(room.peers[b].admitted);
    assert_eq!(room.peers[b].core.relay_target(), RelayRef::Listed(1));
    let now = room.now;
    let r = room.request_for(a, room.peers[b].conn);
    room.peers[a].command(now, Command::Approve(r)).unwrap();
    room.run();
    room.tick();
    assert_eq!(room.peers[b].epoch(), Some(2));
}

// covers: SDK-REDIR-3
#[test]
fn a_member_redirected_too_often_counts_it_as_a_failed_attempt() {
    let mut room = call();
    let b = 1;
    room.peers[b].take_events();
    // Seated redirect (1), then two more answers to its Hello (2, 3), then a fourth.
    room.redirect_member(b, "n1.example:1");
    for k in 2..=4 {
        room.hello_answers
            .push_back(redirect_to(&format!("n{k}.example:1")));
    }
    for _ in 0..3 {
        room.connect(b);
        room.run();
    }
    let p = &mut room.peers[b];
    assert!(!p.ended);
    let events = p.take_events();
    let attempts: Vec<(u32, usize)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Reconnecting { attempt, relay } => Some((*attempt, *relay)),
            _ => None,
        })
        .collect();
    // The fourth redirect is attempt 1 failing: attempt 2 goes where the rotation puts it
    // (SDK-RELAYS-4: attempt n to the n-th relay after the lost one), with its usual delay.
    assert_eq!(attempts, vec![(1, 0), (2, 2)]);
    assert_eq!(
        p.targets,
        vec![
            redirected("n1.example:1"),
            redirected("n2.example:1"),
            redirected("n3.example:1"),
        ]
    );
    room.tick();
    assert_eq!(room.peers[b].targets.last(), Some(&RelayRef::Listed(2)));
    room.connect(b);
    room.run();
    assert!(has(&room.peers[b].take_events(), |e| matches!(
        e,
        Event::Reconnected { .. }
    )));
}

// covers: SDK-REDIR-4
#[test]
fn store_unavailable_during_join_tries_the_next_relay_and_the_join_goes_on() {
    let mut room = Room::new();
    let a = room.host("alice", options());
    room.hello_answers.push_back(store_unavailable());
    let b = room.add_peer("bob", with_relays(options(), three()));
    room.run();
    let p = &room.peers[b];
    assert!(p.join_failed.is_none(), "transient: {:?}", p.join_failed);
    assert_eq!(p.dialed, vec![1]);
    room.join_connects(b);
    room.run();
    assert!(room.peers[b].admitted);
    let now = room.now;
    let r = room.request_for(a, room.peers[b].conn);
    room.peers[a].command(now, Command::Approve(r)).unwrap();
    room.run();
    room.tick();
    assert_eq!(room.peers[b].epoch(), Some(2));
}

// covers: SDK-REDIR-4
#[test]
fn store_unavailable_while_resuming_is_a_failed_attempt_not_the_end() {
    let mut room = call();
    let b = 1;
    room.cut(b);
    room.tick();
    room.hello_answers.push_back(store_unavailable());
    room.connect(b);
    room.run();
    let p = &mut room.peers[b];
    assert!(!p.ended);
    let events = p.take_events();
    assert!(has(&events, |e| matches!(
        e,
        Event::Reconnecting { attempt: 2, .. }
    )));
    room.tick();
    room.connect(b);
    room.run();
    assert!(has(&room.peers[b].take_events(), |e| matches!(
        e,
        Event::Reconnected { .. }
    )));
    assert!(!room.peers[b].ended);
}

// covers: SDK-REDIR-5
#[test]
fn a_hello_held_for_a_lease_expiry_is_not_abandoned() {
    let mut room = call();
    let b = 1;
    room.cut(b);
    room.tick();
    room.connect(b);
    // The node holds the Hello (a crashed home's lease runs out) for 8 s.
    let held: Vec<Body> = room.peers[b].outbox.drain(..).collect();
    assert!(matches!(held.as_slice(), [Body::Hello(_)]));
    let drops = room.peers[b].drops;
    for _ in 0..80 {
        room.advance(Duration::from_millis(100));
        room.tick();
    }
    assert_eq!(
        room.peers[b].drops, drops,
        "the held Hello was not abandoned"
    );
    room.peers[b].outbox.extend(held);
    room.run();
    assert!(has(&room.peers[b].take_events(), |e| matches!(
        e,
        Event::Reconnected { .. }
    )));

    // A Hello never answered is abandoned after `hello_timeout`.
    room.cut(b);
    room.tick();
    room.connect(b);
    room.peers[b].outbox.clear();
    let drops = room.peers[b].drops;
    room.advance(ReconnectPolicy::default().hello_timeout);
    room.tick();
    assert_eq!(room.peers[b].drops, drops + 1);
    assert!(!room.peers[b].ended);
}

// covers: SDK-REDIR-2
#[test]
fn a_joiner_in_the_waiting_room_redirected_ends_with_connection_lost() {
    let mut room = Room::new();
    room.host("alice", options());
    let b = room.guest("bob", with_relays(options(), three()));
    room.peers[b].inbox.push_back(redirect_to(HOME));
    let now = room.now;
    room.peers[b].deliver(now);
    let p = &room.peers[b];
    assert!(p.ended);
    assert!(has(&p.events, |e| matches!(
        e,
        Event::CallEnded {
            reason: blindcall_client::EndReason::ConnectionLost
        }
    )));
    assert!(p.targets.is_empty());
}
