//! Tests of the media pipeline with real groups: epochs, loss, replays, sender
//! authentication.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::observer::CallObserver;
use blindcall_group::{CallConfig, Client, MemberConfig, MlsSuite};
use blindcall_media::SyntheticSource;
use blindcall_media::source::verify;
use std::sync::Mutex;

/// Records (epoch, video?, synthetic seq) of every frame opened; panics on a frame that
/// fails the synthetic integrity check.
#[derive(Default)]
struct Opened(Mutex<Vec<(u64, bool, u64)>>);

impl CallObserver for Opened {
    fn frame_opened(&self, f: &FrameOpened<'_>) {
        let info = verify(f.plaintext).expect("an opened frame is the one sent");
        assert_eq!(info.kind, f.kind);
        self.0
            .lock()
            .unwrap()
            .push((f.epoch, f.kind == MediaKind::Video, info.seq));
    }
}

/// Synthetic audio and video published on schedule through a pipeline.
struct Sources {
    sources: [SyntheticSource; 2],
    next_due: [Instant; 2],
}

impl Sources {
    fn new(start: Instant) -> Self {
        Self {
            sources: [
                SyntheticSource::new(MediaKind::Audio, 7, 1),
                SyntheticSource::new(MediaKind::Video, 7, 1),
            ],
            next_due: [start, start],
        }
    }

    /// Publishes every frame due at `now`.
    fn tick(&mut self, now: Instant, side: &mut Side, group: &mut CallGroup) {
        for i in 0..2 {
            while self.next_due[i] <= now {
                let f = self.sources[i].next_frame();
                self.next_due[i] += self.sources[i].frame_interval();
                let sink = Sink {
                    out: &mut side.out,
                    observer: None,
                };
                side.pipe
                    .publish(now, group, f.info.kind, &f.data, sink)
                    .unwrap();
            }
        }
    }
}

const LIMITS: HoldLimits = HoldLimits {
    time: Duration::from_secs(2),
    frames: 256,
    bytes: 8 << 20,
};

/// A pipeline, the outputs it queued, and what its observer saw opened.
struct Side {
    pipe: MediaPipeline,
    out: VecDeque<Output>,
    seen: Arc<Opened>,
}

impl Side {
    fn new() -> Self {
        Self {
            pipe: MediaPipeline::new(7, LIMITS),
            out: VecDeque::new(),
            seen: Arc::default(),
        }
    }

    /// The packets queued for the transport, one entry per frame.
    fn frames(&mut self) -> Vec<(MediaKind, Vec<RtpPacket>)> {
        let mut frames: Vec<(MediaKind, Vec<RtpPacket>)> = Vec::new();
        let mut open = false;
        for o in std::mem::take(&mut self.out) {
            if let Output::Transmit { kind, packet } = o {
                let end = packet.marker;
                match frames.last_mut() {
                    Some((k, ps)) if open && *k == kind => ps.push(packet),
                    _ => frames.push((kind, vec![packet])),
                }
                open = !end;
            }
        }
        frames
    }

    fn receive(
        &mut self,
        now: Instant,
        group: &mut CallGroup,
        join_epoch: u64,
        from: ParticipantId,
        kind: MediaKind,
        packet: RtpPacket,
    ) {
        let sink = Sink {
            out: &mut self.out,
            observer: Some(&*self.seen),
        };
        self.pipe
            .on_packet(now, group, join_epoch, from, kind, packet, sink);
    }

    fn retry_held(&mut self, now: Instant, group: &mut CallGroup, join_epoch: u64) {
        let sink = Sink {
            out: &mut self.out,
            observer: Some(&*self.seen),
        };
        self.pipe.retry_held(now, group, join_epoch, sink);
    }
}

fn pair(now: Instant) -> (CallGroup, CallGroup) {
    let call = CallConfig::default();
    let member = MemberConfig {
        path_update_after_join: None,
        ..MemberConfig::default()
    };
    let a = Client::new("alice", MlsSuite::default()).unwrap();
    let mut alice = CallGroup::create(a, &call, member, now).unwrap();
    let b = Client::new("bob", MlsSuite::default()).unwrap();
    let kp = b.key_package().unwrap();
    let pc = alice.add_members(&[&kp]).unwrap();
    let welcome = pc.welcome().unwrap().to_vec();
    pc.confirm(&mut alice, now).unwrap();
    alice.activate_send_epoch();
    let bob = CallGroup::join(b, &welcome, member, now).unwrap();
    (alice, bob)
}

