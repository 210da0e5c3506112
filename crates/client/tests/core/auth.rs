//! Sender authentication through the core: frames say whether their sender is verified, and
//! a member speaking as another (a raw openmls member holding the group's keys) is refused,
//! counted and reported with the member it claimed to be.

use std::time::Duration;

use blindcall_client::{
    DropCause, Event, FrameReason, ImpersonationReason, MediaInput, MediaKind, SenderAuth,
};
use blindcall_transport::ParticipantId;

use crate::harness::Room;
use crate::media::call_with_media;
use crate::raw::{Raw, admit};

/// Hands `packets` to peer `to` as the relay's participant `from`'s audio stream.
fn inject(room: &mut Room, to: usize, from: u64, packets: Vec<blindcall_media::RtpPacket>) {
    let now = room.now;
    for packet in packets {
        room.peers[to].media(
            now,
            MediaInput::Packet {
                from: ParticipantId(from),
                kind: MediaKind::Audio,
                packet,
            },
        );
    }
}

fn impersonations(events: &[Event]) -> Vec<(Option<String>, u64, MediaKind, ImpersonationReason)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Impersonation {
                claimed,
                participant,
                kind,
                reason,
                ..
            } => Some((
                claimed.as_ref().map(|m| m.identity.to_string()),
                *participant,
                *kind,
                *reason,
            )),
            _ => None,
        })
        .collect()
}

/// alice and bob (our clients) and mallory (raw openmls, admitted by alice), everyone
/// sending under epoch 3.
fn call_with_mallory() -> (Room, Raw) {
    let mut room = call_with_media();
    let mut mallory = Raw::new("mallory");
    admit(&mut room, 0, &mut mallory, 99);
    room.advance(Duration::from_secs(1));
    room.tick();
    for p in &room.peers {
        let s = p.core.stats();
        assert_eq!((s.epoch, s.send_epoch), (Some(3), Some(3)), "{}", p.name);
    }
    for p in &mut room.peers {
        p.take_events();
    }
    (room, mallory)
}

// covers: SDK-AUTH-1, SDK-AUTH-2, SDK-AUTH-3
#[test]
fn a_member_speaking_as_another_on_its_own_stream_is_refused_and_reported_with_the_claimed_member()
{
    let (mut room, mut mallory) = call_with_mallory();
    let alice_conn = room.peers[0].conn;
    // Alice talks; her signed manifest (naming her relay participant) reaches bob before
    // her frame does: it is delivered verified.
    let now = room.now;
    room.peers[0]
        .publish(now, MediaKind::Audio, b"alice speaking", None)
        .unwrap();
    room.advance(Duration::from_millis(300));
    room.tick();
    room.forward_media(0, 1);
    let f = room.peers[1].frames.last().unwrap();
    assert_eq!(
        (&*f.sender, f.data(), f.auth()),
        ("alice", &b"alice speaking"[..], SenderAuth::Verified)
    );
    let delivered = room.peers[1].frames.len();
    // Mallory, on her own stream (the relay's participant 99), seals a frame under alice's key.
    let forged = mallory.forge(0, MediaKind::Audio, 1_000, b"alice: wire the money");
    inject(&mut room, 1, 99, forged);
    assert_eq!(
        room.peers[1].frames.len(),
        delivered,
        "the forged frame is never delivered"
    );
    let events = room.peers[1].take_events();
    assert_eq!(
        impersonations(&events),
        [(
            Some("alice".into()),
            99,
            MediaKind::Audio,
            ImpersonationReason::WrongParticipant
        )],
        "{events:?}"
    );
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Impersonation { detected_after, .. } if detected_after.is_zero()
    )));
    let s = room.peers[1].core.stats();
    let h = s.senders.iter().find(|h| h.participant == 99).unwrap();
    assert_eq!(
        h.dropped.get(&DropCause::Frame(FrameReason::Impersonated)),
        Some(&1),
        "{h:?}"
    );
    assert_eq!((h.opened, h.impersonated()), (0, 1), "{h:?}");
    // Alice is never silenced: her next frame plays on her own stream.
    let now = room.now;
    room.peers[0]
        .publish(now, MediaKind::Audio, b"still alice", None)
        .unwrap();
    room.forward_media(0, 1);
    let f = room.peers[1].frames.last().unwrap();
    assert_eq!((&*f.sender, f.data()), ("alice", &b"still alice"[..]));
    let h = room.peers[1].core.stats().senders;
    let alice = h.iter().find(|h| h.participant == alice_conn).unwrap();
    assert_eq!(alice.impersonated(), 0, "{alice:?}");
    assert_eq!(alice.auth.verified, 1, "{alice:?}");
}

