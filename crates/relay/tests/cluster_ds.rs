//! The delivery service in store mode (spec/cluster.md, CL-DS-*): every validated commit is
//! claimed in the room store before it is merged, with the store's answer fed back by hand
//! (or by a shared in-memory store), real openmls clients and no sockets.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use blindcall_proto::*;
use blindcall_relay::store::{CommitRecord, MemoryStore, StoreError, StoreOp};
use blindcall_relay::*;
use common::*;

const ROOM: &[u8] = b"room-cluster";

fn rejected(body: &Body) -> (u64, CommitRejectReason, Option<Vec<u8>>) {
    match body {
        Body::CommitRejected(r) => (
            r.epoch,
            r.reason,
            r.winner.as_ref().map(|w| w.as_slice().to_vec()),
        ),
        other => panic!("expected CommitRejected, got {other:?}"),
    }
}

fn broadcast(bodies: &[Body]) -> Vec<u8> {
    match bodies {
        [Body::CommitBroadcast(b)] => b.commit.as_slice().to_vec(),
        other => panic!("expected one CommitBroadcast, got {other:?}"),
    }
}

/// Host plus two members at epoch 1, every commit so far claimed in `store`; afterwards the
/// net holds claims for the test to answer.
fn three_members(net: &mut Net) -> (Client, Client, Client) {
    let mut a = room_with_host(net, ROOM, 1);
    let mut b = waiting_guest(net, ROOM, 2, "b");
    let mut c = waiting_guest(net, ROOM, 3, "c");
    admit_all(net, &mut a, &mut [], &mut [&mut b, &mut c]);
    assert_eq!(a.epoch(), 1);
    assert_eq!(a.authenticator(), b.authenticator());
    assert_eq!(a.authenticator(), c.authenticator());
    net.store = None;
    (a, b, c)
}

fn room() -> RoomId {
    RoomId(ROOM.to_vec())
}

// covers: CL-DS-1, CL-DS-2
#[test]
fn a_commit_is_sent_to_no_one_until_its_claim_wins() {
    let store = MemoryStore::default();
    let mut net = Net::shared(store.clone());
    let (mut a, mut b, mut c) = three_members(&mut net);
    // Setting up the room went through the store: epoch 0's winner is there.
    assert!(store.sequenced_commit(&room(), 0).is_some());

    let ca = a.self_update();
    net.send(a.conn, Body::Commit(ca.clone()));
    let claim = net.take_claim();
    assert_eq!(claim.record.room(), &room());
    assert_eq!(claim.record.epoch(), 1);
    assert_eq!(claim.record.commit(), ca.commit.as_slice());
    assert!(!claim.read_first);
    // Nothing was sent to anyone, and the room is still at epoch 1.
    assert!(net.inbox.values().all(Vec::is_empty), "{:?}", net.inbox);
    assert_eq!(net.ds.room_epoch(ROOM), Some(1));

    // A rival commit waits behind the claim in flight: no claim, no answer yet.
    let cb = b.self_update();
    net.send(b.conn, Body::Commit(cb));
    assert!(net.claims.is_empty());
    assert!(net.inbox.values().all(Vec::is_empty));

    // Won: exactly the local outputs, then the rival is answered with the winner.
    let answer = answer_claim(&store, &claim);
    assert!(matches!(answer, ClaimAnswer::Won));
    net.answer(claim.ticket, answer);
    assert_eq!(
        net.take(a.conn),
        vec![Body::CommitAccepted(CommitAccepted { epoch: 2 })]
    );
    a.merge_pending();
    let bodies = net.take(b.conn);
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(broadcast(&bodies[..1]), ca.commit.as_slice());
    let (epoch, reason, winner) = rejected(&bodies[1]);
    assert_eq!((epoch, reason), (1, CommitRejectReason::EPOCH_TAKEN));
    assert_eq!(winner.as_deref(), Some(ca.commit.as_slice()));
    assert!(
        net.claims.is_empty(),
        "a queued commit of a taken epoch is not claimed"
    );
    b.clear_pending();
    b.process(&winner.unwrap());
    c.process(&broadcast(&net.take(c.conn)));
    assert_eq!(net.ds.room_epoch(ROOM), Some(2));
    assert_eq!(a.authenticator(), b.authenticator());
    assert_eq!(a.authenticator(), c.authenticator());
    assert_eq!(net.ds.counters().claims_won, 1 + 1); // setup's add, then A's update
}

