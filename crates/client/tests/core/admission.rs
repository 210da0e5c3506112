//! Admission the relay cannot subvert: what a host decides on comes from the KeyPackage and
//! its invite proof, never from the relay; a relay-made KeyPackage ("ghost") is refused.

use blindcall_client::{
    CallError, Command, Event, Invite, InviteCheck, JoinOptions, JoinRefusal, Trust,
};
use blindcall_group::{Client, MlsSuite};
use blindcall_proto::{Body, VLBytes, WaitingEntry};

use crate::harness::{Room, options};

fn invite() -> Invite {
    Invite::new(b"room".to_vec(), None, None).unwrap()
}

fn with_invite(invite: &Invite) -> JoinOptions {
    let mut o = options();
    o.invite = Some(invite.clone());
    o
}

/// A KeyPackage the relay made itself, under any name it likes.
fn ghost_key_package(name: &str) -> Vec<u8> {
    Client::new(name, MlsSuite::default())
        .unwrap()
        .key_package()
        .unwrap()
}

fn refusals(events: &[Event]) -> Vec<(Option<String>, JoinRefusal)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::JoinRefused {
                identity, reason, ..
            } => Some((identity.clone(), *reason)),
            _ => None,
        })
        .collect()
}

fn requests(events: &[Event]) -> Vec<(u64, String, Trust, InviteCheck)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::JoinRequested {
                request,
                joiner,
                invite,
            } => Some((*request, joiner.identity.to_string(), joiner.trust, *invite)),
            _ => None,
        })
        .collect()
}

/// The relay slips an entry into the host's waiting room.
fn inject(
    room: &mut Room,
    host: usize,
    conn: u64,
    name: &str,
    kp: Vec<u8>,
    proof: Option<Vec<u8>>,
) {
    room.peers[host]
        .inbox
        .push_back(Body::WaitingEntryAdded(WaitingEntry {
            conn_id: conn,
            display_name: VLBytes::new(name.as_bytes().to_vec()),
            key_package: VLBytes::new(kp),
            join_proof: proof.map(VLBytes::new),
        }));
    let now = room.now;
    room.peers[host].deliver(now);
}

/// Remove-participant requests the host sent the relay.
fn turned_away(room: &mut Room, host: usize) -> Vec<u64> {
    room.peers[host]
        .outbox
        .iter()
        .filter_map(|b| match b {
            Body::RemoveParticipant(r) => Some(r.conn_id),
            _ => None,
        })
        .collect()
}

// covers: ADM-INV-1, ID-INV-1
#[test]
fn a_relay_made_ghost_is_refused_by_a_host_even_with_auto_approve() {
    let inv = invite();
    let mut room = Room::new();
    let mut host_opts = with_invite(&inv);
    host_opts.auto_approve = true;
    let a = room.host("alice", host_opts);
    room.peers[a].take_events();
    // An honest joiner proved the invite over its own KeyPackage.
    let b = room.guest("bob", with_invite(&inv));
    room.run();
    let events = room.peers[a].take_events();
    let asked = requests(&events);
    assert_eq!(asked.len(), 1, "{events:?}");
    assert_eq!(
        (asked[0].1.as_str(), asked[0].3),
        ("bob", InviteCheck::Valid)
    );
    let honest_kp = room.peers[b].key_package.clone().unwrap();
    let honest_proof = room.peers[b].join_proof.clone().unwrap();

    // The relay's ghosts: no proof; garbage; the honest proof moved onto its own KeyPackage;
    // and a proof made with another invite (the relay guessing a secret).
    let other = invite();
    let ghost = ghost_key_package("bob");
    let cases = [
        (9001, None, JoinRefusal::MissingProof),
        (9002, Some(vec![0u8; 32]), JoinRefusal::InvalidProof),
        (9003, Some(honest_proof.clone()), JoinRefusal::InvalidProof),
        (
            9004,
            Some(other.proof(&ghost).to_vec()),
            JoinRefusal::InvalidProof,
        ),
    ];
    for (conn, proof, _) in &cases {
        inject(&mut room, a, *conn, "bob", ghost.clone(), proof.clone());
    }
    let events = room.peers[a].take_events();
    let got = refusals(&events);
    assert_eq!(
        got,
        cases
            .iter()
            .map(|(_, _, r)| (Some("bob".to_string()), *r))
            .collect::<Vec<_>>(),
        "{events:?}"
    );
    assert!(
        requests(&events).is_empty(),
        "a ghost was offered: {events:?}"
    );
    let mut away = turned_away(&mut room, a);
    away.sort();
    assert_eq!(away, [9001, 9002, 9003, 9004]);
    room.run();
    // Nobody but bob was ever added.
    let names: Vec<String> = room.peers[a]
        .core
        .members()
        .iter()
        .map(|m| m.identity.to_string())
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    assert!(honest_kp != ghost);
}

