//! Participant ids and how they are carried in SDP (`a=msid`).

use blindcall_media::MediaKind;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;

/// An opaque participant id chosen by the caller (the relay maps it to an MLS member).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u64);

impl std::fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "p{}", self.0)
    }
}

const STREAM_PREFIX: &str = "bcp-";

/// The MediaStream id (`a=msid` first token) under which the relay sends `p`'s tracks.
pub(crate) fn stream_id(p: ParticipantId) -> String {
    format!("{STREAM_PREFIX}{}", p.0)
}

/// The track id of `p`'s `kind` track on a subscriber leg.
pub(crate) fn track_id(p: ParticipantId, kind: MediaKind) -> String {
    format!("{STREAM_PREFIX}{}-{}", p.0, kind_label(kind))
}

/// Parses a stream id produced by [`stream_id`]; `None` for anything else.
pub fn parse_stream_id(s: &str) -> Option<ParticipantId> {
    let digits = s.strip_prefix(STREAM_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok().map(ParticipantId)
}

/// A short label for a media kind.
pub(crate) fn kind_label(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

/// The WebRTC codec kind for a media kind.
pub(crate) fn to_codec_kind(kind: MediaKind) -> RtpCodecKind {
    match kind {
        MediaKind::Audio => RtpCodecKind::Audio,
        MediaKind::Video => RtpCodecKind::Video,
    }
}

/// The media kind of a WebRTC codec kind, if it is audio or video.
pub(crate) fn from_codec_kind(kind: RtpCodecKind) -> Option<MediaKind> {
    match kind {
        RtpCodecKind::Audio => Some(MediaKind::Audio),
        RtpCodecKind::Video => Some(MediaKind::Video),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    // covers: MT-RELAY-3
    #[test]
    fn stream_id_round_trips_and_rejects_foreign_ids() {
        for id in [0u64, 7, u64::MAX] {
            let p = ParticipantId(id);
            assert_eq!(parse_stream_id(&stream_id(p)), Some(p));
        }
        for bad in [
            "",
            "bcp-",
            "bcp-x",
            "bcp-1 2",
            "xyz-1",
            "bcp--1",
            "bcp-99999999999999999999",
        ] {
            assert_eq!(parse_stream_id(bad), None, "{bad:?}");
        }
        assert_ne!(
            track_id(ParticipantId(1), MediaKind::Audio),
            track_id(ParticipantId(1), MediaKind::Video)
        );
    }
}
