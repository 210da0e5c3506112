//! Own commits: one at a time, retried when another member's commit wins the epoch, replies
//! matched to the commit they answer, and the relay's removal proposals.

use std::time::Duration;

use blindcall_client::{CallError, CallWarning, Command, EndReason, Event};
use blindcall_proto::{Body, CommitAccepted};

use crate::harness::{Room, has, options};

/// alice hosts; bob joins (epoch 1) and updates his path (epoch 2); carol waits.
fn two_members_and_a_waiting_guest() -> Room {
    let mut room = Room::new();
    let a = room.host("alice", options());
    let b = room.guest("bob", options());
    let now = room.now;
    let req = room.peers[b].conn;
    let r = room.request_for(a, req);
    room.peers[a].command(now, Command::Approve(r)).unwrap();
    room.run();
    room.tick();
    assert_eq!(room.peers[b].epoch(), Some(2));
    room.guest("carol", options());
    room
}

fn warnings(events: &[Event]) -> Vec<&CallWarning> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Warning(w) => Some(w),
            _ => None,
        })
        .collect()
}

fn commits_in(outbox: &std::collections::VecDeque<Body>) -> Vec<u64> {
    outbox
        .iter()
        .filter_map(|b| match b {
            Body::Commit(c) => Some(c.epoch),
            _ => None,
        })
        .collect()
}

/// The name of a reply to a commit.
fn reply_name(b: &Body) -> Option<&'static str> {
    match b {
        Body::CommitAccepted(_) => Some("CommitAccepted"),
        Body::CommitRejected(_) => Some("CommitRejected"),
        Body::CommitBroadcast(_) => Some("CommitBroadcast"),
        _ => None,
    }
}

/// Everyone active converges on one epoch and code; returns the epoch.
fn converged(room: &mut Room, names: &[&str]) -> u64 {
    let first = room.peer(names[0]).core.stats();
    for n in &names[1..] {
        let s = room.peer(n).core.stats();
        assert_eq!(
            (s.epoch, &s.code, s.members),
            (first.epoch, &first.code, first.members),
            "{n} differs from {}",
            names[0]
        );
    }
    first.epoch.unwrap()
}

// covers: SDK-COMMIT-1, SDK-COMMIT-3
#[test]
fn a_path_update_that_loses_its_epoch_is_made_again_once_and_stale_replies_change_nothing() {
    // Reproduces the over-TLS race of SDK-COMMIT-3 step by step: bob's first path update
    // and alice's Add of a new joiner are made in the same epoch.
    let mut room = Room::new();
    let a = room.host("alice", options());
    let b = room.guest("bob", options());
    let c = room.guest("carol", options());
    let now = room.now;
    let bob = room.peers[b].conn;
    let carol = room.peers[c].conn;
    let r = room.request_for(a, bob);
    room.peers[a].command(now, Command::Approve(r)).unwrap();
    room.relay_all(a);
    room.peers[a].deliver(now);
    room.peers[b].deliver(now);
    assert_eq!(room.peers[b].epoch(), Some(1));
    // Alice approves carol; bob's path update is due: both commit from epoch 1.
    let r = room.request_for(a, carol);
    room.peers[a].command(now, Command::Approve(r)).unwrap();
    room.peers[b].tick(now);
    assert_eq!(commits_in(&room.peers[a].outbox), [1]);
    assert_eq!(commits_in(&room.peers[b].outbox), [1]);
    // The relay sequences alice's; bob's is refused with alice's as the winner.
    room.relay_all(a);
    room.relay_all(b);
    let order: Vec<&str> = room.peers[b].inbox.iter().filter_map(reply_name).collect();
    assert_eq!(order, ["CommitBroadcast", "CommitRejected"]);
    // Bob merges alice's commit (dropping his own), then gets the stale refusal.
    room.peers[b].deliver(now);
    assert_eq!(room.peers[b].epoch(), Some(2));
    let events = room.peers[b].take_events();
    assert!(
        warnings(&events).is_empty(),
        "a stale reply is not an error: {events:?}"
    );
    // The group asks for the path update again: one new commit, from epoch 2.
    room.peers[b].tick(now);
    assert_eq!(commits_in(&room.peers[b].outbox), [2]);
    // A stale CommitAccepted (the answer to a commit of epoch 1) does not confirm it.
    room.peers[b]
        .inbox
        .push_back(Body::CommitAccepted(CommitAccepted { epoch: 2 }));
    room.peers[b].deliver(now);
    assert_eq!(
        room.peers[b].epoch(),
        Some(2),
        "a stale accept confirmed a commit"
    );
    // Now it is sequenced; everyone, carol included, ends in one epoch with one code.
    room.run();
    room.tick();
    room.tick();
    let epoch = converged(&mut room, &["alice", "bob", "carol"]);
    assert_eq!(epoch, 4, "add bob, add carol, bob's update, carol's update");
    for p in &mut room.peers {
        let events = p.take_events();
        assert!(warnings(&events).is_empty(), "{}: {events:?}", p.name);
    }
}

