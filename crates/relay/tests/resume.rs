//! Reconnect and resume at the delivery service: the grace a lost member's leaf gets, the resume
//! proof (the leaf's signature over the connection's challenge, the room, the group, the leaf and
//! the epoch), the commits replayed in order, and every refusal, typed and counted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use blindcall_policy::{RESUME_LABEL, resume_sign_content};
use blindcall_proto::*;
use blindcall_relay::ds::DEFAULT_COMMIT_HISTORY;
use blindcall_relay::*;
use common::*;
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;

const ROOM: &[u8] = b"room-res";
const GRACE: Duration = Duration::from_secs(20);

fn net_with(history: usize) -> Net {
    let mut c = config();
    c.resume_grace = GRACE;
    c.commit_history = history;
    Net::with(c)
}

fn net() -> Net {
    net_with(DEFAULT_COMMIT_HISTORY)
}

/// A host `a` (leaf 0) and guests `b` (leaf 1) and `c` (leaf 2), all at epoch 1.
fn three_members(net: &mut Net) -> (Client, Client, Client) {
    let mut a = room_with_host(net, ROOM, 1);
    let mut b = waiting_guest(net, ROOM, 2, "b");
    let mut c = waiting_guest(net, ROOM, 3, "c");
    admit_all(net, &mut a, &mut [], &mut [&mut b, &mut c]);
    (a, b, c)
}

/// The leaves whose removal the relay proposed among `bodies`.
fn proposed(bodies: &[Body]) -> Vec<u32> {
    bodies
        .iter()
        .filter_map(|b| match b {
            Body::RelayProposal(p) => Some(p.removed_leaf),
            _ => None,
        })
        .collect()
}

/// `who` commits a self-update; the others merge it.
fn update(net: &mut Net, who: &mut Client, others: &mut [&mut Client]) {
    let commit = who.self_update();
    net.send(who.conn, Body::Commit(commit));
    let got = net.take(who.conn);
    assert!(
        matches!(got.first(), Some(Body::CommitAccepted(_))),
        "{got:?}"
    );
    who.merge_pending();
    for o in others.iter_mut() {
        o.pump(net);
    }
}

/// Send `resume` on `who`'s connection and return what came back.
fn resume_with(net: &mut Net, who: &Client, resume: Resume) -> Vec<Body> {
    net.send(who.conn, Body::Resume(resume));
    net.take(who.conn)
}

fn refused_with(reason: ResumeRefusedReason) -> Vec<Body> {
    vec![Body::ResumeRefused(ResumeRefused { reason })]
}

// covers: DS-RES-2, DS-RES-4, DS-RES-5, DS-RES-12, CP-RES-1, CP-RES-3
#[test]
fn a_lost_member_resumes_its_leaf_and_catches_up_in_order() {
    let mut net = net();
    let (mut a, mut b, mut c) = three_members(&mut net);
    let (b_leaf, c_leaf) = (b.leaf(), c.leaf());
    let b_first = b.conn;
    // B's connection is lost: no removal is proposed, its leaf is kept for the grace.
    net.close(b.conn);
    assert!(proposed(&net.take(a.conn)).is_empty());
    assert!(proposed(&net.take(c.conn)).is_empty());
    assert_eq!(net.ds.counters().graces_started, 1);
    assert!(net.events.iter().any(
        |e| matches!(e, Event::GraceStarted { leaf, until, .. } if *leaf == b_leaf && *until == net.now.saturating_add(GRACE))
    ));
    // Meanwhile: two commits, a joiner in the waiting room, and C leaves (a goodbye), which
    // queues the relay's Remove of C for the current epoch.
    update(&mut net, &mut a, &mut [&mut c]);
    update(&mut net, &mut c, &mut [&mut a]);
    let mut d = waiting_guest(&mut net, ROOM, 4, "d");
    net.goodbye(c.conn);
    let a_bodies = net.take(a.conn);
    assert_eq!(proposed(&a_bodies), vec![c_leaf]);
    a.apply(&a_bodies);
    assert_eq!(a.epoch(), 3);
    net.advance(Duration::from_secs(10));

    // B comes back on a new connection, signs its challenge and gets, in order: the commits
    // of epochs 1 and 2, the epoch's pending proposal, the waiting joiner, then the verdict.
    b.reconnect(&mut net, ROOM, Role::GUEST, 12);
    assert_eq!(b.epoch(), 1);
    let got = resume_with(&mut net, &b, b.resume(ROOM));
    let epochs: Vec<u64> = got
        .iter()
        .filter_map(|x| match x {
            Body::CommitBroadcast(c) => Some(c.epoch),
            _ => None,
        })
        .collect();
    assert_eq!(epochs, vec![1, 2], "{got:?}");
    assert!(
        matches!(
            &got[2..],
            [Body::RelayProposal(p), Body::WaitingEntryAdded(w), Body::ResumeAccepted(r)]
                if p.removed_leaf == c_leaf && p.epoch == 3 && w.conn_id == d.conn.0 && r.epoch == 3
        ),
        "{got:?}"
    );
    b.apply(&got);
    assert_eq!(b.epoch(), 3);
    assert_eq!(b.authenticator(), a.authenticator());
    assert_eq!(net.ds.counters().resumes_accepted, 1);
    assert_eq!(net.ds.counters().commits_replayed, 2);
    assert!(net.events.iter().any(|e| matches!(
        e,
        Event::MemberResumed { leaf, from_epoch: 1, replayed: 2, conn, participant, .. } if *leaf == b_leaf && *conn == b.conn && *participant == b_first
    )));

    // B is a member again on its new connection: it hears A's next commit (which removes C
    // and adds D) and its own commits are sequenced.
    let kps: Vec<Vec<u8>> = waiting_kps(&a_bodies).into_iter().map(|(_, k)| k).collect();
    let commit = a.add(&kps);
    net.send(a.conn, Body::Commit(commit));
    assert!(matches!(net.take(a.conn).first(), Some(Body::CommitAccepted(x)) if x.epoch == 4));
    a.merge_pending();
    b.pump(&mut net);
    d.pump(&mut net);
    assert_eq!(b.authenticator(), a.authenticator());
    update(&mut net, &mut b, &mut [&mut a, &mut d]);
    assert_eq!(a.authenticator(), b.authenticator());
    assert_eq!(d.authenticator(), b.authenticator());
    // The grace that B's lost connection started never fires: its leaf stays.
    net.advance(Duration::from_secs(60));
    assert_eq!(net.ds.counters().graces_expired, 0);
    assert_eq!(net.ds.counters().remove_proposals, 1, "only C's removal");
    assert!(proposed(&net.take(a.conn)).is_empty());
    assert_eq!(net.ds.occupancy().members, 3);
}

