//! Store mode: a room's lock shared between nodes through the room store (spec/cluster.md,
//! CL-LOCK-*). Sans-IO: the DS asks its shell to write each lock change it makes
//! (`Output::Lock`) and is handed the changes the store holds (`Ds::handle_lock`), as the
//! shell's watch of the lock entries does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use blindcall_proto::*;
use blindcall_relay::store::{
    CorruptEntry, LockWrite, MemoryStore, decode_lock, encode_lock, lock_key, parse_lock_key,
};
use blindcall_relay::*;
use common::*;

const ROOM: &[u8] = b"room-lock";

fn room() -> RoomId {
    RoomId(ROOM.to_vec())
}

fn lock_req(n: u64, locked: bool) -> LockRequest {
    LockRequest {
        room: room(),
        n,
        locked,
    }
}

fn guest(net: &mut Net, id: u8) -> (ConnId, HelloAck) {
    let (c, body) = net.hello(ROOM, &mint(ROOM, Role::GUEST, T0 + 3600, id), "g");
    let Body::HelloAck(ack) = body else {
        panic!("{body:?}")
    };
    (c, ack)
}

fn locked_updates(bodies: &[Body]) -> Vec<u8> {
    bodies
        .iter()
        .filter_map(|b| match b {
            Body::RoomStateUpdate(s) => Some(s.locked),
            _ => None,
        })
        .collect()
}

fn publish(net: &mut Net, c: ConnId) -> Body {
    net.send(
        c,
        Body::PublishKeyPackage(PublishKeyPackage {
            key_package: VLBytes::new(vec![0; 8]),
            join_proof: None,
        }),
    );
    net.last(c)
}

// covers: CL-LOCK-1
#[test]
fn a_lock_change_made_on_one_node_is_numbered_and_applied_on_another() {
    let mut a = Net::shared(MemoryStore::default());
    let mut b = Net::shared(MemoryStore::default());

    // Node A: the host locks and unlocks; each change takes effect there at once and is
    // handed to the shell with the next number.
    let (host, _) = a.hello(ROOM, &mint(ROOM, Role::HOST, T0 + 3600, 1), "host");
    a.send(host, Body::LockRoom);
    a.send(host, Body::UnlockRoom);
    assert_eq!(locked_updates(&a.take(host)), vec![1, 0]);
    assert_eq!(a.locks, vec![lock_req(1, true), lock_req(2, false)]);
    assert_eq!(a.ds.counters().lock_changes_shared, 2);
    // The watch hands node A its own changes back: nothing changes there.
    for r in a.locks.clone() {
        a.ds.handle_lock(a.now, &r.room, r.n, r.locked);
        a.drain();
    }
    assert!(a.take(host).is_empty());
    assert_eq!(a.ds.counters().lock_changes_learned, 0);

    // Node B: a guest in the lobby hears the lock and may not queue while it holds.
    let (g, ack) = guest(&mut b, 2);
    assert_eq!(ack.room.locked, 0);
    b.ds.handle_lock(b.now, &room(), 1, true);
    b.drain();
    assert_eq!(locked_updates(&b.take(g)), vec![1]);
    assert!(b.events.contains(&Event::RoomLocked {
        room: room(),
        locked: true
    }));
    let (g2, ack) = guest(&mut b, 3);
    assert_eq!(ack.room.locked, 1);
    assert_eq!(
        publish(&mut b, g2),
        Body::Refused(Refused {
            reason: RefusedReason::ROOM_LOCKED
        })
    );
    // The same change again, or an older one, changes nothing.
    b.ds.handle_lock(b.now, &room(), 1, true);
    b.drain();
    assert!(b.take(g).is_empty());
    // A newer change unlocks; the older one seen late is ignored.
    b.ds.handle_lock(b.now, &room(), 2, false);
    b.ds.handle_lock(b.now, &room(), 1, true);
    b.drain();
    assert_eq!(locked_updates(&b.take(g)), vec![0]);
    assert!(matches!(
        publish(&mut b, g),
        Body::Error(_) | Body::KeyPackageAccepted(_)
    ));
    // A host's change on B after that is numbered after the last change B saw.
    let (h_b, _) = b.hello(ROOM, &mint(ROOM, Role::HOST, T0 + 3600, 4), "host b");
    b.send(h_b, Body::LockRoom);
    assert_eq!(b.locks, vec![lock_req(3, true)]);
    // The store gave number 3 to another node's unlock: its holder wins here too.
    b.take(g);
    b.ds.handle_lock(b.now, &room(), 3, false);
    b.drain();
    assert_eq!(locked_updates(&b.take(g)), vec![0]);
    // A single relay shares no lock change.
    let mut single = Net::new();
    let (h, _) = single.hello(ROOM, &mint(ROOM, Role::HOST, T0 + 3600, 1), "host");
    single.send(h, Body::LockRoom);
    assert!(single.locks.is_empty());
}

// covers: CL-LOCK-1
#[test]
fn a_lock_for_a_room_not_served_here_holds_when_it_is() {
    let mut b = Net::shared(MemoryStore::default());
    b.ds.handle_lock(b.now, &room(), 5, true);
    b.drain();
    let (g, ack) = guest(&mut b, 2);
    assert_eq!(ack.room.locked, 1);
    assert_eq!(
        publish(&mut b, g),
        Body::Refused(Refused {
            reason: RefusedReason::ROOM_LOCKED
        })
    );
}

// covers: CL-LOCK-2
#[test]
fn a_lock_entry_is_bound_to_its_key_and_each_number_holds_one_change() {
    let r = room();
    let key = lock_key(&r, 7);
    assert_eq!(key, format!("room.{}.lock.7", hex::encode(ROOM)));
    assert_eq!(parse_lock_key(&key), Some((r.clone(), 7)));
    assert_eq!(
        parse_lock_key(&format!("room.{}.lock.07", hex::encode(ROOM))),
        None
    );
    let rec = encode_lock(&r, 7, true).unwrap();
    assert_eq!(decode_lock(&rec, &r, 7), Ok(true));
    assert_eq!(
        decode_lock(&encode_lock(&r, 7, false).unwrap(), &r, 7),
        Ok(false)
    );
    assert_eq!(decode_lock(&rec, &r, 8), Err(CorruptEntry::WrongLock));
    let mut bad = rec.clone();
    *bad.last_mut().unwrap() = 2;
    assert_eq!(decode_lock(&bad, &r, 7), Err(CorruptEntry::WrongLock));
    assert_eq!(
        decode_lock(&rec, &RoomId(b"x".to_vec()), 7),
        Err(CorruptEntry::WrongRoom)
    );
    assert_eq!(
        decode_lock(&rec[..rec.len() - 1], &r, 7),
        Err(CorruptEntry::Truncated)
    );
    let mut long = rec.clone();
    long.push(0);
    assert_eq!(decode_lock(&long, &r, 7), Err(CorruptEntry::TrailingBytes));
    assert_eq!(decode_lock(b"nope", &r, 7), Err(CorruptEntry::Foreign));
    let store = MemoryStore::default();
    assert_eq!(store.write_lock(&r, 1, true).unwrap(), LockWrite::Written);
    assert_eq!(store.write_lock(&r, 1, true).unwrap(), LockWrite::Written);
    assert_eq!(
        store.write_lock(&r, 1, false).unwrap(),
        LockWrite::Taken { locked: true }
    );
}
