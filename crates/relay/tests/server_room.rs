//! Rooms over real TLS on loopback with real openmls clients: garbage from many connections,
//! a late commit and the metrics of commit outcomes, crashes mid-commit, and the
//! media-signaling hook. (Commit races run on the deterministic simulation, `crates/sim`.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use blindcall_proto::*;
use blindcall_relay::{ConnId, ForwarderCommand, ForwarderEvent, MediaHook, RoomId};
use common::tls::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

fn error(code: ErrorCode) -> Body {
    Body::Error(ErrorMessage {
        code,
        detail: VLBytes::new(vec![]),
    })
}

fn is_commit_answer(b: &Body) -> bool {
    matches!(b, Body::CommitAccepted(_) | Body::CommitRejected(_))
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

/// One garbage connection; returns what the relay answered before closing.
async fn garbage(relay: &TestRelay, kind: usize) -> Vec<Body> {
    let room = b"room-junk";
    let mut c = relay.client().await;
    match kind {
        // Random bytes (an absurd length prefix, or a body that does not decode).
        0 | 1 => c.send_raw(&noise(kind as u64 + 7, 3000)).await,
        // A truncated frame, then the peer leaves.
        2 => {
            let f = ControlMessage::new(Body::Hello(Hello {
                room_id: VLBytes::new(room.to_vec()),
                token: VLBytes::new(token(room, Role::GUEST, 40)),
                display_name: VLBytes::new(b"t".to_vec()),
            }))
            .to_frame(u32::MAX)
            .unwrap();
            c.send_raw(&f[..f.len() / 2]).await;
            c.shutdown_write().await;
        }
        // An oversized frame header.
        3 => c.send_raw(&[0xff, 0xff, 0xff, 0xf0, 1, 2, 3]).await,
        // A valid message in the wrong state: a commit before Hello.
        4 => {
            c.send(Body::Commit(Commit {
                epoch: 0,
                commit: VLBytes::new(noise(3, 64)),
                welcome: None,
                group_info: None,
            }))
            .await
        }
        // Admitted, then a relay-to-client message, a garbage commit and a media signal from a
        // non-member, then a frame that does not decode.
        _ => {
            let Body::HelloAck(_) = c.hello(room, &token(room, Role::GUEST, 41), "junk").await
            else {
                panic!("junk client not admitted")
            };
            c.send(Body::CommitBroadcast(CommitBroadcast {
                epoch: 0,
                commit: VLBytes::new(vec![1, 2, 3]),
            }))
            .await;
            assert_eq!(
                c.recv("error for a relay-only message").await,
                error(ErrorCode::UNEXPECTED_MESSAGE)
            );
            c.send(Body::Commit(Commit {
                epoch: 0,
                commit: VLBytes::new(noise(4, 100)),
                welcome: None,
                group_info: None,
            }))
            .await;
            assert!(matches!(
                c.recv("garbage commit refused").await,
                Body::CommitRejected(r) if r.reason == CommitRejectReason::NO_GROUP
            ));
            c.send(Body::MediaSignal(MediaSignal {
                payload: VLBytes::new(vec![0; 10]),
            }))
            .await;
            assert_eq!(
                c.recv("non-member signal").await,
                error(ErrorCode::NOT_MEMBER)
            );
            c.send_raw(&[0, 0, 0, 3, 0, 1, 0]).await;
        }
    }
    let (bodies, _) = c.closed(&format!("garbage connection {kind} closed")).await;
    bodies
}

// covers: DS-ERR-1, DS-ERR-2, OPS-GARB-1
#[test]
fn garbage_from_many_connections_leaves_a_healthy_room() {
    run(garbage_from_many_connections_leaves_a_healthy_room_body());
}

async fn garbage_from_many_connections_leaves_a_healthy_room_body() {
    let relay = start_relay(|s| s.ds.max_frame_len = 64 * 1024).await;
    let mut room = room_over_tls(&relay, b"room-good", 1, 1).await;
    // Six kinds of garbage, twice each, all at once, plus bytes that are not TLS at all.
    let mut tasks = Vec::new();
    let relay = std::sync::Arc::new(relay);
    for kind in 0..12 {
        let r = relay.clone();
        tasks.push(tokio::spawn(async move {
            (kind % 6, garbage(&r, kind % 6).await)
        }));
    }
    let mut plain = TcpStream::connect(relay.addr).await.unwrap();
    plain.write_all(&noise(99, 500)).await.unwrap();
    // Meanwhile the healthy room commits.
    let (g_tls, g) = &mut room[1];
    let commit = g.self_update();
    g_tls.send(Body::Commit(commit)).await;
    let answer = g_tls.recv_until("commit answer", is_commit_answer).await;
    assert!(
        matches!(answer.last(), Some(Body::CommitAccepted(_))),
        "{answer:?}"
    );
    g.merge_pending();
    let (h_tls, h) = &mut room[0];
    let bodies = h_tls
        .recv_until("broadcast", |b| matches!(b, Body::CommitBroadcast(_)))
        .await;
    h.apply(&bodies);
    assert_eq!(room[0].1.authenticator(), room[1].1.authenticator());
    for t in tasks {
        let (kind, bodies) = within("garbage task", t).await.unwrap();
        match kind {
            3 => assert_eq!(bodies, vec![error(ErrorCode::FRAME_TOO_LARGE)]),
            4 => assert_eq!(bodies, vec![error(ErrorCode::UNEXPECTED_MESSAGE)]),
            5 => assert_eq!(bodies, vec![error(ErrorCode::MALFORMED_MESSAGE)]),
            2 => assert!(bodies.is_empty(), "{bodies:?}"),
            _ => assert!(
                matches!(bodies.as_slice(), [Body::Error(_)] | []),
                "random bytes: {bodies:?}"
            ),
        }
    }
    let mut buf = Vec::new();
    let _ = within("non-TLS close", plain.read_to_end(&mut buf)).await;
    // The room still works after the storm.
    let (h_tls, h) = &mut room[0];
    assert!(h_tls.sync().await.is_empty());
    let commit = h.self_update();
    h_tls.send(Body::Commit(commit)).await;
    let answer = h_tls
        .recv_until("second commit answer", is_commit_answer)
        .await;
    assert!(
        matches!(answer.last(), Some(Body::CommitAccepted(_))),
        "{answer:?}"
    );
    let m = relay.scrape().await;
    assert_eq!(
        metric(
            &m,
            "blindcall_relay_protocol_errors_total{code=\"FRAME_TOO_LARGE\"}"
        )
        .min(2.0),
        2.0
    );
    assert!(
        metric(
            &m,
            "blindcall_relay_protocol_errors_total{code=\"UNEXPECTED_MESSAGE\"}"
        ) >= 4.0
    );
    assert!(
        metric(
            &m,
            "blindcall_relay_protocol_errors_total{code=\"MALFORMED_MESSAGE\"}"
        ) >= 2.0
    );
    assert_eq!(
        metric(
            &m,
            "blindcall_relay_protocol_errors_total{code=\"NOT_MEMBER\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(
            &m,
            "blindcall_relay_commits_rejected_total{reason=\"NO_GROUP\"}"
        ),
        2.0
    );
    assert_eq!(
        metric(&m, "blindcall_relay_tls_handshake_failures_total"),
        1.0
    );
    assert_eq!(metric(&m, "blindcall_relay_commits_accepted_total"), 3.0);
    assert_eq!(metric(&m, "blindcall_relay_internal_faults_total"), 0.0);
    assert_eq!(
        metric(&m, "blindcall_relay_connections"),
        2.0,
        "only the healthy room is left"
    );
    relay.handle.shutdown();
}

// covers: DS-SEQ-2, OPS-MET-1
#[test]
fn a_late_commit_over_tls_gets_the_winner_and_the_outcomes_are_exported() {
    run(a_late_commit_over_tls_gets_the_winner_and_the_outcomes_are_exported_body());
}

/// Commit races themselves run on the deterministic simulation (`crates/sim/tests/races.rs`);
/// here two commits of one epoch arrive one after the other over TLS, so that the outcome is
/// fixed, and the relay's metrics count both.
async fn a_late_commit_over_tls_gets_the_winner_and_the_outcomes_are_exported_body() {
    let relay = start_relay(|_| {}).await;
    let mut room = room_over_tls(&relay, b"room-race", 1, 2).await;
    let epoch = room[0].1.epoch();
    let c1 = room[1].1.self_update();
    let c2 = room[2].1.self_update();
    room[1].0.send(Body::Commit(c1)).await;
    let first = room[1]
        .0
        .recv_until("guest 1's commit answer", is_commit_answer)
        .await;
    assert!(
        matches!(first.last(), Some(Body::CommitAccepted(c)) if c.epoch == epoch + 1),
        "{first:?}"
    );
    room[2].0.send(Body::Commit(c2)).await;
    let late = room[2]
        .0
        .recv_until("guest 2's commit answer", is_commit_answer)
        .await;
    let Some(Body::CommitRejected(rej)) = late.last() else {
        panic!("the late commit was not refused: {late:?}")
    };
    assert_eq!(rej.reason, CommitRejectReason::EPOCH_TAKEN);
    assert!(rej.winner.is_some());
    room[1].1.merge_pending();
    room[2].1.clear_pending();
    room[2].1.apply(&late);
    // Everyone else saw exactly one broadcast for the epoch.
    let host_saw = room[0].0.sync().await;
    let broadcasts = |v: &[Body]| {
        v.iter()
            .filter(|b| matches!(b, Body::CommitBroadcast(c) if c.epoch == epoch))
            .count()
    };
    assert_eq!(broadcasts(&host_saw), 1, "{host_saw:?}");
    assert_eq!(broadcasts(&late), 1);
    room[0].1.apply(&host_saw);
    for (t, _) in room.iter_mut().skip(1) {
        let later = t.sync().await;
        assert_eq!(broadcasts(&later), 0, "no second broadcast: {later:?}");
    }
    let auth = room[0].1.authenticator();
    for (_, c) in &room {
        assert_eq!(c.epoch(), epoch + 1);
        assert_eq!(c.authenticator(), auth);
    }
    let m = relay.scrape().await;
    assert_eq!(
        metric(
            &m,
            "blindcall_relay_commits_rejected_total{reason=\"EPOCH_TAKEN\"}"
        ),
        1.0
    );
    assert_eq!(metric(&m, "blindcall_relay_commits_accepted_total"), 2.0);
    assert_eq!(
        metric(&m, "blindcall_relay_commit_sequencing_seconds_count"),
        2.0
    );
    assert_eq!(metric(&m, "blindcall_relay_members"), 3.0);
    relay.handle.shutdown();
}

// covers: DS-CRASH-1, DS-RM-1
#[test]
fn a_client_crashing_mid_commit_never_sticks_the_room() {
    run(a_client_crashing_mid_commit_never_sticks_the_room_body());
}

async fn a_client_crashing_mid_commit_never_sticks_the_room_body() {
    let relay = start_relay(|_| {}).await;
    let mut room = room_over_tls(&relay, b"room-crash", 1, 2).await;
    // Guest 2 crashes halfway through sending its commit frame.
    let (mut t2, mut c2) = room.pop().unwrap();
    let leaf2 = c2.group().own_leaf_index().u32();
    let frame = ControlMessage::new(Body::Commit(c2.self_update()))
        .to_frame(u32::MAX)
        .unwrap();
    t2.send_raw(&frame[..frame.len() / 2]).await;
    drop(t2);
    // The others learn of the departure and the host commits the relay's Remove.
    for (t, c) in room.iter_mut() {
        let bodies = t
            .recv_until(
                "relay's Remove for the crashed member",
                |b| matches!(b, Body::RelayProposal(p) if p.removed_leaf == leaf2),
            )
            .await;
        c.apply(&bodies);
    }
    let commit = room[0].1.commit_pending();
    room[0].0.send(Body::Commit(commit)).await;
    let answer = room[0]
        .0
        .recv_until("commit answer", is_commit_answer)
        .await;
    assert!(
        matches!(answer.last(), Some(Body::CommitAccepted(_))),
        "{answer:?}"
    );
    room[0].1.merge_pending();
    let bodies = room[1]
        .0
        .recv_until("broadcast", |b| matches!(b, Body::CommitBroadcast(_)))
        .await;
    room[1].1.apply(&bodies);
    assert_eq!(room[0].1.authenticator(), room[1].1.authenticator());
    assert_eq!(room[0].1.group().members().count(), 2);
    // Guest 1 sends a whole commit and crashes right after: whether or not the relay read it
    // before the connection died, the host's next commit is accepted.
    let (mut t1, mut c1) = room.pop().unwrap();
    let leaf1 = c1.group().own_leaf_index().u32();
    t1.send(Body::Commit(c1.self_update())).await;
    drop(t1);
    let (h_tls, host) = &mut room[0];
    let bodies = h_tls
        .recv_until(
            "relay's Remove for guest 1",
            |b| matches!(b, Body::RelayProposal(p) if p.removed_leaf == leaf1),
        )
        .await;
    host.apply(&bodies);
    let commit = host.commit_pending();
    h_tls.send(Body::Commit(commit)).await;
    let answer = h_tls.recv_until("commit answer", is_commit_answer).await;
    assert!(
        matches!(answer.last(), Some(Body::CommitAccepted(_))),
        "{answer:?}"
    );
    host.merge_pending();
    assert_eq!(host.group().members().count(), 1);
    relay.handle.shutdown();
}

// covers: DS-MEDIA-1, DS-MEDIA-2, OPS-MEDIA-1
#[test]
fn media_signals_reach_the_forwarder_and_come_back() {
    run(media_signals_reach_the_forwarder_and_come_back_body());
}

async fn media_signals_reach_the_forwarder_and_come_back_body() {
    let (ev_tx, mut ev_rx) = mpsc::channel(16);
    let (cmd_tx, cmd_rx) = mpsc::channel(16);
    let relay = start_relay(move |s| {
        s.media = Some(MediaHook {
            events: ev_tx,
            commands: cmd_rx,
        })
    })
    .await;
    let mut room = room_over_tls(&relay, b"room-media", 1, 1).await;
    let (g_tls, g) = &mut room[1];
    g_tls
        .send(Body::MediaSignal(MediaSignal {
            payload: VLBytes::new(b"sdp offer".to_vec()),
        }))
        .await;
    let ev = within("forwarder event", ev_rx.recv()).await.unwrap();
    assert_eq!(
        ev,
        ForwarderEvent::Signal {
            conn: g.conn,
            room: RoomId(b"room-media".to_vec()),
            leaf: 1,
            participant: g.conn,
            payload: b"sdp offer".to_vec()
        }
    );
    cmd_tx
        .send(ForwarderCommand {
            conn: g.conn,
            payload: b"sdp answer".to_vec(),
        })
        .await
        .unwrap();
    let bodies = g_tls
        .recv_until("forwarder answer", |b| matches!(b, Body::MediaSignal(_)))
        .await;
    assert_eq!(
        bodies.last(),
        Some(&Body::MediaSignal(MediaSignal {
            payload: VLBytes::new(b"sdp answer".to_vec())
        }))
    );
    // A non-member may not signal, and the forwarder cannot signal it.
    let (mut lobby, ack) = relay.admitted(b"room-media", Role::GUEST, 9, "lobby").await;
    lobby
        .send(Body::MediaSignal(MediaSignal {
            payload: VLBytes::new(b"x".to_vec()),
        }))
        .await;
    assert_eq!(
        lobby.recv("non-member signal").await,
        error(ErrorCode::NOT_MEMBER)
    );
    cmd_tx
        .send(ForwarderCommand {
            conn: ConnId(ack.conn_id),
            payload: b"x".to_vec(),
        })
        .await
        .unwrap();
    assert!(
        lobby.sync().await.is_empty(),
        "nothing reaches a non-member"
    );
    // A member leaving is reported to the forwarder.
    let (g_tls, g) = room.pop().unwrap();
    drop(g_tls);
    let ev = within("forwarder close event", ev_rx.recv()).await.unwrap();
    assert_eq!(ev, ForwarderEvent::Closed { conn: g.conn });
    let m = relay.scrape().await;
    assert_eq!(metric(&m, "blindcall_relay_media_signals_in_total"), 1.0);
    assert_eq!(metric(&m, "blindcall_relay_media_signals_out_total"), 1.0);
    assert_eq!(
        metric(&m, "blindcall_relay_forwarder_commands_refused_total"),
        1.0
    );
    relay.handle.shutdown();
}

// covers: OPS-TAP-1
#[test]
fn the_control_tap_sees_every_frame_both_ways_after_tls() {
    run(the_control_tap_sees_every_frame_both_ways_after_tls_body());
}

async fn the_control_tap_sees_every_frame_both_ways_after_tls_body() {
    use blindcall_relay::TapDirection::{FromClient, ToClient};
    use blindcall_relay::{ControlRecorder, TappedFrame};

    let recorder = ControlRecorder::new();
    let tap = std::sync::Arc::new(recorder.clone());
    let relay = start_relay(move |s| s.control_tap = Some(tap)).await;
    let (mut c, ack) = relay.admitted(b"room-tap", Role::HOST, 1, "h").await;
    let conn = ConnId(ack.conn_id);
    c.send(Body::Ping(Ping { nonce: 77 })).await;
    assert_eq!(c.recv("Pong").await, Body::Pong(Pong { nonce: 77 }));
    // A frame that arrives in two pieces is still tapped whole.
    let split = ControlMessage::new(Body::Ping(Ping { nonce: 78 }))
        .to_frame(DEFAULT_MAX_FRAME_LEN)
        .unwrap();
    c.send_raw(&split[..3]).await;
    c.send_raw(&split[3..]).await;
    assert_eq!(c.recv("Pong").await, Body::Pong(Pong { nonce: 78 }));
    // A garbage connection: an oversized frame header is answered and closed.
    let mut g = relay.client().await;
    g.send_raw(&[0xff, 0xff, 0xff, 0xf0, 1, 2, 3]).await;
    g.closed("refusal of the oversized frame").await;

    let frames = recorder.frames();
    let bodies = |dir| -> Vec<Body> {
        frames
            .iter()
            .filter(|f: &&TappedFrame| f.conn == conn && f.direction == dir)
            .map(|f| {
                let len = u32::from_be_bytes(f.bytes[..4].try_into().unwrap());
                assert_eq!(len as usize, f.bytes.len() - 4, "one whole frame");
                ControlMessage::decode(&f.bytes[4..]).unwrap().body
            })
            .collect()
    };
    let from = bodies(FromClient);
    assert!(matches!(from[0], Body::Hello(_)), "{from:?}");
    assert_eq!(
        from[1..],
        [
            Body::Ping(Ping { nonce: 77 }),
            Body::Ping(Ping { nonce: 78 })
        ]
    );
    assert!(
        frames
            .iter()
            .any(|f| f.conn == conn && f.direction == FromClient && f.bytes == split),
        "the split frame, byte for byte"
    );
    let to = bodies(ToClient);
    assert_eq!(to[0], Body::HelloAck(ack));
    assert_eq!(
        to[1..],
        [
            Body::Pong(Pong { nonce: 77 }),
            Body::Pong(Pong { nonce: 78 })
        ]
    );
    // The garbage connection's bytes and the relay's answer are tapped too.
    let other: Vec<&TappedFrame> = frames.iter().filter(|f| f.conn != conn).collect();
    assert!(
        other
            .iter()
            .any(|f| f.direction == FromClient && f.bytes == [1, 2, 3]),
        "{other:?}"
    );
    assert!(other.iter().any(|f| {
        f.direction == ToClient
            && ControlMessage::decode(&f.bytes[4..])
                .is_ok_and(|m| m.body == error(ErrorCode::FRAME_TOO_LARGE))
    }));
    relay.handle.shutdown();
}
