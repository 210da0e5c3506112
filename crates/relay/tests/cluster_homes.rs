//! Store mode with homes: every room is served by one node, its home; the other nodes redirect
//! its clients there, take a dead home's rooms over, and let a room go when another node holds
//! a higher term (spec/cluster.md, CL-HOME-*, CL-NODE-5). Sans-IO: nodes share one memory
//! store; the test hands heartbeats and homes over as the shell's watches would.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use blindcall_proto::*;
use blindcall_relay::keyfile::{new_key_file_text, parse_relay_identities};
use blindcall_relay::store::{HomeRecord, MemoryStore, NodeRecord, StoreError, StoreOp};
use blindcall_relay::*;
use common::*;

const ROOM: &[u8] = b"room-homes";
const LEASE: Duration = Duration::from_secs(3);
const BEAT: Duration = Duration::from_secs(1);

fn room() -> RoomId {
    RoomId(ROOM.to_vec())
}

fn addr(id: &str) -> String {
    format!("{id}.example:4433")
}

/// A node with homes sharing `store` and the external-sender keys `keys` (CL-NODE-3).
fn node(store: &MemoryStore, keys: &str, id: &str) -> Net {
    let mut cfg = config();
    cfg.store_mode = StoreMode::Shared;
    cfg.relay_identities = parse_relay_identities(keys).unwrap();
    cfg.resume_grace = Duration::from_secs(20);
    let mut homes = HomesConfig::new(id, addr(id));
    homes.lease = LEASE;
    homes.heartbeat = BEAT;
    cfg.homes = Some(homes);
    let mut net = Net::with(cfg);
    net.store = Some(store.clone());
    net
}

fn two_nodes() -> (MemoryStore, Net, Net) {
    let store = MemoryStore::default();
    let keys = new_key_file_text().unwrap();
    let a = node(&store, &keys, "a");
    let b = node(&store, &keys, "b");
    (store, a, b)
}

/// `net` receives heartbeat `seq` of node `id`.
fn beat(net: &mut Net, id: &str, seq: u64) {
    net.ds.handle_node(
        net.now,
        NodeRecord {
            node_id: id.into(),
            addr: addr(id),
            started_unix_ms: 0,
            seq,
            draining: false,
            rooms: 1,
            members: 1,
            connections: 1,
        },
    );
    net.drain();
}

/// `net` sees the room's home as the store holds it now.
fn learn_home(net: &mut Net, store: &MemoryStore) {
    let h = store.home(&room()).expect("a home in the store");
    net.ds.handle_home(net.now, h);
    net.drain();
}

fn hello(net: &mut Net, role: Role, token_id: u8) -> ConnId {
    let token = mint(ROOM, role, T0 + 3600, token_id);
    let id = net.open();
    net.send(
        id,
        Body::Hello(Hello {
            room_id: VLBytes::new(ROOM.to_vec()),
            token: VLBytes::new(token),
            display_name: VLBytes::new(b"someone".to_vec()),
        }),
    );
    id
}

fn redirected_to(net: &mut Net, id: ConnId) -> String {
    let got = net.take(id);
    let Some(Body::Redirect(r)) = got.last() else {
        panic!("expected a Redirect: {got:?}")
    };
    assert_eq!(net.closed.get(&id), Some(&CloseReason::Redirected));
    r.address().expect("a valid address").to_owned()
}

/// Node A homes the room: a host created the group there (and committed once, to epoch 1).
fn room_on_a(a: &mut Net, store: &MemoryStore) -> Client {
    let mut host = room_with_host(a, ROOM, 1);
    let home = store.home(&room()).expect("A claimed the room's home");
    assert_eq!((home.term, home.node_id.as_str()), (1, "a"));
    a.send(host.conn, Body::Commit(host.self_update()));
    assert!(matches!(a.last(host.conn), Body::CommitAccepted(_)));
    host.merge_pending();
    assert_eq!(a.ds.room_epoch(ROOM), Some(1));
    host
}

