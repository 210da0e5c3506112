//! Messages between members through the relay: epoch confirmations and what they reveal (a
//! consistent epoch, or a relay that split the call), refused messages, and a member's own
//! leave proposal.

use std::time::Duration;

use blindcall_client::{Command, Event, PeerRefusal};
use blindcall_proto::{
    Body, CommitAccepted, CommitBroadcast, PeerMessage, ProposalBroadcast, VLBytes,
};

use crate::harness::{Room, has, options};
use crate::raw::{Raw, admit};

/// alice hosts; bob joins (epoch 1) and updates his path (epoch 2).
fn two_members() -> Room {
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
    room
}

fn splits(events: &[Event]) -> Vec<(u64, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::GroupSplit { epoch, member } => Some((*epoch, member.identity.to_string())),
            _ => None,
        })
        .collect()
}

/// Takes the first commit out of peer `i`'s outbox (the relay read it).
fn take_commit(room: &mut Room, i: usize) -> blindcall_proto::Commit {
    let outbox = &mut room.peers[i].outbox;
    let at = outbox
        .iter()
        .position(|b| matches!(b, Body::Commit(_)))
        .expect("a commit");
    match outbox.remove(at) {
        Some(Body::Commit(c)) => c,
        _ => unreachable!(),
    }
}

// covers: SDK-PEER-1, SDK-EVT-2
#[test]
fn members_confirm_each_epoch_to_each_other_and_a_refused_message_is_only_counted() {
    let mut room = two_members();
    for p in &mut room.peers {
        let events = p.take_events();
        assert!(
            has(&events, |e| *e == Event::EpochConsistent { epoch: 2 }),
            "{}: {events:?}",
            p.name
        );
        let s = p.core.stats();
        assert!(
            s.peer_messages_sent >= 2 && s.peer_messages_received >= 1,
            "{}: {s:?}",
            p.name
        );
    }
    let confirmations = room
        .relayed
        .iter()
        .filter(|(_, b)| matches!(b, Body::PeerBroadcast(p) if p.payload.as_slice().first() == Some(&1)))
        .count();
    assert!(confirmations >= 3, "alice for 0, 1, 2; bob for 1, 2");
    // Garbage, and bob's confirmation with its signature altered (made up by the relay):
    // refused, counted, nothing else happens.
    let bob_says = room
        .relayed
        .iter()
        .rev()
        .find_map(|(who, b)| match b {
            Body::PeerBroadcast(p) if who == "bob" && p.payload.as_slice().first() == Some(&1) => {
                Some(p.payload.as_slice().to_vec())
            }
            _ => None,
        })
        .unwrap();
    let mut altered = bob_says;
    *altered.last_mut().unwrap() ^= 1;
    let now = room.now;
    let bob = room.peers[1].conn;
    for payload in [vec![9, 9, 9], altered] {
        room.peers[0]
            .inbox
            .push_back(Body::PeerMessage(PeerMessage {
                from_conn: bob,
                from_leaf: 1,
                payload: VLBytes::new(payload),
            }));
    }
    room.peers[0].deliver(now);
    let s = room.peers[0].core.stats();
    assert_eq!(
        s.peer_messages_refused.get(&PeerRefusal::Malformed),
        Some(&1)
    );
    assert_eq!(
        s.peer_messages_refused.get(&PeerRefusal::BadSignature),
        Some(&1),
        "{s:?}"
    );
    assert!(!room.peers[0].ended);
    assert!(room.peers[0].take_events().is_empty());
}

// covers: SDK-PEER-1, SDK-EVT-2
#[test]
fn a_relay_that_confirms_two_commits_for_one_epoch_is_caught_on_both_sides() {
    let mut room = two_members();
    let c = room.guest("carol", options());
    let now = room.now;
    let carol = room.peers[c].conn;
    let r = room.request_for(0, carol);
    room.peers[0].command(now, Command::Approve(r)).unwrap();
    room.relay_all(0);
    for i in 0..3 {
        room.peers[i].deliver(now);
    }
    room.run();
    assert_eq!(room.peers[c].epoch(), Some(3));
    let d = room.guest("dave", options());
    // Alice adds dave while carol's path update is due: two commits of epoch 3.
    let now = room.now;
    let dave = room.peers[d].conn;
    let r = room.request_for(0, dave);
    room.peers[0].command(now, Command::Approve(r)).unwrap();
    room.peers[c].tick(now);
    let add = take_commit(&mut room, 0);
    let update = take_commit(&mut room, c);
    assert_eq!((add.epoch, update.epoch), (3, 3));
    // The relay confirms both: alice's to alice and bob, carol's to carol.
    room.peers[0]
        .inbox
        .push_back(Body::CommitAccepted(CommitAccepted { epoch: 4 }));
    room.peers[1]
        .inbox
        .push_back(Body::CommitBroadcast(CommitBroadcast {
            epoch: 3,
            commit: add.commit,
        }));
    room.peers[c]
        .inbox
        .push_back(Body::CommitAccepted(CommitAccepted { epoch: 4 }));
    for i in [0, 1, c] {
        room.peers[i].deliver(now);
        assert_eq!(room.peers[i].epoch(), Some(4), "{}", room.peers[i].name);
    }
    assert_ne!(room.peers[0].code(), room.peers[c].code());
    // Their epoch confirmations cross through the relay: both sides see the split.
    room.run();
    let found: Vec<Vec<(u64, String)>> = [0, 1, c]
        .iter()
        .map(|&i| splits(&room.peers[i].take_events()))
        .collect();
    assert_eq!(found[0], [(4, "carol".to_string())]);
    assert_eq!(found[1], [(4, "carol".to_string())]);
    let mut carol_saw = found[2].clone();
    carol_saw.sort();
    assert_eq!(
        carol_saw,
        [(4, "alice".to_string()), (4, "bob".to_string())]
    );
    // Nobody calls epoch 4 consistent.
    for p in &mut room.peers {
        assert!(!has(&p.take_events(), |e| matches!(
            e,
            Event::EpochConsistent { epoch: 4 }
        )));
    }
}

