//! Store mode: the waiting room shared between nodes (spec/cluster.md, CL-WAIT-*). Sans-IO:
//! two DSs share one memory store, as two nodes share JetStream; the test hands each node's
//! waiting-joiner writes (`Output::Waiting`) to the other (`Ds::handle_waiting`), as the
//! shells' watches do, and the winners the store sequenced to the follower.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use blindcall_proto::*;
use blindcall_relay::keyfile::{new_key_file_text, parse_relay_identities};
use blindcall_relay::store::{
    MemoryStore, WaitingChange, WaitingRecord, parse_waiting_key, waiting_key,
};
use blindcall_relay::*;
use common::*;

const ROOM: &[u8] = b"room-shared-waiting";

fn room() -> RoomId {
    RoomId(ROOM.to_vec())
}

/// Two nodes in store mode sharing `store` and one set of external-sender keys (CL-NODE-3).
fn two_nodes(store: &MemoryStore) -> (Net, Net) {
    let keys = new_key_file_text().unwrap();
    let node = || {
        let mut cfg = config();
        cfg.store_mode = StoreMode::Shared;
        cfg.relay_identities = parse_relay_identities(&keys).unwrap();
        let mut net = Net::with(cfg);
        net.store = Some(store.clone());
        net
    };
    (node(), node())
}

/// Hand `from`'s waiting-joiner writes to `to`, as `to`'s watch would see them.
fn relay_waiting(from: &mut Net, node: &str, to: &mut Net) -> usize {
    let writes: Vec<WaitingWrite> = from.waiting_writes.drain(..).collect();
    let n = writes.len();
    for w in writes {
        to.ds.handle_waiting(
            to.now,
            WaitingChange {
                room: w.room,
                node: node.to_owned(),
                conn: w.conn.0,
                record: w.record,
            },
        );
        to.drain();
    }
    n
}

// covers: CL-WAIT-1
#[test]
fn a_member_on_one_node_adds_a_joiner_waiting_on_another_which_welcomes_it() {
    let store = MemoryStore::default();
    let (mut a, mut b) = two_nodes(&store);
    let mut host = room_with_host(&mut a, ROOM, 1);
    assert!(a.waiting_writes.is_empty());

    // The guest waits on B: B shows it to the other nodes.
    let mut guest = waiting_guest(&mut b, ROOM, 2, "guest");
    assert_eq!(b.waiting_writes.len(), 1);
    let w = &b.waiting_writes[0];
    assert_eq!((w.room.clone(), w.conn), (room(), guest.conn));
    let rec = w.record.as_ref().unwrap();
    let kp = rec.key_package.clone();
    assert_eq!(rec.display_name, b"guest".to_vec());

    // A shows it to its members as a waiting entry of its own numbering.
    assert_eq!(relay_waiting(&mut b, "node-b", &mut a), 1);
    let seen = a.take(host.conn);
    let entries = waiting_kps(&seen);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].1, kp);
    assert_ne!(entries[0].0, guest.conn.0);
    assert_eq!(a.ds.counters().waiting_learned, 1);

    // The host adds it through A; A's commit is sequenced.
    a.send(host.conn, Body::Commit(host.add(&[kp])));
    let got = a.take(host.conn);
    assert!(
        matches!(got.first(), Some(Body::CommitAccepted(c)) if c.epoch == 1),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|b| matches!(b, Body::WaitingEntryRemoved(r) if r.conn_id == entries[0].0)),
        "{got:?}"
    );
    host.merge_pending();
    // A proposes nobody's removal: the joiner lives on B.
    assert_eq!(a.ds.counters().remove_proposals, 0);

    // B follows the winner and welcomes its guest; it stops showing the guest as waiting.
    let winner = store.sequenced_commit(&room(), 0).unwrap();
    b.winner(winner);
    guest.pump(&mut b);
    assert_eq!(guest.epoch(), 1);
    assert_eq!(guest.authenticator(), host.authenticator());
    assert_eq!(b.waiting_writes.len(), 1);
    assert!(b.waiting_writes[0].record.is_none());
    // Its deletion reaching A changes nothing there.
    relay_waiting(&mut b, "node-b", &mut a);
    assert!(a.take(host.conn).is_empty());
}

