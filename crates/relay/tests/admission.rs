//! Admission: capability tokens, locks, bans, timeouts — every refusal typed and counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use blindcall_proto::*;
use blindcall_relay::*;
use common::*;
use openmls::prelude::{Ciphersuite, SignatureScheme};

fn refused(net: &mut Net, token: &[u8], room: &[u8]) -> (ConnId, RefusedReason) {
    let (id, body) = net.hello(room, token, "x");
    let Body::Refused(r) = body else {
        panic!("expected refusal, got {body:?}")
    };
    assert_eq!(net.closed.get(&id), Some(&CloseReason::Refused(r.reason)));
    (id, r.reason)
}

// covers: ADM-HELLO-1, ADM-HELLO-2, ADM-TOK-3, ADM-CNT-1
#[test]
fn every_token_refusal_is_typed_counted_and_closes() {
    let mut net = Net::new();
    let room = b"room-a";
    let cases: Vec<(Vec<u8>, &[u8], RefusedReason)> = vec![
        (Vec::new(), room, RefusedReason::MISSING_TOKEN),
        (
            b"not a token".to_vec(),
            room,
            RefusedReason::MALFORMED_TOKEN,
        ),
        (
            mint_with(&[9; 32], room, Role::GUEST, T0 + 60, 1),
            room,
            RefusedReason::BAD_SIGNATURE,
        ),
        (mint(room, Role::GUEST, T0, 1), room, RefusedReason::EXPIRED),
        (
            mint(b"room-b", Role::GUEST, T0 + 60, 1),
            room,
            RefusedReason::WRONG_ROOM,
        ),
    ];
    for (token, r, want) in &cases {
        let (_, got) = refused(&mut net, token, r);
        assert_eq!(got, *want);
        assert_eq!(net.ds.counters().refused(*want), 1, "{want:?}");
    }
    assert_eq!(net.ds.counters().admitted, 0);
    assert_eq!(net.ds.connection_count(), 0);
    assert_eq!(net.ds.room_count(), 0, "refused connections create no room");
    // A valid token is admitted and told its role and the relay's external sender.
    let (id, body) = net.hello(room, &mint(room, Role::GUEST, T0 + 60, 1), "ok");
    let Body::HelloAck(ack) = body else {
        panic!("{body:?}")
    };
    assert_eq!(ack.conn_id, id.0);
    assert_eq!(ack.role, Role::GUEST);
    assert_eq!(ack.room.epoch, None);
    // One external-sender identity per supported signature scheme, in a stable order.
    let schemes: Vec<u16> = ack
        .external_senders
        .iter()
        .map(|s| s.signature_scheme)
        .collect();
    assert_eq!(schemes, vec![0x0807, 0x0403]);
    for (cs, scheme) in [
        (CS, SignatureScheme::ED25519),
        (
            Ciphersuite::MLS_128_DHKEMP256_AES128GCM_SHA256_P256,
            SignatureScheme::ECDSA_SECP256R1_SHA256,
        ),
    ] {
        let relay = relay_from_ack_for(&ack, cs);
        let ours = net.ds.relay_identities().for_scheme(scheme).unwrap();
        assert_eq!(relay.key.as_slice(), ours.signature_public_key());
        assert_eq!(&relay.credential, ours.credential());
    }
    assert_eq!(net.ds.counters().admitted, 1);
}