// covers: DS-RES-3, DS-RES-6, DS-RES-10
#[test]
fn a_member_not_back_within_the_grace_is_proposed_for_removal_and_cannot_resume() {
    let mut net = net();
    let (mut a, mut b, mut c) = three_members(&mut net);
    let b_leaf = b.leaf();
    net.close(b.conn);
    let until = net.now.saturating_add(GRACE);
    assert!(net.events.iter().any(
        |e| matches!(e, Event::GraceStarted { leaf, until: u, .. } if *leaf == b_leaf && *u == until)
    ));
    net.advance(GRACE - Duration::from_millis(1));
    assert!(proposed(&net.take(a.conn)).is_empty());
    net.advance(Duration::from_millis(1));
    // The grace ran out: the relay proposes B's removal to the members.
    let a_bodies = net.take(a.conn);
    assert_eq!(proposed(&a_bodies), vec![b_leaf]);
    a.apply(&a_bodies);
    c.pump(&mut net);
    assert_eq!(net.ds.counters().graces_expired, 1);
    assert!(
        net.events
            .iter()
            .any(|e| matches!(e, Event::GraceExpired { leaf, .. } if *leaf == b_leaf))
    );
    // B is back too late: its removal is under way.
    b.reconnect(&mut net, ROOM, Role::GUEST, 12);
    let got = resume_with(&mut net, &b, b.resume(ROOM));
    assert_eq!(got, refused_with(ResumeRefusedReason::REMOVED));
    // Its connection stays admitted, in the lobby: no media, no peer messages.
    assert!(!net.closed.contains_key(&b.conn));
    net.send(
        b.conn,
        Body::MediaSignal(MediaSignal {
            payload: VLBytes::new(vec![1, 1]),
        }),
    );
    assert!(matches!(net.last(b.conn), Body::Error(e) if e.code == ErrorCode::NOT_MEMBER));
    assert!(
        net.media.is_empty(),
        "a refused member's media reached the forwarder"
    );
    // A commits the removal; later resumes with B's key are told it was removed...
    let commit = a.commit_pending();
    net.send(a.conn, Body::Commit(commit));
    a.merge_pending();
    c.pump(&mut net);
    net.take(a.conn);
    b.reconnect(&mut net, ROOM, Role::GUEST, 13);
    let got = resume_with(&mut net, &b, b.resume(ROOM));
    assert_eq!(got, refused_with(ResumeRefusedReason::REMOVED));
    // ... also once a joiner holds B's old leaf (the proof then fails under the joiner's key,
    // but verifies under the removed one).
    let mut d = waiting_guest(&mut net, ROOM, 4, "d");
    admit_all(&mut net, &mut a, &mut [&mut c], &mut [&mut d]);
    assert_eq!(d.leaf(), b_leaf);
    b.reconnect(&mut net, ROOM, Role::GUEST, 14);
    let got = resume_with(&mut net, &b, b.resume(ROOM));
    assert_eq!(got, refused_with(ResumeRefusedReason::REMOVED));
    assert_eq!(
        net.ds
            .counters()
            .resumes_refused(ResumeRefusedReason::REMOVED),
        3
    );
    assert_eq!(net.ds.counters().resumes_accepted, 0);
    assert_eq!(net.ds.occupancy().members, 3);
    assert!(net.media.is_empty());
}

/// A copy of a signature key pair (through its TLS encoding, which holds the private key).
fn copy_key(k: &SignatureKeyPair) -> SignatureKeyPair {
    use tls_codec::{Deserialize as _, Serialize as _};
    SignatureKeyPair::tls_deserialize_exact(k.tls_serialize_detached().unwrap()).unwrap()
}

/// A client object holding `other`'s signature key (the same identity on another device).
fn same_key(name: &str, other: &Client, conn: ConnId, ack: HelloAck) -> Client {
    let mut c = Client::new(name, conn, ack);
    let signer = copy_key(&other.signer);
    signer.store(c.provider.storage()).unwrap();
    c.cwk = other.cwk.clone();
    c.signer = signer;
    c
}