// covers: SDK-AUTH-1, SDK-AUTH-3, SDK-AUTH-5
#[test]
fn a_frame_played_before_its_manifest_and_never_vouched_for_is_reported_within_the_bound() {
    let (mut room, mut mallory) = call_with_mallory();
    let bound = blindcall_group::MemberConfig::default().signature_bound;
    // Bob has not said anything yet; mallory speaks as him on her own stream to alice.
    let forged = mallory.forge(1, MediaKind::Audio, 5, b"bob: I agree");
    inject(&mut room, 0, 98, forged);
    let f = room.peers[0].frames.last().unwrap();
    assert_eq!(
        (&*f.sender, f.auth()),
        ("bob", SenderAuth::Pending),
        "play, then verify"
    );
    room.advance(bound - Duration::from_millis(1));
    room.tick();
    assert!(impersonations(&room.peers[0].take_events()).is_empty());
    room.advance(Duration::from_millis(1));
    room.tick();
    let events = room.peers[0].take_events();
    assert_eq!(
        impersonations(&events),
        [(
            Some("bob".into()),
            98,
            MediaKind::Audio,
            ImpersonationReason::NoSignature
        )]
    );
    // Nothing more plays as bob on that stream.
    let delivered = room.peers[0].frames.len();
    let more = mallory.forge(1, MediaKind::Audio, 6, b"bob: and again");
    inject(&mut room, 0, 98, more);
    assert_eq!(room.peers[0].frames.len(), delivered);
    let s = room.peers[0].core.stats();
    assert_eq!(s.detection_latency.samples, 1);
    assert_eq!(s.detection_latency.p50, Some(bound));
}

// covers: SDK-AUTH-1, SDK-AUTH-4
#[test]
fn a_sender_that_does_not_sign_is_unauthenticated_and_a_restarted_track_stays_pinned() {
    let (mut room, mut mallory) = call_with_mallory();
    let me = mallory.leaf();
    // Alice's manifest naming her own stream is known to bob.
    let now = room.now;
    room.peers[0]
        .publish(now, MediaKind::Audio, b"alice speaking", None)
        .unwrap();
    room.advance(Duration::from_millis(300));
    room.tick();
    // Mallory's stream first carries a frame claiming alice: pinned to alice and refused.
    let forged = mallory.forge(0, MediaKind::Audio, 9, b"alice here");
    inject(&mut room, 1, 99, forged);
    assert_eq!(impersonations(&room.peers[1].take_events()).len(), 1);
    // Mallory's own frame on that stream is refused (pinned to someone else)...
    let own = mallory.forge(me, MediaKind::Audio, 0, b"mallory here");
    inject(&mut room, 1, 99, own);
    assert!(room.peers[1].frames.is_empty());
    let s = room.peers[1].core.stats();
    let h = s.senders.iter().find(|h| h.participant == 99).unwrap();
    assert_eq!(
        h.dropped.get(&DropCause::Frame(FrameReason::ForeignSender)),
        Some(&1),
        "{h:?}"
    );
    // ...even after its track ends and starts again: a restarted track is the same
    // participant's same stream, it stays pinned.
    let now = room.now;
    room.peers[1].media(
        now,
        MediaInput::TrackEnded {
            from: ParticipantId(99),
            kind: MediaKind::Audio,
        },
    );
    let own = mallory.forge(me, MediaKind::Audio, 1, b"mallory again");
    inject(&mut room, 1, 99, own);
    assert!(room.peers[1].frames.is_empty());
    // Mallory's own frames on a stream of her own are delivered, as unauthenticated (she does
    // not sign media).
    let own = mallory.forge(me, MediaKind::Audio, 2, b"mallory here");
    inject(&mut room, 1, 100, own);
    let f = room.peers[1].frames.last().unwrap();
    assert_eq!(
        (&*f.sender, f.data(), f.auth()),
        ("mallory", &b"mallory here"[..], SenderAuth::Unauthenticated)
    );
    let events = room.peers[1].take_events();
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::SenderUnauthenticated { member: Some(m), epoch: 3, .. } if &*m.identity == "mallory"
        )),
        "{events:?}"
    );
    let s = room.peers[1].core.stats();
    let h = s.senders.iter().find(|h| h.participant == 99).unwrap();
    assert_eq!((h.auth.wrong_participant, h.auth.foreign), (1, 2), "{h:?}");
    let h = s.senders.iter().find(|h| h.participant == 100).unwrap();
    assert_eq!(h.delivered_unauthenticated, 1);
}

