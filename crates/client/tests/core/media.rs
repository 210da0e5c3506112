//! Media through the core: signaling, the send-epoch barrier and keyframes, frames of a future
//! epoch, delivery and the observer, video selection.

use std::time::Duration;

use blindcall_client::{
    CallError, CallWarning, Command, DropCause, Event, JoinOptions, KeyframeCause, MediaInput,
    MediaKind, TransportOp, VideoSelection,
};
use blindcall_proto::{Body, MediaSignal, MediaSignalPayload, VLBytes, VideoFilter};

use crate::harness::{Room, has, media_options};

/// alice hosts, bob joined and updated his path: both at epoch 2, media connected, both
/// sending under epoch 2.
pub fn call_with_media() -> Room {
    call_with_media_as(media_options())
}

/// [`call_with_media`] with bob's options.
pub fn call_with_media_as(bob: JoinOptions) -> Room {
    let mut room = Room::new();
    let a = room.host("alice", media_options());
    let b = room.guest("bob", bob);
    let now = room.now;
    let req = room.peers[b].conn;
    let r = room.request_for(a, req);
    room.peers[a].command(now, Command::Approve(r)).unwrap();
    room.run();
    room.tick();
    room.connect_media(a);
    room.connect_media(b);
    // Past the activation delay: both send under the current epoch.
    room.advance(Duration::from_secs(1));
    room.tick();
    for p in &room.peers {
        let s = p.core.stats();
        assert_eq!((s.epoch, s.send_epoch), (Some(2), Some(2)), "{}", p.name);
    }
    room
}

fn signals<'a>(bodies: impl IntoIterator<Item = &'a Body>) -> Vec<MediaSignalPayload> {
    bodies
        .into_iter()
        .filter_map(|b| match b {
            Body::MediaSignal(s) => MediaSignalPayload::decode(s.payload.as_slice()).ok(),
            _ => None,
        })
        .collect()
}

fn keyframe_requests(events: &[Event]) -> Vec<KeyframeCause> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::KeyframeRequested { cause } => Some(*cause),
            _ => None,
        })
        .collect()
}

// covers: SDK-MEDIA-1
#[test]
fn a_member_opens_media_joins_the_forwarder_and_answers_only_offers() {
    let mut room = Room::new();
    let a = room.host("alice", media_options());
    assert_eq!(
        room.peers[a].transport_ops,
        [TransportOp::Open { publish: true }]
    );
    assert_eq!(
        signals(room.relayed.iter().map(|(_, b)| b)),
        [MediaSignalPayload::Join { publish: true }],
        "a member's first media signal is Join"
    );
    let now = room.now;
    let offer = |p: MediaSignalPayload| {
        Body::MediaSignal(MediaSignal {
            payload: VLBytes::new(p.encode()),
        })
    };
    room.peers[a]
        .inbox
        .push_back(offer(MediaSignalPayload::Offer("v=0 offer".into())));
    room.peers[a]
        .inbox
        .push_back(offer(MediaSignalPayload::Answer("v=0 answer".into())));
    room.peers[a]
        .inbox
        .push_back(Body::MediaSignal(MediaSignal {
            payload: VLBytes::new(vec![0xee]),
        }));
    room.peers[a].deliver(now);
    assert_eq!(
        room.peers[a].transport_ops[1],
        TransportOp::ApplyOffer("v=0 offer".into())
    );
    assert_eq!(
        signals(&room.peers[a].outbox),
        [MediaSignalPayload::Answer("v=0 answer".into())]
    );
    let bad: Vec<_> = room.peers[a]
        .take_events()
        .into_iter()
        .filter(|e| *e == Event::Warning(CallWarning::BadMediaSignal))
        .collect();
    assert_eq!(
        bad.len(),
        2,
        "an Answer and garbage from the relay are refused"
    );
    // Publishing waits for the connection.
    assert_eq!(
        room.peers[a].publish(now, MediaKind::Audio, b"x", None),
        Err(CallError::MediaNotConnected)
    );
    room.connect_media(a);
    assert!(has(&room.peers[a].take_events(), |e| *e
        == Event::MediaConnected));
    room.peers[a]
        .publish(now, MediaKind::Audio, b"hello", None)
        .unwrap();
    assert_eq!(room.peers[a].packets.len(), 1);
}