// covers: DS-RES-6, DS-RES-8, CP-RES-2
#[test]
fn every_bad_resume_is_refused_typed_and_counted_and_changes_nothing() {
    let mut net = net();
    let (mut a, mut b, c) = three_members(&mut net);
    let b_leaf = b.leaf();
    let gid = b.group.as_ref().unwrap().group_id().as_slice().to_vec();
    net.close(b.conn);
    let mut attempt = 20;
    let mut fresh = |net: &mut Net, b: &mut Client| {
        attempt += 1;
        b.reconnect(net, ROOM, Role::GUEST, attempt);
    };
    let challenge = |b: &Client| b.ack.as_ref().unwrap().challenge;

    // BAD_SIGNATURE: C signs for B's leaf; or the signature is noise.
    fresh(&mut net, &mut b);
    let forged = c.sign_resume(&challenge(&b), &gid, ROOM, b_leaf, 1);
    let got = resume_with(&mut net, &b, forged);
    assert_eq!(got, refused_with(ResumeRefusedReason::BAD_SIGNATURE));
    fresh(&mut net, &mut b);
    let mut noise = b.resume(ROOM);
    noise.signature = VLBytes::new(vec![0x55; 64]);
    let got = resume_with(&mut net, &b, noise);
    assert_eq!(got, refused_with(ResumeRefusedReason::BAD_SIGNATURE));
    // UNKNOWN_LEAF: no member at leaf 40 (B's own signature over it).
    fresh(&mut net, &mut b);
    let nobody = b.sign_resume(&challenge(&b), &gid, ROOM, 40, 1);
    let got = resume_with(&mut net, &b, nobody);
    assert_eq!(got, refused_with(ResumeRefusedReason::UNKNOWN_LEAF));
    // BAD_STATE: an epoch the group has not reached, one before B joined, a second Resume on
    // the same connection, a Resume after publishing a KeyPackage, and one from a member.
    fresh(&mut net, &mut b);
    let ahead = b.sign_resume(&challenge(&b), &gid, ROOM, b_leaf, 2);
    let got = resume_with(&mut net, &b, ahead);
    assert_eq!(got, refused_with(ResumeRefusedReason::BAD_STATE));
    let again = b.resume(ROOM);
    let got = resume_with(&mut net, &b, again);
    assert_eq!(
        got,
        refused_with(ResumeRefusedReason::BAD_STATE),
        "the challenge is spent after one Resume"
    );
    fresh(&mut net, &mut b);
    let before = b.sign_resume(&challenge(&b), &gid, ROOM, b_leaf, 0);
    let got = resume_with(&mut net, &b, before);
    assert_eq!(got, refused_with(ResumeRefusedReason::BAD_STATE));
    fresh(&mut net, &mut b);
    net.send(
        b.conn,
        Body::PublishKeyPackage(PublishKeyPackage {
            key_package: VLBytes::new(b.key_package()),
            join_proof: None,
        }),
    );
    assert!(matches!(net.last(b.conn), Body::KeyPackageAccepted(_)));
    let got = resume_with(&mut net, &b, b.resume(ROOM));
    assert_eq!(got, refused_with(ResumeRefusedReason::BAD_STATE));
    let got = resume_with(&mut net, &a, a.resume(ROOM));
    assert_eq!(got, refused_with(ResumeRefusedReason::BAD_STATE));
    // NO_GROUP: a room whose group was never created.
    let _host = Client::connect(&mut net, b"room-empty", Role::HOST, 30, "h");
    let g = Client::connect(&mut net, b"room-empty", Role::GUEST, 31, "g");
    let got = resume_with(&mut net, &g, b.resume(ROOM));
    assert_eq!(got, refused_with(ResumeRefusedReason::NO_GROUP));

    // Every refusal is counted by reason, none closed a connection or touched the room.
    let counters = net.ds.counters().clone();
    for (reason, n) in [
        (ResumeRefusedReason::BAD_SIGNATURE, 2),
        (ResumeRefusedReason::UNKNOWN_LEAF, 1),
        (ResumeRefusedReason::BAD_STATE, 5),
        (ResumeRefusedReason::NO_GROUP, 1),
    ] {
        assert_eq!(counters.resumes_refused(reason), n, "{reason}");
    }
    let refusals = net
        .events
        .iter()
        .filter(|e| matches!(e, Event::ResumeRefused { .. }))
        .count();
    assert_eq!(refusals, 9);
    assert!(!net.closed.contains_key(&b.conn));
    assert_eq!(net.ds.room_epoch(ROOM), Some(1));
    assert_eq!(counters.remove_proposals, 0);
    // B's real resume still works, within the grace.
    fresh(&mut net, &mut b);
    let got = resume_with(&mut net, &b, b.resume(ROOM));
    assert!(
        matches!(
            got.as_slice(),
            [Body::ResumeAccepted(ResumeAccepted { epoch: 1, .. })]
        ),
        "{got:?}"
    );
    a.pump(&mut net);
    update(&mut net, &mut a, &mut [&mut b]);
    assert_eq!(a.authenticator(), b.authenticator());
}

