//! Losing the relay and coming back: reconnection with backoff, the silence watchdog, the
//! resume handshake, catching up on missed commits, and what is (not) sent while away.

use std::time::Duration;

use blindcall_client::{CallError, Command, EndReason, Event, JoinOptions, MediaKind, TransportOp};
use blindcall_proto::{Body, ResumeRefusedReason};

use crate::harness::{Room, challenge_of, has, media_options, options};

const STEP: Duration = Duration::from_millis(50);

fn reconnecting(mut o: JoinOptions) -> JoinOptions {
    o.reconnect = blindcall_client::ReconnectPolicy::default();
    o
}

/// alice hosts; bob (reconnecting enabled) joins; both at epoch 2 after bob's path update.
fn call(bob: JoinOptions) -> Room {
    let mut room = Room::new();
    let a = room.host("alice", options());
    let b = room.guest("bob", reconnecting(bob));
    let now = room.now;
    let r = room.request_for(a, room.peers[b].conn);
    room.peers[a].command(now, Command::Approve(r)).unwrap();
    room.run();
    room.tick();
    assert_eq!(room.peers[b].epoch(), Some(2));
    room
}

/// Moves the clock in steps until `done` holds, running timers and the relay at each step.
fn run_until(room: &mut Room, limit: Duration, what: &str, done: impl Fn(&Room) -> bool) {
    let start = room.now;
    while !done(room) {
        assert!(
            room.now - start < limit,
            "{what}: not within {limit:?} of simulated time"
        );
        room.advance(STEP);
        room.tick();
    }
}