// covers: ADM-HELLO-3
#[test]
fn bad_hello_and_wrong_first_message_are_refused() {
    let mut net = Net::new();
    let room = b"room-a";
    let long = "n".repeat(200);
    let (id, body) = net.hello(room, &mint(room, Role::GUEST, T0 + 60, 1), &long);
    assert_eq!(
        body,
        Body::Refused(Refused {
            reason: RefusedReason::BAD_HELLO
        })
    );
    assert!(net.closed.contains_key(&id));
    // Anything but Hello first: error and close.
    let id = net.open();
    net.send(id, Body::LockRoom);
    assert_eq!(
        net.last(id),
        Body::Error(ErrorMessage {
            code: ErrorCode::UNEXPECTED_MESSAGE,
            detail: VLBytes::new(vec![])
        })
    );
    assert_eq!(
        net.closed.get(&id),
        Some(&CloseReason::Protocol(ErrorCode::UNEXPECTED_MESSAGE))
    );
    // An unknown protocol version in the first message is a refusal.
    let id = net.open();
    let mut frame = ControlMessage::new(Body::LockRoom).encode().unwrap();
    frame[1] = 9;
    net.raw(id, &encode_frame(&frame, 100).unwrap());
    assert_eq!(
        net.last(id),
        Body::Refused(Refused {
            reason: RefusedReason::UNSUPPORTED_VERSION
        })
    );
}

// covers: ADM-LOCK-1, ADM-LOCK-2, DS-HOST-1
#[test]
fn locked_room_refuses_new_guests_but_not_hosts() {
    let mut net = Net::new();
    let room = b"room-a";
    let host = room_with_host(&mut net, room, 1);
    let guest = Client::connect(&mut net, room, Role::GUEST, 2, "g");
    // This guest publishes its KeyPackage before the lock.
    net.send(
        guest.conn,
        Body::PublishKeyPackage(PublishKeyPackage {
            key_package: VLBytes::new(guest.key_package()),
            join_proof: None,
        }),
    );
    assert!(matches!(net.last(guest.conn), Body::KeyPackageAccepted(_)));
    // A guest may not lock.
    net.send(guest.conn, Body::LockRoom);
    assert!(matches!(net.last(guest.conn), Body::Error(e) if e.code == ErrorCode::NOT_HOST));
    net.send(host.conn, Body::LockRoom);
    let Body::RoomStateUpdate(s) = net.last(host.conn) else {
        panic!()
    };
    assert_eq!(s.locked, 1);
    assert!(matches!(net.last(guest.conn), Body::RoomStateUpdate(s) if s.locked == 1));
    // A new guest is admitted to the lobby (only to resume a membership, DS-RES-9) and told
    // the room is locked; its KeyPackage, the first step towards the waiting room, is refused.
    let (late, body) = net.hello(room, &mint(room, Role::GUEST, T0 + 60, 3), "late");
    assert!(
        matches!(&body, Body::HelloAck(a) if a.room.locked == 1),
        "{body:?}"
    );
    net.send(
        late,
        Body::PublishKeyPackage(PublishKeyPackage {
            key_package: VLBytes::new(guest.key_package()),
            join_proof: None,
        }),
    );
    assert_eq!(
        net.take(late),
        vec![Body::Refused(Refused {
            reason: RefusedReason::ROOM_LOCKED
        })]
    );
    assert_eq!(
        net.closed.get(&late),
        Some(&CloseReason::Refused(RefusedReason::ROOM_LOCKED))
    );
    assert_eq!(net.ds.counters().refused(RefusedReason::ROOM_LOCKED), 1);
    // The guest admitted before the lock cannot enter the waiting room either.
    net.send(guest.conn, Body::JoinRequest);
    assert_eq!(
        net.last(guest.conn),
        Body::Refused(Refused {
            reason: RefusedReason::ROOM_LOCKED
        })
    );
    assert_eq!(net.ds.counters().refused(RefusedReason::ROOM_LOCKED), 2);
    // Hosts still get in.
    let (_, body) = net.hello(room, &mint(room, Role::HOST, T0 + 60, 4), "h2");
    assert!(matches!(body, Body::HelloAck(_)));
    net.send(host.conn, Body::UnlockRoom);
    net.take(host.conn);
    let (_, body) = net.hello(room, &mint(room, Role::GUEST, T0 + 60, 5), "g5");
    assert!(matches!(body, Body::HelloAck(_)));
}

