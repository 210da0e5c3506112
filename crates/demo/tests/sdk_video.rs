//! Video selection through the embedded relay: a participant receives video only from the
//! members it selected (audio from everyone), and switching the selection mid-call starts and
//! stops streams at frame boundaries: no partial frame, no frame after the switch from a
//! deselected sender, every frame of a newly selected sender from the first one forwarded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use blindcall_client::{
    Call, DropCause, Event, Events, JoinOptions, MediaKind, MediaMode, Role, VideoSelection,
};
use blindcall_demo::embedded::{EmbeddedOptions, EmbeddedRelay};
use blindcall_demo::recorder::{CallLog, CallLogData};
use blindcall_demo::synthetic::{MediaHook, SyntheticConfig, SyntheticMedia};

mod common;

use common::{room_invite, runtime};

const WAIT: Duration = Duration::from_secs(30);

/// Joins with synthetic media (the demo's sources, published through the SDK) and keeps
/// the call's events flowing to them.
async fn join(
    relay: &EmbeddedRelay,
    log: &CallLog,
    name: &str,
    index: u32,
    role: Role,
    video: VideoSelection,
) -> (Call, SyntheticMedia) {
    let mut o = JoinOptions::new(relay.trust());
    o.media = MediaMode::App;
    o.auto_approve = true;
    o.invite = Some(room_invite());
    o.observer = Some(log.observer(name));
    log.record_video(name, &video, Instant::now());
    o.video = video;
    let token = relay.mint("room", role, Duration::from_secs(600)).unwrap();
    let (call, events) = Call::join(relay.addr(), &token, name, o).await.unwrap();
    let media = SyntheticMedia::spawn(
        call.clone(),
        SyntheticConfig {
            sender_id: 0x0101_0101 | (index << 8),
            seed: 7,
            silent: false,
        },
    );
    tokio::spawn(drain_events(events, media.hook()));
    (call, media)
}

/// Waits until `pred` holds over the log, re-checking whenever `call`'s stats refresh.
async fn until(call: &Call, log: &CallLog, what: &str, pred: impl Fn(&CallLogData) -> bool) {
    let mut stats = call.watch_stats();
    let fut = async {
        while !pred(&log.lock()) {
            if stats.changed().await.is_err() {
                panic!("{}'s call ended while waiting for {what}", call.identity());
            }
        }
    };
    if tokio::time::timeout(WAIT, fut).await.is_err() {
        let d = log.lock();
        let mut seen = Vec::new();
        for r in ["alice", "bob", "carol"] {
            for s in ["alice", "bob", "carol"] {
                for k in [0, 1] {
                    if let Some(q) = d.last_opened(r, s, k) {
                        seen.push(format!("{r}<-{s}/{k}:{q}"));
                    }
                }
            }
        }
        panic!("timed out after {WAIT:?} waiting for {what}; opened so far: {seen:?}");
    }
}

/// Sequence numbers of `sender`'s `kind` frames that `receiver` opened.
fn opened(log: &CallLogData, receiver: &str, sender: &str, kind: MediaKind) -> BTreeSet<u64> {
    log.opened
        .iter()
        .filter(|o| &*o.receiver == receiver && &*o.sender == sender && o.kind == kind)
        .map(|o| o.seq)
        .collect()
}

/// When `sender` sealed its `kind` frame `seq`.
fn sealed_at(log: &CallLogData, sender: &str, kind: MediaKind, seq: u64) -> Instant {
    log.sent
        .iter()
        .find(|f| &*f.sender == sender && f.kind == kind && f.seq == seq)
        .map(|f| f.at)
        .expect("every opened frame was sent")
}

async fn drain_events(mut events: Events, media: MediaHook) {
    drop(events.take_frames());
    while let Some(e) = events.next().await {
        media.on_event(&e);
        if matches!(e, Event::CallEnded { .. }) {
            return;
        }
    }
}