fn attempts(events: &[Event]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Reconnecting { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect()
}

// covers: SDK-RES-1, SDK-RES-2
#[test]
fn a_member_whose_connection_breaks_resumes_its_leaf_and_catches_up() {
    let mut room = call(options());
    let b = 1;
    let (code, first_conn) = (room.peers[b].code(), room.peers[b].conn);
    room.peers[b].take_events();
    room.cut(b);
    let ev = room.peers[b].take_events();
    assert_eq!(attempts(&ev), vec![1], "{ev:?}");
    assert!(!has(&ev, |e| matches!(e, Event::CallEnded { .. })));
    // The first attempt is immediate.
    room.tick();
    assert_eq!(room.peers[b].connects, 1);

    // Meanwhile carol joins: bob misses that commit.
    let c = room.guest("carol", options());
    let now = room.now;
    let r = room.request_for(0, room.peers[c].conn);
    room.peers[0].command(now, Command::Approve(r)).unwrap();
    room.run();
    assert_eq!(room.peers[0].epoch(), Some(3));
    assert_eq!(
        room.peers[b].epoch(),
        Some(2),
        "bob hears nothing while away"
    );

    // The new connection: Hello, then a Resume signed over this connection's challenge.
    room.advance(Duration::from_millis(700));
    room.connect(b);
    assert!(matches!(room.peers[b].outbox.front(), Some(Body::Hello(_))));
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
    assert!(!resume.signature.as_slice().is_empty());
    assert_ne!(challenge_of(room.peers[b].conn), challenge_of(first_conn));

    // Caught up through the replayed commit, same leaf, no new KeyPackage, no approval.
    let ev = room.peers[b].take_events();
    let away = ev
        .iter()
        .find_map(|e| match e {
            Event::Reconnected { away } => Some(*away),
            _ => None,
        })
        .unwrap_or_else(|| panic!("bob did not resume: {ev:?}"));
    assert!(away >= Duration::from_millis(700), "{away:?}");
    assert_eq!(room.peers[b].epoch(), Some(3));
    assert_eq!(room.peers[b].code(), room.peers[0].code());
    assert_ne!(room.peers[b].code(), code);
    let kps = room
        .relayed
        .iter()
        .filter(|(who, body)| who == "bob" && matches!(body, Body::PublishKeyPackage(_)))
        .count();
    assert_eq!(kps, 1, "a resume publishes no KeyPackage");
    let s = room.peers[b].core.stats();
    assert_eq!(s.reconnects, 1);
    assert_eq!(s.time_away, away);
    // It is a member on the new connection: it takes part in the next commit.
    room.tick();
    room.run();
    assert_eq!(room.peers[b].epoch(), room.peers[0].epoch());
    assert!(!room.peers[0].ended && !room.peers[b].ended);
}

// covers: SDK-RES-1
#[test]
fn a_silent_connection_is_taken_as_lost_and_pings_keep_a_live_one() {
    let mut room = call(options());
    let b = 1;
    let policy = blindcall_client::ReconnectPolicy::default();
    // A live connection: pings go out every interval and pongs keep it up.
    let pings_before = room
        .relayed
        .iter()
        .filter(|(w, x)| w == "bob" && matches!(x, Body::Ping(_)))
        .count();
    let start = room.now;
    run_until(
        &mut room,
        Duration::from_secs(30),
        "10 s of a live call",
        |r| r.now - start >= Duration::from_secs(10),
    );
    let pings = room
        .relayed
        .iter()
        .filter(|(w, x)| w == "bob" && matches!(x, Body::Ping(_)))
        .count()
        - pings_before;
    assert!((9..=11).contains(&pings), "{pings} pings in 10 s");
    assert_eq!(room.peers[b].drops, 0);
    assert!(attempts(&room.peers[b].take_events()).is_empty());

    // The network goes dead without breaking the connection: nothing arrives any more.
    let dead = room.now;
    room.peers[b].connected = false;
    while room.peers[b].drops == 0 {
        assert!(room.now - dead <= policy.silence_timeout + policy.ping_interval + STEP);
        room.advance(STEP);
        let now = room.now;
        room.peers[b].tick(now);
        room.peers[b].outbox.clear();
    }
    let noticed = room.now - dead;
    assert!(
        noticed >= policy.silence_timeout,
        "dropped after {noticed:?} of silence"
    );
    let ev = room.peers[b].take_events();
    assert_eq!(attempts(&ev), vec![1], "{ev:?}");
    // Its media goes with the connection (the relay knew it by that connection).
    assert!(matches!(
        room.peers[b].transport_ops.last(),
        Some(TransportOp::Close)
    ));
}

// covers: SDK-RES-3
#[test]
fn reconnection_backs_off_with_jitter_and_gives_up() {
    let mut room = call(options());
    let b = 1;
    let policy = blindcall_client::ReconnectPolicy::default();
    let lost = room.now;
    room.cut(b);
    let mut asked = Vec::new();
    let mut seen = 0;
    while !room.peers[b].ended {
        assert!(room.now - lost <= policy.give_up_after + policy.max_delay * 2);
        if room.peers[b].connects > seen {
            seen = room.peers[b].connects;
            asked.push(room.now - lost);
            // Nothing answers: the connection fails.
            room.connect_fails(b);
        }
        room.advance(Duration::from_millis(10));
        let now = room.now;
        room.peers[b].tick(now);
    }
    // Each delay lies in the upper half of min(initial × 2^(n-1), max), and they are not all
    // alike (jitter).
    let gaps: Vec<Duration> = asked.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() > 20, "{} attempts", asked.len());
    for (n, gap) in gaps.iter().enumerate() {
        let base = (policy.initial_delay * (1u32 << n.min(16))).min(policy.max_delay);
        let slack = Duration::from_millis(20);
        assert!(
            *gap + slack >= base / 2 && *gap <= base + slack,
            "attempt {}: waited {gap:?}, base {base:?}",
            n + 2
        );
    }
    let late: Vec<&Duration> = gaps.iter().skip(5).collect();
    assert!(late.iter().any(|g| **g != *late[0]), "no jitter: {late:?}");
    let ev = room.peers[b].take_events();
    let last = attempts(&ev).last().copied().unwrap_or(0);
    assert_eq!(usize::try_from(last).unwrap(), asked.len());
    assert!(has(&ev, |e| matches!(
        e,
        Event::CallEnded {
            reason: EndReason::ConnectionLost
        }
    )));
    assert!(room.now - lost >= policy.give_up_after);
}