// covers: ADM-INV-2
#[test]
fn a_host_without_the_calls_invite_refuses_every_request_and_without_an_invite_all_are_asked() {
    // A call whose parameters require an invite the host's device does not hold (e.g. the
    // link was made elsewhere): it cannot check proofs, so it offers nobody.
    let inv = invite();
    let mut room = Room::new();
    let mut o = options();
    o.call_config.invite = Some(inv.commitment());
    o.auto_approve = true;
    let a = room.host("alice", o);
    room.peers[a].take_events();
    let kp = ghost_key_package("dave");
    let proof = inv.proof(&kp).to_vec();
    inject(&mut room, a, 7, "dave", kp, Some(proof));
    let events = room.peers[a].take_events();
    assert_eq!(
        refusals(&events),
        [(Some("dave".to_string()), JoinRefusal::InviteNotHeld)]
    );
    assert!(requests(&events).is_empty());
    // Without an invite, requests are offered, named by their KeyPackage (never by the name
    // the relay relays), and auto-approve approves none of them.
    let mut open = Room::new();
    let mut o = options();
    o.auto_approve = true;
    let h = open.host("carol", o);
    open.peers[h].take_events();
    inject(
        &mut open,
        h,
        8,
        "someone else",
        ghost_key_package("erin"),
        None,
    );
    let asked = requests(&open.peers[h].take_events());
    assert_eq!(asked.len(), 1);
    assert_eq!(
        (asked[0].1.as_str(), asked[0].2, asked[0].3),
        ("erin", Trust::New, InviteCheck::NotRequired)
    );
    open.run();
    assert_eq!(
        open.peers[h].core.members().len(),
        1,
        "auto-approve needs a proof"
    );
}

// covers: ADM-INV-3
#[test]
fn approving_adds_exactly_the_key_package_that_was_shown() {
    let mut room = Room::new();
    let a = room.host("alice", options());
    room.peers[a].take_events();
    let first = ghost_key_package("erin");
    inject(&mut room, a, 500, "erin", first, None);
    let asked = requests(&room.peers[a].take_events());
    assert_eq!(asked.len(), 1);
    let old_request = asked[0].0;
    // The relay swaps the KeyPackage under the same connection: a new request, the old void.
    let second = ghost_key_package("mallory");
    inject(&mut room, a, 500, "erin", second, None);
    let asked = requests(&room.peers[a].take_events());
    assert_eq!(asked.len(), 1);
    assert_eq!(
        asked[0].1, "mallory",
        "the name comes from the KeyPackage, not the relay"
    );
    assert_ne!(asked[0].0, old_request);
    let now = room.now;
    assert_eq!(
        room.peers[a].command(now, Command::Approve(old_request)),
        Err(CallError::UnknownRequest(old_request))
    );
}