fn deliver(now: Instant, from: &mut Side, to: &mut Side, group: &mut CallGroup, join_epoch: u64) {
    for (kind, packets) in from.frames() {
        for p in packets {
            to.receive(now, group, join_epoch, ParticipantId(1), kind, p);
        }
    }
}

// covers: SDK-EPOCH-2, SDK-MEDIA-2
#[test]
fn frames_of_the_next_epoch_wait_for_its_commit_and_old_epochs_count_as_before_join() {
    let now = Instant::now();
    let (mut alice, mut bob) = pair(now);
    let mut tx = Side::new();
    let mut rx = Side::new();
    // Epoch 1: bob opens alice's audio and video (video spans many packets).
    let mut src = Sources::new(now);
    src.tick(now, &mut tx, &mut alice);
    deliver(now, &mut tx, &mut rx, &mut bob, 1);
    assert_eq!(rx.pipe.health_snapshot(None)[0].opened, 2);
    // Alice moves to epoch 2 and switches at once; bob has not seen the commit yet.
    let pc = alice.self_update().unwrap();
    let commit = pc.commit().to_vec();
    pc.confirm(&mut alice, now).unwrap();
    assert_eq!(alice.activate_send_epoch(), 2);
    let t1 = now + Duration::from_millis(40);
    src.tick(t1, &mut tx, &mut alice);
    deliver(t1, &mut tx, &mut rx, &mut bob, 1);
    let h = &rx.pipe.health_snapshot(None)[0];
    assert_eq!(
        (h.opened, h.dropped.len()),
        (2, 0),
        "held, not dropped: {h:?}"
    );
    assert!(rx.pipe.poll_timeout().is_some());
    // The commit arrives: the held frames open under epoch 2.
    bob.handle_message(t1, &commit).unwrap();
    rx.retry_held(t1, &mut bob, 1);
    let h = &rx.pipe.health_snapshot(None)[0];
    assert!(h.opened >= 4 && h.dropped.is_empty(), "{h:?}");
    assert!(rx.seen.0.lock().unwrap().iter().any(|o| o.0 == 2));

    // A frame of epoch 1 reaching a member that joined at epoch 2 is "before join".
    let mut late = Side::new();
    let (mut old_alice, _) = pair(now);
    let c = Client::new("carol", MlsSuite::default()).unwrap();
    let kp = c.key_package().unwrap();
    let pc = old_alice.add_members(&[&kp]).unwrap();
    let welcome = pc.welcome().unwrap().to_vec();
    pc.confirm(&mut old_alice, now).unwrap();
    assert_eq!((old_alice.epoch(), old_alice.send_epoch()), (2, 1));
    let mut carol = CallGroup::join(c, &welcome, MemberConfig::default(), now).unwrap();
    let mut old_tx = Side::new();
    Sources::new(now).tick(now, &mut old_tx, &mut old_alice);
    deliver(now, &mut old_tx, &mut late, &mut carol, 2);
    let h = &late.pipe.health_snapshot(None)[0];
    assert_eq!(h.opened, 0);
    assert_eq!(h.dropped.get(&DropCause::BeforeJoin), Some(&2), "{h:?}");

    // A held frame whose commit never comes is dropped and counted after the hold time.
    let pc = alice.self_update().unwrap();
    pc.confirm(&mut alice, t1).unwrap();
    alice.activate_send_epoch();
    let t2 = t1 + Duration::from_millis(40);
    src.tick(t2, &mut tx, &mut alice);
    deliver(t2, &mut tx, &mut rx, &mut bob, 1);
    rx.pipe.handle_timeout(t2 + Duration::from_secs(3));
    let h = &rx.pipe.health_snapshot(None)[0];
    assert!(
        h.dropped
            .get(&DropCause::FutureEpochExpired)
            .is_some_and(|n| *n >= 2),
        "{h:?}"
    );
}