// covers: SDK-PEER-1, SDK-AUTH-3
#[test]
fn a_member_leaving_sends_its_last_manifest_so_its_last_frames_are_verified() {
    let mut room = call_with_media();
    let now = room.now;
    room.peers[1]
        .publish(now, MediaKind::Audio, b"bye", None)
        .unwrap();
    room.forward_media(1, 0);
    assert_eq!(
        room.peers[0].frames.last().unwrap().auth(),
        SenderAuth::Pending
    );
    // Bob leaves at once, before his manifest was due: it goes out with his last messages.
    room.peers[1]
        .command(now, blindcall_client::Command::Leave)
        .unwrap();
    assert!(room.peers[1].ended);
    let manifests = room.peers[1]
        .outbox
        .iter()
        .filter(|b| matches!(b, blindcall_proto::Body::PeerBroadcast(p) if p.payload.as_slice().first() == Some(&2)))
        .count();
    assert_eq!(manifests, 1);
    room.relay_all(1);
    room.peers[0].deliver(now);
    room.advance(Duration::from_secs(2));
    room.tick();
    let events = room.peers[0].take_events();
    assert!(impersonations(&events).is_empty(), "{events:?}");
    let bob = room.peers[1].conn;
    let s = room.peers[0].core.stats();
    let h = s.senders.iter().find(|h| h.participant == bob).unwrap();
    assert_eq!((h.auth.verified, h.impersonated()), (1, 0), "{h:?}");
}

// covers: SDK-AUTH-4
#[test]
fn frames_of_a_removed_member_awaiting_its_manifest_are_not_flagged() {
    let (mut room, _mallory) = call_with_mallory();
    // Bob speaks; alice plays his frame before his manifest is due; then alice removes him.
    let now = room.now;
    room.peers[1]
        .publish(now, MediaKind::Audio, b"last words", None)
        .unwrap();
    room.forward_media(1, 0);
    assert_eq!(
        room.peers[0].frames.last().unwrap().auth(),
        SenderAuth::Pending
    );
    room.peers[1].outbox.clear();
    let remove_bob = room.remove_command(0, "bob");
    room.peers[0].command(now, remove_bob).unwrap();
    room.run();
    assert!(room.peers[1].ended);
    // Bob can never vouch for it now; his stream is closed, not reported as an impostor.
    room.advance(Duration::from_secs(3));
    room.tick();
    let events = room.peers[0].take_events();
    assert!(impersonations(&events).is_empty(), "{events:?}");
    let bob = room.peers[1].conn;
    let s = room.peers[0].core.stats();
    let h = s.senders.iter().find(|h| h.participant == bob).unwrap();
    assert_eq!((h.auth.pending, h.impersonated()), (1, 0), "{h:?}");
}

// covers: SDK-AUTH-6
#[test]
fn frames_replayed_across_a_track_restart_are_refused() {
    let mut room = call_with_media();
    let now = room.now;
    room.peers[1]
        .publish(now, MediaKind::Audio, b"once only", None)
        .unwrap();
    let packets: Vec<_> = room.peers[1]
        .packets
        .iter()
        .filter(|(k, _)| *k == MediaKind::Audio)
        .map(|(_, p)| p.clone())
        .collect();
    assert!(!packets.is_empty());
    let bob = room.peers[1].conn;
    inject(&mut room, 0, bob, packets.clone());
    assert_eq!(room.peers[0].frames.len(), 1);
    // The relay ends bob's track, starts it again and replays the same frame.
    let now = room.now;
    room.peers[0].media(
        now,
        MediaInput::TrackEnded {
            from: ParticipantId(bob),
            kind: MediaKind::Audio,
        },
    );
    inject(&mut room, 0, bob, packets);
    assert_eq!(
        room.peers[0].frames.len(),
        1,
        "a replayed frame was delivered"
    );
    let s = room.peers[0].core.stats();
    let h = s.senders.iter().find(|h| h.participant == bob).unwrap();
    assert_eq!(
        h.dropped.get(&DropCause::Frame(FrameReason::Replay)),
        Some(&1),
        "{h:?}"
    );
}