// covers: SDK-EPOCH-1, SDK-MEDIA-3
#[test]
fn own_media_switches_keys_after_the_activation_delay_with_one_keyframe_request() {
    let mut room = call_with_media();
    let delay = media_options().member_config.activation_delay;
    // The first typed video frame after joining had to be a keyframe.
    let now = room.now;
    assert_eq!(
        room.peers[0].publish(now, MediaKind::Video, b"delta", Some(false)),
        Err(CallError::KeyframeRequired)
    );
    room.peers[0]
        .publish(now, MediaKind::Video, b"key", Some(true))
        .unwrap();
    room.peers[0].take_events();
    // A new epoch: carol joins (her own path update is not run here).
    let c = room.guest("carol", media_options());
    let carol = room.peers[c].conn;
    let r = room.request_for(0, carol);
    room.peers[0].command(now, Command::Approve(r)).unwrap();
    room.run();
    room.peers[0].take_events();
    let s = room.peers[0].core.stats();
    assert_eq!(
        (s.epoch, s.send_epoch),
        (Some(3), Some(2)),
        "keys installed, not used"
    );
    // Until the delay is over, own frames are still sealed under epoch 2.
    room.advance(delay - Duration::from_millis(1));
    let now = room.now;
    room.peers[0].tick(now);
    room.peers[0]
        .publish(now, MediaKind::Audio, b"old keys", None)
        .unwrap();
    room.advance(Duration::from_millis(1));
    let now = room.now;
    room.peers[0].tick(now);
    let events = room.peers[0].take_events();
    assert!(has(&events, |e| *e == Event::SendEpochActivated { epoch: 3 }));
    assert_eq!(
        keyframe_requests(&events),
        [KeyframeCause::SendEpochSwitched { epoch: 3 }],
        "one keyframe request per switch"
    );
    // The first video frame under the new keys must be a keyframe; untyped frames pass.
    let now = room.now;
    let packets = room.peers[0].packets.len();
    assert_eq!(
        room.peers[0].publish(now, MediaKind::Video, b"delta", Some(false)),
        Err(CallError::KeyframeRequired)
    );
    assert_eq!(
        room.peers[0].packets.len(),
        packets,
        "a refused frame sends nothing"
    );
    room.peers[0]
        .publish(now, MediaKind::Audio, b"new keys", None)
        .unwrap();
    room.peers[0]
        .publish(now, MediaKind::Video, b"key", Some(true))
        .unwrap();
    room.peers[0]
        .publish(now, MediaKind::Video, b"delta", Some(false))
        .unwrap();
    let seen = room.peers[0].recorder.0.lock().unwrap();
    let epochs: Vec<(&[u8], u64)> = seen
        .sent
        .iter()
        .map(|(_, e, _, p)| (p.as_slice(), *e))
        .collect();
    assert_eq!(
        epochs,
        [
            (&b"key"[..], 2),
            (b"old keys", 2),
            (b"new keys", 3),
            (b"key", 3),
            (b"delta", 3)
        ]
    );
}