// covers: SDK-VIDEO-1, SDK-VIDEO-2, MT-SUB-1, MT-SUB-2, CP-MEDIA-5
#[test]
fn selected_video_flows_and_a_switch_takes_effect_at_frame_boundaries() {
    runtime().block_on(async {
        let relay = EmbeddedRelay::start(EmbeddedOptions::default())
            .await
            .unwrap();
        let log = CallLog::new(false);
        let (alice, _am) = join(&relay, &log, "alice", 1, Role::HOST, VideoSelection::All).await;
        let (bob, _bm) = join(&relay, &log, "bob", 2, Role::GUEST, VideoSelection::All).await;
        // Carol watches only bob.
        let only_bob = VideoSelection::Only(vec!["bob".into()]);
        let (carol, _cm) = join(&relay, &log, "carol", 3, Role::GUEST, only_bob).await;

        // Carol hears both, sees bob; alice and bob see everyone.
        until(
            &carol,
            &log,
            "carol to open bob's video and both audios",
            |d| {
                ["alice", "bob"]
                    .iter()
                    .all(|s| d.last_opened("carol", s, 0).is_some())
                    && d.last_opened("carol", "bob", 1).is_some_and(|q| q >= 30)
                    && d.last_opened("bob", "carol", 1).is_some()
                    && d.last_opened("alice", "carol", 1).is_some()
            },
        )
        .await;
        {
            let d = log.lock();
            assert!(
                opened(&d, "carol", "alice", MediaKind::Video).is_empty(),
                "carol did not select alice's video"
            );
        }

        // Switch carol to alice only: the relay asks alice for a keyframe.
        let requests_before = relay.forwarded().keyframe_requests;
        let only_alice = VideoSelection::Only(vec!["alice".into()]);
        log.record_video("carol", &only_alice, Instant::now());
        carol.select_video(only_alice).await.unwrap();
        until(
            &carol,
            &log,
            "carol to open 30 frames of alice's video",
            |d| {
                let got = opened(d, "carol", "alice", MediaKind::Video);
                got.len() >= 30
            },
        )
        .await;
        let (first_alice, bob_after) = {
            let d = log.lock();
            let alice_frames = opened(&d, "carol", "alice", MediaKind::Video);
            let first = *alice_frames.first().unwrap();
            let last = *alice_frames.last().unwrap();
            // From the first forwarded frame on, every frame alice sent arrived whole (the
            // source may skip a sequence number when the SDK refuses a delta frame right
            // after a key switch: such a frame was never sent).
            let sent: BTreeSet<u64> = d
                .sent
                .iter()
                .filter(|f| &*f.sender == "alice" && f.kind == MediaKind::Video)
                .map(|f| f.seq)
                .filter(|s| (first..=last).contains(s))
                .collect();
            assert_eq!(
                alice_frames, sent,
                "alice's video at carol has gaps: {alice_frames:?}"
            );
            // Carol opened alice's first video frame only after the relay had applied the
            // switch: bob's frames sealed after that moment never reach carol.
            let opened_at = d
                .opened
                .iter()
                .filter(|o| &*o.receiver == "carol" && &*o.sender == "alice")
                .filter(|o| o.kind == MediaKind::Video && o.seq == first)
                .map(|o| o.at)
                .next()
                .unwrap();
            let bob_after: Vec<u64> = opened(&d, "carol", "bob", MediaKind::Video)
                .into_iter()
                .filter(|s| sealed_at(&d, "bob", MediaKind::Video, *s) > opened_at)
                .collect();
            (first, bob_after)
        };
        assert!(first_alice > 0, "alice's video started mid-call");
        assert!(
            bob_after.is_empty(),
            "carol opened bob's video sealed after the switch: {bob_after:?}"
        );

        // Audio from bob kept flowing, and no frame reached carol incomplete.
        let audio_before = log.lock().last_opened("carol", "bob", 0).unwrap();
        until(&carol, &log, "more of bob's audio at carol", |d| {
            d.last_opened("carol", "bob", 0).unwrap() > audio_before + 10
        })
        .await;
        let stats = carol.stats();
        assert_eq!(
            stats
                .dropped
                .get(&DropCause::Incomplete)
                .copied()
                .unwrap_or(0),
            0,
            "carol dropped partial frames: {:?}",
            stats.dropped
        );
        let forwarded = relay.forwarded();
        assert!(forwarded.unsubscribed > 0, "{forwarded:?}");
        assert!(
            forwarded.keyframe_requests > requests_before,
            "no keyframe request after the switch: {forwarded:?}"
        );
        assert!(forwarded.balanced(), "{forwarded:?}");

        for c in [&alice, &bob, &carol] {
            c.leave().await.unwrap();
        }
        relay.shutdown().await;
    });
}