// covers: DS-RES-8, CP-RES-2
#[test]
fn a_proof_is_bound_to_its_connection_room_and_group() {
    let mut net = net();
    let (mut a, mut b, _c) = three_members(&mut net);
    net.close(b.conn);
    // Challenge replay: a proof made for connection X, sent on connection Y, is refused; the
    // same proof on X is accepted.
    b.reconnect(&mut net, ROOM, Role::GUEST, 21);
    let (x, x_ack) = (b.conn, b.ack.clone().unwrap());
    let proof_x = b.resume(ROOM);
    b.reconnect(&mut net, ROOM, Role::GUEST, 22);
    let y = b.conn;
    assert_ne!(x_ack.challenge, b.ack.as_ref().unwrap().challenge);
    let got = resume_with(&mut net, &b, proof_x.clone());
    assert_eq!(got, refused_with(ResumeRefusedReason::BAD_SIGNATURE));
    b.conn = x;
    b.ack = Some(x_ack);
    let got = resume_with(&mut net, &b, proof_x.clone());
    assert!(
        matches!(
            got.as_slice(),
            [Body::ResumeAccepted(ResumeAccepted { epoch: 1, .. })]
        ),
        "{got:?}"
    );
    assert!(!net.closed.contains_key(&y), "Y stays in the lobby");

    // Another room: A is the host of this room and of room B with the same identity key, at
    // leaf 0 in both. A proof naming this room (or this group) fails in room B.
    let other: &[u8] = b"room-res-other";
    let h = Client::connect(&mut net, other, Role::HOST, 40, "a");
    let mut a2 = same_key("a", &a, h.conn, h.ack.clone().unwrap());
    let relay = relay_from_ack(a2.ack.as_ref().unwrap());
    a2.create_group_with(group_extensions(
        &relay,
        Some(&call_params(vec![a2.signer.public().to_vec()])),
    ));
    net.send(
        a2.conn,
        Body::CreateGroup(CreateGroup {
            group_info: VLBytes::new(a2.group_info()),
        }),
    );
    assert!(matches!(net.last(a2.conn), Body::GroupCreated(_)));
    assert_eq!((a.leaf(), a2.leaf()), (0, 0));
    let gid_here = a.group.as_ref().unwrap().group_id().as_slice().to_vec();
    let gid_other = a2.group.as_ref().unwrap().group_id().as_slice().to_vec();
    let mut probe = Client::connect(&mut net, other, Role::HOST, 41, "a");
    let ch = probe.ack.as_ref().unwrap().challenge;
    for (gid, room, want) in [
        (&gid_here, ROOM, ResumeRefusedReason::BAD_SIGNATURE),
        (&gid_other, ROOM, ResumeRefusedReason::BAD_SIGNATURE),
        (&gid_here, other, ResumeRefusedReason::BAD_SIGNATURE),
    ] {
        let proof = a.sign_resume(&ch, gid, room, 0, 0);
        let got = resume_with(&mut net, &probe, proof);
        assert_eq!(got, refused_with(want), "{room:?}");
        probe.reconnect(&mut net, other, Role::HOST, 42);
    }
    // Signed for room B and its group, the same key resumes leaf 0 there.
    let ch = probe.ack.as_ref().unwrap().challenge;
    let proof = a.sign_resume(&ch, &gid_other, other, 0, 0);
    let got = resume_with(&mut net, &probe, proof);
    assert!(
        matches!(
            got.as_slice(),
            [Body::ResumeAccepted(ResumeAccepted { epoch: 0, .. })]
        ),
        "{got:?}"
    );
    // This room was never touched.
    a.pump(&mut net);
    update(&mut net, &mut a, &mut [&mut b]);
    assert_eq!(a.authenticator(), b.authenticator());
}

// covers: DS-RES-7, DS-RES-10, DS-RES-12
#[test]
fn a_half_open_connection_is_closed_when_its_member_resumes_elsewhere() {
    let mut net = net();
    let (mut a, mut b, mut c) = three_members(&mut net);
    let b_leaf = b.leaf();
    let old = b.conn;
    // B's old connection is still open at the relay (half-open TCP); B resumes on a new one.
    b.reconnect(&mut net, ROOM, Role::GUEST, 12);
    let got = resume_with(&mut net, &b, b.resume(ROOM));
    assert!(
        matches!(
            got.as_slice(),
            [Body::ResumeAccepted(ResumeAccepted { epoch: 1, .. })]
        ),
        "{got:?}"
    );
    assert_eq!(
        net.take(old),
        vec![Body::Refused(Refused {
            reason: RefusedReason::RESUMED_ELSEWHERE
        })]
    );
    assert_eq!(
        net.closed.get(&old),
        Some(&CloseReason::Refused(RefusedReason::RESUMED_ELSEWHERE))
    );
    assert_eq!(
        net.ds.counters().refused(RefusedReason::RESUMED_ELSEWHERE),
        1
    );
    // Closing the stale connection was no departure: no grace, no removal.
    assert_eq!(net.ds.counters().graces_started, 0);
    assert!(proposed(&net.take(a.conn)).is_empty());
    assert_eq!(net.ds.occupancy().members, 3);
    // Everything for B now goes to the new connection (the test net refuses sends to a closed
    // one): commits, peer messages; its media signals carry the new connection.
    update(&mut net, &mut a, &mut [&mut b, &mut c]);
    assert_eq!(a.authenticator(), b.authenticator());
    net.send(
        b.conn,
        Body::PeerBroadcast(PeerBroadcast {
            payload: VLBytes::new(b"hi".to_vec()),
        }),
    );
    assert!(matches!(
        net.take(a.conn).as_slice(),
        [Body::PeerMessage(m)] if m.from_conn == b.conn.0 && m.from_leaf == b_leaf
    ));
    let join = MediaSignalPayload::Join { publish: true }.encode();
    net.send(
        b.conn,
        Body::MediaSignal(MediaSignal {
            payload: VLBytes::new(join),
        }),
    );
    assert!(matches!(
        net.media.as_slice(),
        [(conn, _, leaf, _)] if *conn == b.conn && *leaf == b_leaf
    ));
    // Its streams keep the participant id of the connection it unseated.
    assert_eq!(net.participants.get(&b.conn), Some(&old));
    assert!(net.events.iter().any(|e| matches!(
        e,
        Event::MemberResumed { conn, participant, .. } if *conn == b.conn && *participant == old
    )));
    // Input for the old connection is counted and ignored.
    let before = net.ds.counters().unknown_connection_inputs;
    net.raw(old, &[0, 0, 0, 1, 0]);
    assert_eq!(net.ds.counters().unknown_connection_inputs, before + 1);
}

