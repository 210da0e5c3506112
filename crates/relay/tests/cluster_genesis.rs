//! Store mode: a room's group is created once for the whole cluster and every node serving the
//! room sets it up from the stored genesis (spec/cluster.md, CL-GEN-*). Sans-IO: two DSs share
//! one memory store, as two nodes share JetStream; the shell's watch is the test handing
//! winners over.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use blindcall_proto::*;
use blindcall_relay::keyfile::{new_key_file_text, parse_relay_identities};
use blindcall_relay::store::{
    CommitRecord, CorruptEntry, Genesis, GenesisRecord, MemoryStore, genesis_key,
};
use blindcall_relay::*;
use common::*;

const ROOM: &[u8] = b"room-genesis";

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

fn error_code(b: &Body) -> Option<ErrorCode> {
    match b {
        Body::Error(e) => Some(e.code),
        _ => None,
    }
}

// covers: CL-GEN-1, CL-GEN-2
#[test]
fn a_group_created_on_one_node_is_the_rooms_group_on_every_node() {
    let store = MemoryStore::default();
    let (mut a, mut b) = two_nodes(&store);
    // The host creates the call on A: the genesis is in the store before GroupCreated.
    let host = room_with_host(&mut a, ROOM, 1);
    let genesis = store
        .genesis(&room())
        .expect("the room's genesis is stored");
    assert_eq!(genesis.epoch(), 0);
    assert_eq!(a.ds.counters().groups_created, 1);

    // A guest reaches B, which never saw CreateGroup: B sets the group up from the genesis.
    let guest = Client::connect(&mut b, ROOM, Role::GUEST, 2, "guest");
    assert_eq!(b.ds.room_epoch(ROOM), Some(0));
    assert_eq!(b.ds.counters().geneses_loaded, 1);
    assert_eq!(b.ds.counters().groups_created, 0);
    assert!(
        b.events
            .iter()
            .any(|e| matches!(e, Event::GenesisLoaded { room: r, epoch: 0 } if *r == room()))
    );
    drop(guest);

    // The creator's very CreateGroup reaching B too (it talks to both nodes) seats it there,
    // as a retried write of the same genesis is answered Created.
    let h_b = Client::connect(&mut b, ROOM, Role::HOST, 1, "host on B");
    b.send(
        h_b.conn,
        Body::CreateGroup(CreateGroup {
            group_info: VLBytes::new(genesis.group_info().to_vec()),
        }),
    );
    assert_eq!(
        b.last(h_b.conn),
        Body::GroupCreated(GroupCreated { epoch: 0 })
    );

    // Another host creating the room's group through B gets the refusal of a second creation.
    let mut other = Client::connect(&mut b, ROOM, Role::HOST, 3, "other host");
    let relay = relay_from_ack(other.ack.as_ref().unwrap());
    other.create_group(&relay);
    b.send(
        other.conn,
        Body::CreateGroup(CreateGroup {
            group_info: VLBytes::new(other.group_info()),
        }),
    );
    assert_eq!(
        error_code(&b.last(other.conn)),
        Some(ErrorCode::GROUP_EXISTS)
    );
    assert_eq!(store.genesis(&room()), Some(genesis));
    drop(host);
}

// covers: CL-GEN-1, CL-GEN-2
#[test]
fn creations_racing_on_two_nodes_leave_one_group_and_the_loser_follows_the_winner() {
    let store = MemoryStore::default();
    let (mut a, mut b) = two_nodes(&store);
    // Both hosts are in before either creates: neither node finds a genesis then.
    let mut h1 = Client::connect(&mut a, ROOM, Role::HOST, 1, "host 1");
    let mut h2 = Client::connect(&mut b, ROOM, Role::HOST, 2, "host 2");
    assert_eq!(b.ds.room_epoch(ROOM), None);
    for (net, h) in [(&mut a, &mut h1), (&mut b, &mut h2)] {
        let relay = relay_from_ack(h.ack.as_ref().unwrap());
        h.create_group(&relay);
        net.send(
            h.conn,
            Body::CreateGroup(CreateGroup {
                group_info: VLBytes::new(h.group_info()),
            }),
        );
    }
    // A wrote first: its host has the group; B's host is refused, and B took A's genesis.
    assert_eq!(
        a.last(h1.conn),
        Body::GroupCreated(GroupCreated { epoch: 0 })
    );
    assert_eq!(error_code(&b.last(h2.conn)), Some(ErrorCode::GROUP_EXISTS));
    assert_eq!(b.ds.room_epoch(ROOM), Some(0));
    assert_eq!(b.ds.counters().groups_created, 0);

    // A commit of A's group is followed by B: the group is the same on both nodes.
    let c = h1.self_update();
    a.send(h1.conn, Body::Commit(c));
    assert!(matches!(a.last(h1.conn), Body::CommitAccepted(_)));
    h1.merge_pending();
    b.winner(store.sequenced_commit(&room(), 0).unwrap());
    assert_eq!(b.ds.room_epoch(ROOM), Some(1));
    assert_eq!(b.ds.counters().winners_applied, 1);
}