// covers: CL-DS-1
#[test]
fn a_committer_gone_while_its_claim_is_in_flight_does_not_stop_the_winner() {
    let store = MemoryStore::default();
    let mut net = Net::shared(store.clone());
    let (mut a, mut b, mut c) = three_members(&mut net);
    let cc = c.self_update();
    net.send(c.conn, Body::Commit(cc.clone()));
    let claim = net.take_claim();
    net.goodbye(c.conn);
    net.take(a.conn);
    net.take(b.conn);
    // The commit is the epoch's in the store: this node merges it and tells the others.
    net.answer(claim.ticket, answer_claim(&store, &claim));
    assert_eq!(net.ds.room_epoch(ROOM), Some(2));
    let bodies = net.take(a.conn);
    assert!(
        matches!(bodies.first(), Some(Body::CommitBroadcast(bc)) if bc.commit == cc.commit),
        "{bodies:?}"
    );
    a.process(cc.commit.as_slice());
    b.process(&broadcast(&net.take(b.conn)[..1]));
    assert_eq!(a.authenticator(), b.authenticator());
}

// covers: CL-DS-3
#[test]
fn a_lost_claim_rejects_the_committer_and_applies_the_other_nodes_winner() {
    let store = MemoryStore::default();
    let mut cfg = config();
    cfg.store_mode = StoreMode::Shared;
    // B's connection here is lost while it keeps its leaf: B carries on through another node.
    cfg.resume_grace = Duration::from_secs(60);
    let mut net = Net::with(cfg);
    net.store = Some(store.clone());
    let (mut a, mut b, mut c) = three_members(&mut net);
    net.close(b.conn);
    assert_eq!(net.ds.room_epoch(ROOM), Some(1));

    // C commits here; meanwhile B's commit was sequenced for epoch 1 by another node.
    let cc = c.self_update();
    net.send(c.conn, Body::Commit(cc));
    let claim = net.take_claim();
    let cb = b.self_update();
    let b_record = CommitRecord::new(room(), 1, cb.commit.as_slice().to_vec());
    assert!(matches!(
        store.sequence_commit(&b_record).unwrap(),
        store::Sequenced::Won
    ));
    b.merge_pending();

    let answer = answer_claim(&store, &claim);
    assert!(matches!(&answer, ClaimAnswer::Lost { winner } if *winner == b_record));
    net.answer(claim.ticket, answer);
    // A hears B's commit; C hears it too, then its own commit is rejected with it as winner.
    a.process(&broadcast(&net.take(a.conn)));
    let bodies = net.take(c.conn);
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(broadcast(&bodies[..1]), cb.commit.as_slice());
    let (epoch, reason, winner) = rejected(&bodies[1]);
    assert_eq!((epoch, reason), (1, CommitRejectReason::EPOCH_TAKEN));
    assert_eq!(winner.as_deref(), Some(cb.commit.as_slice()));
    c.clear_pending();
    c.process(&winner.unwrap());
    // Everyone converges, the relay included.
    assert_eq!(net.ds.room_epoch(ROOM), Some(2));
    assert_eq!(a.epoch(), 2);
    assert_eq!(a.authenticator(), b.authenticator());
    assert_eq!(a.authenticator(), c.authenticator());
    assert!(net.events.contains(&Event::WinnerApplied {
        room: room(),
        epoch: 2
    }));
    assert_eq!(net.ds.counters().claims_lost, 1);
    assert_eq!(net.ds.counters().winners_applied, 1);

    // The room goes on here: C's next commit wins epoch 2.
    net.store = Some(store.clone());
    let cc2 = c.self_update();
    net.send(c.conn, Body::Commit(cc2));
    assert_eq!(
        net.take(c.conn),
        vec![Body::CommitAccepted(CommitAccepted { epoch: 3 })]
    );
    c.merge_pending();
    a.process(&broadcast(&net.take(a.conn)));
    assert_eq!(a.authenticator(), c.authenticator());
    assert!(store.sequenced_commit(&room(), 2).is_some());
}

// covers: CL-DS-3
#[test]
fn a_winner_that_does_not_validate_here_is_refused_and_never_applied() {
    let mut net = Net::shared(MemoryStore::default());
    let (mut a, _b, _c) = three_members(&mut net);
    net.send(a.conn, Body::Commit(a.self_update()));
    let claim = net.take_claim();
    let junk = CommitRecord::new(room(), 1, b"not an MLS message".to_vec());
    net.answer(claim.ticket, ClaimAnswer::Lost { winner: junk });
    let (epoch, reason, winner) = rejected(&net.last(a.conn));
    assert_eq!(
        (epoch, reason, winner),
        (1, CommitRejectReason::EPOCH_TAKEN, None)
    );
    assert_eq!(net.ds.room_epoch(ROOM), Some(1));
    assert!(net.events.contains(&Event::WinnerRefused {
        room: room(),
        epoch: 1,
        reason: CommitRejectReason::MALFORMED,
    }));
    assert_eq!(net.ds.counters().winners_refused, 1);
    a.clear_pending();
}

