//! Which SSRC a publisher announced for each of its streams, and the pin the relay forwards
//! by: per (publisher, kind), only packets under the one SSRC the publisher's answers first
//! announced for that kind are forwarded.
//!
//! # What webrtc-rs 0.21.1 does with SSRCs a peer did not announce
//!
//! Read from `rtc` 0.21.1 (`peer_connection/handler/{endpoint,interceptor}.rs`,
//! `peer_connection/internal.rs::start_rtp`, `peer_connection/sdp/mod.rs::track_details_from_sdp`)
//! and the `webrtc` 0.21.1 driver (`peer_connection/driver.rs`, `OnTrack`):
//!
//! - An RTP packet whose SSRC no receiver owns is dropped inside the stack
//!   (`EndpointHandler::handle_rtp_message`: "drop rtp packet ssrc = ..."); it raises no
//!   `on_track`, reaches no application code and cannot be counted here. A receiver owns an
//!   SSRC that the remote description declares with `a=ssrc` in a section the local side
//!   receives on, or one bound on first arrival by (a) the single-section shortcut (only when
//!   the connection has exactly one transceiver: never for the relay, whose publisher
//!   connections have two receive sections and whose other transceivers come in pairs),
//!   (b) simulcast `rid` binding (needs the `sdes:mid` and `rtp-stream-id` header extensions
//!   negotiated: the relay registers no header extension, so never), or (c) RTX
//!   de-encapsulation (needs an RTX codec: the relay registers none, so never).
//! - Per section, `start_rtp` installs one remote track per declared SSRC in turn, each
//!   replacing the last: only the section's **last** `a=ssrc` is owned. An answer to a
//!   renegotiation re-runs this, so a later answer can move a section to another SSRC.
//! - The remote tracks the application sees are keyed by the `a=msid` track id, not by
//!   section or SSRC: two sections naming the same track id deliver both sections' packets
//!   through the one track whose first packet arrived first, labelled with that section's
//!   kind.
//! - A webrtc-rs sender sends only the first SSRC of a non-simulcast track and refuses to
//!   write under any SSRC its track does not own.
//!
//! So an undeclared SSRC never reaches the forwarder, a sender section the relay did not offer
//! for receiving carries nothing, and a second track cannot be added to an answer; what does
//! reach the forwarder under the wrong stream is an SSRC some answer declared: a section that
//! declares several SSRCs, a later answer that declares another one, or another section's SSRC
//! arriving on a shared track id. The pin covers all three.

use std::sync::atomic::{AtomicU64, Ordering};

use blindcall_media::MediaKind;
use rtc::sdp::{MediaDescription, SessionDescription};

/// What one SDP answer announces for one of the publisher's sending sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announced {
    /// No media SSRC: the section is absent, receive-only or inactive, or declares none.
    Nothing,
    /// Exactly one media SSRC (repair SSRCs of an `a=ssrc-group:FID` or `FEC-FR` aside).
    One(u32),
    /// Several media SSRCs, or RTP stream ids (`a=rid` / `a=simulcast`): no single stream.
    Several,
}

/// What `answer` announces for the section with media id `mid`.
pub fn announced(answer: &SessionDescription, mid: &str) -> Announced {
    answer
        .media_descriptions
        .iter()
        .find(|m| attribute(m, "mid") == Some(mid))
        .map_or(Announced::Nothing, section)
}

fn attribute<'a>(m: &'a MediaDescription, key: &str) -> Option<&'a str> {
    m.attribute(key).map(|v| v.unwrap_or(""))
}

