//! Store mode: a node follows the winners the store sequences for a room it serves, without
//! committing anything itself (spec/cluster.md, CL-FOLLOW-*). Sans-IO: the "other node" is a
//! member whose commits are written into the store by hand, and the watch is the test handing
//! the records to `Ds::handle_winner`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use blindcall_proto::*;
use blindcall_relay::store::{CommitRecord, MemoryStore};
use blindcall_relay::*;
use common::*;

const ROOM: &[u8] = b"room-follow";

fn room() -> RoomId {
    RoomId(ROOM.to_vec())
}

fn broadcasts(bodies: &[Body]) -> Vec<(u64, Vec<u8>)> {
    bodies
        .iter()
        .map(|b| match b {
            Body::CommitBroadcast(c) => (c.epoch, c.commit.as_slice().to_vec()),
            other => panic!("expected only CommitBroadcast, got {other:?}"),
        })
        .collect()
}

/// The record another node writes when it sequences `c`: the commit, the new epoch's
/// GroupInfo and the Welcome, if any.
fn record(c: &Commit) -> CommitRecord {
    CommitRecord::new(room(), c.epoch, c.commit.as_slice().to_vec()).with_group_info(
        c.group_info.as_ref().unwrap().as_slice().to_vec(),
        c.welcome
            .as_ref()
            .map(|w| w.as_slice().to_vec())
            .unwrap_or_default(),
    )
}

/// A node in store mode serving the host `h` and members `b`, `c` at epoch 1; then the host's
/// connection here is lost (its leaf kept for a resume): the host goes on through another
/// node, and nobody here ever commits. Claims wait for the test from then on.
fn follower() -> (Net, Client, Client, Client) {
    let mut cfg = config();
    cfg.store_mode = StoreMode::Shared;
    cfg.resume_grace = Duration::from_secs(600);
    let mut net = Net::with(cfg);
    net.store = Some(MemoryStore::default());
    let mut h = room_with_host(&mut net, ROOM, 1);
    let mut b = waiting_guest(&mut net, ROOM, 2, "b");
    let mut c = waiting_guest(&mut net, ROOM, 3, "c");
    admit_all(&mut net, &mut h, &mut [], &mut [&mut b, &mut c]);
    net.store = None;
    net.close(h.conn);
    net.take(b.conn);
    net.take(c.conn);
    assert_eq!(net.ds.room_epoch(ROOM), Some(1));
    (net, h, b, c)
}

/// The host commits twice through the other node: epochs 1 and 2.
fn two_commits_elsewhere(h: &mut Client) -> (Commit, Commit) {
    let c1 = h.self_update();
    h.merge_pending();
    let c2 = h.self_update();
    h.merge_pending();
    (c1, c2)
}

fn group_info_epoch(net: &mut Net, m: &Client) -> u64 {
    net.send(m.conn, Body::GroupInfoRequest);
    match net.last(m.conn) {
        Body::GroupInfoResponse(r) => r.epoch,
        other => panic!("expected GroupInfoResponse, got {other:?}"),
    }
}

// covers: CL-FOLLOW-1, CL-FOLLOW-2
#[test]
fn a_node_where_nobody_commits_follows_the_other_nodes_winners_in_order() {
    let (mut net, mut h, mut b, mut c) = follower();
    let (c1, c2) = two_commits_elsewhere(&mut h);
    net.winner(record(&c1));
    net.winner(record(&c2));
    // Every member here hears both winners, in order, and nothing else; nobody claimed.
    for m in [&mut b, &mut c] {
        let heard = broadcasts(&net.take(m.conn));
        assert_eq!(
            heard,
            vec![
                (1, c1.commit.as_slice().to_vec()),
                (2, c2.commit.as_slice().to_vec())
            ]
        );
        for (_, commit) in heard {
            m.process(&commit);
        }
        assert_eq!(m.authenticator(), h.authenticator());
    }
    assert!(net.claims.is_empty());
    assert_eq!(net.ds.room_epoch(ROOM), Some(3));
    assert_eq!(net.ds.counters().winners_applied, 2);
    for epoch in [2, 3] {
        assert!(net.events.contains(&Event::WinnerApplied {
            room: room(),
            epoch
        }));
    }
    // The record carried the new epoch's GroupInfo: this node answers for the epoch it never
    // sequenced itself.
    assert_eq!(group_info_epoch(&mut net, &b), 3);
    // And the room goes on here: b's commit of epoch 3 is claimed.
    net.send(b.conn, Body::Commit(b.self_update()));
    assert_eq!(net.take_claim().record.epoch(), 3);
}