// covers: SDK-COMMIT-1
#[test]
fn a_refusal_naming_the_winner_is_merged_and_the_late_broadcast_of_it_ignored() {
    let mut room = Room::new();
    let a = room.host("alice", options());
    let b = room.guest("bob", options());
    let c = room.guest("carol", options());
    let now = room.now;
    let (bob, carol) = (room.peers[b].conn, room.peers[c].conn);
    let r = room.request_for(a, bob);
    room.peers[a].command(now, Command::Approve(r)).unwrap();
    room.relay_all(a);
    room.peers[a].deliver(now);
    room.peers[b].deliver(now);
    let r = room.request_for(a, carol);
    room.peers[a].command(now, Command::Approve(r)).unwrap();
    room.peers[b].tick(now);
    room.relay_all(a);
    room.relay_all(b);
    // The refusal (with alice's commit as the winner) reaches bob before the broadcast.
    let refusal = room.peers[b]
        .inbox
        .iter()
        .position(|m| matches!(m, Body::CommitRejected(_)))
        .unwrap();
    let refusal = room.peers[b].inbox.remove(refusal).unwrap();
    room.peers[b].inbox.push_front(refusal);
    room.peers[b].deliver(now);
    assert_eq!(room.peers[b].epoch(), Some(2), "the winner was merged once");
    let events = room.peers[b].take_events();
    assert!(warnings(&events).is_empty(), "{events:?}");
    assert!(has(&events, |e| matches!(
        e,
        Event::MembersJoined { epoch: 2, .. }
    )));
    room.peers[b].tick(now);
    assert_eq!(commits_in(&room.peers[b].outbox), [2]);
    room.run();
    room.tick();
    room.tick();
    assert_eq!(converged(&mut room, &["alice", "bob", "carol"]), 4);
}

// covers: SDK-COMMIT-1, SDK-COMMIT-2
#[test]
fn work_whose_commit_lost_is_redone_in_the_new_epoch_and_obsolete_work_is_dropped() {
    let mut room = Room::new();
    let a = room.host("alice", options());
    let mut eager = options();
    // Bob commits the relay's proposals at once, whatever his rank.
    eager.proposal_fallback_step = Duration::ZERO;
    for (name, o) in [("bob", eager), ("carol", options())] {
        let g = room.guest(name, o);
        let now = room.now;
        let req = room.peers[g].conn;
        let r = room.request_for(a, req);
        room.peers[a].command(now, Command::Approve(r)).unwrap();
        room.run();
        room.tick();
    }
    assert_eq!(converged(&mut room, &["alice", "bob", "carol"]), 4);
    let d = room.guest("dave", options());
    // Alice adds dave while carol departs and the relay proposes her removal.
    let now = room.now;
    let dave = room.peers[d].conn;
    let r = room.request_for(a, dave);
    room.peers[a].command(now, Command::Approve(r)).unwrap();
    room.peers[2].command(now, Command::Leave).unwrap();
    room.propose_remove(2);
    room.peers[0].deliver(now);
    room.peers[1].deliver(now);
    assert_eq!(
        commits_in(&room.peers[0].outbox),
        [4],
        "one own commit at a time"
    );
    assert_eq!(commits_in(&room.peers[1].outbox), [4]);
    // Bob's commit of the proposal wins epoch 4; alice's Add loses.
    room.relay_all(1);
    room.relay_all(0);
    room.peers[1].deliver(now);
    room.peers[0].deliver(now);
    assert_eq!(room.peers[0].epoch(), Some(5));
    // The Add is made again in epoch 5; committing the proposal no longer applies.
    assert_eq!(commits_in(&room.peers[0].outbox), [5]);
    room.run();
    room.tick();
    assert_eq!(converged(&mut room, &["alice", "bob", "dave"]), 7);
    assert_eq!(room.peers[0].core.stats().members, 3);
    for p in &mut room.peers {
        let events = p.take_events();
        assert!(warnings(&events).is_empty(), "{}: {events:?}", p.name);
    }
}

