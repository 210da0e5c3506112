//! DS-level tests of what the network shell relies on: media-signal pass-through, keep-alive,
//! idle timeout and shutdown (manual clock, no sockets).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use blindcall_proto::*;
use blindcall_relay::*;
use common::*;

const ROOM: &[u8] = b"room-l";

fn error(code: ErrorCode) -> Body {
    Body::Error(ErrorMessage {
        code,
        detail: VLBytes::new(vec![]),
    })
}

fn signal(payload: &[u8]) -> Body {
    Body::MediaSignal(MediaSignal {
        payload: VLBytes::new(payload.to_vec()),
    })
}

// covers: DS-MEDIA-1, DS-MEDIA-2, CP-MEDIA-1
#[test]
fn only_members_signal_and_signals_pass_through_opaque() {
    let mut net = Net::new();
    let mut host = room_with_host(&mut net, ROOM, 1);
    // A member's signal goes to the forwarder, tagged with its connection, room and leaf.
    net.send(host.conn, signal(b"offer v=0"));
    assert!(
        net.take(host.conn).is_empty(),
        "no answer from the DS itself"
    );
    assert_eq!(
        net.media,
        vec![(host.conn, RoomId(ROOM.to_vec()), 0, b"offer v=0".to_vec())]
    );
    // A guest in the lobby and a waiting joiner may not signal.
    let lobby = Client::connect(&mut net, ROOM, Role::GUEST, 2, "lobby");
    net.send(lobby.conn, signal(b"x"));
    assert_eq!(net.last(lobby.conn), error(ErrorCode::NOT_MEMBER));
    let mut g = waiting_guest(&mut net, ROOM, 3, "g");
    net.send(g.conn, signal(b"x"));
    assert_eq!(net.last(g.conn), error(ErrorCode::NOT_MEMBER));
    assert_eq!(net.media.len(), 1);
    assert_eq!(net.ds.counters().errors(ErrorCode::NOT_MEMBER), 2);
    // The forwarder may answer members only.
    assert_eq!(
        net.ds.send_media_signal(lobby.conn, b"answer".to_vec()),
        Err(MediaSignalError::NotMember)
    );
    assert_eq!(
        net.ds.send_media_signal(g.conn, b"answer".to_vec()),
        Err(MediaSignalError::NotMember)
    );
    assert_eq!(
        net.ds.send_media_signal(ConnId(999), b"answer".to_vec()),
        Err(MediaSignalError::UnknownConnection)
    );
    assert_eq!(
        net.ds
            .send_media_signal(host.conn, vec![0; DEFAULT_MAX_FRAME_LEN as usize]),
        Err(MediaSignalError::TooLarge {
            len: DEFAULT_MAX_FRAME_LEN as usize
        })
    );
    net.ds
        .send_media_signal(host.conn, b"answer v=0".to_vec())
        .unwrap();
    net.drain();
    assert_eq!(
        net.inbox.get(&host.conn).and_then(|v| v.last()),
        Some(&signal(b"answer v=0"))
    );
    // Once added, the joiner signals with its leaf.
    admit_all(&mut net, &mut host, &mut [], &mut [&mut g]);
    net.send(g.conn, signal(b"offer 2"));
    assert_eq!(net.media.last().map(|m| (m.0, m.2)), Some((g.conn, 1)));
    net.ds.send_media_signal(g.conn, b"ok".to_vec()).unwrap();
    net.drain();
    assert_eq!(net.take(g.conn), vec![signal(b"ok")]);
    let c = net.ds.counters();
    assert_eq!((c.media_signals_in, c.media_signals_out), (2, 2));
    // Before Hello, a media signal is a wrong first message.
    let id = net.open();
    net.send(id, signal(b"x"));
    assert_eq!(net.last(id), error(ErrorCode::UNEXPECTED_MESSAGE));
    assert!(net.closed.contains_key(&id));
}