// covers: SDK-EPOCH-2
#[test]
fn frames_of_a_future_epoch_are_held_then_opened_or_dropped_when_it_never_comes() {
    let mut room = call_with_media();
    let hold = media_options().hold_future_frames;
    let delay = media_options().member_config.activation_delay;
    // Alice moves on (she adds carol); bob does not see the commit yet.
    let c = room.guest("carol", media_options());
    let now = room.now;
    let carol = room.peers[c].conn;
    let r = room.request_for(0, carol);
    room.peers[0].command(now, Command::Approve(r)).unwrap();
    room.relay_all(0);
    room.peers[0].deliver(now);
    room.advance(delay);
    let now = room.now;
    room.peers[0].tick(now);
    assert_eq!(room.peers[0].core.stats().send_epoch, Some(3));
    room.peers[0]
        .publish(now, MediaKind::Audio, b"sealed under 3", None)
        .unwrap();
    room.forward_media(0, 1);
    assert!(room.peers[1].frames.is_empty());
    let s = room.peers[1].core.stats();
    assert_eq!(
        (s.frames_opened, s.dropped.len()),
        (0, 0),
        "held, not dropped"
    );
    assert!(room.peers[1].core.poll_timeout().is_some());
    // The commit arrives: the held frame opens under epoch 3.
    room.peers[1].deliver(now);
    assert_eq!(room.peers[1].epoch(), Some(3));
    let f = &room.peers[1].frames[0];
    assert_eq!(
        (&*f.sender, f.epoch, f.data()),
        ("alice", 3, &b"sealed under 3"[..])
    );

    // Again, but the commit never reaches bob: after the hold time the frame is dropped.
    room.run();
    room.tick();
    let d = room.guest("dave", media_options());
    let now = room.now;
    let dave = room.peers[d].conn;
    let r = room.request_for(0, dave);
    room.peers[0].command(now, Command::Approve(r)).unwrap();
    room.relay_all(0);
    room.peers[0].deliver(now);
    room.peers[1].inbox.clear();
    room.advance(delay);
    let now = room.now;
    room.peers[0].tick(now);
    let epoch = room.peers[0].core.stats().send_epoch.unwrap();
    room.peers[0]
        .publish(now, MediaKind::Audio, b"never opened", None)
        .unwrap();
    room.forward_media(0, 1);
    room.advance(hold - Duration::from_millis(1));
    let now = room.now;
    room.peers[1].tick(now);
    assert_eq!(room.peers[1].core.stats().dropped.len(), 0);
    room.advance(Duration::from_millis(1));
    let now = room.now;
    room.peers[1].tick(now);
    let s = room.peers[1].core.stats();
    assert_eq!(
        s.dropped.get(&DropCause::FutureEpochExpired),
        Some(&1),
        "{s:?}"
    );
    assert!(room.peers[1].frames.iter().all(|f| f.epoch < epoch));
}

// covers: SDK-MEDIA-2, SDK-OBS-1
#[test]
fn frames_are_delivered_with_sender_and_epoch_and_the_observer_sees_both_ends() {
    let mut room = call_with_media();
    let now = room.now;
    let video: Vec<u8> = (0..5_000u32).map(|i| (i * 31 + 7) as u8).collect();
    room.peers[0]
        .publish(now, MediaKind::Audio, b"audio frame", None)
        .unwrap();
    room.peers[0]
        .publish(now, MediaKind::Video, &video, Some(true))
        .unwrap();
    assert!(
        room.peers[0].packets.len() > 2,
        "the video frame spans packets"
    );
    room.forward_media(0, 1);
    let got: Vec<(&str, MediaKind, u64, &[u8])> = room.peers[1]
        .frames
        .iter()
        .map(|f| (&*f.sender, f.kind, f.epoch, f.data()))
        .collect();
    assert_eq!(
        got,
        [
            ("alice", MediaKind::Audio, 2, &b"audio frame"[..]),
            ("alice", MediaKind::Video, 2, video.as_slice())
        ]
    );
    {
        let sent = &room.peers[0].recorder.0.lock().unwrap().sent;
        assert_eq!(sent.len(), 2);
        assert_eq!(
            (sent[1].0, sent[1].1, &sent[1].3),
            (MediaKind::Video, 2, &video)
        );
        let opened = &room.peers[1].recorder.0.lock().unwrap().opened;
        assert_eq!(
            opened[1],
            ("alice".into(), MediaKind::Video, 2, video.clone())
        );
    }
    // Tampered packets authenticate nowhere: counted, never delivered.
    room.peers[0]
        .publish(now, MediaKind::Audio, b"tampered", None)
        .unwrap();
    for (_, p) in &mut room.peers[0].packets {
        let last = p.payload.len() - 1;
        p.payload[last] ^= 1;
    }
    room.forward_media(0, 1);
    assert_eq!(room.peers[1].frames.len(), 2);
    let s = room.peers[1].core.stats();
    assert_eq!(s.frames_opened, 2);
    assert_eq!(s.dropped.values().sum::<u64>(), 1);
}