// covers: CL-FOLLOW-1
#[test]
fn a_gap_is_filled_by_reading_the_missing_epoch() {
    let (mut net, mut h, b, _c) = follower();
    let (c1, c2) = two_commits_elsewhere(&mut h);
    // Epoch 2's winner comes first: it waits, and the DS asks for epoch 1's.
    net.winner(record(&c2));
    assert!(net.take(b.conn).is_empty());
    assert_eq!(net.ds.room_epoch(ROOM), Some(1));
    assert_eq!(
        net.fetches,
        vec![FetchRequest {
            room: room(),
            epoch: 1
        }]
    );
    // A read that finds nothing (or fails) is asked again when the next winner comes.
    net.ds.handle_fetch_failed(net.now, &room(), 1);
    assert_eq!(net.ds.counters().fetches_failed, 1);
    // The read of epoch 1 (here from a store holding both winners) fills the gap: both are
    // merged, in order.
    let store = MemoryStore::default();
    for c in [&c1, &c2] {
        assert!(matches!(
            store.sequence_commit(&record(c)).unwrap(),
            store::Sequenced::Won
        ));
    }
    net.store = Some(store);
    net.winner(record(&c2));
    assert_eq!(net.fetches.len(), 2);
    assert_eq!(
        broadcasts(&net.take(b.conn)),
        vec![
            (1, c1.commit.as_slice().to_vec()),
            (2, c2.commit.as_slice().to_vec())
        ]
    );
    assert_eq!(net.ds.room_epoch(ROOM), Some(3));
    assert_eq!(group_info_epoch(&mut net, &b), 3);
}

// covers: CL-FOLLOW-4
#[test]
fn a_winner_that_fails_the_checks_is_refused_and_the_node_does_not_advance() {
    let (mut net, mut h, b, _c) = follower();
    // Not an MLS message.
    net.winner(CommitRecord::new(room(), 1, b"not a commit".to_vec()));
    assert!(net.events.contains(&Event::WinnerRefused {
        room: room(),
        epoch: 1,
        reason: CommitRejectReason::MALFORMED,
    }));
    // A real commit whose GroupInfo is not the one of the epoch it leads to (here: the
    // current epoch's, as a tampered store entry could carry).
    let stale_gi = h.group_info();
    let c1 = h.self_update();
    let tampered = CommitRecord::new(room(), 1, c1.commit.as_slice().to_vec())
        .with_group_info(stale_gi, Vec::new());
    net.winner(tampered);
    assert!(net.events.contains(&Event::WinnerRefused {
        room: room(),
        epoch: 1,
        reason: CommitRejectReason::BAD_GROUP_INFO,
    }));
    assert!(net.take(b.conn).is_empty(), "nothing refused is broadcast");
    assert_eq!(net.ds.room_epoch(ROOM), Some(1));
    assert_eq!(net.ds.counters().winners_refused, 2);
    assert_eq!(net.ds.counters().winners_applied, 0);
    // Stuck at epoch 1 here: a later winner is dropped, and the refused epoch is not read
    // again and again.
    h.merge_pending();
    let c2 = h.self_update();
    net.winner(record(&c2));
    assert!(net.fetches.is_empty());
    assert_eq!(net.ds.counters().winners_dropped, 1);
    assert_eq!(net.ds.room_epoch(ROOM), Some(1));
}

// covers: CL-FOLLOW-1
#[test]
fn a_winner_already_merged_is_a_duplicate_and_ignored() {
    let (mut net, mut h, mut b, _c) = follower();
    let (c1, _) = two_commits_elsewhere(&mut h);
    net.winner(record(&c1));
    net.winner(record(&c1));
    assert_eq!(broadcasts(&net.take(b.conn)).len(), 1);
    assert_eq!(net.ds.counters().winners_duplicate, 1);
    assert_eq!(net.ds.room_epoch(ROOM), Some(2));
    b.process(c1.commit.as_slice());

    // This node's own winner comes back through the watch too: a duplicate.
    let cb = b.self_update();
    net.send(b.conn, Body::Commit(cb.clone()));
    let claim = net.take_claim();
    net.answer(claim.ticket, ClaimAnswer::Won);
    assert_eq!(
        net.take(b.conn),
        vec![Body::CommitAccepted(CommitAccepted { epoch: 3 })]
    );
    net.winner(claim.record);
    assert_eq!(net.ds.counters().winners_duplicate, 2);
    assert_eq!(net.ds.room_epoch(ROOM), Some(3));
    // Winners of rooms this node does not serve are ignored.
    net.winner(CommitRecord::new(
        RoomId(b"elsewhere".to_vec()),
        0,
        b"x".to_vec(),
    ));
    assert_eq!(net.ds.counters().winners_ignored, 1);
}