// covers: SDK-RES-2
#[test]
fn an_attempt_that_hangs_is_abandoned_and_the_next_one_resumes() {
    let mut room = call(options());
    let b = 1;
    let policy = blindcall_client::ReconnectPolicy::default();
    room.cut(b);
    room.tick();
    assert_eq!(room.peers[b].connects, 1);
    // Connected, but the network swallows everything: the attempt times out once the Hello
    // went unanswered for `hello_timeout` (a node may hold a Hello that long, SDK-REDIR-5).
    room.connect(b);
    room.peers[b].outbox.clear();
    room.peers[b].connected = false;
    let start = room.now;
    while room.peers[b].connects < 2 {
        assert!(room.now - start <= policy.hello_timeout + policy.max_delay + STEP);
        room.advance(STEP);
        let now = room.now;
        room.peers[b].tick(now);
        room.peers[b].outbox.clear();
    }
    assert!(room.now - start >= policy.hello_timeout);
    assert!(room.peers[b].drops >= 1, "the hung connection is dropped");
    room.connect(b);
    room.run();
    assert!(has(&room.peers[b].take_events(), |e| matches!(
        e,
        Event::Reconnected { .. }
    )));
    assert_eq!(room.peers[b].code(), room.peers[0].code());
}

// covers: SDK-RES-4
#[test]
fn a_refused_resume_ends_the_call_with_the_reason() {
    let mut room = call(options());
    let b = 1;
    room.resume_refusal = Some(ResumeRefusedReason::REMOVED);
    room.cut(b);
    room.tick();
    room.connect(b);
    room.run();
    let ev = room.peers[b].take_events();
    assert!(has(&ev, |e| matches!(
        e,
        Event::ResumeRefused {
            reason: ResumeRefusedReason::REMOVED
        }
    )));
    assert!(has(&ev, |e| matches!(
        e,
        Event::CallEnded {
            reason: EndReason::ResumeRefused(ResumeRefusedReason::REMOVED)
        }
    )));
    assert!(room.peers[b].ended);
}

// covers: SDK-RES-5
#[test]
fn frames_published_while_away_are_dropped_and_no_counter_is_used_twice() {
    let mut room = call(media_options());
    let b = 1;
    room.connect_media(b);
    let now = room.now;
    for i in 0..5u8 {
        room.peers[b]
            .publish(now, MediaKind::Audio, &[i; 40], None)
            .unwrap();
    }
    let sent_before: Vec<u64> = room.peers[b]
        .recorder
        .0
        .lock()
        .unwrap()
        .sent
        .iter()
        .map(|s| s.2)
        .collect();
    assert_eq!(sent_before.len(), 5);
    room.cut(b);
    for i in 0..3u8 {
        let r = room.peers[b].publish(now, MediaKind::Audio, &[i; 40], None);
        assert!(matches!(r, Err(CallError::Reconnecting)), "{r:?}");
    }
    assert_eq!(room.peers[b].core.stats().frames_dropped_away, 3);
    room.tick();
    room.connect(b);
    room.run();
    // Media is opened again once resumed.
    let opens = room.peers[b]
        .transport_ops
        .iter()
        .filter(|o| matches!(o, TransportOp::Open { .. }))
        .count();
    assert_eq!(opens, 2, "{:?}", room.peers[b].transport_ops);
    room.connect_media(b);
    let now = room.now;
    room.peers[b]
        .publish(now, MediaKind::Audio, &[9; 40], Some(true))
        .unwrap();
    let rec = room.peers[b].recorder.0.lock().unwrap();
    assert_eq!(rec.sent.len(), 6, "nothing sealed while away");
    let after = rec.sent[5].2;
    assert!(
        sent_before.iter().all(|c| *c < after),
        "counter {after} after {sent_before:?}"
    );
}