// covers: CL-DS-4
#[test]
fn a_failed_claim_is_store_unavailable_and_a_later_commit_wins_once_the_store_is_back() {
    let store = MemoryStore::default();
    let mut net = Net::shared(store.clone());
    let (mut a, mut b, mut c) = three_members(&mut net);

    // The store is unreachable: A's claim fails; B's commit waited behind it.
    let ca = a.self_update();
    net.send(a.conn, Body::Commit(ca));
    let claim = net.take_claim();
    let cb = b.self_update();
    net.send(b.conn, Body::Commit(cb.clone()));
    net.answer(
        claim.ticket,
        ClaimAnswer::Failed(StoreError::Unreachable { op: StoreOp::Claim }),
    );
    let (epoch, reason, winner) = rejected(&net.last(a.conn));
    assert_eq!(
        (epoch, reason, winner),
        (1, CommitRejectReason::STORE_UNAVAILABLE, None)
    );
    assert!(net.take(a.conn).is_empty());
    assert!(net.take(b.conn).is_empty() && net.take(c.conn).is_empty());
    assert_eq!(net.ds.room_epoch(ROOM), Some(1));
    assert!(net.events.contains(&Event::ClaimFailed {
        room: room(),
        conn: a.conn,
        epoch: 1,
        unsettled: false,
    }));
    a.clear_pending();

    // B's queued commit is claimed next, and fails too: nothing is broadcast.
    let claim = net.take_claim();
    assert_eq!(claim.record.commit(), cb.commit.as_slice());
    assert!(!claim.read_first, "an unreachable store published nothing");
    net.answer(
        claim.ticket,
        ClaimAnswer::Failed(StoreError::Unreachable { op: StoreOp::Claim }),
    );
    let (_, reason, _) = rejected(&net.last(b.conn));
    assert_eq!(reason, CommitRejectReason::STORE_UNAVAILABLE);
    b.clear_pending();
    assert!(net.take(a.conn).is_empty() && net.take(c.conn).is_empty());
    assert_eq!(net.ds.room_epoch(ROOM), Some(1));
    assert_eq!(
        net.ds
            .counters()
            .commits_rejected(CommitRejectReason::STORE_UNAVAILABLE),
        2
    );
    assert!(store.sequenced_commit(&room(), 1).is_none());

    // The store is back: A sends its commit again and it wins.
    net.store = Some(store.clone());
    let ca2 = a.self_update();
    net.send(a.conn, Body::Commit(ca2.clone()));
    assert_eq!(
        net.take(a.conn),
        vec![Body::CommitAccepted(CommitAccepted { epoch: 2 })]
    );
    a.merge_pending();
    b.process(&broadcast(&net.take(b.conn)));
    c.process(&broadcast(&net.take(c.conn)));
    assert_eq!(a.authenticator(), b.authenticator());
    assert_eq!(a.authenticator(), c.authenticator());
    assert_eq!(
        store.sequenced_commit(&room(), 1).unwrap().commit(),
        ca2.commit.as_slice()
    );
}

// covers: CL-DS-1
#[test]
fn the_queue_behind_a_claim_is_bounded() {
    let mut cfg = config();
    cfg.store_mode = StoreMode::Shared;
    cfg.max_queued_commits = 1;
    let mut net = Net::with(cfg);
    net.store = Some(MemoryStore::default());
    let (mut a, mut b, mut c) = three_members(&mut net);
    net.send(a.conn, Body::Commit(a.self_update()));
    net.send(b.conn, Body::Commit(b.self_update()));
    assert!(net.take(b.conn).is_empty(), "B's commit waits");
    net.send(c.conn, Body::Commit(c.self_update()));
    let (_, reason, _) = rejected(&net.last(c.conn));
    assert_eq!(reason, CommitRejectReason::STORE_UNAVAILABLE);
    assert_eq!(net.claims.len(), 1);
}