// covers: SDK-EVT-1
#[test]
fn a_member_removed_by_a_commit_ends_as_removed() {
    let mut room = two_members_and_a_waiting_guest();
    let now = room.now;
    let bob = room.peers[0]
        .core
        .members()
        .into_iter()
        .find(|m| &*m.identity == "bob")
        .unwrap();
    room.peers[0]
        .command(
            now,
            Command::Remove {
                leaf: bob.leaf,
                identity_key: bob.identity_key.to_vec(),
            },
        )
        .unwrap();
    room.run();
    assert!(room.peers[1].ended && room.peers[1].core.is_ended());
    let events = room.peers[1].take_events();
    assert_eq!(
        events.last(),
        Some(&Event::CallEnded {
            reason: EndReason::Removed
        })
    );
    assert!(has(&room.peers[0].take_events(), |e| matches!(
        e,
        Event::MembersLeft { epoch: 3, .. }
    )));
    // The final counters say so.
    assert!(room.peers[1].stats.as_ref().is_some_and(|s| s.ended));
}

// covers: SDK-COMMIT-2, SDK-COMMIT-1
#[test]
fn the_relays_removal_proposal_is_committed_by_the_lowest_leaf_and_by_rank_after_a_delay() {
    let mut room = Room::new();
    let a = room.host("alice", options());
    for name in ["bob", "carol"] {
        let g = room.guest(name, options());
        let now = room.now;
        let req = room.peers[g].conn;
        let r = room.request_for(a, req);
        room.peers[a].command(now, Command::Approve(r)).unwrap();
        room.run();
        room.tick();
    }
    let epoch = converged(&mut room, &["alice", "bob", "carol"]);
    assert_eq!(epoch, 4);
    // Carol disconnects; the relay proposes removing her leaf (2).
    let now = room.now;
    room.peers[2].command(now, Command::Leave).unwrap();
    room.propose_remove(2);
    room.peers[0].deliver(now);
    room.peers[1].deliver(now);
    // Alice has the lowest leaf: she commits at once; bob waits one step.
    assert_eq!(commits_in(&room.peers[0].outbox), [4]);
    assert!(commits_in(&room.peers[1].outbox).is_empty());
    let step = options().proposal_fallback_step;
    // Alice's commit is lost in transit: bob steps in after his rank's delay, not before.
    room.peers[0].outbox.clear();
    room.advance(step - Duration::from_millis(1));
    let now = room.now;
    room.peers[1].tick(now);
    assert!(commits_in(&room.peers[1].outbox).is_empty());
    room.advance(Duration::from_millis(1));
    let now = room.now;
    room.peers[1].tick(now);
    assert_eq!(commits_in(&room.peers[1].outbox), [4]);
    room.run();
    let epoch = converged(&mut room, &["alice", "bob"]);
    assert_eq!(epoch, 5);
    assert_eq!(room.peers[0].core.stats().members, 2);
}