// covers: SDK-MEDIA-2
#[test]
fn incomplete_and_tampered_frames_are_counted_never_opened() {
    let now = Instant::now();
    let (mut alice, mut bob) = pair(now);
    let mut tx = Side::new();
    let mut rx = Side::new();
    Sources::new(now).tick(now, &mut tx, &mut alice);
    let sent = tx.frames();
    let (video_kind, mut video) = sent
        .iter()
        .find(|(k, _)| *k == MediaKind::Video)
        .cloned()
        .unwrap();
    assert!(video.len() > 2);
    // Lose one packet of the keyframe: the frame never completes.
    video.remove(1);
    for p in video {
        rx.receive(now, &mut bob, 1, ParticipantId(1), video_kind, p);
    }
    rx.pipe.handle_timeout(now + Duration::from_secs(1));
    // Flip a ciphertext byte of the audio frame: it fails authentication.
    let (audio_kind, mut audio) = sent
        .iter()
        .find(|(k, _)| *k == MediaKind::Audio)
        .cloned()
        .unwrap();
    let last = audio[0].payload.len() - 1;
    audio[0].payload[last] ^= 1;
    rx.receive(
        now,
        &mut bob,
        1,
        ParticipantId(1),
        audio_kind,
        audio[0].clone(),
    );
    // Garbage payload: a malformed packet.
    let mut junk = audio[0].clone();
    junk.payload = vec![0xff];
    junk.sequence_number = junk.sequence_number.wrapping_add(100);
    rx.receive(now, &mut bob, 1, ParticipantId(1), audio_kind, junk);
    let h = &rx.pipe.health_snapshot(None)[0];
    assert_eq!(h.opened, 0);
    assert_eq!(h.dropped.get(&DropCause::Incomplete), Some(&1), "{h:?}");
    assert_eq!(
        h.dropped.get(&DropCause::Frame(FrameReason::TagMismatch)),
        Some(&1),
        "{h:?}"
    );
    assert_eq!(
        h.dropped.get(&DropCause::MalformedPacket),
        Some(&1),
        "{h:?}"
    );
}

/// Hands every manifest and confirmation `from` has for the others to `to`.
fn peer_messages(now: Instant, from: &mut CallGroup, to: &mut CallGroup) {
    if from.poll_timeout().is_some_and(|t| t <= now) {
        from.handle_timeout(now);
    }
    while let Some(m) = from.poll_peer_message() {
        // Confirmations of epochs the receiver is past are refused as stale; fine here.
        let _ = to.handle_peer_message(now, &m);
    }
    if to.poll_timeout().is_some_and(|t| t <= now) {
        to.handle_timeout(now);
    }
}