// covers: ADM-TIME-1, DS-SANS-1, DS-SANS-2
#[test]
fn hello_timeout_and_monotonic_time() {
    let mut net = Net::new();
    let id = net.open();
    let deadline = net.ds.poll_timeout().unwrap();
    assert_eq!(deadline, net.now.saturating_add(Duration::from_secs(10)));
    // Time going backwards is ignored; an early timeout call does nothing.
    net.ds.handle_timeout(Timestamp(0));
    net.drain();
    assert!(net.inbox.is_empty());
    net.advance(Duration::from_secs(9));
    assert!(!net.closed.contains_key(&id));
    net.advance(Duration::from_secs(1));
    assert_eq!(
        net.last(id),
        Body::Refused(Refused {
            reason: RefusedReason::HELLO_TIMEOUT
        })
    );
    assert_eq!(
        net.closed.get(&id),
        Some(&CloseReason::Refused(RefusedReason::HELLO_TIMEOUT))
    );
    assert_eq!(net.ds.poll_timeout(), None);
    // An admitted connection's hello timer is stale and does not fire.
    let room = b"room-t";
    let (id2, body) = net.hello(room, &mint(room, Role::GUEST, T0 + 3600, 1), "g");
    assert!(matches!(body, Body::HelloAck(_)));
    net.advance(Duration::from_secs(30));
    assert!(!net.closed.contains_key(&id2));
}

// covers: ADM-TIME-2, DS-WAIT-4
#[test]
fn waiting_room_times_out() {
    let mut net = Net::new();
    let room = b"room-w";
    let mut host = room_with_host(&mut net, room, 1);
    let g = waiting_guest(&mut net, room, 2, "g");
    assert_eq!(waiting_kps(&host.pump(&mut net)).len(), 1);
    net.advance(Duration::from_secs(61));
    assert_eq!(
        net.last(g.conn),
        Body::Refused(Refused {
            reason: RefusedReason::WAITING_ROOM_TIMEOUT
        })
    );
    // Members see the waiting room emptied.
    assert_eq!(waiting_kps(&host.pump(&mut net)).len(), 0);
    assert_eq!(
        net.ds
            .counters()
            .refused(RefusedReason::WAITING_ROOM_TIMEOUT),
        1
    );
}

// covers: ADM-BAN-1, DS-HOST-2
#[test]
fn host_removes_a_waiting_guest_and_the_token_is_banned() {
    let mut net = Net::new();
    let room = b"room-r";
    let mut host = room_with_host(&mut net, room, 1);
    let g = waiting_guest(&mut net, room, 2, "g");
    host.pump(&mut net);
    let guest = Client::connect(&mut net, room, Role::GUEST, 3, "g3");
    net.send(
        guest.conn,
        Body::RemoveParticipant(RemoveParticipant { conn_id: g.conn.0 }),
    );
    assert!(matches!(net.last(guest.conn), Body::Error(e) if e.code == ErrorCode::NOT_HOST));
    net.send(
        host.conn,
        Body::RemoveParticipant(RemoveParticipant { conn_id: 999 }),
    );
    assert!(
        matches!(net.last(host.conn), Body::Error(e) if e.code == ErrorCode::UNKNOWN_PARTICIPANT)
    );
    net.send(
        host.conn,
        Body::RemoveParticipant(RemoveParticipant { conn_id: g.conn.0 }),
    );
    assert_eq!(
        net.last(g.conn),
        Body::Refused(Refused {
            reason: RefusedReason::REMOVED_BY_HOST
        })
    );
    assert_eq!(waiting_kps(&host.pump(&mut net)).len(), 0);
    // The same token cannot come back.
    let (_, body) = net.hello(room, &mint(room, Role::GUEST, T0 + 3600, 2), "again");
    assert_eq!(
        body,
        Body::Refused(Refused {
            reason: RefusedReason::REMOVED_BY_HOST
        })
    );
}
