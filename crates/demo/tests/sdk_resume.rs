//! A participant whose network drops for a few seconds comes back by itself: it reconnects,
//! proves it holds its leaf, and resumes its membership — no host approval, no new leaf, no
//! rekey — and its media flows again. One that never comes back is removed after the grace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use blindcall_client::{
    Call, Event, Events, IncomingFrame, JoinOptions, MediaKind, MediaMode, Role,
};
use blindcall_demo::embedded::{EmbeddedOptions, EmbeddedRelay};
use blindcall_demo::netsim::{FaultyPath, PathState};
use tokio::sync::mpsc;

mod common;

use common::{room_invite, runtime};

const WAIT: Duration = Duration::from_secs(60);

fn options(relay: &EmbeddedRelay) -> JoinOptions {
    let mut o = JoinOptions::new(relay.trust());
    o.media = MediaMode::App;
    o.auto_approve = true;
    o.invite = Some(room_invite());
    o
}

async fn join(
    relay: &EmbeddedRelay,
    via: std::net::SocketAddr,
    name: &str,
    role: Role,
) -> (Call, Events) {
    let token = relay.mint("room", role, Duration::from_secs(600)).unwrap();
    Call::join(via, &token, name, options(relay)).await.unwrap()
}

async fn until(events: &mut Events, what: &str, pred: impl FnMut(&Event) -> bool) -> Event {
    common::next_event(events, WAIT, what, pred).await
}

/// Publishes one audio frame every 20 ms until dropped (errors while away are expected).
fn talk(call: Call) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut n = 0u32;
        loop {
            tick.tick().await;
            n += 1;
            let r = call
                .publish(MediaKind::Audio, n.to_be_bytes().repeat(20))
                .await;
            if matches!(r, Err(blindcall_client::CallError::Ended)) {
                return;
            }
        }
    })
}

/// Waits for the next frame from `sender`.
async fn frame_from(frames: &mut mpsc::Receiver<IncomingFrame>, sender: &str, what: &str) {
    let fut = async {
        loop {
            match frames.recv().await {
                Some(f) if &*f.sender == sender => return,
                Some(_) => {}
                None => panic!("frames ended while waiting for {what}"),
            }
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

// covers: SDK-RES-1, SDK-RES-2, SDK-RES-5, DS-RES-12
#[test]
fn a_participant_whose_network_drops_for_seconds_resumes_without_approval_or_rekey() {
    runtime().block_on(async {
        let relay = EmbeddedRelay::start(EmbeddedOptions::default())
            .await
            .unwrap();
        let path = FaultyPath::start(relay.addr()).await.unwrap();
        let (alice, mut ae) = join(&relay, relay.addr(), "alice", Role::HOST).await;
        let (bob, mut be) = join(&relay, path.addr(), "bob", Role::GUEST).await;
        let mut a_frames = ae.take_frames().unwrap();
        let mut b_frames = be.take_frames().unwrap();
        for (who, events) in [("alice", &mut ae), ("bob", &mut be)] {
            until(events, &format!("{who}'s media"), |e| {
                matches!(e, Event::MediaConnected)
            })
            .await;
        }
        // Bob's path update makes epoch 2; that is the call's state from then on.
        for c in [&alice, &bob] {
            let mut w = c.watch_stats();
            tokio::time::timeout(WAIT, w.wait_for(|s| s.epoch == Some(2)))
                .await
                .expect("everyone at epoch 2")
                .unwrap();
        }
        let _ta = talk(alice.clone());
        let _tb = talk(bob.clone());
        frame_from(&mut a_frames, "bob", "bob's media at alice").await;
        frame_from(&mut b_frames, "alice", "alice's media at bob").await;
        let before = bob.stats();
        let (epoch, code) = (before.epoch, before.code.clone());

        // Bob's network goes dead for 5 s.
        path.set(PathState::Blackhole);
        until(&mut be, "bob to notice", |e| {
            matches!(e, Event::Reconnecting { attempt: 1, .. })
        })
        .await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        path.set(PathState::Up);
        let back = tokio::time::Instant::now();
        let Event::Reconnected { away } = until(&mut be, "bob to resume", |e| {
            matches!(e, Event::Reconnected { .. })
        })
        .await
        else {
            unreachable!()
        };
        assert!(away >= Duration::from_secs(5), "away {away:?}");
        // Media flows again both ways.
        while a_frames.try_recv().is_ok() {}
        while b_frames.try_recv().is_ok() {}
        frame_from(&mut a_frames, "bob", "bob's media at alice after resuming").await;
        frame_from(
            &mut b_frames,
            "alice",
            "alice's media at bob after resuming",
        )
        .await;
        let resume_time = back.elapsed();
        eprintln!("resumed; media both ways {resume_time:?} after the network came back");
        // And it is authenticated again: the resumed member's stream keeps its participant id,
        // so its new manifests verify its frames at alice (nothing stays blocked).
        let verified = |stats: &blindcall_client::CallStats, sender: &str| {
            stats
                .senders
                .iter()
                .filter(|s| s.identity.as_deref() == Some(sender))
                .map(|s| s.auth.verified)
                .sum::<u64>()
        };
        for (c, sender) in [(&alice, "bob"), (&bob, "alice")] {
            let from = verified(&c.stats(), sender);
            let mut w = c.watch_stats();
            tokio::time::timeout(WAIT, w.wait_for(|s| verified(s, sender) >= from + 25))
                .await
                .unwrap_or_else(|_| panic!("{sender}'s frames verified again after the resume"))
                .unwrap();
        }
        // Same leaf, same epoch, same keys: nobody approved, nobody rekeyed.
        let after = bob.stats();
        assert_eq!((after.epoch, after.code.clone()), (epoch, code));
        assert_eq!(after.reconnects, 1);
        assert!(
            after.frames_dropped_away > 0,
            "bob kept publishing while away"
        );
        let a = alice.stats();
        assert_eq!((a.epoch, a.members), (epoch, 2));
        while let Some(e) = ae.try_next() {
            assert!(
                !matches!(e, Event::MembersLeft { .. } | Event::JoinRequested { .. }),
                "alice saw {e:?}"
            );
        }
    });
}

// covers: SDK-RES-4
#[test]
fn a_participant_that_never_comes_back_is_removed_after_the_grace() {
    runtime().block_on(async {
        let relay = EmbeddedRelay::start(EmbeddedOptions {
            resume_grace: Some(Duration::from_secs(2)),
            ..EmbeddedOptions::default()
        })
        .await
        .unwrap();
        let path = FaultyPath::start(relay.addr()).await.unwrap();
        let (_alice, mut ae) = join(&relay, relay.addr(), "alice", Role::HOST).await;
        let (_bob, mut be) = join(&relay, path.addr(), "bob", Role::GUEST).await;
        until(&mut be, "bob joined", |e| matches!(e, Event::Joined { .. })).await;
        until(&mut ae, "alice sees bob", |e| {
            matches!(e, Event::MembersJoined { .. })
        })
        .await;
        path.set(PathState::Blackhole);
        // The relay notices only when the connection breaks: a black hole breaks nothing, so
        // cut bob's side for good instead (a process gone, a cable pulled).
        until(&mut be, "bob to notice", |e| {
            matches!(e, Event::Reconnecting { .. })
        })
        .await;
        let Event::MembersLeft { members, .. } = until(&mut ae, "alice to see bob removed", |e| {
            matches!(e, Event::MembersLeft { .. })
        })
        .await
        else {
            unreachable!()
        };
        assert_eq!(&*members[0].identity, "bob");
    });
}