// covers: SDK-PEER-2
#[test]
fn a_members_own_leave_is_committed_by_the_lowest_remaining_leaf_and_rank_skips_the_leaver() {
    // mallory (raw openmls) is admitted first, so she ranks before bob.
    let mut room = Room::new();
    let a = room.host("alice", options());
    let mut mallory = Raw::new("mallory");
    admit(&mut room, a, &mut mallory, 99);
    let b = room.guest("bob", options());
    let now = room.now;
    let req = room.peers[b].conn;
    let r = room.request_for(a, req);
    room.peers[a].command(now, Command::Approve(r)).unwrap();
    room.run();
    room.tick();
    mallory.catch_up(&room);
    assert_eq!(room.peers[a].epoch(), Some(3));
    assert_eq!(mallory.leaf(), 1);
    // Mallory leaves: the relay passes her proposal on to alice and bob.
    let (epoch, proposal) = mallory.leave();
    assert_eq!(epoch, 3);
    let body = Body::ProposalBroadcast(ProposalBroadcast {
        epoch,
        proposal: VLBytes::new(proposal),
    });
    let now = room.now;
    for i in [a, b] {
        room.peers[i].inbox.push_back(body.clone());
        room.peers[i].deliver(now);
    }
    let commits = |room: &Room, i: usize| {
        room.peers[i]
            .outbox
            .iter()
            .filter(|m| matches!(m, Body::Commit(_)))
            .count()
    };
    assert_eq!(commits(&room, a), 1, "alice has the lowest leaf");
    assert_eq!(commits(&room, b), 0);
    // Alice's commit is lost: bob is next in rank once the leaver is left out (one step, not
    // two).
    room.peers[a].outbox.clear();
    let step = options().proposal_fallback_step;
    room.advance(step);
    let now = room.now;
    room.peers[b].tick(now);
    assert_eq!(commits(&room, b), 1);
    room.run();
    for i in [a, b] {
        let s = room.peers[i].core.stats();
        assert_eq!((s.epoch, s.members), (Some(4), 2), "{}", room.peers[i].name);
        let events = room.peers[i].take_events();
        assert!(
            has(&events, |e| matches!(
                e,
                Event::MembersLeft { epoch: 4, members } if members.len() == 1 && &*members[0].identity == "mallory"
            )),
            "{events:?}"
        );
    }
}

// covers: SDK-PEER-3
#[test]
fn a_relay_proposal_to_remove_this_member_is_reported_and_never_committed_by_it() {
    let mut room = two_members();
    let c = room.guest("carol", options());
    let now = room.now;
    let carol = room.peers[c].conn;
    let r = room.request_for(0, carol);
    room.peers[0].command(now, Command::Approve(r)).unwrap();
    room.run();
    room.tick();
    let epoch = room.peers[0].epoch().unwrap();
    for p in &mut room.peers {
        p.take_events();
    }
    // The relay proposes removing alice (leaf 0), who is connected: everyone gets it.
    room.propose_remove(0);
    let now = room.now;
    room.peers[0].deliver(now);
    let events = room.peers[0].take_events();
    assert_eq!(events, [Event::OwnRemovalProposed { epoch }]);
    assert!(
        !room.peers[0]
            .outbox
            .iter()
            .any(|m| matches!(m, Body::Commit(_))),
        "a member never commits its own removal"
    );
    // Bob is the lowest remaining leaf: he commits it, and alice's call ends as removed.
    room.run();
    room.advance(Duration::from_millis(1));
    room.tick();
    assert!(room.peers[0].ended);
    assert_eq!(
        room.peers[0].take_events().last(),
        Some(&Event::CallEnded {
            reason: blindcall_client::EndReason::Removed
        })
    );
    assert_eq!(room.peers[1].core.stats().members, 2);
}

// covers: SDK-EVT-2
#[test]
fn a_member_whose_confirmations_the_relay_withholds_is_reported_unconfirmed() {
    let mut room = two_members();
    let c = room.guest("carol", options());
    let now = room.now;
    let carol = room.peers[c].conn;
    let r = room.request_for(0, carol);
    room.peers[0].command(now, Command::Approve(r)).unwrap();
    room.relay_all(0);
    for i in 0..3 {
        room.peers[i].deliver(now);
    }
    assert_eq!(room.peers[c].epoch(), Some(3));
    // The relay passes on alice's and bob's confirmations, never carol's.
    room.peers[c]
        .outbox
        .retain(|b| !matches!(b, Body::PeerBroadcast(_)));
    room.run();
    for p in &mut room.peers {
        p.take_events();
    }
    let timeout = blindcall_group::MemberConfig::default().confirm_timeout;
    room.advance(timeout);
    let now = room.now;
    for i in [0, 1] {
        room.peers[i].tick(now);
        let events = room.peers[i].take_events();
        let unconfirmed: Vec<(u64, Vec<String>)> = events
            .iter()
            .filter_map(|e| match e {
                Event::EpochUnconfirmed { epoch, members } => Some((
                    *epoch,
                    members.iter().map(|m| m.identity.to_string()).collect(),
                )),
                _ => None,
            })
            .collect();
        assert_eq!(unconfirmed, [(3, vec!["carol".to_string()])], "{events:?}");
    }
}