// covers: CP-PING-1, DS-IDLE-1, ADM-TIME-3
#[test]
fn idle_connections_are_refused_and_pings_keep_them_alive() {
    let mut cfg = config();
    cfg.idle_timeout = Some(Duration::from_secs(30));
    let mut net = Net::with(cfg);
    let mut host = room_with_host(&mut net, ROOM, 1);
    let mut g = waiting_guest(&mut net, ROOM, 2, "g");
    admit_all(&mut net, &mut host, &mut [], &mut [&mut g]);
    let silent = Client::connect(&mut net, ROOM, Role::GUEST, 3, "silent");
    // Pings answer with their nonce and count as activity.
    for step in 0..4u64 {
        net.advance(Duration::from_secs(20));
        for c in [host.conn, g.conn] {
            net.send(c, Body::Ping(Ping { nonce: step }));
        }
        assert_eq!(
            net.take(host.conn).last(),
            Some(&Body::Pong(Pong { nonce: step }))
        );
        assert!(!net.closed.contains_key(&host.conn));
        assert!(!net.closed.contains_key(&g.conn));
        if step == 0 {
            assert!(!net.closed.contains_key(&silent.conn), "20 s < 30 s");
        }
    }
    assert_eq!(
        net.closed.get(&silent.conn),
        Some(&CloseReason::Refused(RefusedReason::IDLE_TIMEOUT))
    );
    assert_eq!(
        net.take(silent.conn).last(),
        Some(&Body::Refused(Refused {
            reason: RefusedReason::IDLE_TIMEOUT
        }))
    );
    // A silent member is refused too, and the relay proposes its removal to the others.
    net.take(g.conn);
    net.advance(Duration::from_secs(20));
    net.send(host.conn, Body::Ping(Ping { nonce: 9 }));
    net.advance(Duration::from_secs(11));
    assert_eq!(
        net.closed.get(&g.conn),
        Some(&CloseReason::Refused(RefusedReason::IDLE_TIMEOUT))
    );
    assert!(
        net.take(host.conn)
            .iter()
            .any(|b| matches!(b, Body::RelayProposal(p) if p.removed_leaf == 1))
    );
    assert_eq!(net.ds.counters().refused(RefusedReason::IDLE_TIMEOUT), 2);
    // Without an idle timeout (the DS default), silence is fine.
    let mut net = Net::new();
    let (quiet, _) = net.hello(ROOM, &mint(ROOM, Role::GUEST, T0 + 7200, 1), "q");
    net.advance(Duration::from_secs(3600));
    assert!(!net.closed.contains_key(&quiet));
}

// covers: DS-SHUT-1
#[test]
fn shutdown_refuses_everyone_without_proposals_and_refuses_newcomers() {
    let mut net = Net::new();
    let mut host = room_with_host(&mut net, ROOM, 1);
    let mut g = waiting_guest(&mut net, ROOM, 2, "g");
    admit_all(&mut net, &mut host, &mut [], &mut [&mut g]);
    let waiting = waiting_guest(&mut net, ROOM, 3, "w");
    let fresh = net.open();
    let other_room = room_with_host(&mut net, b"room-2", 4);
    for c in [host.conn, g.conn, waiting.conn, other_room.conn] {
        net.take(c);
    }
    net.ds.handle_shutdown(net.now);
    net.drain();
    let bye = Body::Refused(Refused {
        reason: RefusedReason::SHUTTING_DOWN,
    });
    for c in [host.conn, g.conn, waiting.conn, fresh, other_room.conn] {
        assert_eq!(
            net.take(c),
            vec![bye.clone()],
            "{c:?} gets exactly one goodbye"
        );
        assert_eq!(
            net.closed.get(&c),
            Some(&CloseReason::Refused(RefusedReason::SHUTTING_DOWN))
        );
    }
    assert!(net.ds.is_shutting_down());
    assert_eq!(net.ds.occupancy(), Occupancy::default());
    assert_eq!(net.ds.poll_timeout(), None);
    assert_eq!(net.ds.counters().refused(RefusedReason::SHUTTING_DOWN), 5);
    // Newcomers are refused at once.
    let late = net.open();
    assert_eq!(net.take(late), vec![bye]);
    assert!(net.closed.contains_key(&late));
}

// covers: DS-SANS-1
#[test]
fn occupancy_counts_rooms_members_and_waiting() {
    let mut net = Net::new();
    let mut host = room_with_host(&mut net, ROOM, 1);
    let mut g = waiting_guest(&mut net, ROOM, 2, "g");
    let _lobby = Client::connect(&mut net, b"room-2", Role::GUEST, 4, "l");
    let _unadmitted = net.open();
    assert_eq!(
        net.ds.occupancy(),
        Occupancy {
            rooms: 2,
            connections: 4,
            admitted: 3,
            members: 1,
            waiting: 1,
            homes: 0
        }
    );
    admit_all(&mut net, &mut host, &mut [], &mut [&mut g]);
    let o = net.ds.occupancy();
    assert_eq!((o.members, o.waiting), (2, 0));
}