// covers: CL-WAIT-1
#[test]
fn another_nodes_entries_come_and_go_and_a_banned_or_bad_one_is_not_shown() {
    let store = MemoryStore::default();
    let (mut a, mut b) = two_nodes(&store);
    let host = room_with_host(&mut a, ROOM, 1);
    let guest = waiting_guest(&mut b, ROOM, 2, "guest");
    let put = b.waiting_writes[0].clone();
    let change = |record: Option<WaitingRecord>| WaitingChange {
        room: room(),
        node: "node-b".to_owned(),
        conn: put.conn.0,
        record,
    };
    a.ds.handle_waiting(a.now, change(put.record.clone()));
    a.drain();
    // The same entry seen again (a watch started again) is shown once.
    a.ds.handle_waiting(a.now, change(put.record.clone()));
    a.drain();
    let entries = waiting_kps(&a.take(host.conn));
    assert_eq!(entries.len(), 1);

    // The guest leaves B: B deletes its entry, and A drops it.
    b.close(guest.conn);
    assert_eq!(b.waiting_writes.len(), 2);
    assert!(b.waiting_writes[1].record.is_none());
    a.ds.handle_waiting(a.now, change(None));
    a.drain();
    let got = a.take(host.conn);
    assert_eq!(
        got,
        vec![Body::WaitingEntryRemoved(WaitingEntryRemoved {
            conn_id: entries[0].0
        })]
    );

    // An entry whose KeyPackage fails, or of a token banned here, is not shown.
    let mut bad = put.record.clone().unwrap();
    bad.key_package = vec![0; 8];
    a.ds.handle_waiting(
        a.now,
        WaitingChange {
            conn: 99,
            ..change(Some(bad))
        },
    );
    let rec = put.record.clone().unwrap();
    a.ds.handle_ban(a.now, &room(), rec.token_id);
    a.ds.handle_waiting(
        a.now,
        WaitingChange {
            conn: 100,
            ..change(Some(rec))
        },
    );
    a.drain();
    assert!(waiting_kps(&a.take(host.conn)).is_empty());
    assert_eq!(a.ds.counters().waiting_refused, 2);

    // A single relay writes nothing.
    let mut single = Net::new();
    let _h = room_with_host(&mut single, ROOM, 1);
    let _g = waiting_guest(&mut single, ROOM, 2, "g");
    assert!(single.waiting_writes.is_empty());
}

// covers: CL-WAIT-2
#[test]
fn a_waiting_entry_is_bound_to_its_key() {
    let key = waiting_key(&room(), "node-b", 7);
    assert_eq!(key, format!("room.{}.waiting.node-b.7", hex::encode(ROOM)));
    assert_eq!(
        parse_waiting_key(&key),
        Some((room(), "node-b".to_owned(), 7))
    );
    assert_eq!(parse_waiting_key(&format!("{key}.x")), None);
    assert_eq!(
        parse_waiting_key(&format!("room.{}.waiting.node-b.07", hex::encode(ROOM))),
        None
    );
    let rec = WaitingRecord {
        room: room(),
        token_id: [7; 16],
        display_name: b"g".to_vec(),
        key_package: vec![1, 2, 3],
        join_proof: Some(vec![4]),
    };
    let bytes = rec.encode().unwrap();
    assert_eq!(WaitingRecord::decode(&bytes, &room()).unwrap(), rec);
    let no_proof = WaitingRecord {
        join_proof: None,
        ..rec.clone()
    };
    assert_eq!(
        WaitingRecord::decode(&no_proof.encode().unwrap(), &room()).unwrap(),
        no_proof
    );
    use blindcall_relay::store::CorruptEntry;
    assert_eq!(
        WaitingRecord::decode(&bytes, &RoomId(b"x".to_vec())),
        Err(CorruptEntry::WrongRoom)
    );
    assert_eq!(
        WaitingRecord::decode(&bytes[..bytes.len() - 1], &room()),
        Err(CorruptEntry::Truncated)
    );
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(
        WaitingRecord::decode(&long, &room()),
        Err(CorruptEntry::TrailingBytes)
    );
    assert_eq!(
        WaitingRecord::decode(b"nope", &room()),
        Err(CorruptEntry::Foreign)
    );
}