// covers: SDK-COMMIT-1
#[test]
fn removing_an_unknown_member_or_acting_outside_the_group_is_refused() {
    let mut room = two_members_and_a_waiting_guest();
    let now = room.now;
    let bob = room.peers[0]
        .core
        .members()
        .into_iter()
        .find(|m| &*m.identity == "bob")
        .unwrap();
    // A leaf nobody holds, and bob's leaf with another key: both refused.
    assert_eq!(
        room.peers[0].command(
            now,
            Command::Remove {
                leaf: 77,
                identity_key: bob.identity_key.to_vec()
            }
        ),
        Err(CallError::UnknownMember(77))
    );
    assert_eq!(
        room.peers[0].command(
            now,
            Command::Remove {
                leaf: bob.leaf,
                identity_key: vec![0; 32]
            }
        ),
        Err(CallError::UnknownMember(bob.leaf))
    );
    // Carol waits: she is not a member and can neither approve nor remove.
    assert_eq!(
        room.peers[2].command(
            now,
            Command::Remove {
                leaf: bob.leaf,
                identity_key: bob.identity_key.to_vec()
            }
        ),
        Err(CallError::NotMember)
    );
    assert_eq!(
        room.peers[2].command(now, Command::Approve(1)),
        Err(CallError::NotMember)
    );
}

/// The events and commits of peer `i` after the relay answered its pending commit with
/// `answer`; checks the call ended once as diverged in `epoch`.
fn ends_diverged(room: &mut Room, i: usize, answer: Body, epoch: u64) {
    let now = room.now;
    room.peers[i].inbox.push_back(answer.clone());
    room.peers[i].deliver(now);
    let events = room.peers[i].take_events();
    let reason = blindcall_client::GroupFailure::InvalidMessage;
    let diverged: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Diverged { .. }))
        .collect();
    assert_eq!(
        diverged,
        [&Event::Diverged {
            epoch,
            reason: reason.clone()
        }],
        "{events:?}"
    );
    assert_eq!(
        events.last(),
        Some(&Event::CallEnded {
            reason: EndReason::Diverged { epoch, reason }
        })
    );
    assert!(room.peers[i].ended && room.peers[i].core.is_ended());
    assert!(
        commits_in(&room.peers[i].outbox).is_empty(),
        "no commit after the divergence"
    );
    // The same answer again changes nothing: the call ended once.
    room.peers[i].inbox.push_back(answer);
    room.peers[i].deliver(now);
    room.advance(Duration::from_secs(5));
    let now = room.now;
    room.peers[i].tick(now);
    assert!(room.peers[i].take_events().is_empty());
    assert!(commits_in(&room.peers[i].outbox).is_empty());
}

// covers: SDK-DIV-1
#[test]
fn a_sequenced_winner_the_member_cannot_process_ends_the_call_once_without_retrying() {
    let mut room = two_members_and_a_waiting_guest();
    let now = room.now;
    // Alice approves carol; the relay refuses her commit naming a "winner" she cannot read.
    let carol = room.peers[2].conn;
    let r = room.request_for(0, carol);
    room.peers[0].command(now, Command::Approve(r)).unwrap();
    assert_eq!(commits_in(&room.peers[0].outbox), [2]);
    room.peers[0].outbox.clear();
    let refusal = Body::CommitRejected(blindcall_proto::CommitRejected {
        epoch: 2,
        reason: blindcall_proto::CommitRejectReason::EPOCH_TAKEN,
        winner: Some(blindcall_proto::VLBytes::new(b"not an MLS commit".to_vec())),
    });
    ends_diverged(&mut room, 0, refusal, 2);

    // Bob gets, as the winner of his epoch, a valid commit of another call's group.
    let mut other = two_members_and_a_waiting_guest();
    let now = other.now;
    let req = other.request_for(0, other.peers[2].conn);
    other.peers[0].command(now, Command::Approve(req)).unwrap();
    let foreign = match other.peers[0]
        .outbox
        .iter()
        .find(|b| matches!(b, Body::Commit(_)))
    {
        Some(Body::Commit(c)) => c.commit.clone(),
        _ => unreachable!(),
    };
    let broadcast = Body::CommitBroadcast(blindcall_proto::CommitBroadcast {
        epoch: 2,
        commit: foreign,
    });
    ends_diverged(&mut room, 1, broadcast, 2);
}