/// alice hosts; bob (reconnecting enabled) is welcomed and has his path update (his own
/// commit) ready to send.
fn bob_with_his_commit_ready() -> Room {
    let mut room = Room::new();
    let a = room.host("alice", options());
    let b = room.guest("bob", reconnecting(options()));
    let now = room.now;
    let r = room.request_for(a, room.peers[b].conn);
    room.peers[a].command(now, Command::Approve(r)).unwrap();
    room.run();
    assert_eq!(room.peers[b].epoch(), Some(1));
    let mut waited = Duration::ZERO;
    while !room.peers[b]
        .outbox
        .iter()
        .any(|x| matches!(x, Body::Commit(_)))
    {
        assert!(waited < Duration::from_secs(5), "bob's path update");
        room.advance(STEP);
        waited += STEP;
        let now = room.now;
        room.peers[b].tick(now);
    }
    room
}

fn commits_by(room: &Room, name: &str) -> usize {
    room.relayed
        .iter()
        .filter(|(w, x)| w == name && matches!(x, Body::Commit(_)))
        .count()
}

// covers: SDK-RES-6
#[test]
fn an_own_commit_lost_with_the_connection_is_made_again_after_resuming() {
    let mut room = bob_with_his_commit_ready();
    let (a, b) = (0, 1);
    // The commit is lost with the connection: the relay never read it.
    room.cut(b);
    room.tick();
    room.connect(b);
    room.run();
    assert!(has(&room.peers[b].take_events(), |e| matches!(
        e,
        Event::Reconnected { .. }
    )));
    room.tick();
    room.run();
    assert_eq!(commits_by(&room, "bob"), 1, "made again once resumed");
    assert_eq!(room.peers[b].epoch(), Some(2));
    assert_eq!(room.peers[a].code(), room.peers[b].code());
}

// covers: SDK-RES-6
#[test]
fn an_own_commit_sequenced_unseen_is_merged_from_the_replay() {
    let mut room = bob_with_his_commit_ready();
    let (a, b) = (0, 1);
    // The relay sequences it, then the connection breaks before bob reads the answer.
    room.relay_all(b);
    assert_eq!(room.epoch, 2);
    room.cut(b);
    room.run();
    assert_eq!(room.peers[a].epoch(), Some(2));
    room.tick();
    room.connect(b);
    room.run();
    assert!(has(&room.peers[b].take_events(), |e| matches!(
        e,
        Event::Reconnected { .. }
    )));
    room.tick();
    room.run();
    // Merged from the replay: no second commit for the same change.
    assert_eq!(room.peers[b].epoch(), Some(2));
    assert_eq!(room.peers[a].code(), room.peers[b].code());
    assert_eq!(commits_by(&room, "bob"), 1);
}

// covers: SDK-RES-7, CP-PING-1
#[test]
fn a_member_that_does_not_reconnect_still_pings_a_quiet_connection() {
    // Alice does not reconnect (the harness's default options); nothing happens in the call.
    let mut room = call(options());
    let a = 0;
    let pings = |room: &Room| {
        room.relayed
            .iter()
            .filter(|(w, x)| w == "alice" && matches!(x, Body::Ping(_)))
            .count()
    };
    let before = pings(&room);
    let start = room.now;
    run_until(
        &mut room,
        Duration::from_secs(30),
        "10 s of a quiet call",
        |r| r.now - start >= Duration::from_secs(10),
    );
    let sent = pings(&room) - before;
    assert!((9..=11).contains(&sent), "{sent} pings in 10 s");
    // Without reconnecting there is no silence watchdog: a dead network drops nothing.
    room.peers[a].connected = false;
    for _ in 0..200 {
        room.advance(STEP);
        let now = room.now;
        room.peers[a].tick(now);
        room.peers[a].outbox.clear();
    }
    assert_eq!(room.peers[a].drops, 0);
    assert!(!room.peers[a].ended);
}