// covers: CL-HOME-2
#[test]
fn a_hello_on_a_node_that_is_not_the_home_is_redirected_to_the_live_home() {
    let (store, mut a, mut b) = two_nodes();
    let _host = room_on_a(&mut a, &store);
    learn_home(&mut b, &store);
    beat(&mut b, "a", 1);
    let g = hello(&mut b, Role::GUEST, 2);
    assert_eq!(redirected_to(&mut b, g), "a.example:4433");
    assert_eq!(b.ds.counters().redirects, 1);
    assert_eq!(b.ds.room_count(), 0, "B serves nothing of the room");
    assert!(
        b.events
            .iter()
            .any(|e| matches!(e, Event::Redirected { conn, .. } if *conn == g))
    );
    // The home itself admits.
    let h2 = hello(&mut a, Role::GUEST, 3);
    assert!(matches!(a.last(h2), Body::HelloAck(_)));
}

// covers: CL-NODE-5, CL-HOME-3
#[test]
fn a_hello_parks_while_the_home_is_suspect_and_is_redirected_on_a_fresh_heartbeat() {
    let (store, mut a, mut b) = two_nodes();
    let _host = room_on_a(&mut a, &store);
    learn_home(&mut b, &store);
    beat(&mut b, "a", 1);
    // 1.5 heartbeat intervals without a new beat: suspect. A beat with the same seq is no
    // sign of life.
    b.advance(Duration::from_millis(1600));
    beat(&mut b, "a", 1);
    let g = hello(&mut b, Role::GUEST, 2);
    assert!(b.take(g).is_empty(), "parked: no answer yet");
    assert!(!b.closed.contains_key(&g));
    beat(&mut b, "a", 2);
    assert_eq!(redirected_to(&mut b, g), "a.example:4433");
}

// covers: CL-HOME-3, CL-HOME-4, CL-NODE-5
#[test]
fn a_dead_homes_room_is_claimed_loaded_and_its_members_resume_at_the_same_epoch() {
    let (store, mut a, mut b) = two_nodes();
    let mut host = room_on_a(&mut a, &store);
    learn_home(&mut b, &store);
    beat(&mut b, "a", 1);
    // Suspect: parked; then the lease runs out with no beat: B claims term 2 and loads.
    b.advance(Duration::from_millis(1600));
    let token = mint(ROOM, Role::HOST, T0 + 3600, 1);
    let (conn, first) = {
        let id = b.open();
        b.send(
            id,
            Body::Hello(Hello {
                room_id: VLBytes::new(ROOM.to_vec()),
                token: VLBytes::new(token),
                display_name: VLBytes::new(b"host".to_vec()),
            }),
        );
        (id, b.take(id))
    };
    assert!(first.is_empty(), "parked while A is suspect: {first:?}");
    b.advance(Duration::from_millis(1500));
    let home = store.home(&room()).unwrap();
    assert_eq!((home.term, home.node_id.as_str()), (2, "b"));
    assert_eq!(b.ds.counters().home_claims_won, 1);
    // The HelloAck carries the room's real state: the epoch the store holds.
    let got = b.take(conn);
    let Some(Body::HelloAck(ack)) = got.last() else {
        panic!("expected HelloAck after the takeover: {got:?}")
    };
    assert_eq!(ack.room.epoch, Some(1));
    assert!(
        b.events.iter().any(|e| matches!(
            e,
            Event::RoomLoaded {
                epoch: Some(1),
                graced: 1,
                ..
            }
        )),
        "{:?}",
        b.events
            .iter()
            .filter(|e| matches!(e, Event::RoomLoaded { .. }))
            .collect::<Vec<_>>()
    );
    // The host resumes with its signature at the same epoch; proving from epoch 0 replays
    // the epoch-0 commit read during the takeover.
    host.conn = conn;
    host.ack = Some(ack.clone());
    let group_id = host.group.as_ref().unwrap().group_id().as_slice().to_vec();
    let old = host.sign_resume(&ack.challenge, &group_id, ROOM, host.leaf(), 0);
    b.send(conn, Body::Resume(old));
    let got = b.take(conn);
    assert!(
        got.iter()
            .any(|m| matches!(m, Body::CommitBroadcast(c) if c.epoch == 0)),
        "{got:?}"
    );
    assert!(matches!(
        got.last(),
        Some(Body::ResumeAccepted(ResumeAccepted { epoch: 1, .. }))
    ));
    assert!(b.events.iter().any(|e| matches!(
        e,
        Event::MemberResumed { participant, .. } if *participant == conn
    )));
    assert_eq!(
        b.ds.counters().remove_proposals,
        0,
        "no removal caused by the failover"
    );
    // It commits on its new home.
    b.send(conn, Body::Commit(host.self_update()));
    assert!(matches!(b.last(conn), Body::CommitAccepted(_)));
    assert_eq!(b.ds.room_epoch(ROOM), Some(2));
}