// covers: SDK-MEDIA-2, SDK-MEDIA-4, SDK-AUTH-1
#[test]
fn under_loss_reordering_and_duplication_every_complete_frame_opens_verified_and_replays_fail() {
    let start = Instant::now();
    let (mut alice, mut bob) = pair(start);
    alice.set_media_participant(start, 1);
    let mut tx = Side::new();
    let mut rx = Side::new();
    let mut rng = blindcall_media::SeededRng::new(0x1055);
    let mut src = Sources::new(start);
    let (mut complete, mut partial, mut replays) = (0u64, 0u64, 0u64);
    let mut history: Vec<(MediaKind, Vec<RtpPacket>)> = Vec::new();
    let mut replay_seq = [0u16, 0u16];
    for step in 0..150u32 {
        let now = start + Duration::from_millis(20) * step;
        src.tick(now, &mut tx, &mut alice);
        let mut batch: Vec<(ParticipantId, MediaKind, RtpPacket)> = Vec::new();
        for (kind, packets) in tx.frames() {
            history.push((kind, packets.clone()));
            let before = batch.len();
            let mut lost = 0;
            for p in &packets {
                if rng.chance(5) {
                    lost += 1;
                    continue;
                }
                batch.push((ParticipantId(1), kind, p.clone()));
                if rng.chance(5) {
                    batch.push((ParticipantId(1), kind, p.clone()));
                }
            }
            match lost {
                0 => complete += 1,
                l if l < packets.len() => partial += 1,
                _ => {}
            }
            // Reorder: swap neighbours within this frame's packets.
            for i in before + 1..batch.len() {
                if rng.chance(5) {
                    batch.swap(i - 1, i);
                }
            }
        }
        // Now and then a whole earlier frame (older than alice's last manifest) comes back as
        // fresh RTP on another participant's stream: a replay attack.
        if step % 25 == 24 && history.len() > 60 {
            let (kind, packets) = history[history.len() - 60].clone();
            let slot = usize::from(kind == MediaKind::Video);
            for mut p in packets {
                p.sequence_number = replay_seq[slot];
                replay_seq[slot] = replay_seq[slot].wrapping_add(1);
                batch.push((ParticipantId(2), kind, p));
            }
            replays += 1;
        }
        for (from, kind, p) in batch {
            rx.receive(now, &mut bob, 1, from, kind, p);
        }
        peer_messages(now, &mut alice, &mut bob);
    }
    // Alice's last manifests reach bob.
    let end = start + Duration::from_secs(4);
    peer_messages(end, &mut alice, &mut bob);
    rx.pipe.handle_timeout(start + Duration::from_secs(10));
    let health = rx.pipe.health_snapshot(Some(&bob));
    let main = &health[0];
    assert!(
        complete > 200 && partial > 5 && replays >= 4,
        "{complete} complete, {partial} partial, {replays} replays"
    );
    // Replayed frames carry alice's key and hashes but not her stream: each is refused
    // (the first by her manifests, the others because the stream is then blocked for her).
    let replayed = &health[1];
    assert_eq!(replayed.opened, 0, "{replayed:?}");
    assert_eq!(
        replayed
            .dropped
            .get(&DropCause::Frame(FrameReason::Impersonated)),
        Some(&replays),
        "{replayed:?}"
    );
    assert_eq!(replayed.impersonated(), replays, "{replayed:?}");
    let found: Vec<_> = std::iter::from_fn(|| bob.poll_event())
        .filter_map(|e| match e {
            blindcall_group::Event::Impersonation {
                claimed, reason, ..
            } => Some((claimed.map(|m| m.identity.to_string()), reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        found,
        [(
            Some("alice".to_string()),
            crate::event::ImpersonationReason::WrongParticipant
        )],
        "one report for the burst"
    );
    assert_eq!(
        main.opened, complete,
        "every complete frame opens exactly once: {main:?}"
    );
    // Each was delivered at once (media comes before its manifest: pending), and every one
    // is verified in the end.
    assert_eq!(main.delivered_pending, main.opened, "{main:?}");
    assert_eq!(main.auth.verified, main.opened, "{main:?}");
    assert_eq!(main.impersonated(), 0, "{main:?}");
    assert_eq!(
        main.dropped.get(&DropCause::Incomplete).copied(),
        Some(partial),
        "{main:?}"
    );
    assert!(
        main.dropped.keys().all(|c| *c == DropCause::Incomplete),
        "{main:?}"
    );
    // Every opened frame is the one sent (integrity check inside the pipeline), once.
    let log = rx.seen.0.lock().unwrap();
    let mut seen = std::collections::HashSet::new();
    for o in log.iter() {
        assert!(seen.insert((o.1, o.2)), "frame opened twice");
    }
}

// covers: SDK-HOLD-1
#[test]
fn frames_held_for_the_next_epoch_are_bounded_in_count_and_bytes() {
    let now = Instant::now();
    let (mut alice, mut bob) = pair(now);
    // Alice moves to epoch 2; bob has not seen the commit.
    let pc = alice.self_update().unwrap();
    pc.confirm(&mut alice, now).unwrap();
    assert_eq!(alice.activate_send_epoch(), 2);
    let mut tx = Side::new();
    for (limits, expect_held) in [
        (
            HoldLimits {
                frames: 3,
                ..LIMITS
            },
            3,
        ),
        (
            HoldLimits {
                bytes: 250,
                ..LIMITS
            },
            2,
        ),
    ] {
        let mut rx = Side::new();
        rx.pipe = MediaPipeline::new(7, limits);
        for i in 0..5u8 {
            let sink = Sink {
                out: &mut tx.out,
                observer: None,
            };
            tx.pipe
                .publish(now, &mut alice, MediaKind::Audio, &[i; 100], sink)
                .unwrap();
        }
        deliver(now, &mut tx, &mut rx, &mut bob, 1);
        let h = &rx.pipe.health_snapshot(None)[0];
        assert_eq!(rx.pipe.held_frames(), expect_held, "{limits:?}");
        assert_eq!(
            h.dropped.get(&DropCause::HeldOverflow).copied(),
            Some(5 - expect_held as u64),
            "{limits:?}: {h:?}"
        );
        assert_eq!(h.opened, 0);
    }
}
