//! A member that does not sign its media (`Client::without_media_signatures`, as another MLS
//! implementation would be): it sends no manifests, its frames play as unauthenticated, and a
//! call that requires signed media refuses them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use blindcall_group::config::MediaSignatures;
use blindcall_group::media_auth::{FrameAuth, ImpersonationReason, StreamRef};
use blindcall_group::{CallConfig, Client, Event, FrameDropReason, MemberConfig};
use common::Room;

const DAN: StreamRef = StreamRef {
    id: 40,
    participant: 4,
};

/// alice (signing) creates the call; dan, who does not sign, joins it.
fn room(signatures: MediaSignatures) -> Room {
    let call = CallConfig {
        media_signatures: signatures,
        ..CallConfig::default()
    };
    let mut r = Room::with_members(&["alice"], call, MemberConfig::default());
    let dan = Client::new("dan", r.call.mls_suite)
        .unwrap()
        .without_media_signatures();
    assert!(!dan.signs_media());
    r.add_clients("alice", vec![dan], &["dan"]);
    r.activate_all();
    let now = r.now;
    r.get_mut("alice").set_media_participant(now, 1);
    r.get_mut("dan").set_media_participant(now, DAN.participant);
    r.events.clear();
    r
}

/// Dan talks for a second (a frame every 20 ms); alice's verdicts on his stream.
fn dan_talks(r: &mut Room) -> Vec<Result<FrameAuth, FrameDropReason>> {
    let mut out = Vec::new();
    for _ in 0..50 {
        let mut f = r.seal("dan", 0, b"dan speaking");
        let now = r.now;
        out.push(
            r.get_mut("alice")
                .open_on(now, DAN, b"meta", &mut f)
                .map(|o| o.auth.unwrap())
                .map_err(|e| e.reason),
        );
        r.advance(Duration::from_millis(20));
    }
    let signed = r.get("dan").manifest_counters();
    assert_eq!(
        (signed.frames, signed.manifests),
        (0, 0),
        "a member that does not sign recorded or sent manifests"
    );
    out
}

// covers: MA-UNS-1
#[test]
fn a_member_that_does_not_sign_plays_as_unauthenticated_and_is_never_flagged() {
    let mut r = room(MediaSignatures::Optional);
    let dan_leaf = r.get("dan").own_leaf();
    let dan = r.get("alice").roster().get(dan_leaf).unwrap();
    assert!(
        !dan.signs_media,
        "dan's leaf must not advertise signed media"
    );
    let verdicts = dan_talks(&mut r);
    assert!(
        verdicts.iter().all(|v| *v == Ok(FrameAuth::Unsigned)),
        "{verdicts:?}"
    );
    r.advance(Duration::from_secs(2));
    let events = r.take_events("alice");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::Impersonation { .. })),
        "{events:?}"
    );
}

// covers: MA-UNS-2
#[test]
fn a_call_that_requires_signed_media_refuses_a_member_that_does_not_sign() {
    let mut r = room(MediaSignatures::Required);
    let verdicts = dan_talks(&mut r);
    assert!(
        verdicts
            .iter()
            .all(|v| *v == Err(FrameDropReason::Impersonated)),
        "{verdicts:?}"
    );
    let found: Vec<_> = r
        .take_events("alice")
        .into_iter()
        .filter_map(|e| match e {
            Event::Impersonation {
                reason,
                detected_after,
                ..
            } => Some((reason, detected_after)),
            _ => None,
        })
        .collect();
    assert_eq!(
        found,
        vec![(ImpersonationReason::NoSignature, Duration::ZERO)]
    );
}
