//! Receive state per stream: a member holding the group's keys can forge frames under another
//! member's KID, but frames on its own stream never move the victim's replay window.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use blindcall_group::media_auth::StreamRef;
use blindcall_group::{CallConfig, FrameDropReason, MemberConfig};
use common::Room;
use common::raw::{Raw, forge};
use openmls::prelude::{MlsMessageOut, tls_codec::Serialize as _};

const BOB_STREAM: StreamRef = StreamRef {
    id: 1,
    participant: 101,
};
const MALLORY_STREAM: StreamRef = StreamRef {
    id: 2,
    participant: 102,
};

// covers: KS-RX-2
#[test]
fn a_forged_far_ahead_frame_on_another_stream_does_not_silence_the_victim() {
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
    let layout = r.get("alice").params().layout;
    let r_now = r.now;
    let bob_leaf = r.get("bob").own_leaf();

    // Bob speaks; alice opens on bob's stream.
    let genuine: Vec<Vec<u8>> = (0..3).map(|i| r.seal("bob", 0, &[i; 4])).collect();
    let mut buf = genuine[0].clone();
    assert_eq!(
        r.get_mut("alice")
            .open_on(r_now, BOB_STREAM, b"meta", &mut buf)
            .unwrap()
            .plaintext,
        [0; 4]
    );

    // Mallory forges bob's KID with a counter far ahead and sends it on her own stream: it
    // authenticates (she holds the group's keys) ...
    let forged = forge(
        &mgroup,
        &mallory,
        layout,
        bob_leaf,
        0,
        1 << 40,
        b"I approve",
    );
    let mut buf = forged.clone();
    let opened = r
        .get_mut("alice")
        .open_on(r_now, MALLORY_STREAM, b"meta", &mut buf)
        .unwrap();
    assert_eq!(
        opened.sender, bob_leaf,
        "forgery is only caught by media signatures"
    );
    // ... but bob's stream has its own replay window: his next frames still open.
    for (i, frame) in genuine.iter().enumerate().skip(1) {
        let mut buf = frame.clone();
        let got = r
            .get_mut("alice")
            .open_on(r_now, BOB_STREAM, b"meta", &mut buf)
            .unwrap();
        assert_eq!(got.plaintext, [i as u8; 4]);
    }
    // Replays are still refused per stream.
    let mut buf = genuine[2].clone();
    assert_eq!(
        r.get_mut("alice")
            .open_on(r_now, BOB_STREAM, b"meta", &mut buf)
            .unwrap_err()
            .reason,
        FrameDropReason::Replay
    );
    // Closing a stream forgets its state and keys.
    let keys = r.get("alice").receive_key_count();
    r.get_mut("alice").close_stream(MALLORY_STREAM.id);
    assert_eq!(r.get("alice").receive_key_count(), keys - 1);
}