// covers: CL-HOME-3
#[test]
fn a_lost_home_claim_redirects_to_the_winner() {
    let (store, mut a, mut b) = two_nodes();
    let _host = room_on_a(&mut a, &store);
    // B has not seen the home yet: its claim of term 1 loses to A.
    beat(&mut b, "a", 1);
    let g = hello(&mut b, Role::GUEST, 2);
    assert_eq!(b.ds.counters().home_claims_lost, 1);
    assert_eq!(redirected_to(&mut b, g), "a.example:4433");

    // A node C up for longer than a lease, which never heard of A (A's first heartbeat still on
    // its way), loses the claim too and sends the client to A rather than taking A for dead.
    let keys = new_key_file_text().unwrap();
    let mut c = node(&store, &keys, "c");
    c.ds.handle_timeout(c.now);
    c.advance(Duration::from_secs(10));
    let g = hello(&mut c, Role::GUEST, 3);
    assert_eq!(c.ds.counters().home_claims_lost, 1);
    assert_eq!(redirected_to(&mut c, g), "a.example:4433");
}

// covers: CL-HOME-3
#[test]
fn a_parked_hello_is_refused_store_unavailable_when_the_store_does_not_answer() {
    let (_store, _a, mut b) = two_nodes();
    b.manual_homes = true;
    let g = hello(&mut b, Role::GUEST, 2);
    assert_eq!(b.home_claims.len(), 1, "B claims the room's first term");
    assert!(b.take(g).is_empty());
    // Bounded wait: lease + 5 s.
    b.advance(LEASE + Duration::from_secs(5));
    assert_eq!(
        b.take(g).last(),
        Some(&Body::Refused(Refused {
            reason: RefusedReason::STORE_UNAVAILABLE
        }))
    );
    // A claim that fails refuses at once.
    let g2 = hello(&mut b, Role::GUEST, 3);
    let req = b.home_claims.pop().unwrap();
    b.ds.handle_home_claim(
        b.now,
        req.ticket,
        HomeClaimAnswer::Failed(StoreError::Unreachable { op: StoreOp::Claim }),
    );
    b.drain();
    assert_eq!(
        b.take(g2).last(),
        Some(&Body::Refused(Refused {
            reason: RefusedReason::STORE_UNAVAILABLE
        }))
    );
}

// covers: CL-HOME-5
#[test]
fn a_higher_term_elsewhere_redirects_the_rooms_members_without_removals() {
    let (store, mut a, _b) = two_nodes();
    let host = room_on_a(&mut a, &store);
    let before = a.ds.counters().clone();
    a.ds.handle_home(
        a.now,
        HomeRecord {
            room: room(),
            term: 2,
            node_id: "b".into(),
            addr: addr("b"),
        },
    );
    a.drain();
    assert_eq!(redirected_to(&mut a, host.conn), "b.example:4433");
    let after = a.ds.counters();
    assert_eq!(after.homes_lost, 1);
    assert_eq!(after.remove_proposals, before.remove_proposals);
    assert_eq!(after.graces_started, before.graces_started);
    assert_eq!(a.ds.room_count(), 0, "the room is forgotten");
    // Its next Hello goes to the new home (alive: never heard of, so counted from A's start).
    let g = hello(&mut a, Role::GUEST, 2);
    assert_eq!(redirected_to(&mut a, g), "b.example:4433");
}