// covers: SDK-VIDEO-1, SDK-MEDIA-3
#[test]
fn video_selection_maps_identities_to_authenticated_streams() {
    let mut room = call_with_media();
    let now = room.now;
    room.peers[1].outbox.clear();
    room.peers[1]
        .command(
            now,
            Command::SelectVideo(VideoSelection::Only(vec!["alice".into()])),
        )
        .unwrap();
    // Nothing from alice authenticated yet: the filter names nobody.
    assert_eq!(
        signals(&room.peers[1].outbox),
        [MediaSignalPayload::Video(VideoFilter::Only(vec![]))]
    );
    room.peers[1].outbox.clear();
    room.peers[0]
        .publish(now, MediaKind::Audio, b"hi", None)
        .unwrap();
    room.forward_media(0, 1);
    // The next stats tick resolves alice to the stream her frame authenticated on.
    let interval = media_options().stats_interval;
    room.advance(interval);
    let now = room.now;
    room.peers[1].tick(now);
    let alice = room.peers[0].conn;
    assert_eq!(
        signals(&room.peers[1].outbox),
        [MediaSignalPayload::Video(VideoFilter::Only(vec![alice]))]
    );
    // A receiver's keyframe request (PLI) reaches the application; a new remote video track
    // gets one asked for.
    room.peers[0].take_events();
    room.peers[0].media(
        now,
        MediaInput::KeyframeRequested {
            kind: MediaKind::Video,
        },
    );
    assert_eq!(
        keyframe_requests(&room.peers[0].take_events()),
        [KeyframeCause::Receiver]
    );
    room.peers[1].media(
        now,
        MediaInput::TrackStarted {
            from: blindcall_transport::ParticipantId(alice),
            kind: MediaKind::Video,
        },
    );
    assert_eq!(
        room.peers[1].transport_ops.last(),
        Some(&TransportOp::RequestKeyframe {
            from: blindcall_transport::ParticipantId(alice)
        })
    );
}

// covers: SDK-EPOCH-4, SDK-MEDIA-3
#[test]
fn a_removal_switches_own_media_to_the_new_keys_at_once_with_one_keyframe_request() {
    let mut room = call_with_media();
    let c = room.guest("carol", media_options());
    let now = room.now;
    let carol = room.peers[c].conn;
    let r = room.request_for(0, carol);
    room.peers[0].command(now, Command::Approve(r)).unwrap();
    room.run();
    room.connect_media(c);
    // Carol's path update, then past the barrier.
    for _ in 0..2 {
        room.advance(Duration::from_secs(1));
        room.tick();
    }
    let epoch = room.peers[0].epoch().unwrap();
    for p in &mut room.peers {
        assert_eq!(p.core.stats().send_epoch, Some(epoch), "{}", p.name);
        p.take_events();
    }
    // Alice removes carol: no time passes, yet alice and bob seal under the new epoch.
    let now = room.now;
    let remove_carol = room.remove_command(0, "carol");
    room.peers[0].command(now, remove_carol).unwrap();
    room.run();
    assert!(room.peers[c].ended);
    for i in [0, 1] {
        let s = room.peers[i].core.stats();
        assert_eq!(
            (s.epoch, s.send_epoch),
            (Some(epoch + 1), Some(epoch + 1)),
            "{}",
            room.peers[i].name
        );
        let events = room.peers[i].take_events();
        assert_eq!(
            events
                .iter()
                .filter(|e| matches!(e, Event::SendEpochActivated { .. }))
                .collect::<Vec<_>>(),
            [&Event::SendEpochActivated { epoch: epoch + 1 }]
        );
        assert_eq!(
            keyframe_requests(&events),
            [KeyframeCause::SendEpochSwitched { epoch: epoch + 1 }],
            "one keyframe request per switch"
        );
    }
    room.peers[1]
        .publish(now, MediaKind::Audio, b"after the removal", None)
        .unwrap();
    room.forward_media(1, 0);
    let f = room.peers[0].frames.last().unwrap();
    assert_eq!((f.epoch, f.data()), (epoch + 1, &b"after the removal"[..]));
}

