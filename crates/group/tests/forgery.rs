//! A member with raw access to the group's keys speaks as another member. Every honest
//! receiver detects it within the bound, the forged frames never play under the victim's name
//! after detection, and the victim is never silenced.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use blindcall_group::media_auth::{FrameAuth, ImpersonationReason, StreamRef};
use blindcall_group::{CallConfig, Event, FrameDropReason, MemberConfig};
use common::Room;
use common::raw::{Raw, forge};
use openmls::prelude::{MlsGroup, MlsMessageOut, tls_codec::Serialize as _};

const BOB: StreamRef = StreamRef {
    id: 20,
    participant: 2,
};

/// alice and bob (our clients, signing media), mallory (raw openmls) in a call.
fn room() -> (Room, Raw, MlsGroup) {
    let mut r = Room::with_members(
        &["alice", "bob"],
        CallConfig::default(),
        MemberConfig::default(),
    );
    let mallory = Raw::new("mallory");
    let kp = MlsMessageOut::from(mallory.key_package())
        .tls_serialize_detached()
        .unwrap();
    let pc = r.get_mut("alice").add_members(&[&kp]).unwrap();
    let welcome = pc.welcome().unwrap().to_vec();
    r.commit("alice", pc);
    let mgroup = mallory.join(&welcome);
    r.activate_all();
    let now = r.now;
    r.get_mut("alice").set_media_participant(now, 1);
    r.get_mut("bob").set_media_participant(now, 2);
    r.events.clear();
    (r, mallory, mgroup)
}

fn open(r: &mut Room, stream: StreamRef, frame: &[u8]) -> Result<FrameAuth, FrameDropReason> {
    let now = r.now;
    let mut buf = frame.to_vec();
    r.get_mut("alice")
        .open_on(now, stream, b"meta", &mut buf)
        .map(|o| o.auth.unwrap())
        .map_err(|e| e.reason)
}

fn impersonations(r: &mut Room) -> Vec<(ImpersonationReason, String, Duration)> {
    r.take_events("alice")
        .into_iter()
        .filter_map(|e| match e {
            Event::Impersonation {
                claimed,
                reason,
                detected_after,
                ..
            } => Some((
                reason,
                claimed.map(|m| m.identity.to_string()).unwrap_or_default(),
                detected_after,
            )),
            _ => None,
        })
        .collect()
}

/// Bob talks for `ms` milliseconds (one frame each 20 ms), alice opening on his stream.
fn bob_talks(r: &mut Room, ms: u64) {
    for _ in 0..ms / 20 {
        let f = r.seal("bob", 0, b"bob speaking");
        let auth = open(r, BOB, &f).unwrap();
        assert!(
            matches!(auth, FrameAuth::Verified | FrameAuth::Pending),
            "{auth:?}"
        );
        r.advance(Duration::from_millis(20));
    }
}

// covers: MA-DET-1, KS-RX-2
#[test]
fn a_forgery_on_another_stream_while_the_victim_talks_is_refused_and_never_silences_him() {
    let (mut r, mallory, mgroup) = room();
    let layout = r.get("alice").params().layout;
    let bob_leaf = r.get("bob").own_leaf();
    bob_talks(&mut r, 300);
    // Mallory's own stream (relay participant 3): its first frame claims to be bob.
    let forged_stream = StreamRef {
        id: 30,
        participant: 3,
    };
    // Bob's signed manifests already name his own relay participant: the very first forged
    // frame on another participant's stream is refused, never played.
    let forged = forge(
        &mgroup,
        &mallory,
        layout,
        bob_leaf,
        0,
        5_000,
        b"I approve the transfer",
    );
    assert_eq!(
        open(&mut r, forged_stream, &forged),
        Err(FrameDropReason::Impersonated)
    );
    let found = impersonations(&mut r);
    assert_eq!(found.len(), 1, "{found:?}");
    let (reason, claimed, after) = &found[0];
    assert_eq!(*reason, ImpersonationReason::WrongParticipant);
    assert_eq!(claimed, "bob");
    assert_eq!(*after, Duration::ZERO);
    bob_talks(&mut r, 600);
    // From now on nothing on that stream plays as bob...
    for i in 1..5 {
        let more = forge(&mgroup, &mallory, layout, bob_leaf, 0, 5_000 + i, b"again");
        assert_eq!(
            open(&mut r, forged_stream, &more),
            Err(FrameDropReason::Impersonated)
        );
    }
    // ...and bob is never silenced: his frames verify on his own stream.
    let f = r.seal("bob", 0, b"still me");
    r.advance(Duration::from_millis(300));
    assert!(matches!(
        open(&mut r, BOB, &f),
        Ok(FrameAuth::Verified | FrameAuth::Pending)
    ));
    let c = r
        .get("alice")
        .media_verifier()
        .stream_counters(BOB.id)
        .unwrap();
    assert!(c.verified > 30, "{c:?}");
    assert_eq!(c.forged + c.no_signature + c.wrong_participant, 0, "{c:?}");
}