// covers: CL-FOLLOW-1
#[test]
fn a_winner_followed_while_a_claim_is_in_flight_waits_for_the_claims_answer() {
    let (mut net, mut h, mut b, mut c) = follower();
    let c1 = h.self_update();
    h.merge_pending();
    net.send(c.conn, Body::Commit(c.self_update()));
    let claim = net.take_claim();
    // The watch shows the host's winner before the claim is answered: nothing happens yet.
    net.winner(record(&c1));
    assert!(net.take(b.conn).is_empty());
    assert_eq!(net.ds.room_epoch(ROOM), Some(1));
    // The claim lost to that winner: it is merged once, and the committer told.
    net.answer(
        claim.ticket,
        ClaimAnswer::Lost {
            winner: record(&c1),
        },
    );
    assert_eq!(
        broadcasts(&net.take(b.conn)),
        vec![(1, c1.commit.as_slice().to_vec())]
    );
    let bodies = net.take(c.conn);
    assert!(matches!(
        bodies.last(),
        Some(Body::CommitRejected(r)) if r.reason == CommitRejectReason::EPOCH_TAKEN
    ));
    c.clear_pending();
    assert_eq!(net.ds.room_epoch(ROOM), Some(2));
    assert_eq!(net.ds.counters().winners_applied, 1);
    assert_eq!(net.ds.counters().winners_duplicate, 1);
    b.process(c1.commit.as_slice());
    assert_eq!(b.authenticator(), h.authenticator());
}

// covers: CL-FOLLOW-3
#[test]
fn a_joiner_waiting_here_is_welcomed_from_the_record_of_an_add_sequenced_elsewhere() {
    let (mut net, mut h, mut b, _c) = follower();
    // The joiner published its KeyPackage here (and, for the host to see it, on the host's
    // node too: the waiting room is not shared yet).
    let mut d = waiting_guest(&mut net, ROOM, 4, "d");
    let kps = waiting_kps(&net.take(b.conn));
    assert_eq!(kps.len(), 1);
    let add = h.add(&[kps[0].1.clone()]);
    h.merge_pending();
    net.winner(record(&add));
    // d gets the Welcome (with the ratchet tree) and is a member here.
    let bodies = net.take(d.conn);
    let welcome = bodies
        .iter()
        .find_map(|b| match b {
            Body::Welcome(w) => Some(w.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Welcome: {bodies:?}"));
    d.join_from_welcome(&welcome);
    assert_eq!(d.authenticator(), h.authenticator());
    assert!(
        net.events
            .iter()
            .any(|e| matches!(e, Event::MemberJoined { conn, .. } if *conn == d.conn))
    );
    assert_eq!(group_info_epoch(&mut net, &d), 2);
    let heard: Vec<Body> = net
        .take(b.conn)
        .into_iter()
        .filter(|b| matches!(b, Body::CommitBroadcast(_)))
        .collect();
    assert_eq!(
        broadcasts(&heard),
        vec![(1, add.commit.as_slice().to_vec())]
    );
    b.apply(&heard);
    assert_eq!(b.authenticator(), h.authenticator());
}

// covers: CL-FOLLOW-1
#[test]
fn a_commit_that_arrives_after_this_node_followed_it_is_accepted() {
    let (mut net, _h, mut b, mut c) = follower();
    // b sent its commit to two nodes; the other one sequenced it and this node followed it
    // before b's copy arrived here.
    let cb = b.self_update();
    net.winner(record(&cb));
    assert_eq!(net.ds.room_epoch(ROOM), Some(2));
    c.apply(&net.take(c.conn));
    net.take(b.conn);
    net.send(b.conn, Body::Commit(cb));
    // Accepted, as a claim of the commit the store holds would have been (CL-SEQ-2).
    assert_eq!(
        net.take(b.conn),
        vec![Body::CommitAccepted(CommitAccepted { epoch: 2 })]
    );
    assert!(net.claims.is_empty());
    b.merge_pending();
    assert_eq!(b.authenticator(), c.authenticator());
}