// covers: SDK-HOLD-1, SDK-EPOCH-2
#[test]
fn frames_held_for_a_commit_are_bounded_and_the_oldest_make_room() {
    let mut bob = media_options();
    bob.hold_max_frames = 2;
    let mut room = call_with_media_as(bob);
    let delay = media_options().member_config.activation_delay;
    // Alice moves to epoch 3 (she adds carol); bob does not see the commit yet.
    let c = room.guest("carol", media_options());
    let now = room.now;
    let carol = room.peers[c].conn;
    let r = room.request_for(0, carol);
    room.peers[0].command(now, Command::Approve(r)).unwrap();
    room.relay_all(0);
    room.peers[0].deliver(now);
    room.advance(delay);
    let now = room.now;
    room.peers[0].tick(now);
    for i in 0..5u8 {
        room.peers[0]
            .publish(now, MediaKind::Audio, &[b'0' + i; 40], None)
            .unwrap();
    }
    room.forward_media(0, 1);
    let s = room.peers[1].core.stats();
    assert_eq!(s.held_frames, 2);
    assert_eq!(s.dropped.get(&DropCause::HeldOverflow), Some(&3), "{s:?}");
    // The commit arrives: the two newest open.
    room.peers[1].deliver(now);
    let got: Vec<u8> = room.peers[1].frames.iter().map(|f| f.data()[0]).collect();
    assert_eq!(got, [b'3', b'4']);
    assert_eq!(room.peers[1].core.stats().held_frames, 0);
}

// covers: SDK-AUTH-4, SDK-EPOCH-2
#[test]
fn frames_held_for_a_stream_that_ends_are_dropped_and_counted() {
    let mut room = call_with_media();
    let delay = media_options().member_config.activation_delay;
    let c = room.guest("carol", media_options());
    let now = room.now;
    let carol = room.peers[c].conn;
    let r = room.request_for(0, carol);
    room.peers[0].command(now, Command::Approve(r)).unwrap();
    room.relay_all(0);
    room.peers[0].deliver(now);
    room.advance(delay);
    let now = room.now;
    room.peers[0].tick(now);
    for frame in [&b"one"[..], b"two"] {
        room.peers[0]
            .publish(now, MediaKind::Audio, frame, None)
            .unwrap();
    }
    room.forward_media(0, 1);
    assert_eq!(room.peers[1].core.stats().held_frames, 2);
    let alice = blindcall_transport::ParticipantId(room.peers[0].conn);
    room.peers[1].media(
        now,
        MediaInput::TrackEnded {
            from: alice,
            kind: MediaKind::Audio,
        },
    );
    let s = room.peers[1].core.stats();
    assert_eq!(s.held_frames, 0);
    assert_eq!(
        s.dropped.get(&DropCause::FutureEpochExpired),
        Some(&2),
        "{s:?}"
    );
    // The commit arrives: nothing of the ended stream opens.
    room.peers[1].deliver(now);
    assert_eq!(room.peers[1].epoch(), Some(3));
    assert!(room.peers[1].frames.is_empty());
}