// covers: DS-RES-2, DS-PROP-3, DS-RM-1, DS-IDLE-1, CP-RES-4
#[test]
fn a_member_that_leaves_or_is_put_out_gets_no_grace() {
    let mut net = net();
    let (a, mut b, mut c) = three_members(&mut net);
    let c_leaf = c.leaf();
    // A goodbye (TLS close_notify) is a departure: the removal is proposed at once.
    net.goodbye(c.conn);
    assert_eq!(proposed(&net.take(a.conn)), vec![c_leaf]);
    // So is a member's own leave: its Remove is queued, then its connection is lost.
    let epoch = b.epoch();
    let (provider, signer) = (&b.provider, &b.signer);
    let leave = b
        .group
        .as_mut()
        .unwrap()
        .leave_group(provider, signer)
        .unwrap();
    net.send(
        b.conn,
        Body::Propose(blindcall_proto::Propose {
            epoch,
            proposal: VLBytes::new(out_bytes(leave)),
        }),
    );
    net.close(b.conn);
    let got = net.take(a.conn);
    assert!(
        matches!(got.as_slice(), [Body::ProposalBroadcast(_)]),
        "{got:?}"
    );
    assert_eq!(net.ds.counters().graces_started, 0);
    // Neither may resume: their removals are pending.
    for (who, id) in [(&mut b, 12), (&mut c, 13)] {
        who.reconnect(&mut net, ROOM, Role::GUEST, id);
        let got = resume_with(&mut net, who, who.resume(ROOM));
        assert_eq!(got, refused_with(ResumeRefusedReason::REMOVED));
    }

    // A member closed for breaking the protocol, or removed by a host at the relay, gets no
    // grace either; an idle one does (its connection is probably gone).
    let mut net = net_idle();
    let (mut a, b, c) = three_members(&mut net);
    net.raw(b.conn, &[0, 0, 0, 3, 0, 1, 0]);
    assert_eq!(
        net.closed.get(&b.conn),
        Some(&CloseReason::Protocol(ErrorCode::MALFORMED_MESSAGE))
    );
    net.send(
        a.conn,
        Body::RemoveParticipant(RemoveParticipant { conn_id: c.conn.0 }),
    );
    let got = net.take(a.conn);
    assert_eq!(proposed(&got), vec![b.leaf(), c.leaf()]);
    assert_eq!(net.ds.counters().graces_started, 0);
    a.apply(&got);
    let commit = a.commit_pending();
    net.send(a.conn, Body::Commit(commit));
    a.merge_pending();
    net.take(a.conn);
    let mut d = waiting_guest(&mut net, ROOM, 4, "d");
    admit_all(&mut net, &mut a, &mut [], &mut [&mut d]);
    net.advance(Duration::from_secs(30));
    net.send(d.conn, Body::Ping(Ping { nonce: 1 }));
    net.advance(Duration::from_secs(31));
    assert_eq!(
        net.closed.get(&a.conn),
        Some(&CloseReason::Refused(RefusedReason::IDLE_TIMEOUT))
    );
    assert_eq!(net.ds.counters().graces_started, 1);
    assert!(proposed(&net.take(d.conn)).is_empty());
}

fn net_idle() -> Net {
    let mut c = config();
    c.resume_grace = GRACE;
    c.idle_timeout = Some(Duration::from_secs(60));
    Net::with(c)
}

// covers: DS-RES-5, CP-RES-3
#[test]
fn a_member_whose_own_commit_was_sequenced_unseen_merges_it_on_resume() {
    let mut net = net();
    let (mut a, mut b, mut c) = three_members(&mut net);
    // B commits; the relay sequences it, but B's connection dies before CommitAccepted
    // arrives. B still holds the commit as pending, at epoch 1.
    let commit = b.self_update();
    let sent = commit.commit.clone();
    net.send(b.conn, Body::Commit(commit));
    net.take(b.conn);
    net.close(b.conn);
    a.pump(&mut net);
    c.pump(&mut net);
    assert_eq!(b.epoch(), 1);
    b.reconnect(&mut net, ROOM, Role::GUEST, 12);
    let got = resume_with(&mut net, &b, b.resume(ROOM));
    // Its own commit comes back as epoch 1's, byte for byte: a client that holds it pending
    // merges its pending commit (an MLS client cannot process its own commit).
    assert!(
        matches!(
            got.as_slice(),
            [
                Body::CommitBroadcast(CommitBroadcast { epoch: 1, commit }),
                Body::ResumeAccepted(ResumeAccepted { epoch: 2, .. }),
            ] if *commit == sent
        ),
        "{got:?}"
    );
    b.merge_pending();
    assert_eq!(b.authenticator(), a.authenticator());
    assert_eq!(c.authenticator(), a.authenticator());
}