fn section(m: &MediaDescription) -> Announced {
    if m.attribute("recvonly").is_some() || m.attribute("inactive").is_some() {
        return Announced::Nothing;
    }
    if m.attribute("rid").is_some() || m.attribute("simulcast").is_some() {
        return Announced::Several;
    }
    let values = |key: &'static str| {
        m.attributes
            .iter()
            .filter(move |a| a.key == key)
            .filter_map(|a| a.value.as_deref())
    };
    // Repair flows named by a group are part of their primary's stream, not streams.
    let repair: Vec<&str> = values("ssrc-group")
        .filter_map(|v| {
            let mut words = v.split_whitespace();
            match (words.next(), words.next(), words.next(), words.next()) {
                (Some("FID" | "FEC-FR"), Some(_), Some(repair), None) => Some(repair),
                _ => None,
            }
        })
        .collect();
    let mut media: Option<&str> = None;
    for ssrc in values("ssrc").filter_map(|v| v.split_whitespace().next()) {
        if repair.contains(&ssrc) {
            continue;
        }
        match media {
            None => media = Some(ssrc),
            Some(first) if first == ssrc => {}
            Some(_) => return Announced::Several,
        }
    }
    match media.map(str::parse::<u32>) {
        None => Announced::Nothing,
        Some(Ok(ssrc)) => Announced::One(ssrc),
        // An SSRC webrtc-rs cannot parse declares nothing it would deliver; refusing to pin
        // anything for the section is the safe reading.
        Some(Err(_)) => Announced::Several,
    }
}

/// The SSRC each of a publisher's streams is pinned to (`None`: nothing forwarded yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SsrcPins {
    audio: Option<u32>,
    video: Option<u32>,
}

impl SsrcPins {
    /// The SSRC `kind` is pinned to.
    pub fn get(&self, kind: MediaKind) -> Option<u32> {
        match kind {
            MediaKind::Audio => self.audio,
            MediaKind::Video => self.video,
        }
    }

    /// Whether a packet of stream `kind` under `ssrc` may be forwarded.
    pub fn admits(&self, kind: MediaKind, ssrc: u32) -> bool {
        self.get(kind) == Some(ssrc)
    }

    /// The pins after an answer announcing `audio` and `video`: a stream already pinned keeps
    /// its SSRC whatever the answer says; an unpinned one is pinned to an SSRC the answer
    /// announces alone for it, unless that SSRC is the other stream's (pinned or announced).
    #[must_use]
    pub fn with_answer(self, audio: Announced, video: Announced) -> SsrcPins {
        let one = |a: Announced| match a {
            Announced::One(ssrc) => Some(ssrc),
            Announced::Nothing | Announced::Several => None,
        };
        let (a, v) = (one(audio), one(video));
        let pin = |current: Option<u32>, mine: Option<u32>, other: Option<u32>, other_pin| {
            current.or(mine.filter(|&s| Some(s) != other && Some(s) != other_pin))
        };
        SsrcPins {
            audio: pin(self.audio, a, v, self.video),
            video: pin(self.video, v, a, self.audio),
        }
    }
}

/// [`SsrcPins`] shared with the forwarding tasks: read per packet without a lock, written
/// only by the connection's negotiation (under its state lock).
#[derive(Debug)]
pub(crate) struct SharedPins {
    audio: AtomicU64,
    video: AtomicU64,
}

const UNPINNED: u64 = u64::MAX;

impl SharedPins {
    pub(crate) fn new() -> Self {
        Self {
            audio: AtomicU64::new(UNPINNED),
            video: AtomicU64::new(UNPINNED),
        }
    }

    fn cell(&self, kind: MediaKind) -> &AtomicU64 {
        match kind {
            MediaKind::Audio => &self.audio,
            MediaKind::Video => &self.video,
        }
    }

    /// The pinned SSRC of `kind`.
    #[inline]
    pub(crate) fn get(&self, kind: MediaKind) -> Option<u32> {
        u32::try_from(self.cell(kind).load(Ordering::Acquire)).ok()
    }

    /// A copy of the pins.
    pub(crate) fn load(&self) -> SsrcPins {
        SsrcPins {
            audio: self.get(MediaKind::Audio),
            video: self.get(MediaKind::Video),
        }
    }