fn beat_with(net: &mut Net, id: &str, seq: u64, rooms: u32, draining: bool) {
    net.ds.handle_node(
        net.now,
        NodeRecord {
            node_id: id.into(),
            addr: addr(id),
            started_unix_ms: 0,
            seq,
            draining,
            rooms,
            members: 0,
            connections: 0,
        },
    );
    net.drain();
}

// covers: CL-DRAIN-1
#[test]
fn a_draining_node_hands_its_rooms_to_the_least_loaded_node_which_serves_them_at_once() {
    let store = MemoryStore::default();
    let keys = new_key_file_text().unwrap();
    let mut a = node(&store, &keys, "a");
    let mut c = node(&store, &keys, "c");
    let mut host = room_on_a(&mut a, &store);
    beat_with(&mut a, "b", 1, 3, false);
    beat_with(&mut a, "c", 1, 1, false);
    beat_with(&mut a, "d", 1, 0, true);
    let before = a.ds.counters().clone();
    assert!(a.ds.handle_drain(a.now), "a successor is alive");
    a.drain();
    // The room's next term names C (fewest rooms among the alive, non-draining nodes), and
    // the host is sent there without a removal or a grace.
    let home = store.home(&room()).unwrap();
    assert_eq!((home.term, home.node_id.as_str()), (2, "c"));
    assert_eq!(redirected_to(&mut a, host.conn), "c.example:4433");
    let after = a.ds.counters();
    assert_eq!(after.handoffs_out, 1);
    assert_eq!(after.remove_proposals, before.remove_proposals);
    assert_eq!(after.graces_started, before.graces_started);
    // A takes no new connection.
    let late = hello(&mut a, Role::GUEST, 5);
    assert_eq!(
        a.take(late).last(),
        Some(&Body::Refused(Refused {
            reason: RefusedReason::SHUTTING_DOWN
        }))
    );
    // C is the home already: it loads the room at once (no lease to wait for) and the host
    // resumes there at the same epoch.
    learn_home(&mut c, &store);
    beat_with(&mut c, "a", 2, 1, true);
    host.reconnect(&mut c, ROOM, Role::HOST, 1);
    assert_eq!(host.ack.as_ref().unwrap().room.epoch, Some(1));
    c.send(host.conn, Body::Resume(host.resume(ROOM)));
    assert!(matches!(
        c.take(host.conn).last(),
        Some(Body::ResumeAccepted(ResumeAccepted { epoch: 1, .. }))
    ));

    // Without a node to hand over to, a drain is a shutdown.
    let mut lonely = node(&MemoryStore::default(), &keys, "e");
    let g = hello(&mut lonely, Role::GUEST, 2);
    assert!(matches!(lonely.take(g).last(), Some(Body::HelloAck(_))));
    assert!(!lonely.ds.handle_drain(lonely.now));
    lonely.drain();
    assert_eq!(
        lonely.take(g).last(),
        Some(&Body::Refused(Refused {
            reason: RefusedReason::SHUTTING_DOWN
        }))
    );
}

// covers: CL-HOME-7
#[test]
fn with_homes_another_nodes_waiting_entries_are_not_shown() {
    let (store, mut a, _b) = two_nodes();
    let host = room_on_a(&mut a, &store);
    a.take(host.conn);
    let record = store::WaitingRecord {
        room: room(),
        token_id: [9; 16],
        display_name: b"left behind".to_vec(),
        key_package: vec![1, 2, 3],
        join_proof: None,
    };
    a.ds.handle_waiting(
        a.now,
        store::WaitingChange {
            room: room(),
            node: "dead-node".into(),
            conn: 7,
            record: Some(record),
        },
    );
    a.drain();
    assert!(a.take(host.conn).is_empty(), "nothing shown to the host");
    assert_eq!(a.ds.counters().waiting_refused, 1);
}
