//! The relay forwards, per publisher and kind, only the one SSRC the publisher announced
//! (issue 10, "Streams are pinned"). A raw webrtc-rs peer plays the malicious publisher: it
//! munges its SDP answers and sends RTP under SSRCs its answers do not (or no longer) announce
//! for that kind; a normal client subscribes and must never receive those packets, while the
//! announced stream keeps flowing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use blindcall_media::MediaKind;
use blindcall_transport::{ClientEvent, CountersSnapshot, DropReason, ParticipantId, TappedPacket};
use common::raw::{RawPublisher, add_decoy_ssrc, replace_ssrc};
use common::{Room, runtime, wait_client_connected, within};
use tokio::sync::mpsc;

/// The raw publisher's real audio and video SSRCs.
const A: u32 = 0x0A00_0001;
const V: u32 = 0x0B00_0001;
/// An SSRC the raw publisher announces but never sends.
const DECOY: u32 = 0x0D00_0001;
/// Packets sent under an SSRC that must not be forwarded.
const K: u16 = 20;
/// Packets sent under the announced SSRC.
const M: u16 = 20;

const SUB: ParticipantId = ParticipantId(1);
const RAW: ParticipantId = ParticipantId(2);

fn payload(tag: &str, i: u16) -> Vec<u8> {
    format!("{tag}-{i:04}").into_bytes()
}

fn tag_of(payload: &[u8]) -> &str {
    std::str::from_utf8(payload)
        .ok()
        .and_then(|s| s.split('-').next())
        .unwrap_or("?")
}

/// Reads the relay's tap until `done` holds for the tags seen so far; returns them.
async fn tap_until(
    tap: &mut mpsc::Receiver<TappedPacket>,
    what: &str,
    done: impl Fn(&[(MediaKind, u32, String)]) -> bool,
) -> Vec<(MediaKind, u32, String)> {
    let mut seen = Vec::new();
    within(what, async {
        while !done(&seen) {
            let p = tap.recv().await.expect("tap open");
            seen.push((
                p.kind,
                p.packet.header.ssrc,
                tag_of(&p.packet.payload).to_owned(),
            ));
        }
    })
    .await;
    seen
}

fn count(seen: &[(MediaKind, u32, String)], tag: &str) -> usize {
    seen.iter().filter(|(_, _, t)| t == tag).count()
}

/// Collects what the subscriber receives until it has `want` packets tagged `tag`; returns
/// every (kind, tag) received meanwhile.
async fn receive_until(
    events: &mut mpsc::Receiver<ClientEvent>,
    got: &mut Vec<(MediaKind, String)>,
    tag: &str,
    want: usize,
) {
    within(
        &format!("subscriber receives {want} '{tag}' packets"),
        async {
            while got.iter().filter(|(_, t)| t == tag).count() < want {
                if let ClientEvent::Media { from, kind, packet } =
                    events.recv().await.expect("client events")
                {
                    assert_eq!(from, RAW);
                    got.push((kind, tag_of(&packet.payload).to_owned()));
                }
            }
        },
    )
    .await;
}

/// Relay up, raw publisher joined through `munge`, then a receive-only subscriber.
async fn setup(
    raw: &RawPublisher,
    munge: impl Fn(String) -> String,
) -> (
    Room,
    mpsc::Receiver<ClientEvent>,
    mpsc::Receiver<TappedPacket>,
) {
    let mut room = Room::new(Some(4_096), 1_024);
    raw.join(&room, RAW, munge).await;
    let mut sub = room.join_with(SUB, false).await;
    room.wait_legs(&[(SUB, 2), (RAW, 0)]).await;
    room.wait_connected(&[SUB, RAW]).await;
    raw.wait_connected().await;
    let mut backlog = Vec::new();
    wait_client_connected(&mut sub, &mut backlog).await;
    let tap = room.tap.take().expect("tap");
    (room, sub, tap)
}

/// Only the announced packets were routed (one copy each, to the one subscriber); every
/// other one was dropped as `unannounced_ssrc` (or, before anyone subscribed, as
/// `no_subscriber`), and the books balance.
fn assert_books(c: &CountersSnapshot, routed: u64, refused: u64, unsubscribed: u64) {
    assert_eq!(c.routed, routed, "only announced packets are routed: {c:?}");
    assert_eq!(c.copies, routed, "{c:?}");
    assert_eq!(c.packets_in, routed + refused + unsubscribed, "{c:?}");
    assert_eq!(c.dropped(DropReason::UnannouncedSsrc), refused, "{c:?}");
    assert_eq!(c.dropped(DropReason::NoSubscriber), unsubscribed, "{c:?}");
    assert!(c.balanced(), "{c:?}");
}