// covers: CL-GEN-2
#[test]
fn a_winner_of_a_room_without_a_group_here_waits_for_the_genesis_and_is_merged_after_it() {
    let store = MemoryStore::default();
    let (mut a, mut b) = two_nodes(&store);
    // A guest reaches B before the call exists: no genesis yet.
    let _guest = Client::connect(&mut b, ROOM, Role::GUEST, 2, "guest");
    assert_eq!(b.ds.room_epoch(ROOM), None);
    // The host creates the call on A and commits twice; B sees only the second winner.
    let mut host = room_with_host(&mut a, ROOM, 1);
    for _ in 0..2 {
        let c = host.self_update();
        a.send(host.conn, Body::Commit(c));
        assert!(matches!(a.last(host.conn), Body::CommitAccepted(_)));
        host.merge_pending();
    }
    b.winner(store.sequenced_commit(&room(), 1).unwrap());
    // B loaded the genesis, read the missing epoch 0 and merged both, in order.
    assert_eq!(b.ds.room_epoch(ROOM), Some(2));
    assert_eq!(b.ds.counters().geneses_loaded, 1);
    assert_eq!(b.ds.counters().winners_applied, 2);
    assert_eq!(b.fetches.len(), 1, "{:?}", b.fetches);
}

// covers: CL-GEN-1
#[test]
fn the_genesis_is_create_only_and_a_stored_genesis_is_bound_to_its_room() {
    let store = MemoryStore::default();
    let g = GenesisRecord::new(room(), 0, b"group info".to_vec());
    assert_eq!(store.create_genesis(&g).unwrap(), Genesis::Created);
    // The same record again (a retried write) is ours; another is refused with the holder.
    assert_eq!(store.create_genesis(&g).unwrap(), Genesis::Created);
    let other = GenesisRecord::new(room(), 0, b"another group".to_vec());
    assert_eq!(
        store.create_genesis(&other).unwrap(),
        Genesis::Exists { holder: g.clone() }
    );
    assert_eq!(
        genesis_key(&room()),
        format!("room.{}.genesis", hex::encode(ROOM))
    );

    let bytes = g.encode().unwrap();
    assert_eq!(GenesisRecord::decode(&bytes, &room()), Ok(g.clone()));
    let other_room = RoomId(b"another room".to_vec());
    assert_eq!(
        GenesisRecord::decode(&bytes, &other_room),
        Err(CorruptEntry::WrongRoom)
    );
    assert_eq!(
        GenesisRecord::decode(&bytes[..bytes.len() - 1], &room()),
        Err(CorruptEntry::Truncated)
    );
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(
        GenesisRecord::decode(&trailing, &room()),
        Err(CorruptEntry::TrailingBytes)
    );
    assert_eq!(
        GenesisRecord::decode(b"{\"json\":1}", &room()),
        Err(CorruptEntry::Foreign)
    );
    let commit = CommitRecord::new(room(), 0, b"commit".to_vec())
        .encode()
        .unwrap();
    assert_eq!(
        GenesisRecord::decode(&commit, &room()),
        Err(CorruptEntry::WrongKind(1))
    );
    assert!(
        GenesisRecord::new(RoomId(Vec::new()), 0, Vec::new())
            .encode()
            .is_err()
    );
}