// covers: CL-DS-5
#[test]
fn after_a_claim_timed_out_the_key_is_read_before_the_epoch_is_claimed_again() {
    let store = MemoryStore::default();
    let mut net = Net::shared(store.clone());
    let (mut a, mut b, mut c) = three_members(&mut net);

    // A's claim lands in the store but its answer is lost: the shell reports a timeout.
    let ca = a.self_update();
    net.send(a.conn, Body::Commit(ca.clone()));
    let claim = net.take_claim();
    assert!(matches!(
        store.sequence_commit(&claim.record).unwrap(),
        store::Sequenced::Won
    ));
    net.answer(
        claim.ticket,
        ClaimAnswer::Failed(StoreError::Timeout {
            op: StoreOp::Claim,
            after: Duration::from_secs(2),
        }),
    );
    let (_, reason, _) = rejected(&net.last(a.conn));
    assert_eq!(reason, CommitRejectReason::STORE_UNAVAILABLE);
    assert_eq!(net.ds.room_epoch(ROOM), Some(1));
    assert!(net.events.contains(&Event::ClaimFailed {
        room: room(),
        conn: a.conn,
        epoch: 1,
        unsettled: true,
    }));

    // B's commit for the same epoch: the claim asks to read the key first. It holds A's
    // commit, which this node now merges and broadcasts; B loses to it.
    let cb = b.self_update();
    net.send(b.conn, Body::Commit(cb));
    let claim = net.take_claim();
    assert!(claim.read_first);
    let answer = answer_claim(&store, &claim);
    assert!(
        matches!(&answer, ClaimAnswer::Lost { winner } if winner.commit() == ca.commit.as_slice())
    );
    net.answer(claim.ticket, answer);
    assert_eq!(net.ds.room_epoch(ROOM), Some(2));
    // A kept its pending commit (STORE_UNAVAILABLE is "try again"): its own commit arrives.
    assert_eq!(broadcast(&net.take(a.conn)), ca.commit.as_slice());
    a.merge_pending();
    let bodies = net.take(b.conn);
    let (_, reason, winner) = rejected(&bodies[1]);
    assert_eq!(reason, CommitRejectReason::EPOCH_TAKEN);
    b.clear_pending();
    b.process(&winner.unwrap());
    c.process(&broadcast(&net.take(c.conn)));
    assert_eq!(a.authenticator(), b.authenticator());
    assert_eq!(a.authenticator(), c.authenticator());

    // Settled: the next epoch's claim does not read first.
    net.send(c.conn, Body::Commit(c.self_update()));
    assert!(!net.take_claim().read_first);
}

// covers: CL-DS-5
#[test]
fn a_read_after_a_timeout_that_finds_the_own_commit_is_a_win() {
    let store = MemoryStore::default();
    let mut net = Net::shared(store.clone());
    let (mut a, mut b, _c) = three_members(&mut net);
    let ca = a.self_update();
    net.send(a.conn, Body::Commit(ca.clone()));
    let first = net.take_claim();
    net.answer(
        first.ticket,
        ClaimAnswer::Failed(StoreError::Timeout {
            op: StoreOp::Claim,
            after: Duration::from_secs(2),
        }),
    );
    net.take(a.conn);
    // The timed-out write did land; A sends the same commit again.
    let _ = store.sequence_commit(&first.record).unwrap();
    net.send(a.conn, Body::Commit(ca));
    let claim = net.take_claim();
    assert!(claim.read_first);
    net.answer(claim.ticket, answer_claim(&store, &claim));
    assert_eq!(
        net.take(a.conn),
        vec![Body::CommitAccepted(CommitAccepted { epoch: 2 })]
    );
    a.merge_pending();
    b.process(&broadcast(&net.take(b.conn)));
    assert_eq!(a.authenticator(), b.authenticator());
}

// covers: CL-DS-1
#[test]
fn an_answer_for_no_claim_in_flight_is_ignored() {
    let mut net = Net::shared_manual();
    net.answer(ClaimTicket(77), ClaimAnswer::Won);
    assert_eq!(net.ds.counters().claims_unknown, 1);
    assert!(net.inbox.is_empty());
}

// covers: CL-DS-1
#[test]
fn a_joiner_gone_while_its_add_is_claimed_gets_no_welcome_and_its_leaf_is_proposed_for_removal() {
    let store = MemoryStore::default();
    let mut net = Net::shared(store.clone());
    let mut a = room_with_host(&mut net, ROOM, 1);
    let g = waiting_guest(&mut net, ROOM, 2, "g");
    let kps: Vec<Vec<u8>> = waiting_kps(&a.pump(&mut net))
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    net.store = None;
    net.send(a.conn, Body::Commit(a.add(&kps)));
    let claim = net.take_claim();
    net.goodbye(g.conn);
    net.take(a.conn);
    net.answer(claim.ticket, answer_claim(&store, &claim));
    let bodies = net.take(a.conn);
    assert_eq!(
        bodies.first(),
        Some(&Body::CommitAccepted(CommitAccepted { epoch: 1 }))
    );
    a.merge_pending();
    let proposal = bodies
        .iter()
        .find_map(|b| match b {
            Body::RelayProposal(p) => Some(p),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no removal proposal: {bodies:?}"));
    assert_eq!((proposal.epoch, proposal.removed_leaf), (1, 1));
    assert!(
        net.take(g.conn)
            .iter()
            .all(|b| !matches!(b, Body::Welcome(_)))
    );
    assert!(
        !net.events
            .iter()
            .any(|e| matches!(e, Event::MemberJoined { conn, .. } if *conn == g.conn))
    );
    // The host commits the proposal: the room is back to one member.
    a.apply(&[Body::RelayProposal(proposal.clone())]);
    net.store = Some(store);
    net.send(a.conn, Body::Commit(a.commit_pending()));
    assert_eq!(
        net.take(a.conn),
        vec![Body::CommitAccepted(CommitAccepted { epoch: 2 })]
    );
}