// covers: DS-RES-5
#[test]
fn a_missed_commit_comes_after_the_proposals_it_includes_by_reference() {
    let mut net = net();
    let (mut a, mut b, c) = three_members(&mut net);
    let c_leaf = c.leaf();
    // B's connection is lost at epoch 1. C leaves: the relay proposes C's removal in epoch 1
    // (B never sees it), and A commits it by reference.
    net.close(b.conn);
    net.goodbye(c.conn);
    let a_bodies = net.take(a.conn);
    assert_eq!(proposed(&a_bodies), vec![c_leaf]);
    a.apply(&a_bodies);
    let commit = a.commit_pending();
    net.send(a.conn, Body::Commit(commit));
    let got = net.take(a.conn);
    assert!(
        matches!(got.first(), Some(Body::CommitAccepted(_))),
        "{got:?}"
    );
    a.merge_pending();
    assert_eq!(a.epoch(), 2);

    // B resumes from epoch 1: epoch 1's proposal comes before epoch 1's commit (which only
    // names it by reference), so B can process the commit and reach A's epoch.
    b.reconnect(&mut net, ROOM, Role::GUEST, 12);
    let got = resume_with(&mut net, &b, b.resume(ROOM));
    assert!(
        matches!(
            &got[..],
            [Body::RelayProposal(p), Body::CommitBroadcast(cb), Body::ResumeAccepted(r)]
                if p.epoch == 1 && p.removed_leaf == c_leaf && cb.epoch == 1 && r.epoch == 2
        ),
        "{got:?}"
    );
    b.apply(&got);
    assert_eq!(b.epoch(), 2);
    assert_eq!(b.authenticator(), a.authenticator());
}

// covers: DS-RES-4, DS-RES-6, DS-RES-11, DS-SEQ-2
#[test]
fn a_member_too_far_behind_is_refused_and_let_go_at_once() {
    let mut net = net_with(2);
    let (mut a, mut b, mut c) = three_members(&mut net);
    let b_leaf = b.leaf();
    // Two epochs behind with a log of two: caught up.
    net.close(b.conn);
    update(&mut net, &mut a, &mut [&mut c]);
    update(&mut net, &mut a, &mut [&mut c]);
    b.reconnect(&mut net, ROOM, Role::GUEST, 12);
    let got = resume_with(&mut net, &b, b.resume(ROOM));
    assert!(
        matches!(got.last(), Some(Body::ResumeAccepted(r)) if r.epoch == 3),
        "{got:?}"
    );
    b.apply(&got);
    assert_eq!(b.authenticator(), a.authenticator());
    // Three behind: the log no longer reaches back.
    net.close(b.conn);
    for _ in 0..3 {
        update(&mut net, &mut a, &mut [&mut c]);
    }
    b.reconnect(&mut net, ROOM, Role::GUEST, 13);
    let got = resume_with(&mut net, &b, b.resume(ROOM));
    assert_eq!(got, refused_with(ResumeRefusedReason::TOO_FAR_BEHIND));
    assert!(net.events.iter().any(|e| matches!(
        e,
        Event::ResumeRefused { reason: ResumeRefusedReason::TOO_FAR_BEHIND, leaf, .. } if *leaf == b_leaf
    )));
    // B proved it holds the leaf and cannot use it: the relay proposes its removal now, not
    // at the end of the grace, so B can be added again.
    let a_bodies = net.take(a.conn);
    assert_eq!(proposed(&a_bodies), vec![b_leaf]);
    a.apply(&a_bodies);
    c.pump(&mut net);
    let commit = a.commit_pending();
    net.send(a.conn, Body::Commit(commit));
    a.merge_pending();
    c.pump(&mut net);
    net.take(a.conn);
    // B joins again through the waiting room, on the same connection, with the same key.
    let mut b2 = Client::new("b", b.conn, b.ack.clone().unwrap());
    b2.signer = copy_key(&b.signer);
    b2.signer.store(b2.provider.storage()).unwrap();
    b2.cwk = b.cwk.clone();
    net.send(
        b2.conn,
        Body::PublishKeyPackage(PublishKeyPackage {
            key_package: VLBytes::new(b2.key_package()),
            join_proof: None,
        }),
    );
    net.send(b2.conn, Body::JoinRequest);
    net.take(b2.conn);
    admit_all(&mut net, &mut a, &mut [&mut c], &mut [&mut b2]);
    assert_eq!(b2.authenticator(), a.authenticator());
    net.advance(GRACE * 2);
    assert_eq!(net.ds.counters().graces_expired, 0);
}

// covers: DS-ROOM-1, DS-RES-3
#[test]
fn a_room_lives_while_a_grace_runs() {
    let mut net = net();
    let mut a = room_with_host(&mut net, ROOM, 1);
    let mut b = waiting_guest(&mut net, ROOM, 2, "b");
    admit_all(&mut net, &mut a, &mut [], &mut [&mut b]);
    // Both connections are lost (the relay's own network failed): the room stays.
    net.close(a.conn);
    net.close(b.conn);
    assert_eq!(net.ds.room_count(), 1);
    assert!(
        !net.events
            .iter()
            .any(|e| matches!(e, Event::RoomClosed { .. }))
    );
    a.reconnect(&mut net, ROOM, Role::HOST, 11);
    let got = resume_with(&mut net, &a, a.resume(ROOM));
    assert!(
        matches!(
            got.as_slice(),
            [Body::ResumeAccepted(ResumeAccepted { epoch: 1, .. })]
        ),
        "{got:?}"
    );
    // B never comes back: its removal is proposed to A at the end of its grace.
    net.advance(GRACE);
    assert_eq!(proposed(&net.take(a.conn)), vec![b.leaf()]);
    // Nobody comes back: the room goes when the last grace ends.
    net.close(a.conn);
    assert_eq!(net.ds.room_count(), 1);
    net.advance(GRACE);
    assert_eq!(net.ds.room_count(), 0);
    assert!(
        net.events
            .iter()
            .any(|e| matches!(e, Event::RoomClosed { .. }))
    );
}