// covers: ID-TRUST-3
#[test]
fn a_known_name_with_another_key_is_shown_as_changed() {
    let mut room = Room::new();
    let a = room.host("alice", options());
    let b = room.guest("bob", options());
    room.run();
    let r = room.request_for(a, room.peers[b].conn);
    let now = room.now;
    room.peers[a].command(now, Command::Approve(r)).unwrap();
    room.run();
    room.tick();
    assert!(room.peers[a].trust_saves > 0, "bob was remembered");
    let bob = room.peers[a]
        .core
        .members()
        .into_iter()
        .find(|m| &*m.identity == "bob")
        .unwrap();
    assert_eq!(bob.trust, Trust::Known);
    room.peers[a].take_events();
    // Someone else calling themself bob.
    inject(&mut room, a, 800, "bob", ghost_key_package("bob"), None);
    let asked = requests(&room.peers[a].take_events());
    assert_eq!(asked.len(), 1);
    assert_eq!((asked[0].1.as_str(), asked[0].2), ("bob", Trust::Changed));
    // Verifying bob (after comparing the pairwise code) marks his key verified.
    let now = room.now;
    room.peers[a]
        .command(
            now,
            Command::Verify {
                leaf: bob.leaf,
                identity_key: bob.identity_key.to_vec(),
            },
        )
        .unwrap();
    let bob = room.peers[a]
        .core
        .members()
        .into_iter()
        .find(|m| &*m.identity == "bob")
        .unwrap();
    assert_eq!(bob.trust, Trust::Verified);
    let code = room.peers[a].core.pairwise_code(&bob.identity_key).unwrap();
    let alice_key = room.peers[b]
        .core
        .members()
        .into_iter()
        .find(|m| &*m.identity == "alice")
        .unwrap()
        .identity_key;
    assert_eq!(room.peers[b].core.pairwise_code(&alice_key).unwrap(), code);
}

// covers: SDK-COMMIT-5
#[test]
fn a_member_who_is_not_a_host_never_asks_the_relay_to_refuse_a_joiner_or_lock_the_room() {
    let inv = invite();
    let mut room = Room::new();
    // Every member may add, so bob (a guest at the relay) is asked about joiners too.
    let mut host_opts = with_invite(&inv);
    host_opts.call_config.add_rule = blindcall_group::AddRule::AnyMember;
    let a = room.host("alice", host_opts);
    let b = room.guest("bob", with_invite(&inv));
    let now = room.now;
    let bob = room.peers[b].conn;
    let r = room.request_for(a, bob);
    room.peers[a].command(now, Command::Approve(r)).unwrap();
    room.run();
    room.tick();
    assert_eq!(room.peers[b].epoch(), Some(2));
    room.peers[b].take_events();

    // Carol waits; bob may approve her, but denying is the host's.
    let c = room.guest("carol", with_invite(&inv));
    let carol = room.peers[c].conn;
    let r = room.request_for(b, carol);
    assert_eq!(
        room.peers[b].command(now, Command::Deny(r)),
        Err(CallError::NotHost)
    );
    assert_eq!(
        room.peers[b].command(now, Command::LockRoom(true)),
        Err(CallError::NotHost)
    );
    // A ghost without a proof: bob turns it away by his own checks, and only reports it.
    inject(
        &mut room,
        b,
        9001,
        "mallory",
        ghost_key_package("mallory"),
        None,
    );
    let events = room.peers[b].take_events();
    assert_eq!(
        refusals(&events),
        [(Some("mallory".to_string()), JoinRefusal::MissingProof)],
        "{events:?}"
    );
    assert!(turned_away(&mut room, b).is_empty());
    room.run();
    let asked_relay: Vec<&Body> = room
        .relayed
        .iter()
        .filter(|(n, body)| {
            n == "bob"
                && matches!(
                    body,
                    Body::RemoveParticipant(_) | Body::LockRoom | Body::UnlockRoom
                )
        })
        .map(|(_, body)| body)
        .collect();
    assert!(asked_relay.is_empty(), "{asked_relay:?}");
    // Bob's request is still open: he may approve carol.
    room.peers[b].command(now, Command::Approve(r)).unwrap();
    room.run();
    assert!(room.peers[c].joined, "carol was not added");
    // The host may lock the room.
    room.peers[a].command(now, Command::LockRoom(true)).unwrap();
}