// covers: MA-DET-2
#[test]
fn a_forgery_while_the_victim_is_silent_is_refused_at_the_bound() {
    let (mut r, mallory, mgroup) = room();
    let layout = r.get("alice").params().layout;
    let bob_leaf = r.get("bob").own_leaf();
    let forged_stream = StreamRef {
        id: 31,
        participant: 3,
    };
    let forged = forge(&mgroup, &mallory, layout, bob_leaf, 0, 0, b"hello it's bob");
    assert_eq!(open(&mut r, forged_stream, &forged), Ok(FrameAuth::Pending));
    r.advance(Duration::from_millis(999));
    assert!(impersonations(&mut r).is_empty());
    r.advance(Duration::from_millis(1));
    let found = impersonations(&mut r);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, ImpersonationReason::NoSignature);
    let more = forge(&mgroup, &mallory, layout, bob_leaf, 0, 1, b"more");
    assert_eq!(
        open(&mut r, forged_stream, &more),
        Err(FrameDropReason::Impersonated)
    );
}

// covers: MA-PIN-1
#[test]
fn a_forgery_on_the_forgers_pinned_stream_is_refused_before_decryption() {
    let (mut r, mallory, mgroup) = room();
    let layout = r.get("alice").params().layout;
    let (bob_leaf, mallory_leaf) = (r.get("bob").own_leaf(), mgroup.own_leaf_index().u32());
    let stream = StreamRef {
        id: 32,
        participant: 3,
    };
    // Mallory's genuine frame pins her stream to her (she does not sign: unauthenticated).
    let own = forge(
        &mgroup,
        &mallory,
        layout,
        mallory_leaf,
        0,
        0,
        b"mallory here",
    );
    assert_eq!(open(&mut r, stream, &own), Ok(FrameAuth::Unsigned));
    assert!(r.take_events("alice").iter().any(|e| matches!(
        e,
        Event::SenderUnauthenticated { member: Some(m), .. } if &*m.identity == "mallory"
    )));
    let forged = forge(&mgroup, &mallory, layout, bob_leaf, 0, 0, b"bob says yes");
    assert_eq!(
        open(&mut r, stream, &forged),
        Err(FrameDropReason::ForeignSender)
    );
    let found = impersonations(&mut r);
    assert_eq!(found.len(), 1);
    assert_eq!(
        (found[0].0, found[0].1.as_str()),
        (ImpersonationReason::ForeignKidOnStream, "bob")
    );
}

// covers: MA-DET-1
#[test]
fn a_forgery_started_before_the_victims_first_manifest_is_flagged_within_the_bound() {
    let (mut r, mallory, mgroup) = room();
    let layout = r.get("alice").params().layout;
    let bob_leaf = r.get("bob").own_leaf();
    let forged_stream = StreamRef {
        id: 33,
        participant: 3,
    };
    // Bob has sent nothing yet; mallory's forged frame arrives first and plays as pending.
    let started = r.now;
    let forged = forge(&mgroup, &mallory, layout, bob_leaf, 0, 7, b"hi, bob here");
    assert_eq!(open(&mut r, forged_stream, &forged), Ok(FrameAuth::Pending));
    // Bob starts talking; his first manifest (within 250 ms) names his own participant.
    bob_talks(&mut r, 400);
    let found = impersonations(&mut r);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, ImpersonationReason::WrongParticipant);
    assert!(found[0].2 <= Duration::from_millis(300), "{found:?}");
    assert!(r.now - started <= Duration::from_secs(1));
    let more = forge(&mgroup, &mallory, layout, bob_leaf, 0, 8, b"again");
    assert_eq!(
        open(&mut r, forged_stream, &more),
        Err(FrameDropReason::Impersonated)
    );
}