/// The relay's refusal of alice's commit of `epoch` because its room store was unavailable.
fn store_unavailable(epoch: u64) -> Body {
    Body::CommitRejected(blindcall_proto::CommitRejected {
        epoch,
        reason: blindcall_proto::CommitRejectReason::STORE_UNAVAILABLE,
        winner: None,
    })
}

fn sent_commit(room: &mut Room, i: usize) -> blindcall_proto::Commit {
    // Keep-alive pings may go out meanwhile; only the commits matter here.
    let sent: Vec<Body> = room.peers[i]
        .outbox
        .drain(..)
        .filter(|b| matches!(b, Body::Commit(_)))
        .collect();
    match sent.as_slice() {
        [Body::Commit(c)] => c.clone(),
        other => panic!("expected one commit, got {other:?}"),
    }
}

// covers: SDK-COMMIT-6
#[test]
fn a_commit_refused_store_unavailable_is_kept_and_sent_again_after_a_growing_delay() {
    let mut room = two_members_and_a_waiting_guest();
    let now = room.now;
    let carol = room.peers[2].conn;
    let r = room.request_for(0, carol);
    room.peers[0].command(now, Command::Approve(r)).unwrap();
    let first = sent_commit(&mut room, 0);
    assert_eq!(first.epoch, 2);
    room.peers[0].take_events();

    // Refused: a typed warning, the commit is kept, nothing is sent at once.
    room.peers[0].inbox.push_back(store_unavailable(2));
    let now = room.now;
    room.peers[0].deliver(now);
    let events = room.peers[0].take_events();
    assert!(
        has(&events, |e| matches!(
            e,
            Event::Warning(CallWarning::CommitRejected { epoch: 2, reason })
                if *reason == blindcall_proto::CommitRejectReason::STORE_UNAVAILABLE
        )),
        "{events:?}"
    );
    room.peers[0].tick(now);
    assert!(commits_in(&room.peers[0].outbox).is_empty());
    assert_eq!(room.peers[0].epoch(), Some(2));

    // After the first delay the same commit goes again.
    room.advance(Duration::from_millis(499));
    let now = room.now;
    room.peers[0].tick(now);
    assert!(
        commits_in(&room.peers[0].outbox).is_empty(),
        "not before the delay"
    );
    room.advance(Duration::from_millis(1));
    let now = room.now;
    room.peers[0].tick(now);
    assert_eq!(sent_commit(&mut room, 0), first);

    // Refused again: the delay doubles.
    room.peers[0].inbox.push_back(store_unavailable(2));
    room.peers[0].deliver(now);
    room.advance(Duration::from_millis(500));
    let now = room.now;
    room.peers[0].tick(now);
    assert!(
        commits_in(&room.peers[0].outbox).is_empty(),
        "the second delay is longer"
    );
    room.advance(Duration::from_millis(500));
    let now = room.now;
    room.peers[0].tick(now);
    let again = sent_commit(&mut room, 0);
    assert_eq!(again, first);

    // The store is back: the relay sequences it, carol joins, everyone converges.
    room.peers[0].outbox.push_back(Body::Commit(again));
    room.run();
    room.tick();
    room.tick();
    converged(&mut room, &["alice", "bob", "carol"]);
}

// covers: SDK-COMMIT-6
#[test]
fn a_commit_refused_store_unavailable_but_answered_meanwhile_is_not_sent_again() {
    let mut room = two_members_and_a_waiting_guest();
    let now = room.now;
    let carol = room.peers[2].conn;
    let r = room.request_for(0, carol);
    room.peers[0].command(now, Command::Approve(r)).unwrap();
    let first = sent_commit(&mut room, 0);
    room.peers[0].inbox.push_back(store_unavailable(2));
    room.peers[0].deliver(now);
    // The commit landed after all and the relay confirms it before the delay is over.
    room.peers[0].outbox.push_back(Body::Commit(first));
    room.run();
    assert_eq!(room.peers[0].epoch(), Some(3));
    room.advance(Duration::from_secs(10));
    let now = room.now;
    room.peers[0].tick(now);
    assert!(
        !room.peers[0]
            .outbox
            .iter()
            .any(|b| matches!(b, Body::Commit(c) if c.epoch == 2)),
        "a confirmed commit is not sent again"
    );
    room.run();
    room.tick();
    converged(&mut room, &["alice", "bob", "carol"]);
}