// covers: ADM-LOCK-1, DS-RES-9
#[test]
fn a_guest_resumes_in_a_locked_room() {
    let mut net = net();
    let (a, mut b, _c) = three_members(&mut net);
    net.send(a.conn, Body::LockRoom);
    net.close(b.conn);
    b.reconnect(&mut net, ROOM, Role::GUEST, 12);
    assert_eq!(b.ack.as_ref().unwrap().room.locked, 1);
    let got = resume_with(&mut net, &b, b.resume(ROOM));
    assert!(
        matches!(
            got.as_slice(),
            [Body::ResumeAccepted(ResumeAccepted { epoch: 1, .. })]
        ),
        "{got:?}"
    );
}

mod over_tls {
    use super::*;
    use common::tls::*;
    use tokio::sync::mpsc;

    /// Wait until the driver tells the forwarder that `conn` ended (so the DS has handled it).
    async fn forwarder_closed(rx: &mut mpsc::Receiver<ForwarderEvent>, conn: ConnId) {
        within("the forwarder's Closed for the connection", async {
            while let Some(e) = rx.recv().await {
                if matches!(e, ForwarderEvent::Closed { conn: c } if c == conn) {
                    return;
                }
            }
            panic!("forwarder events ended");
        })
        .await;
    }

    // covers: DS-RES-2, DS-RES-4, DS-RES-7, DS-RES-8, DS-RES-12, OPS-MET-1, OPS-MEDIA-1
    // covers: OPS-CONN-3, CP-RES-4
    #[test]
    fn members_whose_connections_drop_resume_over_tls() {
        run(body());
    }

    async fn body() {
        let (ev_tx, mut ev_rx) = mpsc::channel(256);
        let (_cmd_tx, cmd_rx) = mpsc::channel(16);
        let relay = start_relay(move |s| {
            // Long enough never to run out here: nothing below waits for it.
            s.ds.resume_grace = Duration::from_secs(600);
            s.media = Some(MediaHook {
                events: ev_tx,
                commands: cmd_rx,
            });
        })
        .await;
        let mut room = room_over_tls(&relay, ROOM, 1, 3).await;
        let (d_tls, d) = room.pop().unwrap();
        let (c_old_tls, mut c) = room.pop().unwrap();
        let (b_tls, mut b) = room.pop().unwrap();
        let (mut host_tls, mut host) = room.pop().unwrap();

        // B's connection drops without a TLS goodbye: the relay keeps its leaf.
        let b_old = b.conn;
        drop(b_tls);
        forwarder_closed(&mut ev_rx, b_old).await;
        let got = host_tls.sync().await;
        assert!(proposed(&got).is_empty(), "{got:?}");
        // The host moves the group on meanwhile.
        let commit = host.self_update();
        host_tls.send(Body::Commit(commit)).await;
        host_tls
            .recv_until("CommitAccepted", |x| matches!(x, Body::CommitAccepted(_)))
            .await;
        host.merge_pending();

        // B reconnects and resumes: it gets the commit it missed, then the verdict.
        let (mut b_tls, ack) = relay.admitted(ROOM, Role::GUEST, 30, "b").await;
        b.conn = ConnId(ack.conn_id);
        b.ack = Some(ack);
        b_tls.send(Body::Resume(b.resume(ROOM))).await;
        let got = b_tls
            .recv_until("ResumeAccepted", |x| matches!(x, Body::ResumeAccepted(_)))
            .await;
        assert!(
            matches!(got.as_slice(), [Body::CommitBroadcast(c), Body::ResumeAccepted(r)] if c.epoch == 1 && r.epoch == 2),
            "{got:?}"
        );
        b.apply(&got);
        assert_eq!(b.authenticator(), host.authenticator());
        // Its media join on the new connection reaches the forwarder as its leaf's.
        b_tls
            .send(Body::MediaSignal(MediaSignal {
                payload: VLBytes::new(MediaSignalPayload::Join { publish: true }.encode()),
            }))
            .await;
        b_tls.sync().await;
        let signal = within("B's media join at the forwarder", async {
            loop {
                match ev_rx.recv().await {
                    Some(ForwarderEvent::Signal {
                        conn,
                        leaf,
                        participant,
                        ..
                    }) => return (conn, leaf, participant),
                    Some(_) => {}
                    None => panic!("forwarder events ended"),
                }
            }
        })
        .await;
        // ... under the participant id of the connection it joined on (DS-RES-12).
        assert_eq!(signal, (b.conn, b.leaf(), b_old));

        // C's old connection is half-open (still up at the relay). A proof for C's new
        // connection replayed on yet another one is refused; on its own connection it is
        // accepted and the old one is told and closed.
        let (mut c_tls, ack) = relay.admitted(ROOM, Role::GUEST, 31, "c").await;
        let c_old = c.conn;
        c.conn = ConnId(ack.conn_id);
        c.ack = Some(ack);
        let proof = c.resume(ROOM);
        let (mut thief, _) = relay.admitted(ROOM, Role::GUEST, 32, "x").await;
        thief.send(Body::Resume(proof.clone())).await;
        assert_eq!(
            thief.recv("the replayed proof's answer").await,
            Body::ResumeRefused(ResumeRefused {
                reason: ResumeRefusedReason::BAD_SIGNATURE
            })
        );
        c_tls.send(Body::Resume(proof)).await;
        let got = c_tls
            .recv_until("ResumeAccepted", |x| matches!(x, Body::ResumeAccepted(_)))
            .await;
        c.apply(&got);
        assert_eq!(c.authenticator(), host.authenticator());
        let mut c_old_tls = c_old_tls;
        let (bodies, ending) = c_old_tls.closed("the stale connection's close").await;
        assert_eq!(
            bodies.last(),
            Some(&refused(RefusedReason::RESUMED_ELSEWHERE))
        );
        assert_eq!(ending, Ending::Clean);
        forwarder_closed(&mut ev_rx, c_old).await;

        // D says goodbye (TLS close_notify): it left, its removal is proposed at once.
        let mut d_tls = d_tls;
        d_tls.shutdown_write().await;
        let got = host_tls
            .recv_until("the relay's Remove of D", |x| {
                matches!(x, Body::RelayProposal(_))
            })
            .await;
        assert_eq!(proposed(&got), vec![d.leaf()]);

        let m = relay.scrape().await;
        for (name, want) in [
            ("blindcall_relay_resumes_accepted_total", 2.0),
            // B's commit, and C's: its stale connection got it, C never read it.
            ("blindcall_relay_commits_replayed_total", 2.0),
            ("blindcall_relay_resume_graces_started_total", 1.0),
            ("blindcall_relay_resume_graces_expired_total", 0.0),
            (
                "blindcall_relay_resumes_refused_total{reason=\"BAD_SIGNATURE\"}",
                1.0,
            ),
            (
                "blindcall_relay_refused_total{reason=\"RESUMED_ELSEWHERE\"}",
                1.0,
            ),
            ("blindcall_relay_remove_proposals_total", 1.0),
            ("blindcall_relay_members", 3.0),
        ] {
            assert_eq!(metric(&m, name), want, "{name}");
        }
        relay.handle.shutdown();
        within("relay stop", relay.handle.wait()).await.unwrap();
    }
}