// An answer announcing two SSRCs in its audio section (a decoy, then the real one) announces
// no single audio stream: the relay forwards no audio from it. webrtc-rs binds only the
// section's last `a=ssrc`, so the real SSRC reaches the forwarder, and must go no further.
// Video, announced once, flows.
// covers: MT-PIN-1, MT-PIN-2, MT-PIN-4, MT-PIN-5
#[test]
fn two_ssrcs_announced_in_one_section_are_not_forwarded() {
    runtime().block_on(async {
        let raw = RawPublisher::new(A, V).await;
        let (room, mut sub, mut tap) = setup(&raw, |sdp| add_decoy_ssrc(&sdp, A, DECOY)).await;
        for i in 0..K {
            raw.send(MediaKind::Audio, i, &payload("A", i)).await;
        }
        for i in 0..M {
            raw.send(MediaKind::Video, i, &payload("V", i)).await;
        }
        tap_until(&mut tap, "relay reads every A and V packet", |s| {
            count(s, "A") == usize::from(K) && count(s, "V") == usize::from(M)
        })
        .await;
        let mut got = Vec::new();
        receive_until(&mut sub, &mut got, "V", usize::from(M)).await;
        assert!(
            got.iter().all(|(k, t)| *k == MediaKind::Video && t == "V"),
            "{got:?}"
        );
        assert_books(&room.sfu.counters(), u64::from(M), u64::from(K), 0);
    });
}

// Two sections naming the same msid track id: webrtc-rs hands the video section's SSRC to the
// audio section's remote track, so without pinning the publisher's video packets would be
// forwarded as its audio stream.
// covers: MT-PIN-1, MT-PIN-4, MT-PIN-5
#[test]
fn another_sections_ssrc_on_a_shared_track_is_not_forwarded() {
    runtime().block_on(async {
        let raw = RawPublisher::new(A, V).await;
        let (audio_id, video_id) = (
            raw.track_id(MediaKind::Audio).to_owned(),
            raw.track_id(MediaKind::Video).to_owned(),
        );
        let (room, mut sub, mut tap) =
            setup(&raw, move |sdp| sdp.replace(&video_id, &audio_id)).await;
        // Audio first, so the relay's remote track for the shared id is the audio one.
        raw.send(MediaKind::Audio, 0, &payload("A", 0)).await;
        let mut got = Vec::new();
        receive_until(&mut sub, &mut got, "A", 1).await;
        for i in 0..K {
            raw.send(MediaKind::Video, i, &payload("V", i)).await;
        }
        for i in 1..=M {
            raw.send(MediaKind::Audio, i, &payload("A", i)).await;
        }
        let seen = tap_until(&mut tap, "relay reads every V and A packet", |s| {
            count(s, "V") == usize::from(K) && count(s, "A") == usize::from(M) + 1
        })
        .await;
        assert!(
            seen.iter().all(|(kind, _, _)| *kind == MediaKind::Audio),
            "every packet arrived on the audio track: {seen:?}"
        );
        // The subscriber's audio leg carries A only, in order: nothing slipped in before.
        receive_until(&mut sub, &mut got, "A", usize::from(M) + 1).await;
        assert!(
            got.iter().all(|(k, t)| *k == MediaKind::Audio && t == "A"),
            "{got:?}"
        );
        assert_books(&room.sfu.counters(), u64::from(M) + 1, u64::from(K), 0);
    });
}