// covers: SDK-COMMIT-4
#[test]
fn a_queued_removal_is_dropped_when_another_member_took_the_leaf_since() {
    let mut room = two_members_and_a_waiting_guest();
    let (a, b, c) = (0, 1, 2);
    let now = room.now;
    let bob_leaf = room.peers[a]
        .core
        .members()
        .into_iter()
        .find(|m| &*m.identity == "bob")
        .unwrap()
        .leaf;
    // Bob leaves: alice, the lowest leaf, commits his removal at once.
    room.peers[b].command(now, Command::Leave).unwrap();
    room.relay_all(b);
    room.peers[a].deliver(now);
    assert_eq!(commits_in(&room.peers[a].outbox), [2]);
    // While that commit is out, alice's application approves carol and removes bob, whom
    // it still sees at his leaf: both wait behind the pending commit.
    let carol = room.peers[c].conn;
    let r = room.request_for(a, carol);
    room.peers[a].command(now, Command::Approve(r)).unwrap();
    let remove_bob = room.remove_command(a, "bob");
    room.peers[a].command(now, remove_bob).unwrap();
    // Bob's removal is sequenced, carol's Add puts her into bob's freed leaf, and the
    // queued removal, made against whoever holds that leaf now, must not remove her.
    room.run();
    room.tick();
    room.run();
    let carol_leaf = room.peers[a]
        .core
        .members()
        .into_iter()
        .find(|m| &*m.identity == "carol")
        .map(|m| m.leaf);
    assert_eq!(carol_leaf, Some(bob_leaf), "carol took bob's leaf");
    assert!(
        !room.peers[c].ended,
        "carol was removed: {:?}",
        room.peers[c].events
    );
    converged(&mut room, &["alice", "carol"]);
    assert_eq!(room.peers[a].core.members().len(), 2);
}

// covers: SDK-LEAVE-1
#[test]
fn leaving_with_an_own_commit_pending_still_sends_the_leave_proposal() {
    let mut room = two_members_and_a_waiting_guest();
    let (a, c) = (0, 2);
    let now = room.now;
    // Carol is welcomed; her path update (her own commit) is out, not answered yet, when she
    // leaves.
    let carol = room.peers[c].conn;
    let r = room.request_for(a, carol);
    room.peers[a].command(now, Command::Approve(r)).unwrap();
    room.run();
    assert_eq!(room.peers[c].epoch(), Some(3));
    let mut ticks = 0;
    while commits_in(&room.peers[c].outbox).is_empty() && ticks < 100 {
        room.advance(Duration::from_millis(100));
        let now = room.now;
        room.peers[c].tick(now);
        ticks += 1;
    }
    assert_eq!(
        commits_in(&room.peers[c].outbox),
        [3],
        "carol's commit is out"
    );
    let now = room.now;
    assert_eq!(room.peers[c].command(now, Command::Leave), Ok(()));
    let events = room.peers[c].take_events();
    assert!(warnings(&events).is_empty(), "{events:?}");
    assert!(
        has(&events, |e| matches!(
            e,
            Event::CallEnded {
                reason: EndReason::Left
            }
        )),
        "{events:?}"
    );
    let sent: Vec<&Body> = room.peers[c].outbox.iter().collect();
    assert!(
        matches!(sent.last(), Some(Body::Propose(p)) if p.epoch == 3),
        "{sent:?}"
    );
    // The relay sequences her path update, so her proposal (of epoch 3) is stale; her
    // goodbye has the relay propose her removal, which alice commits.
    room.run();
    let carol_leaf = room.peers[a]
        .core
        .members()
        .into_iter()
        .find(|m| &*m.identity == "carol")
        .unwrap()
        .leaf;
    room.propose_remove(carol_leaf);
    room.run();
    room.tick();
    room.run();
    assert!(
        room.peers[a]
            .core
            .members()
            .iter()
            .all(|m| &*m.identity != "carol"),
        "carol is still a member"
    );
    converged(&mut room, &["alice", "bob"]);
}