    /// Replaces the pins.
    pub(crate) fn store(&self, pins: SsrcPins) {
        for kind in [MediaKind::Audio, MediaKind::Video] {
            let v = pins.get(kind).map_or(UNPINNED, u64::from);
            self.cell(kind).store(v, Ordering::Release);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn sdp(sections: &[&str]) -> SessionDescription {
        let mut text = String::from("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n");
        for (i, body) in sections.iter().enumerate() {
            let media = if i % 2 == 0 { "audio" } else { "video" };
            text.push_str(&format!(
                "m={media} 9 UDP/TLS/RTP/SAVPF 110\r\nc=IN IP4 0.0.0.0\r\na=mid:{i}\r\n"
            ));
            for line in body.lines() {
                text.push_str(line.trim());
                text.push_str("\r\n");
            }
        }
        SessionDescription::unmarshal(&mut Cursor::new(text.as_bytes())).unwrap()
    }

    // covers: MT-PIN-2
    #[test]
    fn announced_reads_one_media_ssrc_per_section() {
        let s = sdp(&[
            // 0: one SSRC with its usual attributes.
            "a=sendonly\na=msid:s a\na=ssrc:11 cname:s\na=ssrc:11 msid:s a",
            // 1: an RTX repair flow is part of the stream.
            "a=sendonly\na=ssrc-group:FID 21 22\na=ssrc:21 cname:s\na=ssrc:22 cname:s",
            // 2: two media SSRCs.
            "a=sendonly\na=ssrc:31 cname:s\na=ssrc:32 cname:s",
            // 3: simulcast by rid.
            "a=sendonly\na=rid:h send\na=rid:l send\na=simulcast:send h;l\na=ssrc:41 cname:s",
            // 4: not sending.
            "a=recvonly\na=ssrc:51 cname:s",
            // 5: inactive.
            "a=inactive\na=ssrc:61 cname:s",
            // 6: sending, no SSRC declared.
            "a=sendrecv\na=msid:s a",
            // 7: an SSRC group of another kind (SIM) lists several streams.
            "a=sendonly\na=ssrc-group:SIM 81 82\na=ssrc:81 cname:s\na=ssrc:82 cname:s",
            // 8: an unparsable SSRC.
            "a=sendonly\na=ssrc:99999999999 cname:s",
            // 9: FEC-FR repair flow.
            "a=sendonly\na=ssrc-group:FEC-FR 91 92\na=ssrc:92 cname:s\na=ssrc:91 cname:s",
        ]);
        let want = [
            Announced::One(11),
            Announced::One(21),
            Announced::Several,
            Announced::Several,
            Announced::Nothing,
            Announced::Nothing,
            Announced::Nothing,
            Announced::Several,
            Announced::Several,
            Announced::One(91),
        ];
        for (i, want) in want.into_iter().enumerate() {
            assert_eq!(announced(&s, &i.to_string()), want, "section {i}");
        }
        assert_eq!(announced(&s, "nope"), Announced::Nothing);
    }

    // covers: MT-PIN-1
    #[test]
    fn pins_are_set_once_per_kind_and_never_shared() {
        use Announced::{Nothing, One, Several};
        let p = SsrcPins::default();
        assert!(!p.admits(MediaKind::Audio, 1));
        // Nothing or several announced: nothing pinned yet.
        let p = p.with_answer(Nothing, Several);
        assert_eq!(p, SsrcPins::default());
        let p = p.with_answer(One(1), Several);
        assert_eq!(
            (p.get(MediaKind::Audio), p.get(MediaKind::Video)),
            (Some(1), None)
        );
        assert!(p.admits(MediaKind::Audio, 1));
        assert!(!p.admits(MediaKind::Audio, 2));
        assert!(!p.admits(MediaKind::Video, 1));
        // A later answer cannot move a pin, nor take the other stream's SSRC.
        let p = p.with_answer(One(2), One(1));
        assert_eq!(
            (p.get(MediaKind::Audio), p.get(MediaKind::Video)),
            (Some(1), None)
        );
        let p = p.with_answer(Nothing, One(3));
        assert_eq!(
            (p.get(MediaKind::Audio), p.get(MediaKind::Video)),
            (Some(1), Some(3))
        );
        let p = p.with_answer(One(4), One(4));
        assert_eq!(
            (p.get(MediaKind::Audio), p.get(MediaKind::Video)),
            (Some(1), Some(3))
        );
        // One SSRC announced for both kinds at once pins neither.
        let q = SsrcPins::default().with_answer(One(7), One(7));
        assert_eq!(q, SsrcPins::default());
        // The shared cells round-trip, including the unpinned state.
        let shared = SharedPins::new();
        assert_eq!(shared.load(), SsrcPins::default());
        shared.store(p);
        assert_eq!(shared.load(), p);
        assert_eq!(shared.get(MediaKind::Video), Some(3));
        let max = SsrcPins::default().with_answer(One(u32::MAX), Nothing);
        shared.store(max);
        assert_eq!(shared.load(), max);
    }
}