// The publisher's first answer announces a decoy audio SSRC; a later answer announces its real
// one instead. While only the decoy is declared, webrtc-rs drops the real SSRC's packets before
// the forwarder (they are never even counted). Once the later answer declares it, they reach
// the forwarder, but the pin stays on the first announcement: they are not forwarded. Video
// keeps flowing.
// covers: MT-PIN-1, MT-PIN-3, MT-PIN-4, MT-PIN-5
#[test]
fn an_ssrc_changed_by_a_later_answer_is_not_forwarded() {
    runtime().block_on(async {
        let raw = RawPublisher::new(A, V).await;
        let mut room = Room::new(Some(4_096), 1_024);
        raw.join(&room, RAW, |sdp| replace_ssrc(&sdp, A, DECOY))
            .await;
        room.wait_connected(&[RAW]).await;
        raw.wait_connected().await;
        assert_eq!(
            room.sfu.pinned_ssrc(RAW, MediaKind::Audio).await,
            Some(DECOY)
        );
        assert_eq!(room.sfu.pinned_ssrc(RAW, MediaKind::Video).await, Some(V));
        let mut tap = room.tap.take().expect("tap");
        // Undeclared: dropped inside webrtc-rs. The video sent after it is the fence.
        for i in 0..K {
            raw.send(MediaKind::Audio, i, &payload("U", i)).await;
        }
        for i in 0..M {
            raw.send(MediaKind::Video, i, &payload("W", i)).await;
        }
        let seen = tap_until(&mut tap, "relay reads every W packet", |s| {
            count(s, "W") == usize::from(M)
        })
        .await;
        assert_eq!(
            count(&seen, "U"),
            0,
            "an undeclared SSRC reached the forwarder"
        );

        // A publishing subscriber joins: the relay re-offers the raw peer (adding the new
        // participant's streams), and the raw peer's answer now announces its real audio SSRC.
        let mut sub = room.join(SUB).await;
        let (to, reoffer) = within("re-offer to the raw peer", room.raw_offers.recv())
            .await
            .expect("raw offers");
        assert_eq!(to, RAW);
        raw.answer_until_settled(&room, RAW, reoffer, &|sdp| sdp)
            .await;
        assert_eq!(
            room.sfu.pinned_ssrc(RAW, MediaKind::Audio).await,
            Some(DECOY)
        );
        room.wait_legs(&[(SUB, 2), (RAW, 2)]).await;
        room.wait_connected(&[SUB]).await;
        let mut backlog = Vec::new();
        wait_client_connected(&mut sub, &mut backlog).await;

        for i in 0..K {
            raw.send(MediaKind::Audio, K + i, &payload("A", i)).await;
        }
        for i in 0..M {
            raw.send(MediaKind::Video, M + i, &payload("V", i)).await;
        }
        tap_until(&mut tap, "relay reads every A and V packet", |s| {
            count(s, "A") == usize::from(K) && count(s, "V") == usize::from(M)
        })
        .await;
        let mut got = backlog
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Media { kind, packet, .. } => {
                    Some((kind, tag_of(&packet.payload).to_owned()))
                }
                _ => None,
            })
            .collect();
        receive_until(&mut sub, &mut got, "V", usize::from(M)).await;
        assert!(
            got.iter().all(|(k, t)| *k == MediaKind::Video && t == "V"),
            "{got:?}"
        );
        // The first video packets found no subscriber yet.
        assert_books(
            &room.sfu.counters(),
            u64::from(M),
            u64::from(K),
            u64::from(M),
        );
    });
}

// An answer the relay refuses pins nothing. (webrtc-rs changes its signaling state before most
// of its checks, so that connection cannot take another answer to the offer; the pins are
// rolled back so that nothing the refused answer announced is ever forwarded.)
// covers: MT-PIN-3
#[test]
fn a_refused_answer_pins_nothing() {
    runtime().block_on(async {
        let raw = RawPublisher::new(A, V).await;
        let room = Room::new(None, 64);
        let offer = room.sfu.add_participant(RAW).await.expect("relay offer");
        let bad = raw
            .answer(offer, |sdp| {
                replace_ssrc(&sdp, A, DECOY)
                    .split_inclusive('\n')
                    .filter(|l| !l.starts_with("a=ice-ufrag:"))
                    .collect()
            })
            .await;
        assert!(room.sfu.handle_answer(RAW, bad).await.is_err());
        for kind in [MediaKind::Audio, MediaKind::Video] {
            assert_eq!(room.sfu.pinned_ssrc(RAW, kind).await, None, "{kind:?}");
        }
        // Control: another publisher's valid answer pins what it announces.
        let other = ParticipantId(3);
        let good = RawPublisher::new(A, V).await;
        good.join(&room, other, |sdp| replace_ssrc(&sdp, A, DECOY))
            .await;
        assert_eq!(
            room.sfu.pinned_ssrc(other, MediaKind::Audio).await,
            Some(DECOY)
        );
        assert_eq!(room.sfu.pinned_ssrc(other, MediaKind::Video).await, Some(V));
        assert_eq!(room.sfu.pinned_ssrc(SUB, MediaKind::Audio).await, None);
    });
}