// covers: CP-RES-2
#[test]
fn the_resume_content_is_mls_sign_with_label() {
    use openmls::ciphersuite::signature::SignContent;
    use tls_codec::Serialize as _;
    let (challenge, gid, room, leaf, epoch) = ([3u8; 32], b"group".as_slice(), ROOM, 5u32, 9u64);
    let mut content = challenge.to_vec();
    content.push(u8::try_from(gid.len()).unwrap());
    content.extend_from_slice(gid);
    content.push(u8::try_from(room.len()).unwrap());
    content.extend_from_slice(room);
    content.extend_from_slice(&leaf.to_be_bytes());
    content.extend_from_slice(&epoch.to_be_bytes());
    let mls = SignContent::new(RESUME_LABEL, content.into())
        .tls_serialize_detached()
        .unwrap();
    assert_eq!(
        resume_sign_content(&challenge, gid, room, leaf, epoch).unwrap(),
        mls
    );
}

// covers: DS-ERR-1, DS-RES-6
#[test]
fn arbitrary_resumes_are_refused_and_change_nothing() {
    let mut net = net();
    let (mut a, mut b, _c) = three_members(&mut net);
    net.close(b.conn);
    let gid = a.group.as_ref().unwrap().group_id().as_slice().to_vec();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..200u32 {
        let mut probe = Client::connect(&mut net, ROOM, Role::GUEST, 100, "p");
        let leaf = match i % 4 {
            0 => u32::MAX,
            1 => u32::try_from(next() % 4).unwrap(),
            _ => u32::try_from(next() & 0xffff_ffff).unwrap(),
        };
        let epoch = if i % 3 == 0 { next() } else { next() % 3 };
        let len = usize::try_from(next() % 256).unwrap();
        let sig: Vec<u8> = (0..len)
            .map(|_| u8::try_from(next() & 0xff).unwrap())
            .collect();
        let got = resume_with(
            &mut net,
            &probe,
            Resume {
                leaf,
                epoch,
                signature: VLBytes::new(sig),
                participant: 0,
            },
        );
        assert!(
            matches!(got.as_slice(), [Body::ResumeRefused(_)]),
            "{leaf} {epoch}: {got:?}"
        );
        // Also well-formed proofs by a non-member key, for any leaf and epoch.
        net.goodbye(probe.conn);
        probe.reconnect(&mut net, ROOM, Role::GUEST, 101);
        let ch = probe.ack.as_ref().unwrap().challenge;
        probe.create_group_with(Extensions::empty());
        let forged = probe.sign_resume(&ch, &gid, ROOM, leaf, epoch);
        let got = resume_with(&mut net, &probe, forged);
        assert!(
            matches!(got.as_slice(), [Body::ResumeRefused(_)]),
            "{got:?}"
        );
        net.goodbye(probe.conn);
    }
    assert_eq!(net.ds.counters().resumes_accepted, 0);
    assert_eq!(net.ds.counters().internal_faults, 0);
    assert_eq!(net.ds.room_epoch(ROOM), Some(1));
    // B's leaf waited through it all.
    b.reconnect(&mut net, ROOM, Role::GUEST, 12);
    let got = resume_with(&mut net, &b, b.resume(ROOM));
    assert!(
        matches!(
            got.as_slice(),
            [Body::ResumeAccepted(ResumeAccepted { epoch: 1, .. })]
        ),
        "{got:?}"
    );
    a.pump(&mut net);
    update(&mut net, &mut a, &mut [&mut b]);
}
